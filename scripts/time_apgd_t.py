"""APGD-T with EOT, side by side: fra31's ``APGDAttack_targeted`` (one forward per EOT draw) against the
``apgd_t`` kind's class (attacks/autoattack.py ``batched_apgd_t_class``: one forward of N stacked copies).

Trains (or loads from the results dir's checkpoint cache) the StoG digits model, then times both on the same
images, twice each, and prints seconds and robust accuracy (correct in all of 10 draws):

    OMP_NUM_THREADS=1 python scripts/time_apgd_t.py --results-dir /tmp/cmp3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from snnbench.attacks.autoattack import APGDTargeted, _pyautoattack, batched_apgd_t_class
from snnbench.data import to_float
from snnbench.kinds import python_kinds
from snnbench.plan import RunRequest, resolve
from snnbench.prepare import prepare
from snnbench.registry import load_registry
from snnbench.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", type=Path, default=Path("results"))
    ap.add_argument("--defense", default="stog", help="a randomized defense config (EOT > 1)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--targets", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    plan = resolve(load_registry(None, kinds=python_kinds()), RunRequest(defense=a.defense))
    a.results_dir.mkdir(parents=True, exist_ok=True)
    prep = prepare(plan, Store(f"sqlite:///{a.results_dir / 'bench.sqlite'}"), a.results_dir)
    model = prep.model.eval()
    x, y = to_float(prep.data.test.x[: a.n]), prep.data.test.y[: a.n]
    atk = APGDTargeted(APGDTargeted.Params(steps=a.steps, target_classes=a.targets), eps=plan.dataset.eps,
                       alpha=plan.dataset.alpha)
    view, eot = atk.view(model), atk.eot_samples(model)
    kw = dict(n_iter=a.steps, norm="Linf", n_restarts=1, eps=plan.dataset.eps, seed=0, eot_iter=eot, rho=0.75,
              n_target_classes=a.targets, device=x.device)
    classes = (("fra31", _pyautoattack().autopgd_base.APGDAttack_targeted), ("batched", batched_apgd_t_class()))
    for rep in range(2):
        for name, cls in classes:
            t0 = time.perf_counter()
            adv = cls(view, **kw).perturb(x, y)
            dt = time.perf_counter() - t0
            with torch.no_grad():
                robust = torch.stack([view(adv).argmax(1) == y for _ in range(10)]).all(0).float().mean()
            print(f"rep {rep} {name:8s} EOT {eot}: {dt:6.1f} s, robust (all of 10 draws) {robust:.3f}", flush=True)


if __name__ == "__main__":
    main()
