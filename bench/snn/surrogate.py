"""Surrogate gradients for the Heaviside spike function.

Forward is always H(z) = 1[z >= 0] with z = V - V_th; backward replaces dH/dz by h(z), a pseudo-derivative
of width ``gamma``. Formulas follow docs/defenses.md section 1.2 (triangle "ZIF" of the Ding et al. code,
sigmoid and atan of the SR code) and MPD-SGR Table 4 (rectangle of Wu et al. 2018, SuperSpike of Zenke &
Ganguli 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

SurrogateGrad = Callable[[Tensor, float], Tensor]


def triangle(z: Tensor, gamma: float) -> Tensor:
    """h(z) = (1/gamma^2) max(gamma - |z|, 0)  (MPD-SGR Eq. 7; SNN-RAT `ZIF`)."""
    return (gamma - z.abs()).clamp(min=0) / (gamma * gamma)


def rectangle(z: Tensor, gamma: float) -> Tensor:
    """h(z) = (1/gamma) 1[|z| < gamma/2]  (Wu et al. 2018, rectangular pseudo-derivative)."""
    return (z.abs() < gamma / 2).to(z.dtype) / gamma


def sigmoid(z: Tensor, gamma: float) -> Tensor:
    """h(z) = gamma sigma(gamma z)(1 - sigma(gamma z))  (SR code `Sig`, used with gamma = 4)."""
    s = torch.sigmoid(gamma * z)
    return gamma * s * (1 - s)


def superspike(z: Tensor, gamma: float) -> Tensor:
    """h(z) = 1 / (1 + gamma |z|)^2  (SuperSpike fast-sigmoid derivative; gamma is the steepness)."""
    return 1.0 / (1.0 + gamma * z.abs()) ** 2


def atan(z: Tensor, gamma: float) -> Tensor:
    """h(z) = (gamma/2) / (1 + (pi/2 gamma z)^2)  (SR code `Atan`, used with gamma = 2)."""
    return (gamma / 2) / (1 + (math.pi / 2 * gamma * z) ** 2)


SURROGATES: dict[str, SurrogateGrad] = {
    "triangle": triangle,
    "rectangle": rectangle,
    "sigmoid": sigmoid,
    "superspike": superspike,
    "atan": atan,
}


#: attacker-only surrogate whose width follows the membrane potentials of the current input (ASSG-style)
ADAPTIVE = "assg"
ATTACK_SURROGATES: tuple[str, ...] = (*SURROGATES, ADAPTIVE)
ASSG_COVERAGE = 0.5
_QUANTILE_MAX = 1 << 20  # torch.quantile's input limit is 2^24; a strided subsample is plenty


def assg_width(z: Tensor, scale: float = 1.0, coverage: float = ASSG_COVERAGE, floor: float = 1e-3) -> float:
    """Adaptive sharpness (ASSG-style, Wang et al. 2025, arXiv 2512.22522): the triangle width at which
    the surrogate's support |z| < width covers ``coverage`` of this layer's current ``|V - V_th|``.

    Recomputed on every forward, so the sharpness follows the input distribution across attack
    iterations: when potentials drift away from threshold (the gradient of a fixed narrow surrogate
    vanishes there) the surrogate widens; when they crowd the threshold it sharpens. Our reading of
    ASSG: the paper adapts the shape to the input distribution to mitigate vanishing gradients; its exact
    update rule is not transcribed here, so this is a quantile rule with coverage 1/2 [I], times ``scale``.
    """
    a = z.detach().abs().flatten()
    if a.numel() > _QUANTILE_MAX:
        a = a[:: a.numel() // _QUANTILE_MAX + 1]
    if a.numel() == 0:
        return 1.0
    w = float(torch.quantile(a.float(), coverage))
    return max(w * scale, floor)


class SpikeFn(torch.autograd.Function):
    """Heaviside forward, surrogate backward."""

    @staticmethod
    def forward(ctx, z: Tensor, grad_fn: SurrogateGrad, gamma: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.grad_fn, ctx.gamma = grad_fn, gamma
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return grad_out * ctx.grad_fn(z, ctx.gamma), None, None


def spike(z: Tensor, surrogate: str = "triangle", gamma: float = 1.0) -> Tensor:
    """Emit spikes H(z) with the named surrogate gradient of width ``gamma``; ``assg``: a triangle whose
    width adapts to ``z`` (:func:`assg_width`, ``gamma`` scales it)."""
    if surrogate == ADAPTIVE:
        return SpikeFn.apply(z, triangle, assg_width(z, gamma))
    return SpikeFn.apply(z, SURROGATES[surrogate], gamma)
