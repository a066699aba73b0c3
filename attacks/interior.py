"""Off-corner attacks: adversarial examples that do not lie on the corners of the L-inf eps-ball.

Sign steps, the projection onto the ball, Square's vertex search and PGD transfer put almost every pixel of
an adversarial example at exactly ``x ± eps``. A model can recognise such corners (e.g. pixels exactly
``eps`` away from the data's gray levels) and undo them, and every corner-ending stage then credits it
robustness it does not have (issue 20: 56.7% credited against 9.2% true). An attacker is free to use any
point of the ball, so ``snn-standard-v2`` adds a stage that ends inside it:

``apgd_interior``: APGD (fra31's algorithm, :class:`~snnbench.attacks.autoattack.APGD`) at the radius
``radius * eps``, then every pixel's perturbation scaled by its own factor drawn uniformly from
``[1 - jitter, 1]`` (seeded); a sample keeps the jittered example where it still fools the model, else the
un-jittered one. Pixel offsets then take a continuum of values strictly inside the ball, none equal to
``±eps`` (for ``radius < 1``). Defaults 0.95 and 0.05 [I]: inside the ball by 5-10% of eps, so on an
honest model the stage is nearly as strong as APGD at ``eps`` (tests/test_attacks.py measures it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from snnbench.attacks.autoattack import APGD
from snnbench.attacks.base import ATTACKS, Attack, Cost, GradientParams
from snnbench.errors import BenchError
from snnbench.snn.classifier import SNNClassifier


@ATTACKS.register("apgd_interior")
class APGDInterior(Attack):
    """APGD at ``radius * eps`` with a per-pixel jitter of the perturbation's size (module docstring)."""

    kind = "apgd_interior"
    description = "APGD-CE ending inside the eps-ball (radius 0.95 eps, per-pixel jitter): no corner points"

    @dataclass(frozen=True)
    class Params(GradientParams):
        steps: int = 100
        loss: str = "ce"
        restarts: int = 1
        radius: float = 0.95
        jitter: float = 0.05

    def __init__(self, params: Params, eps: float, alpha: float) -> None:
        super().__init__(params, eps, alpha)
        if not 0.5 <= params.radius < 1.0:
            raise BenchError(f"apgd_interior radius must be in [0.5, 1), got {params.radius}")
        if not 0.0 < params.jitter <= 0.5:
            raise BenchError(f"apgd_interior jitter must be in (0, 0.5], got {params.jitter}")
        p = params
        self.inner = APGD(APGD.Params(eps=self.eps * p.radius, steps=p.steps, loss=p.loss, restarts=p.restarts,
                                      eot=p.eot, seed=p.seed, grad_mode=p.grad_mode, surrogate=p.surrogate,
                                      gamma=p.gamma), self.eps * p.radius, 0.0)

    def cost(self, randomized: bool = False) -> Cost:
        return self.inner.cost(randomized) + Cost(forwards=1)  # the jitter check

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        adv = self.inner.perturb(model, x, y)
        lo = 1.0 - self.params.jitter
        scale = lo + (1.0 - lo) * torch.rand(x.shape, device=x.device, dtype=x.dtype)
        jittered = (x + (adv - x) * scale).clamp(0.0, 1.0)
        with torch.no_grad():
            fooled = model(jittered).argmax(1) != y
        keep = fooled.view(-1, *([1] * (x.dim() - 1)))
        return torch.where(keep, jittered, adv)
