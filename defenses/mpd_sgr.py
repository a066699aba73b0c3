"""MPD-SGR: membrane-potential-distribution-driven surrogate-gradient regularisation (Jiang et al., AAAI 2026;
spec/defenses.md 2.6)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.errors import BenchError
from bench.snn.fused import VPenalty, fused_penalty
from bench.snn.neuron import LIFNeuron
from defenses.base import DEFENSES, Defense, StepState

SIGMA_EPS = 1e-5


def overlap(mu: Tensor, sigma: Tensor, gamma: float) -> Tensor:
    """Omega = Phi((mu + gamma)/sigma) - Phi((mu - gamma)/sigma) (MPD-SGR Eq. 13): the probability mass of
    N(mu, sigma^2) inside the surrogate's gradient-available interval [-gamma, gamma]."""
    return torch.special.ndtr((mu + gamma) / sigma) - torch.special.ndtr((mu - gamma) / sigma)


def layer_overlap(neuron: LIFNeuron, gamma: float | None = None) -> Tensor:
    """Omega per (t, c) of one layer from its recorded pre-spike potentials, mean over (t, c).

    U_bar = v_pre - V_th, shape [T, B, C, H, W] (conv) or [T, B, F] (FC, c = feature). mu and sigma are the
    differentiable batch moments over (B, H, W) (FC: over B) per (t, c), sigma + 1e-5 [I, spec 2.6].
    """
    assert neuron.v_pre is not None, "MPD-SGR needs recorded potentials (records = True)"
    g = neuron.spec.gamma if gamma is None else gamma
    # --- fused backend (bench/snn/fused.py): the neuron computed sum_{t,c} overlap(mu, sigma, g) from the
    # same moments and folds its V-gradient (affine in V per (t, c)) into its backward; None on the
    # reference backend (and on a run's first recorded step)
    fused = fused_penalty(neuron, VPenalty.moments(overlap, g, eps=SIGMA_EPS))
    if fused is not None:
        return fused / (neuron.v_pre.shape[0] * neuron.v_pre.shape[2])  # mean over (t, c)
    # --- reference: autograd through the recorded V
    u = neuron.v_pre - neuron.spec.v_th
    dims = (1, *range(3, u.dim()))  # batch and spatial axes
    mu = u.mean(dims)  # [T, C]
    sigma = u.std(dims) + SIGMA_EPS
    return overlap(mu, sigma, g).mean()


@DEFENSES.register("mpd_sgr")
class MPDSGR(Defense):
    """MPD-SGR (Jiang et al., AAAI 2026): reduce the overlap of the membrane-potential distribution with the
    surrogate's gradient-available interval.

    L = CE + eta * L_MPD, L_MPD = (1/(L C T)) sum_{l,c,t} [Phi((mu+gamma)/sigma) - Phi((mu-gamma)/sigma)]
    (Eq. 13, 16-18), on the pre-spike potential U_bar = U - V_th of every spiking layer (the output layer is a
    plain Linear here, so all spiking layers count). Channels differ per layer, so the sum is taken as the
    mean over layers of per-layer means over (c, t) [I]. mu/sigma: differentiable mini-batch moments over
    (B, H, W) per (l, c, t) [I; the appendix is unavailable]. gamma: the neuron's surrogate width (triangle,
    gamma = 1 as Ding et al. [P+I]) unless ``gamma`` is given.

    eta is unknown (Appendix C unavailable) -> 1.0 [I]: Omega lies in [0, 1], so eta = 1 weighs it like CE.
    AT: PGD eps 2/255, k = 2 [P] (the base recipe). Deterministic at inference.
    """

    paper = "Jiang et al., AAAI 2026 (MPD-SGR)"
    description = (
        "penalise the Gaussian mass of pre-spike potentials inside the surrogate window [-gamma, gamma]"
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

    def regularizer(self, state: StepState) -> Tensor | None:
        if self.params.eta == 0 or not state.neurons:
            return None
        per_layer = torch.stack([layer_overlap(n, self.params.gamma) for n in state.neurons])
        return self.params.eta * per_layer.mean()
