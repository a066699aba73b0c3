"""Attack kind ``torchattacks``: any torchattacks 3.5.1 class by name, on the attacker's view of the model.

YAML: ``{kind: torchattacks, params: {name: VMIFGSM, steps: 7, args: {decay: 1.0, N: 5}}}``. The shared
options map onto the class's constructor where it has them: ``eps`` and ``alpha`` (the dataset's threat
model unless set), ``steps``, ``seed``; ``args`` passes any other constructor argument by name. The model the
class sees is :class:`~bench.snn.classifier.AttackerView`, so ``grad_mode``, ``surrogate`` and ``gamma`` work
as for our own attacks, and the evaluator's bounds check applies to what it returns: L-inf classes must stay
in the eps-ball; L2 (``PGDL2``, ``norm: L2``) and unbounded ones (``CW``, ``GN``, ``DeepFool``, ...) are
stored with their norm and are left out of the L-inf worst case.

EOT (randomized models): classes with an ``eot_iter`` argument (``EOTPGD``, ``UPGD``, ``APGD``, ``APGDT``)
get our EOT sample count there (gradients averaged over passes, their loop); every other class attacks the
logits averaged over ``eot`` draws in one batched forward (expectation over the logits, Athalye et al.
2018's EOT applied to the model instead of the loss); :meth:`TorchAttacks.eot_via` says which, and the
evaluation stores the draw count in its ``eot`` column.

Refused: ``AutoAttack`` (torchattacks rebuilds it with 10-iteration inner attacks; use the ``autoattack``
kind, fra31's code: docs/ecosystem.md 2.2), ``MultiAttack`` and ``LGV`` (they take other attacks or a
training loader, not a model). torchattacks is installed with ``pip install --no-deps torchattacks==3.5.1``
(its wheel pins ``requests~=2.25.1`` and ships a stale ``robustbench``; README "Set-up").

Example::

    from snnbench.attacks.torchattacks_kind import TorchAttacks
    atk = TorchAttacks(TorchAttacks.Params(name="MIFGSM", steps=7), eps=0.1, alpha=0.025)
    x_adv = atk.generate(model, x, y)        # seeded, in the eps-ball, through AttackerView
"""

from __future__ import annotations

import contextlib
import inspect
import io
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from snnbench.attacks.base import ATTACKS, Attack, GradientParams
from snnbench.errors import BenchError, did_you_mean

REFUSED = {
    "AutoAttack": "torchattacks' AutoAttack runs 10-iteration inner attacks; use the `autoattack` attack (fra31's code)",
    "MultiAttack": "MultiAttack takes a list of attacks, not a model; list the attacks separately (the store keeps the worst case)",
    "LGV": "LGV needs a training loader to fine-tune surrogate models; not a model-only attack",
}
L2_CLASSES = {"PGDL2", "PGDRSL2"}
UNBOUNDED = {"VANILA", "GN", "CW", "DeepFool", "JSMA", "EADL1", "EADEN", "SparseFool", "OnePixel", "Pixle"}
MAPPED = ("eps", "alpha", "steps", "seed")  # our option names that are also constructor names


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        raise BenchError(
            "torchattacks is not installed; run: pip install --no-deps torchattacks==3.5.1 (README: why --no-deps)"
        ) from None
    return torchattacks


def attack_classes() -> dict[str, type]:
    """Every torchattacks attack class usable here, by name."""
    ta = _torchattacks()
    return {
        n: c
        for n in getattr(ta, "__all__", dir(ta))
        if inspect.isclass(c := getattr(ta, n, None)) and issubclass(c, ta.attack.Attack) and n not in REFUSED
    }


class MeanLogits(nn.Module):
    """Logits averaged over ``samples`` stochastic draws, one batched forward (EOT on the model)."""

    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__()
        self.model, self.samples = model, samples
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        reps = (self.samples,) + (1,) * (x.dim() - 1)
        return self.model(x.repeat(reps)).view(self.samples, x.shape[0], -1).mean(0)  # [B, K]


@ATTACKS.register("torchattacks")
class TorchAttacks(Attack):
    """A torchattacks class run through AttackerView (gradient mode, surrogate), EOT and our bounds check."""

    kind = "torchattacks"
    description = "any torchattacks class by name (params: name, args), through the attacker's view"

    @dataclass(frozen=True)
    class Params(GradientParams):
        name: str = ""
        args: dict = field(default_factory=dict)

    def __init__(self, params: Params, eps: float, alpha: float) -> None:
        super().__init__(params, eps, alpha)
        if params.name in REFUSED:
            raise BenchError(f"torchattacks name {params.name!r}: {REFUSED[params.name]}")
        classes = attack_classes()
        if params.name not in classes:
            raise BenchError(
                f"torchattacks name: {params.name!r} is not a torchattacks attack; {did_you_mean(params.name, classes)}"
            )
        self.cls = classes[params.name]
        self.signature = set(inspect.signature(self.cls.__init__).parameters) - {"self", "model"}
        for key in params.args:
            if key in MAPPED:
                raise BenchError(
                    f"torchattacks args.{key}: set `{key}` as an attack option (params.{key}), not in args"
                )
            if key not in self.signature:
                raise BenchError(
                    f"torchattacks args.{key}: {params.name} takes no argument {key!r}; {did_you_mean(str(key), self.signature)}"
                )
        norm = str(params.args.get("norm", "Linf"))
        if params.name in UNBOUNDED:
            self.norm = None  # only [0, 1] is checked; left out of the L-inf worst case
        elif params.name in L2_CLASSES or norm == "L2":
            self.norm = "l2"
        elif norm in ("Linf", "L1"):
            self.norm = "linf" if norm == "Linf" else "l1"
        if "eps" not in self.signature and self.norm == "linf":
            self.norm = None
        self.uses_gradient = params.name not in ("VANILA", "GN", "Square", "OnePixel", "Pixle", "SPSA")

    def eot_via(self, model: nn.Module) -> str:
        if self.eot_samples(model) <= 1:
            return "none"
        return "eot_iter" if "eot_iter" in self.signature else "mean_logits"

    def build(self, model: nn.Module, x: Tensor) -> Any:
        """The torchattacks object on the attacker's view (EOT-wrapped when the class has no ``eot_iter``)."""
        p, view, n = self.params, self.view(model), self.eot_samples(model)
        target: nn.Module = MeanLogits(view, n) if self.eot_via(model) == "mean_logits" else view
        kwargs: dict[str, Any] = {"eps": self.eps, "alpha": self.alpha, "steps": p.steps, "seed": p.seed}
        kwargs = {k: v for k, v in kwargs.items() if k in self.signature}
        if "eot_iter" in self.signature and "eot_iter" not in p.args:
            kwargs["eot_iter"] = n
        if "n_classes" in self.signature and "n_classes" not in p.args:
            with contextlib.suppress(Exception):
                kwargs["n_classes"] = int(view(x).shape[-1])  # whole batch: batch-statistics models
        with contextlib.redirect_stdout(io.StringIO()):  # "Failed to set device" is printed, not logged
            atk = self.cls(target, **{**kwargs, **p.args})
        atk.set_device(x.device)
        return atk

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with contextlib.redirect_stdout(io.StringIO()):
            return self.build(model, x)(x, y).to(x.dtype)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "norm": self.norm, "library": "torchattacks"}
