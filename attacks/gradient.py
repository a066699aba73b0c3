"""White-box gradient attacks (spec/defenses.md 4.2): FGSM and PGD through torchattacks on the
attacker's view of the SNN (fixed gradient mode and surrogate)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from attacks.base import ATTACKS, Attack, GradientParams
from bench.errors import BenchError
from bench.snn.classifier import SNNClassifier


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        raise BenchError(
            "torchattacks is not installed; run: pip install --no-deps torchattacks==3.5.1 "
            "(--no-deps: its requests~=2.25.1 pin would downgrade requests)"
        ) from None
    return torchattacks


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """FGSM (RAT Eq. 5, FEEL Eq. 15): x' = clip_[0,1](x + eps sign(grad_x CE(f(x), y))), CE on the
    mean-over-T logits; torchattacks ``FGSM``."""

    kind = "fgsm"
    description = "fast gradient sign method, one step of size eps"

    @dataclass(frozen=True)
    class Params(GradientParams):
        steps: int = 1

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        return _torchattacks().FGSM(self.view(model), eps=self.eps)(x, y)


@ATTACKS.register("pgd")
class PGD(Attack):
    """PGD (RAT Eq. 6, FEEL Eq. 16-17): uniform random start in the eps-ball, ``steps`` signed steps of
    size alpha, projection onto the ball and [0, 1]; returns the last iterate (torchattacks ``PGD``,
    as the reference code). Paper setting: eps 8/255, alpha 0.01, 7 steps, one random start."""

    kind = "pgd"
    description = "projected gradient descent, random start (alpha, steps)"
    Params = GradientParams

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        atk = _torchattacks().PGD(self.view(model), eps=self.eps, alpha=self.alpha, steps=self.params.steps, random_start=True)
        return atk(x, y)
