"""The read side of suites: what was measured for each cell, without torch (``bench report``,
``bench check``, ``bench export``).

A suite cell's numbers are found through the cell index the write side keeps: when a suite runs (or
finds a cell already stored), :func:`bench.suites.run_suite` stores an artifact ``cell`` on the cell's
run, keyed ``<suite>:<cell key>``, holding the cell's *spec hash* and the evaluation's attack hash. The
spec hash covers everything registry.yaml says about the cell (the dataset, model, defense and attack
entries as written, the suite's training settings and the cell's own fields), so editing the registry
turns a cell back into "not run" instead of showing a stale number. Nothing here imports torch, the
runner or a recipe.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from snnbench.registry import BenchRegistry
from snnbench.specs import json_ready, to_dict
from snnbench.store import Store
from snnbench.suite_spec import Cell, Suite

CELL_INDEX = "cell"


@dataclass(frozen=True)
class Measured:
    """The latest stored numbers for one cell; ``status`` is measured / not run / reported only."""

    cell: Cell
    status: str
    reason: str = ""
    run_id: int | None = None
    n: int = 0
    clean_acc: float | None = None
    robust_acc: float | None = None
    eps: float | None = None
    seconds: float | None = None
    randomized: bool = False
    config: dict = field(default_factory=dict)  # the stored attack config (kind, capabilities, eps, ...)
    evaluation_id: int | None = None  # the stored evaluation (its per-sample outcomes: the paired gate)


def _entry(reg: BenchRegistry, section: str, name: str | None) -> Any:
    table = getattr(reg, section)
    if name is None or name not in table:
        return name
    return to_dict(table[name])


def cell_spec(reg: BenchRegistry, suite: Suite, cell: Cell) -> dict[str, Any]:
    """Everything registry.yaml says about one cell, as plain data (the spec hash's input)."""
    return {
        "dataset": _entry(reg, "datasets", cell.dataset),
        "model": _entry(reg, "models", cell.model),
        "defense": _entry(reg, "defenses", cell.defense),
        "attack": _entry(reg, "attacks", cell.attack),
        "suite_train": suite.train,
        "cell": {"T": cell.T, "training": cell.training, "attack_overrides": cell.attack_overrides,
                 "n_eval": cell.n_eval, "key": cell.key},
    }


def cell_spec_hash(reg: BenchRegistry, suite: Suite, cell: Cell) -> str:
    text = json.dumps(json_ready(cell_spec(reg, suite, cell)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def index_key(suite: Suite, cell: Cell) -> str:
    return f"{suite.name}:{cell.key}"


def measure_suite(reg: BenchRegistry, suite: Suite, store: Store) -> list[Measured]:
    """The latest stored numbers for every cell (read-only; nothing is trained, attacked or imported)."""
    index: dict[str, tuple[int, dict]] = {}
    for run_id, key, payload in store.artifacts_of_kind(CELL_INDEX):
        index[key] = (run_id, payload)  # one row per key (Store.point): the current run
    evals: dict[int, dict[str, Any]] = {}
    out: list[Measured] = []
    for cell in suite.cells:
        if not cell.runnable:
            out.append(Measured(cell, "reported only", "no config for this method"))
            continue
        hit = index.get(index_key(suite, cell))
        if hit is None or hit[1].get("spec") != cell_spec_hash(reg, suite, cell):
            why = "not run yet" if hit is None else "registry.yaml changed since it ran"
            out.append(Measured(cell, "not run", why))
            continue
        run_id, payload = hit
        if run_id not in evals:
            evals[run_id] = {e.attack_hash: e for e in store.evaluations(run_id)}
        ev = evals[run_id].get(payload.get("attack_hash"))
        if ev is None:
            out.append(Measured(cell, "not run", "model stored, evaluation missing", run_id))
            continue
        out.append(Measured(cell, "measured", "", run_id, ev.n, ev.clean_acc, ev.robust_acc, ev.eps, ev.seconds,
                            bool(payload.get("randomized", False)), json.loads(ev.attack_config_json), ev.id))
    return out
