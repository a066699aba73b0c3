"""Digits comparison of every defense (issue 12 "done when"): standard and AT training, several seeds, the
full test set, PGD, APGD-CE, the standard protocol at its smoke budget (``standard_smoke``) and the per-sample
worst case over fgsm, pgd, apgd, apgd_dlr, multi_pgd and the protocol.

Runs ``python -m bench run`` once per (seed, training, defense) into one results directory (cached: a rerun
skips what is stored), then prints mean +- std (over seeds) of clean / PGD / APGD / worst accuracy per defense.

    python scripts/digits_comparison.py --results-dir /tmp/tables_cmp            # run everything, then report
    python scripts/digits_comparison.py --results-dir /tmp/tables_cmp --report   # report what is stored
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFENSES = ("vanilla", "rat", "rat_pgd", "stog", "feel", "fe", "sr", "mpd_sgr", "tgo", "dlif")
TRAININGS = ("standard", "at")
ATTACKS = ("fgsm", "pgd", "apgd", "apgd_dlr", "multi_pgd", "standard_smoke", "worst")  # worst reads the others
SHOWN = ("pgd", "apgd", "standard_smoke", "worst")


def run_all(results_dir: Path, seeds: list[int], defenses: list[str], trainings: list[str]) -> None:
    """One ``bench run`` per (seed, training, defense); seed-major so a partial run covers every defense."""
    jobs = [(s, t, d) for s in seeds for t in trainings for d in defenses]
    for i, (seed, training, defense) in enumerate(jobs, 1):
        cmd = [sys.executable, "-m", "bench", "run", "-d", defense, "--training", training, "--seed", str(seed),
               "--no-sweep", "-q", "--results-dir", str(results_dir)]
        for a in ATTACKS:
            cmd += ["-a", a]
        t0 = time.time()
        rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        status = "ok" if rc.returncode == 0 else f"FAILED rc={rc.returncode}: {rc.stderr.strip()[-300:]}"
        print(f"[{i}/{len(jobs)}] seed {seed} {training:<8} {defense:<8} {time.time() - t0:6.0f}s {status}",
              flush=True)


def report(results_dir: Path) -> str:
    """mean +- std over seeds of clean and robust accuracy (percent) per (training, defense) and attack."""
    con = sqlite3.connect(results_dir / "bench.sqlite")
    rows = con.execute(
        "SELECT r.training, r.defense, r.seed, e.attack, e.clean_acc, e.robust_acc, e.n FROM run r "
        "JOIN evaluation e ON e.run_id = r.id WHERE r.dataset = 'digits'"
    ).fetchall()
    cells: dict[tuple[str, str, str], dict[int, float]] = {}
    n_eval: set[int] = set()
    for training, defense, seed, attack, clean, robust, n in rows:
        if "/" in attack:  # a protocol stage (``standard_smoke/<stage>``), not a column of its own
            continue
        cells.setdefault((training, defense, "clean"), {})[seed] = clean
        cells.setdefault((training, defense, attack), {})[seed] = robust
        n_eval.add(n)

    def fmt(values: dict[int, float]) -> str:
        if not values:
            return "-"
        v = [100 * x for x in values.values()]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        return f"{statistics.mean(v):5.1f} +- {sd:4.1f} ({len(v)})"

    head = f"{'training':<9} {'defense':<9} " + " ".join(f"{c:>16}" for c in ("clean", *SHOWN))
    lines = [f"digits, small_conv, T=4, n_eval={sorted(n_eval)}; mean +- std over seeds (number of seeds)", head]
    for training in TRAININGS:
        for defense in DEFENSES:
            vals = [fmt(cells.get((training, defense, c), {})) for c in ("clean", *SHOWN)]
            if any(v != "-" for v in vals):
                lines.append(f"{training:<9} {defense:<9} " + " ".join(f"{v:>16}" for v in vals))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", type=Path, default=Path("/tmp/tables_cmp"))
    ap.add_argument("--seeds", default="0,1,2", help="comma list of training seeds")
    ap.add_argument("--defenses", default=",".join(DEFENSES))
    ap.add_argument("--trainings", default=",".join(TRAININGS))
    ap.add_argument("--report", action="store_true", help="only print what the results directory holds")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not a.report:
        run_all(a.results_dir, [int(s) for s in a.seeds.split(",")], a.defenses.split(","), a.trainings.split(","))
    print(report(a.results_dir))


if __name__ == "__main__":
    main()
