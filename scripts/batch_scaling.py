"""Cost per row of one input gradient (and one forward) when k copies of a batch are stacked, on a trained
recipe: whether stacking APGD-T's target classes (attacks/autoattack.py ``stack_rows_for``) pays on this
device. Prints ms per gradient and per forward of the whole stack and per ``n`` rows.

    python scripts/batch_scaling.py --results-dir /tmp/v2 --defense sr --n 200 --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from snnbench.data import to_float
from snnbench.kinds import python_kinds
from snnbench.plan import RunRequest, resolve
from snnbench.prepare import prepare
from snnbench.registry import load_registry
from snnbench.store import Store


def per_call(fn, reps: int) -> float:
    """Seconds per call of ``fn`` (one untimed warm-up call)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", type=Path, default=Path("results"))
    ap.add_argument("--defense", default="sr")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--stack", default="1,3,9", help="comma list of k (copies stacked)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    plan = resolve(load_registry(None, kinds=python_kinds()), RunRequest(defense=a.defense))
    a.results_dir.mkdir(parents=True, exist_ok=True)
    prep = prepare(plan, Store(f"sqlite:///{a.results_dir / 'bench.sqlite'}"), a.results_dir)
    model = prep.model.eval()
    x, y = to_float(prep.data.test.x[: a.n]), prep.data.test.y[: a.n]
    for k in (int(s) for s in a.stack.split(",")):
        xs, ys = x.repeat(k, *([1] * (x.dim() - 1))), y.repeat(k)

        def grad(xs=xs, ys=ys) -> None:
            xg = xs.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xg), ys), xg)

        def forward(xs=xs) -> None:
            with torch.no_grad():
                model(xs)

        g, f = per_call(grad, a.reps), per_call(forward, a.reps)
        print(f"k={k} rows={len(ys)}: gradient {1000 * g:7.1f} ms ({1000 * g / k:5.1f} per {len(y)} rows), "
              f"forward {1000 * f:7.1f} ms ({1000 * f / k:5.1f} per {len(y)} rows)", flush=True)


if __name__ == "__main__":
    main()
