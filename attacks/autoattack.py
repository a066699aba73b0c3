"""APGD and AutoAttack from fra31's code (PyPI ``pyautoattack`` 0.2.0), on the attacker's view of the SNN.

Croce & Hein, ICML 2020. We use fra31's implementation, not torchattacks' ``APGD``/``AutoAttack``, whose
defaults run 10 iterations instead of 100 (spec/ecosystem.md 2.2, 3.2). Traps handled here:

- fra31's attacks call ``torch.random.manual_seed`` inside ``perturb``: they run inside
  :func:`attacks.base.seeded` (``fork_rng``), so the rest of the run's RNG stream is unchanged;
- inputs are cast to float32 and must be 4-D NCHW (our images are);
- its EOT (``eot_iter``) loops over forward/backward passes; we pass our EOT sample count to it (the only
  attacks here whose EOT is not batched);
- its per-point verdicts on a randomized model come from one stochastic forward; the evaluator re-scores
  the returned images over several draws (spec/ecosystem.md 3.4), so that single-draw verdict never
  becomes the stored number.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from attacks.base import ATTACKS, Attack, GradientParams
from bench.eot_defaults import RAND_EOT
from bench.errors import BenchError
from bench.snn.classifier import SNNClassifier

AA_VERSIONS = ("auto", "standard", "rand")


def _pyautoattack():
    try:
        import pyautoattack
        import pyautoattack.autopgd_base  # noqa: F401
    except ImportError:
        raise BenchError("pyautoattack is not installed; run: pip install pyautoattack==0.2.0") from None
    return pyautoattack


@ATTACKS.register("apgd")
class APGD(Attack):
    """APGD-CE / APGD-DLR (Croce & Hein 2020, Alg. 1): step-size-adaptive PGD with momentum and
    checkpoints, ``steps`` = 100 iterations (the AutoAttack setting), ``restarts`` random restarts, L-inf.
    ``alpha`` is unused (APGD sets its own step size, starting at 2 eps)."""

    kind = "apgd"
    description = "fra31 APGD (ce or dlr loss), 100 iterations"

    @dataclass(frozen=True)
    class Params(GradientParams):
        steps: int = 100
        loss: str = "ce"
        restarts: int = 1

    def __init__(self, params: Params, eps: float, alpha: float) -> None:
        super().__init__(params, eps, alpha)
        if params.loss not in ("ce", "dlr"):
            raise BenchError(f"apgd loss: {params.loss!r} is not a loss; valid: ce, dlr")
        if params.steps < 1 or params.restarts < 1:
            raise BenchError(f"apgd steps and restarts must be >= 1, got {params.steps}, {params.restarts}")

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        autopgd = _pyautoattack().autopgd_base
        p = self.params
        atk = autopgd.APGDAttack(
            self.view(model),
            n_iter=p.steps,
            norm="Linf",
            n_restarts=p.restarts,
            eps=self.eps,
            seed=p.seed,
            loss=p.loss,
            eot_iter=self.eot_samples(model),
            rho=0.75,
            device=x.device,
        )
        return atk.perturb(x, y).to(x.dtype)


@ATTACKS.register("autoattack")
class AutoAttack(Attack):
    """AutoAttack (Croce & Hein 2020), L-inf, fra31's ``run_standard_evaluation`` cascade.

    ``version``: ``standard`` (APGD-CE, APGD-T, FAB-T, Square; 100 iterations, 5000 queries) for
    deterministic models, ``rand`` (APGD-CE + APGD-DLR with EOT over 20 passes) for randomized ones;
    ``auto`` (default) picks by ``model.randomized``. ``eot`` overrides the EOT passes of the APGD parts
    (``rand`` default 20; ``--eot 1`` turns EOT off for a with/without comparison).
    """

    kind = "autoattack"
    description = "fra31 AutoAttack: standard, or rand (EOT 20) for randomized models"

    @dataclass(frozen=True)
    class Params(GradientParams):
        version: str = "auto"

    def __init__(self, params: Params, eps: float, alpha: float) -> None:
        super().__init__(params, eps, alpha)
        if params.version not in AA_VERSIONS:
            raise BenchError(
                f"autoattack version: {params.version!r} is unknown; valid: {', '.join(AA_VERSIONS)}"
            )

    def version_for(self, model: SNNClassifier) -> str:
        v = self.params.version
        return ("rand" if model.randomized else "standard") if v == "auto" else v

    def eot_samples(self, model: SNNClassifier) -> int:
        if self.params.eot is not None:
            return int(self.params.eot)
        return RAND_EOT if self.version_for(model) == "rand" else super().eot_samples(model)

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        aa = _pyautoattack().AutoAttack(
            self.view(model),
            eps=self.eps,
            norm="Linf",
            version=self.version_for(model),
            seed=self.params.seed,
            device=x.device,
        )
        n = self.eot_samples(model)
        aa.apgd.eot_iter = aa.apgd_targeted.eot_iter = n
        x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=max(1, len(x)))
        return x_adv.to(x.dtype)
