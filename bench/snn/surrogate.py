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


#: attacker-only surrogates whose shape follows the membrane potentials (they need snnbench neurons, which
#: keep their state): ``assg`` (Wang et al. 2025) and ``pdsg`` (potential-dependent, CVPR 2025)
ADAPTIVE = "assg"
PDSG = "pdsg"
STATEFUL_SURROGATES: tuple[str, ...] = (ADAPTIVE, PDSG)
#: attacker-only triangle whose width covers half of the layer's current |V - V_th| (ours; stateless)
QUANTILE = "quantile"
ATTACK_SURROGATES: tuple[str, ...] = (*SURROGATES, QUANTILE, *STATEFUL_SURROGATES)
#: attacker surrogates whose width is read from the membrane potentials as the neuron runs: only snnbench
#: neurons provide them, on their reference loop
POTENTIAL_SURROGATES: tuple[str, ...] = (*STATEFUL_SURROGATES, QUANTILE)
QUANTILE_COVERAGE = 0.5
#: attacker surrogates whose width is a statistic of the whole batch (a sample's gradient depends on which
#: samples share its batch): an attack must not shrink the batch as samples fall (no early stop)
BATCH_SURROGATES: tuple[str, ...] = (QUANTILE, PDSG)
_QUANTILE_MAX = 1 << 20  # torch.quantile's input limit is 2^24; a strided subsample is plenty


