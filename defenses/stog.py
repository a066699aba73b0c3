"""StoG: stochastic gating of spikes (Ding, Yu, Huang, Liu, AAAI 2024; docs/defenses.md 2.3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnbench.defenses.base import DEFENSES, Defense, StepState, TrainContext
from snnbench.defenses.rat import single_step_examples
from snnbench.errors import BenchError
from snnbench.snn.models import MakeNeuron
from snnbench.snn.neuron import LIFNeuron, NeuronSpec
from snnbench.specs import TrainSpec

_EPS = 1e-3  # the reference code's guard in log(p / (1 - p + eps))


class _GateSample(torch.autograd.Function):
    """Bernoulli(p) mask via the logistic trick, concrete-relaxation gradient (StoG ``inhibition_module``).

    Forward: G = 1[log(p/(1-p+e)) + log(u/(1-u+e)) >= 0], u ~ U(0, 1) of shape [N, *p.shape].
    Backward: dG/dp ~ s(1-s) / (temperature p (1-p)), s = sigmoid((log alpha + log L)/temperature), averaged
    over the N = T*B draws, times ``sign`` (-1 reproduces the official code's leading minus).
    """

    @staticmethod
    def forward(ctx, p: Tensor, n: int, temperature: float, sign: float) -> Tensor:  # type: ignore[override]
        u = torch.rand((n, *p.shape), device=p.device, dtype=p.dtype)
        log_alpha = torch.log(p / (1 - p + _EPS)).unsqueeze(0)
        log_l = torch.log(u / (1 - u + _EPS))
        s = torch.sigmoid((log_alpha + log_l) / temperature)
        ctx.save_for_backward(s, p)
        ctx.temperature, ctx.sign = temperature, sign
        return (log_alpha + log_l >= 0).to(p.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        s, p = ctx.saved_tensors
        denom = ctx.temperature * p * (1 - p + _EPS)
        grad_p = ctx.sign * (grad_out * s * (1 - s)).mean(0) / denom
        return grad_p, None, None, None


class StochasticGate(nn.Module):
    """s~(t) = s(t) * G(t), G ~ Bernoulli(clamp(theta, 0.1, 1)) per (time step, sample, neuron).

    Samples in train *and* eval mode (no ``self.training`` check, as the reference code): the defense is
    randomized at inference and must be attacked with EOT.
    """

    randomized = True

    def __init__(
        self, shape: tuple[int, ...], p_min: float = 0.1, temperature: float = 0.5, grad_sign: float = -1.0
    ) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.ones(shape))  # all gates open at init
        self.p_min, self.temperature, self.grad_sign = p_min, temperature, grad_sign

    def probability(self) -> Tensor:
        return F.hardtanh(
            self.theta, self.p_min, 1.0
        )  # nn.Hardtanh(0.1, 1): zero gradient at/outside the bounds

    def forward(self, s: Tensor) -> Tensor:  # s: [T*B, *shape]
        mask = _GateSample.apply(self.probability(), s.shape[0], self.temperature, self.grad_sign)
        return s * mask


@DEFENSES.register("stog")
class StoG(Defense):
    """StoG (Ding et al., AAAI 2024): learnable Bernoulli gates after every spiking layer.

    Mechanism [C:StoG-meets-SNN models/inhibition.py ``SparsePoissonCoding`` v2, sparse_train.py ``replace``]:
    s~^l(t) = s^l(t) * G^l(t), G^l(t)_i ~ Bernoulli(p^l_i), p^l = clamp(theta^l, 0.1, 1), theta^l one value
    per neuron of the layer's per-sample shape, initialised to 1; a fresh mask per (t, sample, neuron); the
    neuron's reset uses the un-gated spike (the gate sits after the LIF). Gate gradient: concrete relaxation,
    temperature 0.5, averaged over T*B. The official backward carries a leading minus sign (so the gates are
    pushed *against* the CE gradient); ``grad_sign = -1`` reproduces it, ``+1`` is the analytic sign [C, flagged].

    Gate optimisation [C:sparse_train.py, utils.py ``sparse_prior_l2``]: CE gradient plus the prior
    gamma * sum(theta^2)/2 (gamma = 5e-6 [S+C]), weight decay 0 on the gates, trained only during the first
    ``gate_epoch_fraction`` of the epochs (K = 100 of 200 [C]), then frozen. The reference code uses a second
    SGD optimiser with the same lr/momentum/cosine; here the gates are a weight-decay-0 parameter group of the
    shared optimiser (same update rule) and are frozen in ``on_epoch_start``.

    Adversarial training: ``at_attack = "pgd"`` (default) is the tables' AT half (PGD-2, as FEEL/MPD-SGR
    re-ran StoG); ``"fgsm"`` is the StoG paper's FGSM(BPTT) on every mini-batch [S+C].
    Randomized at inference: evaluated with EOT (10 samples in the paper [S]).
    """

    perf_workload = ("tgo", "fused")  # a Bernoulli gate draw per neuron and step, like TGO's noise

    paper = "Ding, Yu, Huang, Liu, AAAI 2024 (StoG)"
    description = "learnable Bernoulli gates on spikes after every spiking layer, random at test time"
    randomized = True

    @dataclass(frozen=True)
    class Params:
        gamma: float = 5e-6
        prior: str = "l2"
        p_min: float = 0.1
        temperature: float = 0.5
        grad_sign: float = -1.0
        gate_epoch_fraction: float = 0.5
        at_attack: str = "pgd"

        def __post_init__(self) -> None:
            if self.prior not in ("l1", "l2"):
                raise BenchError(f"stog.prior: {self.prior!r} is not a prior; valid: l1, l2")
            if self.at_attack not in ("pgd", "fgsm"):
                raise BenchError(f"stog.at_attack: {self.at_attack!r} is not supported; valid: fgsm, pgd")
            if not 0 < self.p_min <= 1:
                raise BenchError(f"stog.p_min must be in (0, 1], got {self.p_min}")
            if self.grad_sign not in (-1.0, 1.0):
                raise BenchError(f"stog.grad_sign must be -1 (official code) or 1, got {self.grad_sign}")

    def make_neuron(self, spec: NeuronSpec, T: int) -> MakeNeuron:
        p = self.params
        return lambda shape: nn.Sequential(
            LIFNeuron(spec, shape), StochasticGate(shape, p.p_min, p.temperature, p.grad_sign)
        )

    @staticmethod
    def gates(model: nn.Module) -> list[StochasticGate]:
        return [m for m in model.modules() if isinstance(m, StochasticGate)]

    mechanism_sense = {"gate_drop": "higher"}

    def mechanism(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        """StoG's learned gates: the mean probability that a gate drops a spike, 1 - p (0 at init)."""
        gates = self.gates(model)
        if not gates:
            return {}
        with torch.no_grad():
            return {"gate_drop": float(torch.cat([(1 - g.probability()).flatten() for g in gates]).mean())}

    def param_groups(self, model: nn.Module, train: TrainSpec) -> list[dict]:
        gate_ids = {id(g.theta) for g in self.gates(model)}
        weights = [p for p in model.parameters() if p.requires_grad and id(p) not in gate_ids]
        thetas = [g.theta for g in self.gates(model)]
        return [
            {"params": weights, "weight_decay": self.weight_decay(train)},
            {"params": thetas, "weight_decay": 0.0},
        ]

    def on_epoch_start(self, ctx: TrainContext, optimizer: torch.optim.Optimizer) -> None:
        train_gates = ctx.epoch < math.ceil(self.params.gate_epoch_fraction * ctx.train.epochs)
        for g in self.gates(ctx.model):
            g.theta.requires_grad_(train_gates)

    def perturb(self, ctx: TrainContext, x: Tensor, y: Tensor) -> Tensor:
        if ctx.train.training == "at" and self.params.at_attack == "fgsm":
            eps = ctx.train.at.eps if ctx.train.at.eps is not None else ctx.dataset.train_eps
            return single_step_examples(ctx.model, x, y, eps, "bptt")
        return super().perturb(ctx, x, y)

    def regularizer(self, state: StepState) -> Tensor | None:
        thetas = [g.theta for g in self.gates(state.ctx.model) if g.theta.requires_grad]
        if not thetas or self.params.gamma == 0:
            return None
        if self.params.prior == "l2":
            return self.params.gamma * sum((t**2).sum() for t in thetas) / 2
        return self.params.gamma * sum(t.abs().sum() for t in thetas)
