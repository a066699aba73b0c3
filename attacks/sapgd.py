"""SA-PGD with the ASSG surrogate (Wang et al. 2025, "Towards Reliable Evaluation of Adversarial Robustness
for Spiking Neural Networks", arXiv 2512.22522), and the per-model width search its evaluation does.

SA-PGD (official ``ASSG_SAPGD.attack_single_run``, attack.py) is an Adam-like L-inf step on per-sample
normalised gradients, without bias correction:

    m <- 0.5 m + g / mean|g|,   v <- 0.8 v + g^2 / mean(g^2)          (m, v = the first terms at i = 0)
    x <- clip_[0,1]( clip_{x0 +- eps}( x + clamp(m / (sqrt(v) + 1e-12) * eta, -eta, eta) ) )

``eta`` starts at eps and is halved on a fixed schedule (no oscillation test): after ``k_0 = 0.22 N``
iterations, then every ``k <- max(k - 0.03 N, 0.06 N)`` (N = 100: after iterations 22, 41, 57, 70, 80,
87, 93, 99). The start is uniform noise scaled so the largest pixel offset is exactly eps; the loss is the
per-sample CE (summed); the returned example is the latest iterate that fooled the model (the official
``x_best_adv``); a sample never fooled gets its highest-loss iterate (the official code returns the clean
image; either is robust, the difference only matters to a re-scoring of a randomized model).
The gradient is the model's under the attacker surrogate ``surrogate`` (the protocol uses ``assg``,
:class:`~snnbench.snn.surrogate.ASSGMoments`, whose moments carry across these iterations). Randomized
models: the EOT draws are batched (attacks/eot.py) and ASSG's moments see every draw (the official code
freezes them after the first draw of each iteration; [I]).

Width search (``search``, the official evaluate.py searches ASSG's ``a`` per model; HART searches its
gamma the same way): for each batch, a short run (``search_steps``, default ``max(5, steps // 10)``) per
candidate width on the batch; a sample any candidate fooled keeps that example; the candidate that fooled
the most (ties: the first, the default) then runs the full ``steps`` on the samples still robust. Cost: one
full run plus ``len(candidates) * search_steps`` iterations per batch. The official search is a ternary
search over [0.35, 0.49] with 16 full test-set runs, selected on the test set; ours is a fixed grid inside
that interval, a per-sample worst case, and a budget stated above (docs/protocol.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnbench.attacks.autoattack import eot_logits_grad
from snnbench.attacks.base import ATTACKS, Attack, Cost, GradientParams
from snnbench.errors import BenchError
from snnbench.snn.classifier import AttackerView, SNNClassifier
from snnbench.snn.surrogate import ADAPTIVE, ASSG_A

#: candidate widths searched per surrogate (the first is the default and wins ties): ASSG's ``a`` on a grid
#: inside the official interval [0.35, 0.49]; a triangle's width (HART's gamma, official grid 0.10-2.45)
SEARCH_GRIDS: dict[str, tuple[float, ...]] = {
    ADAPTIVE: (ASSG_A, 0.35, 0.385, 0.455, 0.49),
    "triangle": (1.0, 0.25, 0.5, 1.5, 2.5),
}


def schedule(steps: int) -> list[int]:
    """The iterations (0-based) after which SA-PGD halves its step (official fixed schedule)."""
    k, k_min, dec = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, i = [], k - 1
    while i < steps:
        out.append(i)
        k = max(k - dec, k_min)
        i += k
    return out


def _per_sample_mean(t: Tensor) -> Tensor:
    return t.flatten(1).mean(1).view(-1, *([1] * (t.dim() - 1)))


def sapgd_run(view: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, eot: int) -> tuple[Tensor, Tensor]:
    """One SA-PGD run (module docstring): returns the adversarial examples and which samples they fool."""
    ce = lambda z, yy: F.cross_entropy(z, yy, reduction="none")  # noqa: E731
    t = 2 * torch.rand_like(x) - 1
    x_adv = (x + eps * t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))).clamp(0, 1)
    grad, logits, loss = eot_logits_grad(view, x_adv, y, ce, eot)
    fooled = logits.argmax(1) != y
    x_best_adv, x_best, loss_best = x_adv.clone(), x_adv.clone(), loss.clone()
    halve = set(schedule(steps))
    eta = float(eps)
    m = v = torch.zeros_like(x)
    for i in range(steps):
        with torch.no_grad():
            gn = grad / _per_sample_mean(grad.abs()).clamp_min(1e-30)
            g2 = grad * grad
            g2n = g2 / _per_sample_mean(g2).clamp_min(1e-30)
            m = gn if i == 0 else 0.5 * m + gn
            v = g2n if i == 0 else 0.8 * v + g2n
            step = torch.clamp(m / (v.sqrt() + 1e-12) * eta, -eta, eta)
            x_adv = torch.min(torch.max(x_adv + step, x - eps), x + eps).clamp(0, 1)
        grad, logits, loss = eot_logits_grad(view, x_adv, y, ce, eot)
        now = logits.argmax(1) != y
        x_best_adv[now] = x_adv[now]
        fooled |= now
        better = loss > loss_best
        x_best[better], loss_best[better] = x_adv[better], loss[better]
        if i in halve:
            eta /= 2.0
    keep = fooled.view(-1, *([1] * (x.dim() - 1)))
    return torch.where(keep, x_best_adv, x_best).detach(), fooled


def search_width(run, x: Tensor, y: Tensor, candidates: tuple[float, ...], short: int, full: int) -> Tensor:
    """Per-batch width search (module docstring). ``run(width, x, y, steps) -> (adv, fooled)``."""
    adv, fooled = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    wins = []
    for w in candidates:
        a, f = run(w, x, y, short)
        new = f & ~fooled
        adv[new] = a[new]
        fooled |= f
        wins.append(int(f.sum()))
    best = candidates[max(range(len(candidates)), key=lambda i: (wins[i], -i))]
    rest = (~fooled).nonzero().flatten()
    if len(rest):
        a, f = run(best, x[rest], y[rest], full)
        adv[rest] = torch.where(f.view(-1, *([1] * (x.dim() - 1))), a, adv[rest])
    return adv


@ATTACKS.register("sapgd")
class SAPGD(Attack):
    """SA-PGD (official ASSG_SAPGD step rule), under the attacker surrogate ``surrogate`` (``assg`` in the
    protocol), with an optional per-batch width search (module docstring)."""

    kind = "sapgd"
    description = "SA-PGD (ASSG paper's attack): Adam-like normalised steps, fixed halving, 100 iterations"

    @dataclass(frozen=True)
    class Params(GradientParams):
        steps: int = 100
        restarts: int = 1
        search: bool = False
        search_steps: int | None = None

    def __init__(self, params: Params, eps: float, alpha: float) -> None:
        super().__init__(params, eps, alpha)
        if params.steps < 1 or params.restarts < 1:
            raise BenchError(f"sapgd steps and restarts must be >= 1, got {params.steps}, {params.restarts}")
        if params.search and (params.surrogate or "triangle") not in SEARCH_GRIDS:
            raise BenchError(f"sapgd search: no width grid for surrogate {params.surrogate!r}; "
                             f"valid: {', '.join(SEARCH_GRIDS)}")
        if params.search_steps is not None and params.search_steps < 1:
            raise BenchError(f"sapgd search_steps must be >= 1, got {params.search_steps}")

    def _run(self, model: SNNClassifier, gamma: float | None, x: Tensor, y: Tensor, steps: int) -> tuple[Tensor, Tensor]:
        """``restarts`` SA-PGD runs at width ``gamma``, each on the samples still robust."""
        p = self.params
        adv, fooled = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(p.restarts):
            rest = (~fooled).nonzero().flatten()
            if not len(rest):
                break
            view = self._view_at(model, gamma)
            a, f = sapgd_run(view, x[rest], y[rest], self.eps, steps, self.eot_samples(model))
            adv[rest] = a
            fooled[rest] = f
        return adv, fooled

    def _view_at(self, model: SNNClassifier, gamma: float | None) -> AttackerView:
        """The attacker's view at surrogate width ``gamma`` (None: the configured one); a new view starts
        with fresh ASSG moments."""
        p = self.params
        return AttackerView(model, p.grad_mode, p.surrogate, p.gamma if gamma is None else gamma)

    def cost(self, randomized: bool = False) -> Cost:
        """The full run plus, with ``search``, one short run per candidate width; per restart, over EOT."""
        p = self.params
        steps = p.steps + 1
        if p.search:
            steps += len(SEARCH_GRIDS[p.surrogate or "triangle"]) * ((p.search_steps or max(5, p.steps // 10)) + 1)
        return Cost(gradients=steps * p.restarts * self.eot_for(randomized))

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        p = self.params
        if not p.search:
            return self._run(model, None, x, y, p.steps)[0]
        grid = SEARCH_GRIDS[p.surrogate or "triangle"]
        short = p.search_steps or max(5, p.steps // 10)
        return search_width(lambda w, xx, yy, n: self._run(model, w, xx, yy, n), x, y, grid, short, p.steps)

