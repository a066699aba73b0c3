"""Black-box transfer attack (RAT §5.2, FEEL §5.2, MPD-SGR "Black-box"): craft adversarial examples on a
substitute model, evaluate them on the target.

The substitute is the papers' choice: same architecture, dataset and T, vanilla training, a different
seed (FEEL; RAT's ``bb`` checkpoints). The runner builds it through the same train-or-load cache
(``needs_substitute``) and calls :meth:`Transfer.set_substitute`; this module never imports the runner.
The target's gradient is never used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor

from snnbench.attacks.base import ATTACKS, Attack, GradientParams
from snnbench.errors import BenchError
from snnbench.snn.classifier import SNNClassifier


def sources() -> list[str]:
    """Attack kinds usable as the white-box source: bounded L-inf gradient attacks (capabilities)."""
    return [k for k in ATTACKS if ATTACKS.get(k).is_white_box_source()]


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

    def __init__(self, params: Params, eps: float, alpha: float) -> None:
        super().__init__(params, eps, alpha)
        valid = sources()
        if params.source not in valid:
            raise BenchError(
                f"transfer source: {params.source!r} is not a white-box attack; valid: {', '.join(valid)}"
            )
        cls = ATTACKS.get(params.source)
        names = {f.name for f in dataclasses.fields(cls.Params)}
        inner = cls.Params(**{k: v for k, v in dataclasses.asdict(params).items() if k in names})
        self.inner: Attack = cls(inner, eps, alpha)
        self.substitute: SNNClassifier | None = None
        self.substitute_id = ""

    def set_substitute(self, model: SNNClassifier, identity: str) -> None:
        """Attach the substitute model; ``identity`` (its config hash) becomes part of the stored config."""
        self.substitute, self.substitute_id = model, identity

    def eot_samples(self, model: SNNClassifier) -> int:
        return self.inner.eot_samples(self.substitute) if self.substitute is not None else 1

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        if self.substitute is None:
            raise BenchError(
                "transfer: no substitute model attached (the pipeline attaches one; see bench/prepare.py attach_substitutes)"
            )
        self.substitute.eval()
        return self.inner.perturb(self.substitute, x, y)

    def config(self) -> dict:
        return {**super().config(), "substitute": self.substitute_id}
