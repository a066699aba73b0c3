"""Reliability (gradient-masking) checks, stored as flags (spec/defenses.md 4.4, AutoAttack ``checks.py``).

Each check returns :class:`~bench.store.FlagRecord` values (scope = an attack name or ``"run"``); the
runner stores them and ``bench run`` prints them under its table. They are warnings about the evaluation,
except the eps-ball/range check, which the evaluator enforces by raising. Checks:

- ``in_eps_ball``: the largest L-inf perturbation (informative for unbounded noise attacks);
- ``zero_grad``: fraction of samples whose input gradient (attacker's view) is exactly zero; above
  ``ZERO_GRAD_MAX`` the attack has nothing to follow (AutoAttack's zero-gradient warning) [I: 10 %];
- ``expected_acc``: randomized models only, robust accuracy averaged over inference draws (the stored
  per-sample outcome is the conservative "correct in every draw");
- ``randomized_logits``: logits differ across identical calls exactly when the model declares itself
  randomized (undeclared randomness means EOT is silently off; declared but absent means a defense's
  randomness is switched off in eval mode);
- ``eps_monotone``: robust accuracy does not increase along a short PGD eps sweep;
- ``apgd_le_pgd``: APGD-CE (100 iterations) is not weaker than PGD-CE at the same eps and gradient mode
  (TGO reviewers' symptom); APGD-DLR is not compared (a different loss may legitimately be weaker);
- ``bb_ge_wb``: black-box transfer is not stronger than the best white-box attack at the same eps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.store import Evaluation, FlagRecord

ZERO_GRAD_MAX = 0.10
EPS_TOL = 1e-9
WHITE_BOX = ("fgsm", "rfgsm", "pgd", "bim", "cw", "multi_pgd", "apgd", "autoattack")


def zero_grad_fraction(view: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of samples whose CE input gradient is exactly zero (one draw for randomized models)."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(view(x), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return float((g.flatten(1).abs().amax(1) == 0).float().mean())


def zero_grad_flag(scope: str, fraction: float) -> FlagRecord:
    return FlagRecord(
        scope,
        "zero_grad",
        fraction <= ZERO_GRAD_MAX,
        fraction,
        f"{100 * fraction:.1f}% of samples have a zero input gradient (warn above {100 * ZERO_GRAD_MAX:.0f}%)",
    )


def ball_flag(scope: str, max_linf: float, eps: float, bounded: bool) -> FlagRecord:
    if bounded:
        return FlagRecord(
            scope, "in_eps_ball", True, max_linf, f"max L-inf {max_linf:.4g} <= eps {eps:.4g}, in [0, 1]"
        )
    return FlagRecord(
        scope,
        "in_eps_ball",
        True,
        max_linf,
        f"unbounded noise (scale {eps:.4g}): in [0, 1], max L-inf {max_linf:.4g}",
    )


def expected_flag(scope: str, draws: int, clean: float, robust: float) -> FlagRecord:
    return FlagRecord(
        scope,
        "expected_acc",
        True,
        robust,
        f"mean over {draws} draws: clean {100 * clean:.2f}%, robust {100 * robust:.2f}% "
        "(table: correct in every draw)",
    )


@torch.no_grad()
def logit_spread(model: nn.Module, x: Tensor, calls: int = 3) -> float:
    """Largest absolute difference between the logits of identical calls."""
    outs = torch.stack([model(x) for _ in range(calls)])  # [calls, B, K]
    return float((outs - outs[0]).abs().max())


def randomized_flag(spread: float, declared: bool) -> FlagRecord:
    varies = spread > 1e-6
    ok = varies == declared
    what = "vary" if varies else "do not vary"
    expect = "randomized (EOT on)" if declared else "deterministic (EOT off)"
    return FlagRecord(
        "run",
        "randomized_logits",
        ok,
        spread,
        f"logits {what} across identical calls; model declared {expect}",
    )


def monotone_flag(eps: Sequence[float], acc: Sequence[float], tol: float) -> FlagRecord:
    """Robust accuracy must not increase with eps (by more than ``tol``)."""
    worst = max((b - a for a, b in zip(acc, acc[1:], strict=False)), default=0.0)
    pairs = ", ".join(f"{e:.4g}:{100 * a:.1f}%" for e, a in zip(eps, acc, strict=True))
    return FlagRecord("run", "eps_monotone", worst <= tol, worst, f"PGD robust accuracy over eps {pairs}")


@dataclass(frozen=True)
class EvalSummary:
    name: str
    kind: str
    eps: float
    robust: float
    grad_mode: str = "bptt"
    loss: str = "ce"

    @classmethod
    def of(cls, e: Evaluation) -> EvalSummary:
        cfg = json.loads(e.attack_config_json)
        return cls(
            e.attack,
            cfg.get("kind", e.attack),
            e.eps,
            e.robust_acc,
            cfg.get("grad_mode", "bptt"),
            cfg.get("loss", "ce"),
        )


def comparison_flags(evals: Sequence[EvalSummary], tol: float) -> list[FlagRecord]:
    """APGD not weaker than PGD, black-box not stronger than white-box (same eps, same samples)."""
    flags = []
    for e in evals:
        same = [o for o in evals if abs(o.eps - e.eps) <= EPS_TOL and o.name != e.name]
        if e.kind == "apgd" and e.loss == "ce":  # like for like: same loss, 100 vs 7 iterations
            pgd = [o for o in same if o.kind == "pgd" and o.grad_mode == e.grad_mode]
            if pgd:
                ref = min(pgd, key=lambda o: o.robust)
                d = e.robust - ref.robust
                flags.append(
                    FlagRecord(
                        e.name,
                        "apgd_le_pgd",
                        d <= tol,
                        d,
                        f"APGD {100 * e.robust:.2f}% vs {ref.name} {100 * ref.robust:.2f}%",
                    )
                )
        if e.kind == "transfer":
            wb = [o for o in same if o.kind in WHITE_BOX]
            if wb:
                ref = min(wb, key=lambda o: o.robust)
                d = e.robust - ref.robust
                flags.append(
                    FlagRecord(
                        e.name,
                        "bb_ge_wb",
                        d >= -tol,
                        d,
                        f"black-box {100 * e.robust:.2f}% vs white-box {ref.name} {100 * ref.robust:.2f}%",
                    )
                )
    return flags
