"""The standard protocol on every smoke recipe on digits (full test set, full budget), beside AutoAttack and
the official ASSG + SA-PGD evaluation, for the issue 20/25 notes. Per model: clean, APGD-CE 100, AutoAttack
(standard; rand for randomized models), snn-standard-v1 and -v2 with their seconds, each v2 stage
(cumulative robust accuracy and samples broken), the best official ASSG number (scripts/assg_official.py),
and the failed flags.

    python scripts/protocol_digits.py --results-dir /tmp/v2 --run [--assg] [--only vanilla/standard ...]

``--run`` runs ``bench run`` for each model first (trains or loads it; stored evaluations are reused);
``--assg`` runs the official ASSG port (16 SA-PGD-100 runs per model) and stores its JSON beside the db;
without them the table is read from the store.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROWS = [("vanilla", "standard"), ("vanilla", "at"), ("rat", "standard"), ("stog", "standard"),
        ("feel", "standard"), ("sr", "standard"), ("mpd_sgr", "standard"), ("tgo", "standard"),
        ("dlif", "standard")]
ATTACKS = ("apgd", "autoattack", "standard_v1", "standard")


def run_models(rows, results: str, n_eval: str) -> None:
    for d, t in rows:
        cmd = [sys.executable, "-m", "snnbench", "run", "--defense", d, "--training", t, "-q", "--results-dir", results,
               "--no-eps-sweep"]
        for a in ATTACKS:
            cmd += ["--attack", a]
        if n_eval != "0":
            cmd += ["--n-eval", n_eval]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=False)


def run_assg(rows, results: str, n_eval: str) -> None:
    script = Path(__file__).with_name("assg_official.py")
    for d, t in rows:
        out = Path(results) / f"assg_{d}_{t}.json"
        if out.exists():
            continue
        cmd = [sys.executable, str(script), "--results-dir", results, "--defense", d, "--training", t, "--n", n_eval]
        print("$", " ".join(cmd[1:]), flush=True)
        res = subprocess.run(cmd, check=False, capture_output=True, text=True)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if lines:
            out.write_text(lines[-1])
        else:
            print(res.stderr[-2000:])


def table(rows, results: str) -> None:
    from snnbench.store import Store

    store = Store(f"sqlite:///{results}/bench.sqlite")
    wanted = set(rows)
    for run in store.runs():
        if (run.defense, run.training) not in wanted or run.seed != 42:
            continue  # substitutes (seed 43) and other models
        evs = {e.attack: e for e in store.evaluations(run.id)}
        v2 = evs.get("standard")
        if v2 is None:
            continue
        pct = lambda k, evs=evs: f"{100 * evs[k].robust_acc:5.1f}" if k in evs else "  -  "  # noqa: E731
        sec = lambda k, evs=evs: f"{evs[k].seconds:6.0f}s" if k in evs else "   -  "  # noqa: E731
        assg_file = Path(results) / f"assg_{run.defense}_{run.training}.json"
        assg = json.loads(assg_file.read_text()) if assg_file.exists() else None
        print(f"{run.defense:<8} {run.training:<8} n={v2.n} clean {100 * v2.clean_acc:5.1f}  apgd {pct('apgd')} {sec('apgd')}"
              f"  autoattack {pct('autoattack')} {sec('autoattack')}  v1 {pct('standard_v1')} {sec('standard_v1')}"
              f"  v2 {pct('standard')} {sec('standard')}"
              + (f"  official ASSG {100 * assg['best_robust']:5.1f} (a={assg['best_a']:.3f}, {assg['runs']} runs, "
                 f"{assg['seconds']:.0f}s)" if assg else ""))
        arts = store.artifacts(run.id, "protocol")
        for version, name in (("v1", "standard_v1"), ("v2", "standard")):
            print(f"    {version} stages: " + "  ".join(
                f"{s['name']}={100 * s['robust']:.1f}" + (f"(-{s['n_broken']})" if s["n_broken"] else "")
                + (f"[{s['seconds']:.0f}s]" if s["seconds"] >= 1 else "") for s in arts.get(name, {}).get("stages", [])))
        failed = sorted({f"{f.scope}:{f.kind}" for f in store.flags(run.id) if not f.ok})
        print(f"    failed flags: {', '.join(failed) or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results-dir", required=True)
    ap.add_argument("--run", action="store_true")
    ap.add_argument("--assg", action="store_true")
    ap.add_argument("--n-eval", default="0", help="0: the full test set")
    ap.add_argument("--only", nargs="*", help="defense/training pairs, e.g. vanilla/at")
    a = ap.parse_args()
    rows = [tuple(r.split("/")) for r in a.only] if a.only else ROWS
    if a.run:
        run_models(rows, a.results_dir, a.n_eval)
    if a.assg:
        run_assg(rows, a.results_dir, a.n_eval)
    table(rows, a.results_dir)


if __name__ == "__main__":
    main()
