"""Random-noise baselines (no gradient): Gaussian and uniform noise (RAT §5.1, MPD-SGR Table 3).

They never call backward and never see the attacker's gradient mode. ``eps`` is the noise scale; the
named configs ``gaussian``/``uniform`` fix eps = 0.1 (MPD-SGR Table 3) instead of the dataset's budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from snnbench.attacks.base import ATTACKS, Attack
from snnbench.snn.classifier import SNNClassifier


@dataclass(frozen=True)
class NoiseParams:
    """``eps`` None = the dataset's budget; ``seed`` makes the noise reproducible per batch."""

    eps: float | None = None
    seed: int = 0


@ATTACKS.register("gaussian")
class GaussianNoise(Attack):
    """``x' = clip_[0,1](x + eps N(0, I))``: eps is the standard deviation (RAT ``attack/randn.py``;
    MPD-SGR writes N(0, eps), read as std [I]). Not L-inf bounded (``norm`` None): the evaluator checks
    only the [0, 1] range."""

    kind = "gaussian"
    description = "Gaussian noise, std eps, clipped to [0, 1] (no gradient)"
    uses_gradient = False
    gradient_free = True
    norm = None
    bounded = False
    Params = NoiseParams
    contract_opt_out = {"eot": "no gradient: there is nothing to average over draws"}

    @torch.no_grad()
    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        return torch.clamp(x + self.eps * torch.randn_like(x), min=0, max=1)


@ATTACKS.register("uniform")
class UniformNoise(Attack):
    """``x' = clip_[0,1](x + U(-eps, eps))`` (SR ``attack.py: Uniform``; MPD-SGR Table 3), L-inf bounded."""

    kind = "uniform"
    description = "uniform noise U(-eps, eps), clipped to [0, 1] (no gradient)"
    uses_gradient = False
    gradient_free = True
    Params = NoiseParams
    contract_opt_out = {"eot": "no gradient: there is nothing to average over draws"}

    @torch.no_grad()
    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        return torch.clamp(x + torch.empty_like(x).uniform_(-self.eps, self.eps), min=0, max=1)


@dataclass(frozen=True)
class WorstParams:
    """``eps`` None = the dataset's budget: evaluations with a larger eps are left out."""

    eps: float | None = None


@ATTACKS.register("worst")
class WorstCase(Attack):
    """Per-sample worst case over every other L-inf evaluation stored for the same model (same samples,
    eps <= this eps): a sample counts as robust only if no attack fooled it. Computed by the runner from
    stored per-sample outcomes (``from_store``); nothing is re-run."""

    kind = "worst"
    description = "per-sample worst case over the attacks already stored for this model (no rerun)"
    uses_gradient = False
    from_store = True
    Params = WorstParams
    contract_opt_out = {
        c: "computed from stored per-sample outcomes, never run on a model (tests/test_checks.py covers it)"
        for c in ("bounds", "deterministic", "eot")
    }

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        raise AssertionError("worst is computed from stored outcomes by the runner, never run on a model")
