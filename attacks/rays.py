"""RayS: a hard-label (decision-based) L-inf attack (Chen & Gu, KDD 2020, "RayS: A Ray Searching Method
for Hard-label Adversarial Attack").

It uses only the model's predicted label, never its scores or gradients, so a model whose scores mislead
(reversed confidences, flat or random gradients, a hidden margin) cannot steer it. RayS searches for the
ray direction ``s in {-1, +1}^D`` whose decision boundary is nearest in L-inf: the boundary radius along
``s`` is ``r(s) = min { r : f(clip(x + r s)) != y }``; a sample is broken at ``eps`` when ``r(s) <= eps``.

Search (the paper's Alg. 1-2, our code): start from ``s = +1`` with ``r = inf``; at block level ``l`` the
pixels are cut into ``2^l`` contiguous blocks and each block's sign is flipped in turn; a flip is kept
when the new ray crosses the boundary before the best radius so far (one query at that radius, then a
binary search to tolerance ``tol * eps``). Each sample runs its own search (:class:`_SearchState`) and
every forward carries the next query of every sample still working, trial or binary-search step alike; a
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
        st = _SearchState(x, p.queries, eps, eps * p.tol)
        while True:
            rows = st.active()
            if not len(rows):
                break
            r, s = st.query(rows)
            xr = x[rows]
            xa = (xr + r.clamp(max=1.0).view(-1, *([1] * (x.dim() - 1))) * s.view_as(xr)).clamp(0, 1)
            st.answer(rows, model(xa).argmax(1) != y[rows])
        return self._finish(model, x, y, st.sgn.view_as(x), st.r_best)

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


class _SearchState:
    """Every sample's own RayS search (the paper's Alg. 1-2), advanced one query per forward.

    A sample is either trying a block flip (one query at its best radius so far) or binary-searching
    the boundary radius along an accepted flip. Each forward carries the next query of every sample still
    working, so a sample in a binary search no longer holds the others at their block, and no forward
    carries only the few samples that are searching. Each sample's queries and their order are those of
    the search run alone (``tests/test_snn_attacks.py``): block levels ``l = 0, 1, ...`` cut the pixels
    into ``2^l`` contiguous blocks (level 0: ``s = +1`` itself), a flip is tried while the sample's radius
    is above eps and its budget is not spent; a started binary search runs to the tolerance (at least one
    query), then the flip is kept if its radius is smaller.
    """

    def __init__(self, x: Tensor, queries: int, eps: float, tol: float) -> None:
        b, dev = len(x), x.device
        self.dim, self.queries, self.eps, self.tol = x[0].numel(), queries, eps, tol
        self.max_level = max(self.dim.bit_length(), 1)
        self.sgn = torch.ones(b, self.dim, dtype=x.dtype, device=dev)  # best direction so far
        self.r_best = torch.full((b,), float("inf"), device=dev)
        self.used = torch.zeros(b, dtype=torch.long, device=dev)
        self.level = torch.zeros(b, dtype=torch.long, device=dev)
        self.block = torch.zeros(b, dtype=torch.long, device=dev)
        self.searching = torch.zeros(b, dtype=torch.bool, device=dev)
        self.lo = torch.zeros(b, device=dev)
        self.hi = torch.zeros(b, device=dev)
        self.cand = torch.ones_like(self.sgn)  # the direction being tried or searched
        self.end = torch.zeros(b, dtype=torch.long, device=dev)  # end of the block being tried
        self.pos = torch.arange(self.dim, device=dev)  # pixel index, to cut blocks

    def active(self) -> Tensor:
        """Samples with a query to make: searching, or above eps with budget left."""
        trying = ~self.searching & (self.r_best > self.eps) & (self.used < self.queries)
        return (self.searching | trying).nonzero().flatten()

    def query(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(radius, direction) of each row's next query; starts a block trial for rows not searching."""
        new = rows[~self.searching[rows]]
        if len(new):
            n_blocks = 2 ** self.level[new]
            size = -(-self.dim // n_blocks)  # ceil
            start = self.block[new] * size
            end = torch.clamp(start + size, max=self.dim)
            flip = (self.pos >= start[:, None]) & (self.pos < end[:, None])
            flip &= ((self.level[new] > 0) | (self.block[new] > 0))[:, None]  # level 0: s = +1 itself
            self.cand[new] = torch.where(flip, -self.sgn[new], self.sgn[new])
            self.end[new] = end
        r = torch.where(self.searching[rows], (self.lo[rows] + self.hi[rows]) / 2, self.r_best[rows])
        return r, self.cand[rows]

    def answer(self, rows: Tensor, fooled: Tensor) -> None:
        """Apply each row's verdict: a trial that crosses before the best radius starts a binary search;
        a search step halves the interval; a finished trial or search moves to the next block."""
        self.used[rows] += 1
        was_searching = self.searching[rows]
        srch, trial = rows[was_searching], rows[~was_searching]
        f_s, f_t = fooled[was_searching], fooled[~was_searching]
        mid = (self.lo[srch] + self.hi[srch]) / 2
        self.hi[srch] = torch.where(f_s, mid, self.hi[srch])
        self.lo[srch] = torch.where(f_s, self.lo[srch], mid)
        hit = trial[f_t]
        self.lo[hit] = 0.0
        self.hi[hit] = self.r_best[hit].clamp(max=1.0)
        self.searching[hit] = True
        done = srch[(self.hi[srch] - self.lo[srch]) <= self.tol]
        better = done[self.hi[done] < self.r_best[done]]
        self.r_best[better] = self.hi[better]
        self.sgn[better] = self.cand[better]
        self.searching[done] = False
        self._next_block(torch.cat([trial[~f_t], done]))

    def _next_block(self, rows: Tensor) -> None:
        """Advance to the next block; after the last block of a level, to the next level's first."""
        self.block[rows] += 1
        wrap = rows[(self.block[rows] == 2 ** self.level[rows]) | (self.end[rows] >= self.dim)]
        self.level[wrap] = torch.clamp(self.level[wrap] + 1, max=self.max_level)
        self.block[wrap] = 0
