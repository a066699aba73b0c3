"""TGO: threshold guarding optimization (Wang et al., arXiv 2602.20548 / ICLR 2026; spec/defenses.md 2.7)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bench.errors import BenchError
from bench.snn.fused import VPenalty, fused_penalty
from bench.snn.models import MakeNeuron
from bench.snn.neuron import LIFNeuron, NeuronSpec
from defenses.base import DEFENSES, Defense, StepState


class NoisyLIFNeuron(LIFNeuron):
    """NLIF: V[t] = tau U[t-1] + I[t] + xi[t], xi ~ N(0, sigma^2) i.i.d. per neuron, step and sample, added
    before thresholding (triangle surrogate on V - V_th) [I, spec 2.7]. Noise is on in training, and in eval
    mode only when ``noise_at_inference`` (then the module is ``randomized``)."""

    noise_independent_of_v = True  # v only gives shape/dtype/device: a fused LIF may pre-sample the noise

    def __init__(
        self, spec: NeuronSpec, shape: tuple[int, ...], sigma: float, noise_at_inference: bool
    ) -> None:
        super().__init__(spec, shape)
        self.sigma = sigma
        self.noise_at_inference = noise_at_inference
        self.randomized = noise_at_inference and sigma > 0

    def membrane_noise(self, v: Tensor, t: int) -> Tensor | None:
        if self.sigma <= 0 or not (self.training or self.noise_at_inference):
            return None
        return self.sigma * torch.randn_like(v)


def hinge_sum(neuron: LIFNeuron, delta: float) -> Tensor:
    """sum over t, samples, neurons of max(0, delta - |V[t] - V_th|) (the sum in TGO Eq. 12)."""
    assert neuron.v_pre is not None, "TGO needs recorded potentials (records = True)"
    # --- fused backend (bench/snn/fused.py): the kernels computed this sum and fold its V-gradient into
    # the neuron's backward; None on the reference backend (and on a run's first recorded step)
    fused = fused_penalty(neuron, VPenalty.hinge(delta))
    if fused is not None:
        return fused
    # --- reference: autograd through the recorded V
    return (delta - (neuron.v_pre - neuron.spec.v_th).abs()).clamp(min=0).sum()


def near_threshold_hinge(neuron: LIFNeuron, delta: float) -> Tensor:
    """C(V_l) = mean over t, samples, neurons of max(0, delta - |V[t] - V_th|) (TGO Eq. 12)."""
    assert neuron.v_pre is not None, "TGO needs recorded potentials (records = True)"
    return hinge_sum(neuron, delta) / neuron.v_pre.numel()


def cosine_ramp(epoch: int, epochs: int, lam_max: float) -> float:
    """lambda(e) = lam_max (1 - cos(pi e / E)) / 2: 0 at the first epoch, rising to ~lam_max [I, spec 2.7]."""
    return 0.5 * lam_max * (1 - math.cos(math.pi * epoch / max(1, epochs)))


@DEFENSES.register("tgo")
class TGO(Defense):
    """TGO (Wang et al., ICLR 2026): keep membrane potentials away from the threshold, plus noisy LIF neurons.

    Membrane-potential constraint (Eq. 12-13 [P:TGO-lattice]): L = CE + lambda(e) sum_l C(V_l),
    C(V_l) = (1/(T N)) sum_i max(0, delta - |V_i[t] - V_th|) on the pre-spike (pre-reset) potential of every
    spiking layer, averaged over time steps, samples and neurons and summed over layers [I, spec 6].
    lambda(e) = 0.5 lam_max (1 - cos(pi e / E)) per epoch [I: the formula is cut off after "lambda = 0." in
    the text; notes say cosine from small to large [S]]. lam_max = 0.6 (VGG-11 [S]; 0.4 for WRN-16 [S];
    small_conv uses the VGG value [I]). delta = 0.5 and sigma = 0.1 are unknown in the sources [I, spec 2.7].

    Noisy LIF (Thm. 1 set-up [P]; equation unknown): Gaussian noise N(0, sigma^2) on V[t] before thresholding;
    the hinge sees the noisy V. ``noise_at_inference`` (default on, config ``tgo``) keeps the noise at test
    time -> randomized, attacked with EOT (reviewers report inference noise and EoT results [S]); off (config
    ``tgo_nonoise``) gives the "no inference overhead" reading of the abstract. Report both.
    AT: the base PGD-2 recipe (the papers' AT half).
    """

    paper = "Wang et al., ICLR 2026 (TGO, arXiv 2602.20548)"
    description = (
        "hinge pushing pre-spike potentials >= delta away from threshold (cosine lambda) + noisy LIF"
    )
    records = True
    randomized = True

    @dataclass(frozen=True)
    class Params:
        lam_max: float = 0.6
        delta: float = 0.5
        sigma: float = 0.1
        noise_at_inference: bool = True

        def __post_init__(self) -> None:
            for key in ("lam_max", "delta", "sigma"):
                if not getattr(self, key) >= 0:
                    raise BenchError(f"tgo.{key} must be >= 0, got {getattr(self, key)}")

    def make_neuron(self, spec: NeuronSpec, T: int) -> MakeNeuron:
        p = self.params
        return lambda shape: NoisyLIFNeuron(spec, shape, p.sigma, p.noise_at_inference)

    def lam(self, epoch: int, epochs: int) -> float:
        return cosine_ramp(epoch, epochs, self.params.lam_max)

    def regularizer(self, state: StepState) -> Tensor | None:
        lam = self.lam(state.ctx.epoch, state.ctx.train.epochs)
        if lam == 0 or not state.neurons:
            return None
        return lam * torch.stack([near_threshold_hinge(n, self.params.delta) for n in state.neurons]).sum()
