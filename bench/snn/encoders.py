"""Input encoders: image [B, C, H, W] -> time-merged input [T*B, C, H, W] for the first layer.

``uses_normalization`` tells the classifier whether to apply the dataset mean/std first (direct coding does,
as in the Ding et al. code; Poisson rate coding works on raw [0, 1] intensities).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from snnbench.kind_table import Registry

ENCODERS: Registry[type[nn.Module]] = Registry("encoder")
"""Input encoders by the name a model's ``encoder:`` gives in registry.yaml."""


@ENCODERS.register("direct")
class DirectEncoder(nn.Module):
    """Direct (constant) coding: the normalised image repeated T times (docs/defenses.md 1.3)."""

    uses_normalization = True
    randomized = False

    def forward(self, x: Tensor, T: int) -> Tensor:
        return x.unsqueeze(0).expand(T, *x.shape).flatten(0, 1)  # [T*B, C, H, W]


@ENCODERS.register("poisson")
class PoissonEncoder(nn.Module):
    """Poisson/Bernoulli rate coding: S[t] ~ Bernoulli(x) per pixel and step, on raw [0, 1] pixels.

    Gradient: straight-through (dS/dx = 1), the usual choice for attacking rate-coded inputs.
    Stochastic at inference, so models using it are randomized and get EOT.
    """

    uses_normalization = False
    randomized = True

    def forward(self, x: Tensor, T: int) -> Tensor:
        xt = x.clamp(0, 1).unsqueeze(0).expand(T, *x.shape)
        s = (torch.rand_like(xt) < xt).to(x.dtype)
        return (xt + (s - xt).detach()).flatten(0, 1)  # [T*B, C, H, W]

