"""DLIF / Robust Stable SNN (Ding, Pan, Liu, Yu, Huang, ICML 2024; docs/defenses.md 2.8)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnbench.defenses.base import DEFENSES, Defense, StepState, TrainContext
from snnbench.defenses.rat import single_step_examples
from snnbench.errors import BenchError
from snnbench.snn.models import MakeNeuron
from snnbench.snn.neuron import LIFNeuron, NeuronSpec


class DLIFNeuron(LIFNeuron):
    """u_t = tau u_{t-1} (1 - s_{t-1}) + p_t I_t with a learnable gain p in R^T per layer, init 1
    (stable-snn ``DLIFSpike``). Records the gained current p_t I_t as ``current`` [T, B, ...] when recording."""

    def __init__(self, spec: NeuronSpec, shape: tuple[int, ...], T: int) -> None:
        super().__init__(spec, shape)
        self.gain = nn.Parameter(torch.ones(T))
        self.current: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        x_seq = x.view(self.T, -1, *x.shape[1:])  # [T, B, ...]
        x_seq = x_seq * self.gain.view(-1, *([1] * (x_seq.dim() - 1)))
        self.current = x_seq if self.record else None
        return super().forward(x_seq.flatten(0, 1))


def perturbation_dynamics(clean: Tensor, perturbed: Tensor, tau: float) -> Tensor:
    """Y_t = tau Y_{t-1} + (I_t(x) - I_t(x')), Y_0 = 0 (reset ignored), stacked [T, B, ...]."""
    y, ys = torch.zeros_like(clean[0]), []
    for t in range(clean.shape[0]):
        y = tau * y + (clean[t] - perturbed[t])
        ys.append(y)
    return torch.stack(ys)


@DEFENSES.register("dlif")
class DLIF(Defense):
    """Robust Stable SNN (Ding et al., ICML 2024): DLIF neurons + membrane-perturbation stability loss.

    Neuron [C:stable-snn layers.py ``DLIFSpike``]: u_t = tau u_{t-1}(1 - s_{t-1}) + p_t I_t, p in R^T per layer
    (init 1), tau = 0.99 [C] (the model's neuron tau is replaced by ``tau``). Loss [C:main_train-v2.py]:
    kappa CE(f(x)) + (1 - kappa) CE(f(x')) + alpha mean(Y^2), Y_t = tau Y_{t-1} + (I_t(x) - I_t(x')) on the
    last spiking layer's (gained) input current [I: gained vs raw current not checked]. kappa = 0.5, alpha = 1.
    x': ``--training at`` -> FGSM from x + 0.001 N(0, 1) at ``eps_scale`` x the dataset's train_eps (4/255 =
    2 x 2/255 on CIFAR [C]), or PGD-2 with ``at_attack = "pgd"`` (the tables' AT half);
    ``--training standard`` -> Gaussian mode x + N(0, sigma^2), sigma = the dataset's attack eps (8/255 on
    CIFAR [C]). Implementation: ``perturb`` returns x' and keeps x for the regulariser, which runs the clean
    forward and adds kappa (CE(x) - CE(x')) so that the shared loop's CE(x') ends up weighted 1 - kappa.
    Deterministic at inference.
    """

    paper = "Ding, Pan, Liu, Yu, Huang, ICML 2024 (Robust Stable SNN, DLIF)"
    description = (
        "learnable per-step input gains + loss on clean-vs-perturbed membrane dynamics of the last layer"
    )
    records = True

    @dataclass(frozen=True)
    class Params:
        tau: float = 0.99
        kappa: float = 0.5
        alpha: float = 1.0
        eps_scale: float = 2.0
        at_attack: str = "fgsm"

        def __post_init__(self) -> None:
            if not 0 <= self.kappa <= 1:
                raise BenchError(f"dlif.kappa must be in [0, 1], got {self.kappa}")
            if self.at_attack not in ("fgsm", "pgd"):
                raise BenchError(f"dlif.at_attack: {self.at_attack!r} is not supported; valid: fgsm, pgd")

    def __init__(self, params: object = None) -> None:
        super().__init__(params)
        self._clean: Tensor | None = None  # x of the current step, set by perturb, read by regularizer

    def make_neuron(self, spec: NeuronSpec, T: int) -> MakeNeuron:
        from dataclasses import replace

        spec = replace(spec, tau=self.params.tau)
        return lambda shape: DLIFNeuron(spec, shape, T)

    mechanism_sense = {"membrane_instability": "lower"}

    def mechanism(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        """DLIF's stability loss without its weight: the mean squared perturbation dynamics Y_t of the last
        layer's gained current between clean inputs and inputs with Gaussian noise of the dataset's eps (the
        training perturbation of standard training), seeded."""
        with torch.no_grad(), model.recording() as neurons:
            last = [n for n in neurons if isinstance(n, DLIFNeuron)]
            if not last:
                return {}
            model(x)
            clean = last[-1].current
            g = torch.Generator().manual_seed(0)
            model((x + torch.randn(x.shape, generator=g).to(x) * 0.1).clamp(0, 1))
            noisy = last[-1].current
            return {"membrane_instability": float(perturbation_dynamics(clean, noisy, self.params.tau).pow(2).mean())}

    def perturb(self, ctx: TrainContext, x: Tensor, y: Tensor) -> Tensor:
        self._clean = x
        if ctx.train.training == "at" and self.params.at_attack == "pgd":
            return super().perturb(ctx, x, y)
        if ctx.train.training == "at":
            eps = self.params.eps_scale * (
                ctx.train.at.eps if ctx.train.at.eps is not None else ctx.dataset.train_eps
            )
            x0 = (x + 0.001 * torch.randn(x.shape, generator=ctx.generator).to(x)).clamp(0, 1)
            x_adv = single_step_examples(ctx.model, x0, y, eps, "bptt")
            return torch.min(torch.max(x_adv, x - eps), x + eps)
        noise = torch.randn(x.shape, generator=ctx.generator).to(x) * ctx.dataset.eps
        return (x + noise).clamp(0, 1)

    def regularizer(self, state: StepState) -> Tensor | None:
        assert self._clean is not None and state.neurons, "DLIF: perturb and recording must run first"
        last = state.neurons[-1]
        cur_pert = last.current  # [T, B, ...] from the loop's forward on x'
        logits_clean = state.ctx.model(self._clean)  # overwrites the recording with the clean pass
        cur_clean = last.current
        p = self.params
        ce_clean, ce_pert = F.cross_entropy(logits_clean, state.y), F.cross_entropy(state.logits, state.y)
        stability = perturbation_dynamics(cur_clean, cur_pert, p.tau).pow(2).mean()
        self._clean = None
        return p.kappa * (ce_clean - ce_pert) + p.alpha * stability