def quantile_width(z: Tensor, scale: float = 1.0, coverage: float = QUANTILE_COVERAGE, floor: float = 1e-3) -> float:
    """The ``quantile`` attacker surrogate's width (snnbench's own rule, not ASSG's): the triangle width at
    which the surrogate's support ``|z| < width`` covers ``coverage`` of this layer's current ``|V - V_th|``,
    times ``scale``. Recomputed on every forward, so it follows the potentials across attack iterations:
    when they drift away from threshold (where a fixed narrow surrogate's gradient vanishes) it widens.

    It was snn-standard-v1's guess at ASSG (its ``assg`` stage); measured on the digits recipes it breaks
    samples that the faithful ASSG + SA-PGD stage does not (docs/protocol.md), so v2 keeps it under its own
    name beside the faithful one."""
    a = z.detach().abs().flatten()
    if a.numel() > _QUANTILE_MAX:
        a = a[:: a.numel() // _QUANTILE_MAX + 1]
    if a.numel() == 0:
        return 1.0
    w = float(torch.quantile(a.float(), coverage))
    return max(w * scale, floor)
#: ASSG defaults of the official code (craree/Towards-Reliable-Evaluation-...: ``ASSGrad`` in my_node.py and
#: ``ASSG_SAPGD``/evaluate.py): ``a`` (the paper's A/2, the gradient-vanishing bound), relax, beta_1, beta_2
ASSG_A, ASSG_RELAX, ASSG_BETAS = 0.425, 1.5, (0.9, 0.9)
#: the official search interval of ``a`` (evaluate.py, ternary search on the test set)
ASSG_A_RANGE = (0.35, 0.49)


class ASSGMoments:
    """Adaptive Sharpness Surrogate Gradient (ASSG; Wang et al. 2025, arXiv 2512.22522, official ``ASSGrad``).

    Per neuron and per time step ``t``, moments of ``|u|`` (``u = V - V_th``, the pre-spike potential)
    are kept across the attack's iterations (exponential moving averages, initial ``M = 1``, ``D = 0``):

        M_t <- b1 M_t + (1 - b1) |u_t|
        D_t <- b2 D_t + (1 - b2) | |u_t| - M_t |        (with the already-updated M_t, as the code does)
        alpha_t = k / (M_t + relax D_t + 1e-4),   k = 2 tan(pi a) / pi

    and the backward is the arctan surrogate of sharpness ``alpha_t``: ``h(u) = (alpha/2) / (1 + (pi/2 alpha
    u)^2)``. Neurons whose potentials stay far from threshold get a wide surrogate (their gradient does not
    vanish), neurons near it a sharp one. The state is per sample (the moments have the shape of ``u``),
    updated on every forward that builds a graph (each attack iteration; scoring passes under ``no_grad``
    do not move it), and starts afresh when the batch shape changes or :meth:`reset` is called (the
    attack does so at the start of every batch, as the official code rebuilds ``ASSGrad`` per ``perturb``).
    """

    def __init__(self, a: float = ASSG_A, relax: float = ASSG_RELAX, betas: tuple[float, float] = ASSG_BETAS) -> None:
        self.a, self.relax, self.betas = float(a), float(relax), betas
        self.k = 2 * math.tan(math.pi * self.a) / math.pi
        self.M: dict[int, Tensor] = {}
        self.D: dict[int, Tensor] = {}
        #: the official ``eot_flag``: moments frozen (used by scripts/assg_official.py's sequential EOT)
        self.frozen = False

    def reset(self) -> None:
        self.M.clear()
        self.D.clear()

    def sharpness(self, t: int, u: Tensor, update: bool) -> Tensor:
        """``alpha_t`` for the potentials ``u`` of step ``t`` (updating the moments first when ``update``)."""
        m, d = self.M.get(t), self.D.get(t)
        if m is None or d is None or m.shape != u.shape or m.device != u.device:
            m, d = torch.ones_like(u, dtype=torch.float32), torch.zeros_like(u, dtype=torch.float32)
        if update and not self.frozen:
            b1, b2 = self.betas
            a = u.detach().abs().float()
            m = b1 * m + (1 - b1) * a
            d = b2 * d + (1 - b2) * (a - m).abs()
            self.M[t], self.D[t] = m, d
        return (self.k / (m + self.relax * d + 1e-4)).to(u.dtype)


def pdsg(z: Tensor, sigma: Tensor) -> Tensor:
    """PDSG backward (ryime/PDSG-SDA ``PDSG``): a Gaussian density of std ``sigma`` centred ``sigma / 2`` above
    threshold, ``h(u) = exp(-((u - sigma/2) / (sqrt(2) sigma))^2) / (sqrt(2 pi) sigma)``."""
    return torch.exp(-(((z - 0.5 * sigma) / (math.sqrt(2) * sigma)) ** 2)) / (math.sqrt(2 * math.pi) * sigma)


def pdsg_sigma(history: list[Tensor]) -> Tensor:
    """PDSG's width: the (unbiased) standard deviation of the detached potentials of steps ``0..t`` of this
    forward, pooled over time, batch and space per channel (``[B, C, H, W]``: dims T, B, H, W) or per feature
    (``[B, F]``); 0 or undefined (one element) becomes 1, as in the official code. Broadcasts like ``u``."""
    v = torch.stack([h.detach().float() for h in history])  # [t+1, B, ...]
    dims = (0, 1, *range(3, v.dim())) if v.dim() >= 4 else (0, 1)
    sigma = v.std(dim=dims, keepdim=True)[0] if v.shape[0] * v.shape[1] > 1 else torch.ones_like(v[0])
    sigma = torch.where(torch.isfinite(sigma) & (sigma > 0), sigma, torch.ones_like(sigma))
    return sigma.to(history[-1].dtype)


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


def spike(z: Tensor, surrogate: str = "triangle", gamma: float | Tensor = 1.0) -> Tensor:
    """Emit spikes H(z) with the named surrogate gradient of width ``gamma`` (a tensor broadcasting like
    ``z`` gives a per-neuron width; ``quantile``: a triangle of :func:`quantile_width`, ``gamma`` scaling it;
    the stateful ``assg``/``pdsg`` widths come from the neuron)."""
    if surrogate == QUANTILE:
        return SpikeFn.apply(z, triangle, quantile_width(z, float(gamma)))
    return SpikeFn.apply(z, SURROGATES[surrogate], gamma)


def stateful_spike(z: Tensor, surrogate: str, width: Tensor) -> Tensor:
    """Spikes with a stateful attacker surrogate: ``assg`` (arctan of sharpness ``width``) or ``pdsg``
    (Gaussian of std ``width``)."""
    return SpikeFn.apply(z, atan if surrogate == ADAPTIVE else pdsg, width)
