"""RayS: a hard-label (decision-based) L-inf attack (Chen & Gu, KDD 2020, "RayS: A Ray Searching Method
for Hard-label Adversarial Attack").

It uses only the model's predicted label, never its scores or gradients, so a model whose scores mislead
(reversed confidences, flat or random gradients, a hidden margin) cannot steer it. RayS searches for the
ray direction ``s in {-1, +1}^D`` whose decision boundary is nearest in L-inf: the boundary radius along
``s`` is ``r(s) = min { r : f(clip(x + r s)) != y }``; a sample is broken at ``eps`` when ``r(s) <= eps``.

Search (the paper's Alg. 1-2, our code): start from ``s = +1`` with ``r = inf``; at block level ``l`` the
pixels are cut into ``2^l`` contiguous blocks and each block's sign is flipped in turn; a flip is kept
when the new ray crosses the boundary before the best radius so far (one query at that radius, then a
binary search to tolerance ``tol * eps``). Every query is one forward on the still-working samples; a
sample stops as soon as its radius is at most ``eps`` (we only need the verdict at eps) or its query
budget ``queries`` is spent. The example returned for a broken sample lies at the ray's radius ``r <=
eps``, then every pixel's offset is scaled by a seeded factor in ``[1 - jitter, 1]`` where that still
fools the model, so the example is neither on the eps-ball's corners nor on one radius's corners.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from snnbench.attacks.base import ATTACKS, Attack, Cost
from snnbench.errors import BenchError
from snnbench.snn.classifier import SNNClassifier


@dataclass(frozen=True)
class RaySParams:
    """``queries``: label queries per sample (the paper's L-inf budget is 10000); ``tol``: binary search
    tolerance as a fraction of eps; ``jitter``: the per-pixel shrink applied to a found example."""

    eps: float | None = None
    queries: int = 2000
    tol: float = 0.01
    jitter: float = 0.05
    seed: int = 0


@ATTACKS.register("rays")
class RayS(Attack):
    """RayS hard-label L-inf attack (module docstring)."""

    kind = "rays"
    description = "RayS: hard-label ray search (decision only), 2000 queries"
    uses_gradient = False
    gradient_free = True
    Params = RaySParams
    contract_opt_out = {"eot": "decision-based: it queries labels, there is no gradient to average"}

    def __init__(self, params: RaySParams, eps: float, alpha: float) -> None:
        super().__init__(params, eps, alpha)
        if params.queries < 1:
            raise BenchError(f"rays queries must be >= 1, got {params.queries}")
        if not 0 < params.tol <= 0.5:
            raise BenchError(f"rays tol must be in (0, 0.5], got {params.tol}")
        if not 0 <= params.jitter <= 0.5:
            raise BenchError(f"rays jitter must be in [0, 0.5], got {params.jitter}")

    def cost(self, randomized: bool = False) -> Cost:
        return Cost(forwards=self.params.queries)  # at most: a sample stops once broken

    @torch.no_grad()
    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        p, eps = self.params, self.eps
        b = len(x)
        dim = x[0].numel()
        shape = (-1, *([1] * (x.dim() - 1)))
        sgn = torch.ones_like(x)
        r_best = torch.full((b,), float("inf"), device=x.device)
        used = torch.zeros(b, dtype=torch.long, device=x.device)

        def fools(idx: Tensor, s: Tensor, r: Tensor) -> Tensor:
            used[idx] += 1
            xa = (x[idx] + r.clamp(max=1.0).view(shape) * s).clamp(0, 1)
            return model(xa).argmax(1) != y[idx]

        level, block = 0, 0
        while True:
            work = ((r_best > eps) & (used < p.queries)).nonzero().flatten()
            if not len(work):
                break
            n_blocks = 2 ** level
            size = -(-dim // n_blocks)
            start, end = block * size, min(dim, (block + 1) * size)
            trial = sgn[work].clone().view(len(work), -1)
            if level > 0 or block > 0:  # the first query tests s = +1 itself
                trial[:, start:end] *= -1
            trial = trial.view_as(x[work])
            self._search(fools, work, trial, r_best, sgn, eps * p.tol)
            block += 1
            if block == n_blocks or end >= dim:
                level, block = min(level + 1, max(dim.bit_length(), 1)), 0
        return self._finish(model, x, y, sgn, r_best)

    @staticmethod
    def _search(fools, work: Tensor, trial: Tensor, r_best: Tensor, sgn: Tensor, tol: float) -> None:
        """Keep ``trial`` for the samples whose boundary along it is nearer than ``r_best`` (binary search)."""
        r_now = r_best[work]
        hit = fools(work, trial, r_now)  # crosses before the current best radius?
        if not hit.any():
            return
        idx, s = work[hit], trial[hit]
        lo = torch.zeros(len(idx), device=r_best.device)
        hi = r_now[hit].clamp(max=1.0)
        active = torch.ones(len(idx), dtype=torch.bool, device=r_best.device)
        while active.any():
            a = active.nonzero().flatten()
            mid = (lo[a] + hi[a]) / 2
            ok = fools(idx[a], s[a], mid)
            hi[a[ok]], lo[a[~ok]] = mid[ok], mid[~ok]
            active = (hi - lo) > tol
        better = hi < r_best[idx]
        r_best[idx[better]] = hi[better]
        sgn[idx[better]] = s[better]

    def _finish(self, model: SNNClassifier, x: Tensor, y: Tensor, sgn: Tensor, r_best: Tensor) -> Tensor:
        """Examples at each broken sample's radius (jittered where that still fools); others unchanged."""
        shape = (-1, *([1] * (x.dim() - 1)))
        broken = r_best <= self.eps
        r = torch.where(broken, r_best, torch.zeros_like(r_best)).view(shape)
        adv = (x + r * sgn).clamp(0, 1)
        if self.params.jitter > 0 and broken.any():
            lo = 1.0 - self.params.jitter
            jit = (x + (adv - x) * (lo + (1 - lo) * torch.rand(x.shape, device=x.device))).clamp(0, 1)
            keep = (model(jit).argmax(1) != y) & broken
            adv = torch.where(keep.view(shape), jit, adv)
        return torch.minimum(torch.maximum(adv, x - self.eps), x + self.eps).clamp(0, 1)
