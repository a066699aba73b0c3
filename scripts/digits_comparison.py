"""Digits comparison of every defense (issue 12 "done when"): standard and AT training, several seeds, the
full test set, PGD, APGD-CE, the standard protocol at its smoke budget (``standard_smoke``) and the per-sample
worst case over fgsm, pgd, apgd, apgd_dlr, multi_pgd and the protocol.

Runs ``python -m snnbench run`` once per (seed, training, defense) into one results directory (cached: a rerun
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

DEFENSES = ("vanilla", "rat", "rat_pgd", "stog", "feel", "fe", "sr", "mpd_sgr", "tgo", "dlif", "dlif_pgd")
AT_ONLY = {"dlif_pgd"}  # differs from dlif only in its adversarial training (PGD-2, MPD-SGR Table 1's "AT")
TRAININGS = ("standard", "at")
ATTACKS = ("fgsm", "pgd", "apgd", "apgd_dlr", "multi_pgd", "standard_smoke", "worst")  # worst reads the others
SHOWN = ("pgd", "apgd", "standard_smoke", "worst")


def run_all(results_dir: Path, seeds: list[int], defenses: list[str], trainings: list[str]) -> None:
    """One ``bench run`` per (seed, training, defense); seed-major so a partial run covers every defense."""
    jobs = [(s, t, d) for s in seeds for t in trainings for d in defenses if t == "at" or d not in AT_ONLY]
    for i, (seed, training, defense) in enumerate(jobs, 1):
        cmd = [sys.executable, "-m", "snnbench", "run", "-d", defense, "--training", training, "--seed", str(seed),
               "--no-eps-sweep", "-q", "--results-dir", str(results_dir)]
        for a in ATTACKS:
            cmd += ["-a", a]
        t0 = time.time()
        rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        status = "ok" if rc.returncode == 0 else f"FAILED rc={rc.returncode}: {rc.stderr.strip()[-300:]}"
        print(f"[{i}/{len(jobs)}] seed {seed} {training:<8} {defense:<8} {time.time() - t0:6.0f}s {status}",
              flush=True)


Cells = dict[tuple[str, str, str], dict[int, float]]


def load(results_dir: Path) -> tuple[Cells, set[int]]:
    """One read of the store: {(training, defense, attack or "clean"): {seed: accuracy}} and the sample
    counts seen; protocol stages are left out."""
    con = sqlite3.connect(results_dir / "bench.sqlite")
    rows = con.execute(
        "SELECT r.training, r.defense, r.seed, e.attack, e.clean_acc, e.robust_acc, e.n FROM run r "
        "JOIN evaluation e ON e.run_id = r.id WHERE r.dataset = 'digits'"
    ).fetchall()
    cells: Cells = {}
    n_eval: set[int] = set()
    for training, defense, seed, attack, clean, robust, n in rows:
        if "/" in attack:  # a protocol stage (``standard_smoke/<stage>``), not a column of its own
            continue
        cells.setdefault((training, defense, "clean"), {})[seed] = clean
        cells.setdefault((training, defense, attack), {})[seed] = robust
        n_eval.add(n)
    return cells, n_eval


def report(cells: Cells, n_eval: set[int]) -> str:
    """mean +- std over seeds of clean and robust accuracy (percent) per (training, defense) and attack."""

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


# The papers' orderings, as pairs (source, claim, better, worse); each side is (training, defense config).
S, A = "standard", "at"
CLAIMS = [
    *[("MPD-SGR T1, no AT", f"{a} > {b}", (S, a), (S, b)) for a, b in
      (("mpd_sgr", "sr"), ("sr", "feel"), ("feel", "rat"), ("rat", "stog"), ("stog", "dlif"))],
    *[("MPD-SGR T1, AT", f"mpd_sgr > {b}", (A, "mpd_sgr"), (A, b)) for b in ("feel", "sr", "stog", "dlif_pgd", "rat_pgd")],
    *[("MPD-SGR T1, AT", f"{a} > rat_pgd", (A, a), (A, "rat_pgd")) for a in ("feel", "sr", "stog", "dlif_pgd")],
    ("MPD-SGR T2", "mpd_sgr > rat (REG)", (S, "mpd_sgr"), (S, "rat")),
    ("SNN-RAT T2", "rat (REG) > vanilla", (S, "rat"), (S, "vanilla")),
    ("SNN-RAT T2", "rat (AT) > vanilla (AT)", (A, "rat"), (A, "vanilla")),
    ("SNN-RAT T2", "vanilla (AT) > vanilla", (A, "vanilla"), (S, "vanilla")),
    ("FEEL T1", "feel > fe", (S, "feel"), (S, "fe")),
    ("FEEL T1", "fe > vanilla", (S, "fe"), (S, "vanilla")),
    ("FEEL T1", "feel (AT) > vanilla (AT)", (A, "feel"), (A, "vanilla")),
    ("TGO", "tgo > vanilla", (S, "tgo"), (S, "vanilla")),
    ("TGO", "tgo (AT) > vanilla (AT)", (A, "tgo"), (A, "vanilla")),
]


def verdict(better: list[float], worse: list[float], alpha: float = 0.05) -> str:
    """Welch's two-sided t-test over seeds: "agrees" / "disagrees" when the difference of the means is
    significant at ``alpha`` in the claimed / the opposite direction, else "cannot tell"."""
    from scipy.stats import ttest_ind

    if len(better) < 2 or len(worse) < 2:
        return "too few seeds"
    if statistics.pstdev(better) == statistics.pstdev(worse) == 0:  # degenerate: no spread to test against
        gap = statistics.mean(better) - statistics.mean(worse)
        return "cannot tell" if gap == 0 else "agrees" if gap > 0 else "disagrees"
    t, p = ttest_ind(better, worse, equal_var=False)
    if p >= alpha:
        return "cannot tell"
    return "agrees" if t > 0 else "disagrees"


def claims(cells: Cells, metrics: tuple[str, ...] = ("pgd", "standard_smoke")) -> str:
    """Each paper claim with the difference of the means (points) and the verdict, per metric."""
    head = f"{'source':<18} {'claim':<26} " + " ".join(f"{m + ': diff, verdict':>34}" for m in metrics)
    lines = [head]
    for source, text, better, worse in CLAIMS:
        out = []
        for m in metrics:
            a = [100 * v for v in cells.get((*better, m), {}).values()]
            b = [100 * v for v in cells.get((*worse, m), {}).values()]
            if not a or not b:
                out.append(f"{'-':>34}")
                continue
            d = statistics.mean(a) - statistics.mean(b)
            out.append(f"{d:+6.1f} pts, {verdict(a, b):<13} ({len(a)}v{len(b)})".rjust(34))
        lines.append(f"{source:<18} {text:<26} " + " ".join(out))
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
    cells, n_eval = load(a.results_dir)
    print(report(cells, n_eval))
    print()
    print(claims(cells))


if __name__ == "__main__":
    main()
