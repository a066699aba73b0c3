"""The official ASSG + SA-PGD evaluation (Wang et al. 2025, arXiv 2512.22522; code:
craree/Towards-Reliable-Evaluation-of-Adversarial-Robustness-for-Spiking-Neural-Networks), ported as a
script to cross-check snn-standard-v2 on the same models and samples (issue 20).

Ported from the official code, line for line where it matters:
- ``ASSG_SAPGD.attack_single_run`` (attack.py): the random start scaled to the L-inf sphere, CE summed,
  the m/v update on per-sample normalised gradients, the fixed halving schedule, ``x_best_adv`` = the last
  iterate that fooled the model;
- ``ASSG_SAPGD.perturb``: the seed reset to 0, the attack run on the initially correct samples only, the
  surrogate (ASSG moments, reset per ``perturb``) set for the attack;
- evaluate.py ``assg-sapgd``: a ternary search of ``a`` on [0.35, 0.49], 8 rounds, two full test-set runs of
  SA-PGD-100 per round, the lowest robust accuracy kept (selected on the test set, as the paper does).
Randomized models use the official Poisson setting (``assg-sapgd_poi``: 50 steps, EOT 10, moments frozen
after the first draw of an iteration) and are scored like the protocol: correct in every one of 5 draws.

The ASSG surrogate itself is the package's (``snnbench.snn.surrogate.ASSGMoments``, tested against the
official update in tests/test_snn_attacks.py): it lives in the neurons.

    python scripts/assg_official.py --results-dir /tmp/v2 --defense vanilla [--training at] [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from snnbench.data import to_float
from snnbench.kinds import python_kinds
from snnbench.plan import RunRequest, resolve
from snnbench.prepare import prepare
from snnbench.registry import load_registry
from snnbench.snn.classifier import AttackerView
from snnbench.store import Store


def attack_single_run(view, x, y, eps: float, steps: int, eot: int, model) -> tuple[torch.Tensor, torch.Tensor]:
    """Official ``attack_single_run`` (L-inf, CE): returns (x_best_adv, acc)."""
    steps_2, steps_min, size_decr = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    t = 2 * torch.rand(x.shape) - 1
    x_adv = x + eps * torch.ones([x.shape[0], 1, 1, 1]) * t / t.reshape(t.shape[0], -1).abs().max(1, keepdim=True)[0].reshape(-1, 1, 1, 1)
    x_adv = x_adv.clamp(0, 1)
    x_best_adv = x_adv.clone()

    def grad_at(xa):
        xa = xa.detach().requires_grad_(True)
        g = torch.zeros_like(x)
        for i in range(eot):
            freeze(model, i > 0)
            logits = view(xa)
            loss = F.cross_entropy(logits, y, reduction="none").sum()
            g += torch.autograd.grad(loss, [xa])[0].detach()
        freeze(model, False)
        return g / eot, logits.detach()

    grad, logits = grad_at(x_adv)
    acc = logits.max(1)[1] == y
    step_size = eps * torch.ones([x.shape[0], 1, 1, 1])
    k, counter3 = steps_2, 0
    m = v = None
    for i in range(steps):
        with torch.no_grad():
            gn = grad / torch.mean(torch.abs(grad), dim=(1, 2, 3), keepdim=True)
            g2n = grad ** 2 / torch.mean(torch.abs(grad ** 2), dim=(1, 2, 3), keepdim=True)
            m = 0.5 * m + gn if i > 0 else gn
            v = 0.8 * v + g2n if i > 0 else g2n
            t = torch.clamp(m / (v ** 0.5 + 1e-12) * step_size, -step_size, step_size)
            x_adv = torch.clamp(torch.min(torch.max(x_adv + t, x - eps), x + eps), 0, 1)
        grad, logits = grad_at(x_adv)
        pred = logits.max(1)[1] == y
        acc = torch.min(acc, pred)
        x_best_adv[~pred] = x_adv[~pred]
        counter3 += 1
        if counter3 == k:
            step_size /= 2.0
            counter3 = 0
            k = max(k - size_decr, steps_min)
    return x_best_adv, acc


def freeze(model, on: bool) -> None:
    """The official ``eot_flag``: ASSG moments frozen after the first EOT draw of an iteration."""
    for n in model.neurons():
        if n.assg is not None:
            n.assg.frozen = on


def perturb(model, x, y, eps: float, a: float, steps: int, eot: int) -> torch.Tensor:
    """Official ``perturb`` (one restart): seed 0, attack the initially correct samples."""
    adv = x.clone()
    with torch.no_grad():
        acc = model(x).max(1)[1] == y
    torch.random.manual_seed(0)
    ind = acc.nonzero().flatten()
    if len(ind):
        view = AttackerView(model, "bptt", "assg", a)  # fresh ASSG moments (set_backpropagation)
        xb, ok = attack_single_run(view, x[ind], y[ind], eps, steps, eot, model)
        broken = ~ok
        adv[ind[broken]] = xb[broken]
    return adv


def robust_accuracy(model, x, y, eps, a, steps, eot, draws, batch) -> float:
    correct = []
    for i in range(0, len(y), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        adv = perturb(model, xb, yb, eps, a, steps, eot)
        with torch.no_grad():
            c = torch.ones(len(yb), dtype=torch.bool)
            for _ in range(draws):
                c &= model(adv).argmax(1) == yb
        correct.append(c)
    return float(torch.cat(correct).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results-dir", required=True)
    ap.add_argument("--defense", required=True)
    ap.add_argument("--training", default="standard")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--n", type=int, default=0, help="first n test samples (0: all)")
    a = ap.parse_args()
    reg = load_registry(kinds=python_kinds())
    plan = resolve(reg, RunRequest(defense=a.defense, train_overrides={"training": a.training}, device="cpu"))
    prep = prepare(plan, Store(f"sqlite:///{a.results_dir}/bench.sqlite"), __import__("pathlib").Path(a.results_dir))
    model = prep.model.eval()
    n = a.n or len(prep.data.test.y)
    x, y = to_float(prep.data.test.x[:n]), prep.data.test.y[:n]
    rand = model.randomized
    steps, eot, draws = (50, 10, 5) if rand else (100, 1, 1)
    eps = plan.dataset.eps
    t0 = time.time()
    left, right, best = 0.35, 0.49, (float("inf"), None)
    tried = []
    for _ in range(a.rounds):
        a1, a2 = left + (right - left) / 3.0, right - (right - left) / 3.0
        r1 = robust_accuracy(model, x, y, eps, a1, steps, eot, draws, a.batch)
        r2 = robust_accuracy(model, x, y, eps, a2, steps, eot, draws, a.batch)
        tried += [(a1, r1), (a2, r2)]
        for aa, r in ((a1, r1), (a2, r2)):
            if r < best[0]:
                best = (r, aa)
        if r1 < r2:
            right = a2
        else:
            left = a1
    out = {"defense": a.defense, "training": a.training, "n": n, "best_robust": best[0], "best_a": best[1],
           "runs": len(tried), "steps": steps, "eot": eot, "seconds": round(time.time() - t0, 1),
           "tried": [(round(aa, 4), r) for aa, r in tried]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
