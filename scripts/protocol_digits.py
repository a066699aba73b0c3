"""Measure the standard protocol on every smoke defense on digits (full test set) and print, per model:
clean, PGD-7, APGD-CE 100, each protocol stage, the protocol's result, the failed flags and the seconds.

    python scripts/protocol_digits.py --results-dir /tmp/proto [--attack standard|standard_smoke] [--run]

``--run`` first runs ``bench run`` for each model (trains or loads it); without it only the table is read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

ROWS = [("vanilla", "standard"), ("vanilla", "at"), ("rat", "standard"), ("stog", "standard"),
        ("feel", "standard"), ("sr", "standard"), ("mpd_sgr", "standard"), ("tgo", "standard"),
        ("dlif", "standard")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results-dir", required=True)
    ap.add_argument("--attack", default="standard")
    ap.add_argument("--run", action="store_true")
    ap.add_argument("--n-eval", default="0")
    a = ap.parse_args()
    if a.run:
        for d, t in ROWS:
            cmd = [sys.executable, "-m", "snnbench", "run", "--defense", d, "--training", t, "--attack", "pgd",
                   "--attack", "apgd", "--attack", a.attack, "-q", "--results-dir", a.results_dir]
            if a.n_eval != "0":
                cmd += ["--n-eval", a.n_eval]
            print("$", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=False)
    from snnbench.store import Store

    store = Store(f"sqlite:///{a.results_dir}/bench.sqlite")
    for run in store.runs():
        if run.defense == "vanilla" and run.seed != 42:
            continue  # the transfer substitute
        evs = {e.attack: e for e in store.evaluations(run.id)}
        p = evs.get(a.attack)
        if p is None:
            continue
        art = store.artifacts(run.id, "protocol").get(a.attack, {})
        stages = " ".join(f"{s['name']}={100 * s['robust']:.1f}" for s in art.get("stages", []))
        others = [e for k, e in evs.items() if k in ("pgd", "apgd") and e.n == p.n]
        worst_other = min((e.robust_acc for e in others), default=1.0)
        failed = [f"{f.scope}:{f.kind}" for f in store.flags(run.id) if not f.ok]
        print(f"{run.defense:<8} {run.training:<8} n={p.n} clean {100 * p.clean_acc:.1f} "
              f"pgd {100 * evs['pgd'].robust_acc:.1f} apgd {100 * evs['apgd'].robust_acc:.1f} "
              f"protocol {100 * p.robust_acc:.1f} ({'<=' if p.robust_acc <= worst_other else '>'} others) "
              f"protocol {p.seconds:.0f}s apgd {evs['apgd'].seconds:.0f}s")
        print(f"    stages: {stages}")
        print(f"    failed flags: {', '.join(failed) or 'none'}")
    json.dumps({})


if __name__ == "__main__":
    main()
