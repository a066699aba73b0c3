"""Black-box transfer attack (RAT §5.2, FEEL §5.2, MPD-SGR "Black-box"): craft adversarial examples on a
substitute model, evaluate them on the target.

The substitute is the papers' choice: same architecture, dataset and T, vanilla training, a different
seed (FEEL; RAT's ``bb`` checkpoints). The runner builds it through the same train-or-load cache
(``needs_substitute``) and calls :meth:`Transfer.set_substitute`; this module never imports the runner.
The target's gradient is never used.

``substitutes``: which substitutes to craft on (``("standard",)`` by default; the protocol v2's transfer
stage uses ``("standard", "at")``: the vanilla model and a vanilla model with PGD adversarial training,
whose gradients are aligned with the ones robust targets have, Tramer et al. 2018, "Ensemble Adversarial
Training"). Several substitutes are attacked as one :class:`Ensemble` whose logits are their mean (Liu et
al. 2017, "Delving into Transferable Adversarial Examples"), with the white-box ``source`` attack (APGD-CE
in the protocol: a stronger source than PGD-7).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snnbench.attacks.base import ATTACKS, Attack, Cost, GradientParams
from snnbench.errors import BenchError
from snnbench.snn.classifier import SNNClassifier


def sources() -> list[str]:
    """Attack kinds usable as the white-box source: bounded L-inf gradient attacks (capabilities)."""
    return [k for k in ATTACKS if ATTACKS.get(k).is_white_box_source()]


SUBSTITUTE_TRAININGS = ("standard", "at")


class Ensemble(nn.Module):
    """Several substitute classifiers as one: logits averaged; the attacker's gradient mode and surrogate
    reach every member (the :class:`~snnbench.snn.classifier.SNNClassifier` interface attacks use)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)

    @property
    def randomized(self) -> bool:
        return any(getattr(m, "randomized", False) for m in self.members)

    @contextmanager
    def gradient_mode(self, mode: str = "bptt", surrogate: str | None = None, gamma: float | None = None) -> Iterator[Ensemble]:
        with ExitStack() as stack:
            for m in self.members:
                stack.enter_context(m.gradient_mode(mode, surrogate, gamma))
            yield self

    def reset_attack_state(self) -> None:
        for m in self.members:
            reset = getattr(m, "reset_attack_state", None)
            if callable(reset):
                reset()


@ATTACKS.register("transfer")
class Transfer(Attack):
    """Transfer attack: the white-box attack ``source`` (default PGD-7) run on the substitute model."""

    kind = "transfer"
    description = "black-box transfer: PGD on a vanilla substitute (same arch, seed+1)"
    transfer = True
    uses_gradient = False  # the target's gradient is never used

    @dataclass(frozen=True)
    class Params(GradientParams):
        source: str = "pgd"
        substitutes: tuple[str, ...] = ("standard",)

    def __init__(self, params: Params, eps: float, alpha: float) -> None:
        super().__init__(params, eps, alpha)
        subs = tuple(params.substitutes)
        if not subs or len(set(subs)) != len(subs) or any(t not in SUBSTITUTE_TRAININGS for t in subs):
            raise BenchError(f"transfer substitutes: {list(subs)!r} must be distinct names among "
                             f"{', '.join(SUBSTITUTE_TRAININGS)}")
        valid = sources()
        if params.source not in valid:
            raise BenchError(
                f"transfer source: {params.source!r} is not a white-box attack; valid: {', '.join(valid)}"
            )
        cls = ATTACKS.get(params.source)
        names = {f.name for f in dataclasses.fields(cls.Params)}
        inner = cls.Params(**{k: v for k, v in dataclasses.asdict(params).items() if k in names})
        self.inner: Attack = cls(inner, eps, alpha)
        self.attached: dict[str, tuple[nn.Module, str]] = {}

    @property
    def substitute_trainings(self) -> tuple[str, ...]:
        return tuple(self.params.substitutes)

    def set_substitute(self, model: nn.Module, identity: str, training: str = "standard") -> None:
        """Attach the substitute trained with ``training``; ``identity`` (its config hash) becomes part of
        the stored config."""
        if training not in self.substitute_trainings:
            raise BenchError(f"transfer: substitute {training!r} is not one of {list(self.substitute_trainings)}")
        self.attached[training] = (model, identity)

    @property
    def substitute(self) -> nn.Module | None:
        """The model the source attack runs on: the substitute, or the ensemble of them (None until every
        substitute is attached)."""
        if any(t not in self.attached for t in self.substitute_trainings):
            return None
        members = [self.attached[t][0] for t in self.substitute_trainings]
        return members[0] if len(members) == 1 else Ensemble(members)

    @property
    def substitute_id(self) -> str:
        if any(t not in self.attached for t in self.substitute_trainings):
            return ""
        return self.substitute_identity({t: h for t, (_, h) in self.attached.items()})

    def cost(self, randomized: bool = False) -> Cost:
        """The source attack on each substitute (vanilla substitutes are deterministic)."""
        return self.inner.cost(False) * len(self.substitute_trainings)

    def eot_samples(self, model: SNNClassifier) -> int:
        return self.inner.eot_samples(self.substitute) if self.substitute is not None else 1

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        sub = self.substitute
        if sub is None:
            raise BenchError(
                "transfer: no substitute model attached (the pipeline attaches one; see bench/prepare.py attach_substitutes)"
            )
        sub.eval()
        return self.inner.perturb(sub, x, y)

    def config(self) -> dict:
        cfg = super().config()
        if tuple(cfg.get("substitutes", ())) == ("standard",):  # the default: stored configs hash as before
            cfg.pop("substitutes")
        else:
            cfg["substitutes"] = list(cfg["substitutes"])
        return {**cfg, "substitute": self.substitute_id}
