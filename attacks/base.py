"""Attack kinds on a uniform base (DESIGN.md: ``AttackSpec`` with capability flags).

An attack instance is built from its YAML ``params`` (a frozen dataclass) and the dataset's threat model
(default eps/alpha). ``generate(model, x, y)`` returns adversarial images for one batch; the evaluator
checks every result stays inside the eps-ball and [0, 1].

Gradient mode (``bptt``/``bptr``/``bptr_rga``) and the attacker's surrogate are options of every gradient
attack, not separate attacks: the model is wrapped in an :class:`~bench.snn.classifier.AttackerView`.
Library attacks that reseed the global RNG run inside ``torch.random.fork_rng`` with the attack's seed, so
they neither depend on nor change the rest of the run's random stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bench.registry import Registry
from bench.snn.classifier import AttackerView, SNNClassifier


@dataclass(frozen=True)
class GradientParams:
    """Options shared by gradient attacks. ``eps``/``alpha`` None = the dataset's threat model;
    ``eot`` None = automatic (10 samples for randomized models, 1 otherwise)."""

    eps: float | None = None
    alpha: float | None = None
    steps: int = 7
    grad_mode: str = "bptt"
    surrogate: str | None = None
    gamma: float | None = None
    eot: int | None = None
    seed: int = 0


class Attack:
    """Base attack. Subclasses set ``Params`` and implement :meth:`perturb`."""

    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    uses_gradient: ClassVar[bool] = True
    Params: ClassVar[type] = GradientParams

    def __init__(self, params: Any, eps: float, alpha: float) -> None:
        self.params = params
        self.eps = float(params.eps if getattr(params, "eps", None) is not None else eps)
        a = getattr(params, "alpha", None)
        self.alpha = float(a if a is not None else alpha)

    def eot_samples(self, model: SNNClassifier) -> int:
        """EOT samples: explicit value, else >= 10 for randomized models (spec 4.3), else 1."""
        eot = getattr(self.params, "eot", None)
        if eot is not None:
            return int(eot)
        return 10 if model.randomized else 1

    def view(self, model: SNNClassifier) -> AttackerView:
        p = self.params
        return AttackerView(model, getattr(p, "grad_mode", "bptt"), getattr(p, "surrogate", None), getattr(p, "gamma", None))

    def generate(self, model: SNNClassifier, x: Tensor, y: Tensor, batch_index: int = 0) -> Tensor:
        """Adversarial examples for one batch, reproducible from ``params.seed`` and the batch index."""
        with seeded(getattr(self.params, "seed", 0) * 1_000_003 + batch_index, x.device):
            return self.perturb(model, x, y).detach()

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The resolved settings, stored with every evaluation."""
        from bench.specs import to_dict

        return {"kind": self.kind, **to_dict(self.params), "eps": self.eps, "alpha": self.alpha}


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run with a private, seeded copy of the global RNG (CPU and the batch's CUDA device)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


ATTACKS: Registry[type[Attack]] = Registry(
    "attack",
    planned=("rfgsm", "bim", "cw", "apgd", "autoattack", "multi_pgd", "transfer", "gaussian", "uniform", "worst"),
)
