"""Attack kinds on a uniform base (docs/design.md: ``AttackSpec`` with capability flags).

An attack instance is built from its YAML ``params`` (a frozen dataclass) and the dataset's threat model
(default eps/alpha). ``generate(model, x, y)`` returns adversarial images for one batch; the evaluator
checks every result stays inside [0, 1] and, for L-inf attacks (``norm == "linf"``), inside the eps-ball.

Gradient mode (``bptt``/``bptr``/``bptr_rga``) and the attacker's surrogate are options of every gradient
attack, not separate attacks: the model is wrapped in an :class:`~bench.snn.classifier.AttackerView`.
EOT is an option too: every input gradient is the mean over ``eot_samples`` stochastic forward passes,
batched in one forward (:func:`attacks.eot.loss_grad`); it is on automatically (10 samples, docs/defenses.md 4.3)
for models whose parts declare ``randomized``.

Capability attributes (class variables), the one place that says what an attack is. They are stored in
every evaluation's attack config (:meth:`Attack.config`), so the read side (report, ``bench check``, the
worst case: :func:`bench.protocol.counts_toward_worst`) never keeps its own list of attack names:

- ``norm``: ``"linf"`` or ``"l2"`` (the threat model it is measured in), ``None`` for random noise;
- ``bounded``: every returned image lies in the ``norm`` ball of radius eps (the evaluator enforces it
  for ``"linf"``); ``False`` for unbounded attacks (FEEL's L2 C&W, Gaussian noise);
- ``uses_gradient``: calls backward on the *target* model; ``gradient_free``: queries the target's
  outputs only (Square, noise); ``transfer``: crafted on a substitute model (the runner attaches one);
- ``from_store``: computed from stored per-sample outcomes, never run on a model (``worst``);
- ``composite``: a cascade of stages run by the runner (the standard protocol, ``attacks/standard.py``);
- ``always_moves``: every returned image differs from its input by construction (the evaluator refuses an
  evaluation in which nothing moved: a no-op is an error, not a result).

An attack counts toward a worst case exactly when it is ``bounded`` in L-inf at an eps not above the
worst case's eps; a white-box source for ``transfer`` is any L-inf bounded gradient attack.

Library attacks that reseed the global RNG run inside ``torch.random.fork_rng`` with the attack's seed, so
they neither depend on nor change the rest of the run's random stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from snnbench.eot_defaults import AUTO_EOT
from snnbench.errors import BenchError
from snnbench.kind_table import Registry
from snnbench.seeding import seeded
from snnbench.snn.classifier import AttackerView, SNNClassifier


@dataclass(frozen=True)
class Cost:
    """Work per attacked sample: input-gradient steps (a forward and a backward pass each) and forward-only
    queries. The read side projects time from it (bench/cost.py: a forward counts half a step); a cascade's
    cost is the sum of its stages' (an upper bound: later stages see only the samples still robust)."""

    gradients: int = 0
    forwards: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.gradients + other.gradients, self.forwards + other.forwards)

    def __mul__(self, k: int) -> Cost:
        return Cost(self.gradients * k, self.forwards * k)

    @property
    def steps(self) -> float:
        """Input-gradient step equivalents (a forward-only query counts half)."""
        return self.gradients + self.forwards / 2


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
    norm: ClassVar[str | None] = "linf"
    bounded: ClassVar[bool] = True
    gradient_free: ClassVar[bool] = False
    transfer: ClassVar[bool] = False
    from_store: ClassVar[bool] = False
    composite: ClassVar[bool] = False
    #: returns a perturbed image for every sample by construction (sign steps of size alpha, noise): if not
    #: one pixel of the evaluation moved, the attack was a no-op (a step too small to change a float32 pixel,
    #: a gradient that is zero everywhere) and the evaluator refuses it instead of storing clean accuracy as
    #: robust (issue 24). Attacks that return a sample unchanged when they fail to break it (APGD, Square,
    #: RayS) leave it False.
    always_moves: ClassVar[bool] = False
    Params: ClassVar[type] = GradientParams
    #: contracts of tests/test_contracts.py this kind cannot meet, with the reason: {"bounds" | "deterministic"
    #: | "eot": "why"}; declared here, never listed in the test
    contract_opt_out: ClassVar[dict[str, str]] = {}

    @property
    def substitute_trainings(self) -> tuple[str, ...]:
        """The substitute models the runner must attach, by training (``"standard"``: vanilla; ``"at"``:
        vanilla with PGD AT): transfer attacks and the protocol's transfer stage."""
        return ("standard",) if self.transfer else ()

    @property
    def needs_substitute(self) -> bool:
        return bool(self.substitute_trainings)

    def substitute_identity(self, hashes: dict[str, str]) -> str:
        """How the stored config names the substitutes: their config hashes, in :attr:`substitute_trainings`
        order, joined by ``+`` (one substitute: its hash, as before ensembles existed)."""
        return "+".join(hashes[t] for t in self.substitute_trainings)

    def set_substitute(self, model: Any, identity: str, training: str = "standard") -> None:
        """Attach a substitute model (only attacks with :attr:`substitute_trainings` take one)."""
        raise BenchError(f"attack {self.kind!r} takes no substitute model")

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        """The capability attributes, as stored with every evaluation."""
        return {
            "norm": cls.norm,
            "bounded": cls.bounded,
            "uses_gradient": cls.uses_gradient,
            "gradient_free": cls.gradient_free,
            "transfer": cls.transfer,
            "from_store": cls.from_store,
            "composite": cls.composite,
        }

    @classmethod
    def is_white_box_source(cls) -> bool:
        """A bounded L-inf gradient attack on the model itself: usable as a transfer source."""
        return (cls.uses_gradient and cls.bounded and cls.norm == "linf" and not cls.transfer
                and not cls.from_store and not cls.composite)

    def __init__(self, params: Any, eps: float, alpha: float) -> None:
        self.params = params
        self.eps = float(params.eps if getattr(params, "eps", None) is not None else eps)
        a = getattr(params, "alpha", None)
        self.alpha = float(a if a is not None else alpha)
        eot = getattr(params, "eot", None)
        if eot is not None and eot < 1:
            raise BenchError(f"eot must be >= 1 (1 = no EOT), got {eot}")

    def eot_samples(self, model: SNNClassifier) -> int:
        """EOT samples: explicit value, else >= 10 for randomized models (docs/defenses.md 4.3), else 1."""
        return self.eot_for(bool(getattr(model, "randomized", False)))

    def eot_for(self, randomized: bool) -> int:
        """:meth:`eot_samples` for a model that is (not) ``randomized``."""
        if not self.uses_gradient:
            return 1
        eot = getattr(self.params, "eot", None)
        if eot is not None:
            return int(eot)
        return AUTO_EOT if randomized else 1

    def cost(self, randomized: bool = False) -> Cost:
        """Work per sample (:class:`Cost`): ``steps x restarts`` input gradients, each over the EOT draws;
        kinds whose work is counted otherwise override it."""
        if not self.uses_gradient:
            return Cost()
        p = self.params
        return Cost(gradients=int(getattr(p, "steps", 1)) * int(getattr(p, "restarts", 1)) * self.eot_for(randomized))

    def early_stop(self, eot: int) -> bool:
        """Whether an iterative attack may drop a sample from its batch once fooled (issue 25): only on a
        deterministic model (EOT 1) and a surrogate whose width is not a statistic of the batch (the
        quantile and PDSG widths are: a shrinking batch would change the gradient the rest gets)."""
        from snnbench.snn.surrogate import BATCH_SURROGATES

        return eot == 1 and getattr(self.params, "surrogate", None) not in BATCH_SURROGATES

    def view(self, model: SNNClassifier) -> AttackerView:
        p = self.params
        return AttackerView(
            model, getattr(p, "grad_mode", "bptt"), getattr(p, "surrogate", None), getattr(p, "gamma", None)
        )

    def generate(self, model: SNNClassifier, x: Tensor, y: Tensor, batch_index: int = 0) -> Tensor:
        """Adversarial examples for one batch, reproducible from ``params.seed`` and the batch index."""
        with seeded(getattr(self.params, "seed", 0) * 1_000_003 + batch_index, x.device):
            return self.perturb(model, x, y).detach()

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The resolved settings, stored with every evaluation."""
        from snnbench.specs import to_dict

        return {
            "kind": self.kind,
            **to_dict(self.params),
            "eps": self.eps,
            "alpha": self.alpha,
            **self.capabilities(),
        }


def project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Projection onto the L-inf eps-ball around x intersected with [0, 1] (torchattacks' formula)."""
    delta = torch.clamp(x_adv - x, min=-eps, max=eps)
    return torch.clamp(x + delta, min=0, max=1).detach()


ATTACKS: Registry[type[Attack]] = Registry("attack")
