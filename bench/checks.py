"""Reliability (gradient-masking) checks, stored as flags (docs/defenses.md 4.4, AutoAttack ``checks.py``).

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
- ``bb_ge_wb``: black-box transfer is not stronger than the best white-box attack at the same eps;
- gradient-masking diagnostics that fail (the standard protocol's, bench/protocol.py):
  ``gradfree_gap`` (the gradient-free Square stage or the transfer stage breaks more samples than the
  binomial tolerance after every gradient stage: the gradients the attacks followed were not the
  model's), ``large_eps`` (robust accuracy at a large budget is not near 0), ``more_iters`` (more
  iterations and a restart still lower accuracy beyond tolerance: the attack had not converged),
  ``library_warning`` (a warning raised or printed inside a library attack, e.g. AutoAttack's
  "Square Attack has decreased the robust accuracy ... unreliable"), ``protocol_le_attacks`` (the
  protocol is not above any other stored bounded attack on the same samples).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnbench.protocol import binomial_tolerance, counts_toward_worst
from snnbench.store import Evaluation, FlagRecord

ZERO_GRAD_MAX = 0.10
EPS_TOL = 1e-9
LARGE_EPS = 0.5  # pixel units: any image can be moved halfway to any other; accuracy must collapse
LARGE_EPS_MAX = 0.10  # robust accuracy allowed at LARGE_EPS [I]
_LIBRARY_MARKERS = ("unreliable", "warning", "randomized defense", "zero gradient")


def zero_grad_fraction(view: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of samples whose CE input gradient is exactly zero (one draw for randomized models)."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(view(x), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return float((g.flatten(1).abs().amax(1) == 0).float().mean())


def zero_grad_flag(scope: str, fraction: float, attacker_gradient: bool = False) -> FlagRecord:
    """``zero_grad`` fails above :data:`ZERO_GRAD_MAX`, except under a gradient the attacker chose (a protocol
    stage's own surrogate or gradient mode): a narrow attacker surrogate that vanishes on a model is that
    stage's weakness, not the model's masking; the model's own gradient is checked in its own stages
    (APGD-CE, APGD-T, the interior stage), so the fraction is kept as information there."""
    msg = f"{100 * fraction:.1f}% of samples have a zero input gradient (warn above {100 * ZERO_GRAD_MAX:.0f}%)"
    if attacker_gradient and fraction > ZERO_GRAD_MAX:
        msg += "; under the attacker's surrogate/gradient mode: informative (the model's own gradient is checked in its own stages)"
    return FlagRecord(scope, "zero_grad", attacker_gradient or fraction <= ZERO_GRAD_MAX, fraction, msg)


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


def monotone_flag(eps: Sequence[float], acc: Sequence[float], tol: float, n: int | None = None,
                  of: int | None = None) -> FlagRecord:
    """Robust accuracy must not increase with eps (by more than ``tol``); ``n``: the samples the sweep ran on,
    ``of``: the samples the attacks were evaluated on (when more, the sweep's numbers are a subset's)."""
    worst = max((b - a for a, b in zip(acc, acc[1:], strict=False)), default=0.0)
    pairs = ", ".join(f"{e:.4g}:{100 * a:.1f}%" for e, a in zip(eps, acc, strict=True))
    on = f" (PGD-7 on the first {n} test samples" + (f", a subset of the {of} the attacks ran on)" if of and of > n else ")") \
        if n else ""
    return FlagRecord("run", "eps_monotone", worst <= tol, worst, f"PGD robust accuracy over eps {pairs}{on}")


@dataclass(frozen=True)
class EvalSummary:
    """What the comparison checks need of a stored evaluation (its capabilities read from the config)."""

    name: str
    kind: str
    eps: float
    robust: float
    grad_mode: str = "bptt"
    loss: str = "ce"
    white_box: bool = True  # a gradient attack on the model itself, bounded in L-inf
    counts: bool = True  # enters an L-inf worst case (bench.protocol.counts_toward_worst)
    n: int = 0
    protocol: bool = False
    stage: bool = False  # one stage of the protocol's cascade (cumulative outcome): not compared itself

    @classmethod
    def of(cls, e: Evaluation) -> EvalSummary:
        cfg = json.loads(e.attack_config_json)
        counts = counts_toward_worst(cfg, e.eps)
        white = counts and bool(cfg.get("uses_gradient", True)) and not cfg.get("transfer", cfg.get("kind") == "transfer") \
            and not cfg.get("gradient_free", False)
        return cls(
            name=e.attack,
            kind=cfg.get("kind", e.attack),
            eps=e.eps,
            robust=e.robust_acc,
            grad_mode=cfg.get("grad_mode", "bptt"),
            loss=cfg.get("loss", "ce"),
            white_box=white and "stage" not in cfg and not cfg.get("composite", False),
            counts=counts,
            n=e.n,
            protocol=cfg.get("kind") == "standard" and "stage" not in cfg,
            stage="stage" in cfg,
        )


def _versus(e: EvalSummary, refs: Sequence[EvalSummary], kind: str, tol: float, at_most: bool, what: str,
            ref_what: str) -> list[FlagRecord]:
    """One comparison flag of ``e`` against the strongest (lowest) of ``refs``: ok when ``e`` is at most
    (``at_most``) or at least that reference, within ``tol``; no flag when nothing compares."""
    if not refs:
        return []
    ref = min(refs, key=lambda o: o.robust)
    d = e.robust - ref.robust
    ok = d <= tol if at_most else d >= -tol
    return [FlagRecord(e.name, kind, ok, d, f"{what} {100 * e.robust:.2f}% vs {ref_what}{ref.name} {100 * ref.robust:.2f}%")]


def comparison_flags(evals: Sequence[EvalSummary], tol: float) -> list[FlagRecord]:
    """APGD not weaker than PGD, black-box not stronger than white-box (same eps, same samples), and the
    protocol not weaker than any other bounded attack stored at its eps or below."""
    flags = []
    for e in evals:
        if e.stage:
            continue
        same = [o for o in evals if abs(o.eps - e.eps) <= EPS_TOL and o.name != e.name and o.n == e.n]
        if e.kind == "apgd" and e.loss == "ce":  # like for like: same loss, 100 vs 7 iterations
            pgd = [o for o in same if o.kind == "pgd" and o.grad_mode == e.grad_mode]
            flags += _versus(e, pgd, "apgd_le_pgd", tol, True, "APGD", "")
        if e.kind == "transfer":
            flags += _versus(e, [o for o in same if o.white_box], "bb_ge_wb", tol, False, "black-box", "white-box ")
        if e.protocol:
            others = [o for o in evals if o.counts and not o.protocol and not o.stage and o.n == e.n
                      and o.eps <= e.eps + EPS_TOL]
            flags += _versus(e, others, "protocol_le_attacks", tol, True, "protocol", "strongest other attack ")
    return flags


# --- gradient-masking diagnostics ------------------------------------------------------------------
class _Tee(io.TextIOBase):
    """Write to the real stdout and keep a copy (the user still sees a library's progress lines)."""

    def __init__(self, out: io.TextIOBase) -> None:
        self.out, self.buf = out, io.StringIO()

    def write(self, text: str) -> int:
        self.buf.write(text)
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


class _Collect(logging.Handler):
    """A logging handler that keeps the messages of WARNING and above."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


#: loggers the attack libraries report through: fra31's AutoAttack (``pyautoattack``) logs its reliability
#: verdicts ("Square Attack has decreased the robust accuracy ... unreliable", "points with zero gradient",
#: "randomized defense") to ``logging.getLogger('auto-attack')`` when it was given a logger
LIBRARY_LOGGERS = ("auto-attack",)


@contextlib.contextmanager
def library_messages() -> Iterator[list[str]]:
    """Collect what a library attack reports inside the block: warnings raised (``warnings.warn``), WARNING+
    records on its loggers (:data:`LIBRARY_LOGGERS`) and verdict lines printed (printed lines still reach
    the terminal)."""
    import sys

    out: list[str] = []
    tee = _Tee(sys.stdout)
    handler = _Collect()
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    for lg in loggers:
        lg.addHandler(handler)
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(tee):
        warnings.simplefilter("always")
        try:
            yield out
        finally:
            for lg in loggers:
                lg.removeHandler(handler)
            out.extend(str(w.message) for w in caught if "autoattack" in (w.filename or ""))
            out.extend(handler.messages)
            out.extend(line for line in tee.buf.getvalue().splitlines()
                       if any(m in line.lower() for m in _LIBRARY_MARKERS))


def library_flag(scope: str, messages: Sequence[str]) -> FlagRecord:
    """Fails when a library attack warned (the warning text is stored, not only printed)."""
    if not messages:
        return FlagRecord(scope, "library_warning", True, 0.0, "no warning from the attack library")
    first = messages[0].strip().replace("\n", " ")[:300]
    return FlagRecord(scope, "library_warning", False, float(len(messages)),
                      f"{len(messages)} library warning(s): {first}")


def protocol_flags(scope: str, stages: Sequence[dict], n: int) -> list[FlagRecord]:
    """``gradfree_gap``: the gradient-free, decision-based and transfer stages, run on the samples every
    gradient stage left robust, must not break more than the binomial tolerance of them (the gradients the
    attacks followed were then not the model's: a decoy). The message names each such stage, how many
    samples it broke and the first sample indices."""
    def free(s: dict) -> bool:
        return bool(s.get("gradient_free", s["kind"] in ("square", "transfer")))

    grad = [s for s in stages if not free(s)]
    if not grad or n == 0:
        return []
    after_grad = grad[-1]["robust"]
    final = stages[-1]["robust"]
    gap = after_grad - final
    tol = binomial_tolerance(after_grad, n)
    extra = ", ".join(
        f"{s['name']} {s['n_broken']}" + (f" (samples {', '.join(map(str, s['broken'][:8]))})" if s.get("broken") else "")
        + (" skipped" if s.get("skipped") else "")
        for s in stages if free(s)
    )
    return [FlagRecord(scope, "gradfree_gap", gap <= tol, gap,
                       f"after the gradient stages {100 * after_grad:.2f}%, after the gradient-free stages "
                       f"{100 * final:.2f}% (broken: {extra}; tolerance {100 * tol:.1f} points)")]


def large_eps_flag(robust: float, eps: float, n: int) -> FlagRecord:
    """Robust accuracy under a large budget must be near 0 (else the attack, not the model, is failing)."""
    return FlagRecord("run", "large_eps", robust <= LARGE_EPS_MAX, robust,
                      f"PGD robust accuracy at eps {eps:.3g}: {100 * robust:.1f}% on {n} samples "
                      f"(fails above {100 * LARGE_EPS_MAX:.0f}%)")


def more_iters_flag(base: float, more: float, n: int, what: str) -> FlagRecord:
    """More iterations and a restart must not lower accuracy beyond tolerance (convergence)."""
    d = base - more
    tol = binomial_tolerance(base, n)
    return FlagRecord("run", "more_iters", d <= tol, d,
                      f"{what}: {100 * base:.1f}% -> {100 * more:.1f}% with twice the iterations and a restart "
                      f"(tolerance {100 * tol:.1f} points, {n} samples)")
