"""MPD-SGR: membrane-potential-distribution-driven surrogate-gradient regularisation (Jiang et al., AAAI 2026;
docs/defenses.md 2.6)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snnbench.defenses.base import DEFENSES, Defense, StepState
from snnbench.errors import BenchError
from snnbench.snn.fused import VPenalty, fused_penalty
from snnbench.snn.neuron import LIFNeuron

SIGMA_EPS = 1e-5

#: half-width a of the gradient-available interval [-a, a] of each surrogate of width gamma.
#: Compact support (triangle, rectangle): the support itself, where h > 0 - MPD-SGR Eq. 7 gives [-gamma, gamma]
#: for its triangle; Wu et al.'s rectangle h = 1[|z| < gamma/2]/gamma has [-gamma/2, gamma/2].
#: Unbounded support (sigmoid, superspike, atan): h > 0 everywhere, so the support would make Omega = 1 for
#: every distribution; the paper's Table 4 text does not define their interval in the available main text,
#: so we take where h is at least half its peak, h(z) >= h(0)/2 (full width at half maximum) [I].
HALF_WIDTH = {
    "triangle": lambda g: g,
    "rectangle": lambda g: g / 2,
    "sigmoid": lambda g: 2 * math.atanh(1 / math.sqrt(2)) / g,  # g s(1-s) = g/8  <=>  s(1-s) = 1/8
    "superspike": lambda g: (math.sqrt(2) - 1) / g,  # 1/(1 + g|z|)^2 = 1/2
    "atan": lambda g: 2 / (math.pi * g),  # 1/(1 + (pi g z / 2)^2) = 1/2
}


def gradient_interval(surrogate: str, gamma: float) -> float:
    """Half-width a of the surrogate's gradient-available interval [-a, a] (see ``HALF_WIDTH``)."""
    if surrogate not in HALF_WIDTH:
        raise BenchError(f"mpd_sgr: no gradient-available interval for surrogate {surrogate!r}; "
                         f"valid: {', '.join(sorted(HALF_WIDTH))}")
    return float(HALF_WIDTH[surrogate](gamma))


def overlap(mu: Tensor, sigma: Tensor, half_width: float) -> Tensor:
    """Omega = Phi((mu + a)/sigma) - Phi((mu - a)/sigma) (MPD-SGR Eq. 13 with a = gamma for the triangle):
    the probability mass of N(mu, sigma^2) inside the gradient-available interval [-a, a]."""
    return torch.special.ndtr((mu + half_width) / sigma) - torch.special.ndtr((mu - half_width) / sigma)


def batch_moments(u: Tensor) -> tuple[Tensor, Tensor]:
    """mu, sigma per (t, c) of U_bar [T, B, C, H, W] (conv) or [T, B, F] (FC, c = feature): differentiable
    mini-batch moments over (B, H, W) ("the b-th batch", Eq. 16), sigma + 1e-5 [I: the appendix is
    unavailable]."""
    dims = (1, *range(3, u.dim()))  # batch and spatial axes
    return u.mean(dims), u.std(dims) + SIGMA_EPS


def layer_overlap(neuron: LIFNeuron, gamma: float | None = None, surrogate: str | None = None) -> Tensor:
    """Omega of one layer from its recorded pre-spike potentials U_bar = v_pre - V_th, mean over (t, c).

    The interval follows the surrogate the neuron actually trains with (``neuron.spec.surrogate`` and
    ``gamma``) unless ``surrogate``/``gamma`` are given.
    """
    assert neuron.v_pre is not None, "MPD-SGR needs recorded potentials (records = True)"
    a = gradient_interval(surrogate or neuron.spec.surrogate, neuron.spec.gamma if gamma is None else gamma)
    # --- fused backend (bench/snn/fused.py): the neuron computed sum_{t,c} overlap(mu, sigma, a) from the
    # same moments and folds its V-gradient (affine in V per (t, c)) into its backward; None on the
    # reference backend (and on a run's first recorded step)
    fused = fused_penalty(neuron, VPenalty.moments(overlap, a, eps=SIGMA_EPS))
    if fused is not None:
        return fused / (neuron.v_pre.shape[0] * neuron.v_pre.shape[2])  # mean over (t, c)
    # --- reference: autograd through the recorded V
    mu, sigma = batch_moments(neuron.v_pre - neuron.spec.v_th)
    return overlap(mu, sigma, a).mean()


@DEFENSES.register("mpd_sgr")
class MPDSGR(Defense):
    """MPD-SGR (Jiang et al., AAAI 2026): reduce the overlap of the membrane-potential distribution with the
    surrogate's gradient-available interval.

    L = CE + eta * L_MPD, L_MPD = (1/(L C T)) sum_{l,c,t} [Phi((mu+a)/sigma) - Phi((mu-a)/sigma)]
    (Eq. 13, 16-18), on the pre-spike potential U_bar = U - V_th of every spiking layer (the output layer is a
    plain Linear here, so all spiking layers count). Channels differ per layer, so the sum is taken as the
    mean over layers of per-layer means over (c, t) [I]. mu/sigma: differentiable mini-batch moments
    (:func:`batch_moments`) [I; Appendix C/D - eta and the moment estimation - is not in any text we could
    reach: arXiv/AAAI main text only]. a: the half-width of the gradient-available interval of the surrogate
    the model trains with (:func:`gradient_interval`: gamma for the triangle of Eq. 7, gamma/2 for the
    rectangle, FWHM for unbounded surrogates [I]); ``gamma`` overrides the neuron's width.

    eta is unknown -> 1.0 [I]: Omega lies in [0, 1], so eta = 1 weighs it like CE. On digits (small_conv, T=4,
    15 epochs) large eta lets the network lower Omega by inflating BN scales and firing less; the
    measured eta sensitivity (PGD-7 0.54 at eta <= 1, 0.30 at 3, 0.05 at 10; firing rate 0.25 -> 0.05) is in
    docs/tables.md "MPD-SGR: eta on digits", with the command.
    AT: PGD eps 2/255, k = 2 [P] (the base recipe). Deterministic at inference.
    """

    perf_workload = ("mpd", "fused")  # the recorded potentials and the V-penalty

    paper = "Jiang et al., AAAI 2026 (MPD-SGR)"
    description = (
        "penalise the Gaussian mass of pre-spike potentials inside the surrogate's gradient-available interval"
    )
    records = True

    @dataclass(frozen=True)
    class Params:
        eta: float = 1.0
        gamma: float | None = None

        def __post_init__(self) -> None:
            if not self.eta >= 0:
                raise BenchError(f"mpd_sgr.eta must be >= 0, got {self.eta}")
            if self.gamma is not None and not self.gamma > 0:
                raise BenchError(f"mpd_sgr.gamma must be > 0, got {self.gamma}")

    mechanism_sense = {"overlap": "lower"}

    def mechanism(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        """MPD-SGR's target: the mean over layers of the potentials' mass inside the surrogate's gradient
        interval (Eq. 13's Omega), on clean samples."""
        with torch.no_grad(), model.recording() as neurons:
            model(x)
            vals = [float(layer_overlap(n)) for n in neurons if n.v_pre is not None]
        return {"overlap": sum(vals) / len(vals)} if vals else {}

    def regularizer(self, state: StepState) -> Tensor | None:
        if self.params.eta == 0 or not state.neurons:
            return None
        per_layer = torch.stack([layer_overlap(n, self.params.gamma) for n in state.neurons])
        return self.params.eta * per_layer.mean()
