"""Defense hooks shared by every recipe (docs/design.md 'Defense hooks').

The runner owns one training step for all defenses; a recipe overrides small hooks:

- :meth:`Defense.make_neuron` - neuron factory (TGO's noisy LIF, FEEL's learnable leak, StoG's gates);
- :meth:`Defense.make_encoder` - input encoder (FEEL's frequency encoding);
- :meth:`Defense.perturb` - adversarial examples for training (PGD AT by default when training == "at");
- :meth:`Defense.regularizer` - extra loss from recorded state (membrane potentials, logits, inputs);
- :meth:`Defense.after_step` - after ``optimizer.step()`` (RAT's weight retraction);
- :meth:`Defense.param_groups` / :meth:`Defense.on_epoch_start` - optimiser set-up and schedules.

Class flags: ``records`` (needs pre-spike potentials), ``randomized`` (samples at inference: evaluated with
EOT), ``paper`` and ``description`` (shown by ``bench ls defenses``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from snnbench.attacks.base import GradientParams
from snnbench.attacks.gradient import PGD
from snnbench.kind_table import Registry
from snnbench.snn.classifier import SNNClassifier
from snnbench.snn.encoders import ENCODERS
from snnbench.snn.models import MakeNeuron
from snnbench.snn.neuron import LIFNeuron, NeuronSpec
from snnbench.specs import DatasetSpec, TrainSpec


@dataclass
class TrainContext:
    """What hooks may read during training."""

    model: SNNClassifier
    dataset: DatasetSpec
    train: TrainSpec
    epoch: int = 0
    step: int = 0
    generator: torch.Generator | None = None


@dataclass
class StepState:
    """One training step as the regularizer sees it (tensors keep their graphs)."""

    ctx: TrainContext
    x: Tensor  # [B, C, H, W] input actually fed (adversarial under AT)
    y: Tensor  # [B]
    logits: Tensor  # [B, K]
    neurons: list[LIFNeuron]  # with v_pre/spikes recorded when the defense sets ``records``


class Defense:
    """Base recipe = vanilla surrogate-gradient BPTT training (docs/defenses.md 2.1), plus PGD AT when asked."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    description: ClassVar[str] = ""
    records: ClassVar[bool] = False
    randomized: ClassVar[bool] = False
    #: the ``bench perf`` workload and path whose measured rates this recipe trains and is attacked at (the
    #: cost projection, bench/cost.py): tensors like vanilla's on the fused neuron path by default
    perf_workload: ClassVar[tuple[str, str]] = ("vanilla", "fused")
    #: contracts of tests/test_contracts.py this recipe cannot meet, with the reason: {"trains" | "checkpoint":
    #: "why"}; declared here, never listed in the test
    contract_opt_out: ClassVar[dict[str, str]] = {}
    #: the statistics :meth:`mechanism` returns, each with the direction its mechanism pushes a trained model
    #: ("lower" / "higher" than without it): the CI gate fails when one moves the other way (issue 23)
    mechanism_sense: ClassVar[dict[str, str]] = {}

    def mechanism(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        """The effect of this defense's own mechanism on a trained ``model``, measured on clean ``x``
        (labels ``y``): what its mechanism test measures (e.g. SR's finite-difference gradient, TGO's
        near-threshold share). Independent of the loss weights: a regulariser switched off shows as the
        statistic moving against :attr:`mechanism_sense`. Empty for vanilla training."""
        return {}

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    # --- model construction ---------------------------------------------------------------------------
    def make_neuron(self, spec: NeuronSpec, T: int) -> MakeNeuron:
        """Factory ``shape -> module`` for every spiking layer (``shape`` = per-sample feature shape)."""
        return lambda shape: LIFNeuron(spec, shape)

    def make_encoder(self, name: str, T: int, shape: tuple[int, ...]) -> nn.Module:
        return ENCODERS[name]()

    # --- optimisation ---------------------------------------------------------------------------------
    def weight_decay(self, train: TrainSpec) -> float:
        return train.weight_decay

    def param_groups(self, model: nn.Module, train: TrainSpec) -> list[dict]:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": self.weight_decay(train)}]

    def on_epoch_start(self, ctx: TrainContext, optimizer: torch.optim.Optimizer) -> None:
        """Called before each epoch (schedules such as TGO's lambda ramp)."""

    def perturb(self, ctx: TrainContext, x: Tensor, y: Tensor) -> Tensor:
        """Training inputs: clean, or PGD adversarial examples under ``training: at``."""
        if ctx.train.training != "at":
            return x
        at = ctx.train.at
        eps = at.eps if at.eps is not None else ctx.dataset.train_eps
        alpha = at.alpha if at.alpha is not None else eps / 2
        return pgd_examples(ctx.model, x, y, eps, alpha, at.steps, at.grad_mode, ctx.generator)

    def regularizer(self, state: StepState) -> Tensor | None:
        return None

    def after_step(self, model: nn.Module, ctx: TrainContext) -> None:
        """Called after every optimiser step, under ``torch.no_grad()``."""


def pgd_examples(
    model: SNNClassifier,
    x: Tensor,
    y: Tensor,
    eps: float,
    alpha: float,
    steps: int,
    grad_mode: str = "bptt",
    generator: torch.Generator | None = None,
    random_start: bool = True,
) -> Tensor:
    """L-inf PGD for adversarial training (FEEL ``at_train``: random start, ``steps`` signed steps): the
    attack suite's PGD loop (:class:`snnbench.attacks.gradient.PGD`, one gradient per step, no EOT) from a
    start drawn with the training ``generator``.

    Examples are generated in eval mode (BN running statistics), as the reference code does
    (``set_training_mode(model_training=False)``), then the mode is restored.
    """
    was_training = model.training
    model.eval()
    try:
        x_adv = x.detach().clone()
        if random_start and eps > 0:
            noise = torch.rand(x.shape, generator=generator, device="cpu").to(x) * 2 - 1
            x_adv = (x_adv + eps * noise).clamp(0, 1)
        pgd = PGD(GradientParams(eps=eps, alpha=alpha, steps=steps, grad_mode=grad_mode, eot=1), eps, alpha)
        return pgd.iterate(model, x, y, x_adv).detach()
    finally:
        model.train(was_training)


DEFENSES: Registry[type[Defense]] = Registry("defense")
