"""Writer process for tests/test_store.py: ``python _store_writer.py WRITER START_AT URL...``.

A plain script (no pytest, no multiprocessing re-import of the test runner), so each of the 8 processes
costs one interpreter and the store's imports. All writers sleep until START_AT (a wall-clock time) and
then open the stores (first opens race too) and write every cell, each in its own order, interleaving
the databases so every database sees all writers at once. Prints one JSON line: run ids and retries.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from snnbench.store import EvalRecord, FlagRecord, RunInfo, Store

N_CELLS, ATTACKS, N_SAMPLES = 4, ("fgsm", "pgd"), 97


def info(cell: int) -> RunInfo:
    return RunInfo(f"{cell:064x}", {"cell": cell}, "digits", "small_conv", "vanilla", "standard", 4, 42)


def pattern(writer: int, cell: int, attack: int) -> np.ndarray:
    """Per-sample outcome that identifies its writer, so a mixed-up row is detectable."""
    return (np.arange(N_SAMPLES) * (cell + 1) + attack) % (writer + 2) == 0


def write_cell(store: Store, writer: int, cell: int) -> int:
    rid = store.upsert_run(info(cell))
    for a, attack in enumerate(ATTACKS):
        adv = pattern(writer, cell, a)
        rec = EvalRecord(
            attack, f"{cell:032x}{a:032x}", {"writer": writer}, 0.1, np.ones(N_SAMPLES, bool), adv, 0.1
        )
        store.record_evaluation(rid, rec, [FlagRecord(attack, "in_eps_ball", True, float(writer))])
    store.put_artifact(rid, "timing", f"w{writer % 2}", {"writer": writer})
    return rid


def main(writer: int, start_at: float, urls: list[str]) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    stores = [Store(u) for u in urls]
    ids: list[dict[int, int]] = [{} for _ in urls]
    for k in range(N_CELLS):
        cell = (k + writer) % N_CELLS
        for i, store in enumerate(stores):
            ids[i][cell] = write_cell(store, writer, cell)
    print(json.dumps({"writer": writer, "ids": ids, "retries": [s.retries for s in stores]}))


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:])
