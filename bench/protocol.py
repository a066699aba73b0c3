"""The standard SNN evaluation protocol: its version, stages and the read-side rules (torch-free).

``snn-standard-v1`` is one fixed, adaptive L-inf evaluation, run as a cascade over the samples that are
still robust (AutoAttack's convention; Croce & Hein 2020), per-sample worst case, seeded:

1. ``apgd-ce``: APGD-CE under the model's own surrogate and gradient mode (BPTT);
2. ``apgd-t``: APGD on the targeted DLR loss (fra31's APGD-T, ``n_target_classes`` targets);
3. ``apgd-ce@<surrogate>``: APGD-CE under each attacker surrogate of the ensemble: triangle at widths
   0.5/1/2, sigmoid, atan, rectangle, and the adaptive-sharpness ``assg`` surrogate (Wang et al. 2025,
   arXiv 2512.22522; surrogate dependence: arXiv 2209.03358); then ``apgd-ce@rga`` through the rate
   gradient approximation (BPTR, Bu et al. 2023);
4. ``square``: Square Attack (gradient-free, Andriushchenko et al. 2020), ``queries`` queries;
5. ``transfer``: PGD on the vanilla substitute (same data, model, T; seed + 1), evaluated on the target.

Randomized models get EOT in every gradient stage (batched) and the logits averaged over EOT draws in
Square; every stage is scored over several inference draws ("correct in every draw"). The ``full``
budget is the setting above (100 iterations, 5000 Square queries); ``smoke`` is the CI budget
(documented in README "Leaderboard and CI gate").

This module holds only data and rules the read side needs (report, ``bench check``, export), so they do
not import torch: which stored evaluations count toward a worst case, the masking flags, the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

PROTOCOL_VERSION = "snn-standard-v1"  # the version a stored row without one used
PROTOCOL_VERSIONS = {"v1": "snn-standard-v1", "v2": "snn-standard-v2"}
LATEST = "v2"
PROTOCOL_KIND = "standard"
#: v2's off-corner stages (attacks/interior.py): APGD-CE ending inside the ball, and Square at a radius
#: inside it (with a fifth of the budget's queries)
INTERIOR_RADIUS = 0.95
EPS_TOL = 1e-9

#: attacker surrogates of stage 3 (name, width); None = the neuron's own width is not used: explicit
SURROGATE_ENSEMBLE: tuple[tuple[str, float], ...] = (
    ("triangle", 0.5),
    ("triangle", 1.0),
    ("triangle", 2.0),
    ("sigmoid", 4.0),
    ("atan", 2.0),
    ("rectangle", 1.0),
    ("assg", 1.0),
)

BUDGETS: dict[str, dict[str, int]] = {
    # AutoAttack's standard setting: 100 APGD iterations, 9 target classes, 5000 Square queries
    "full": {"steps": 100, "target_classes": 9, "queries": 5000, "transfer_steps": 10},
    # CI budget (smoke suite, digits, 2 CPU cores): same stages, fewer iterations and queries
    "smoke": {"steps": 20, "target_classes": 3, "queries": 300, "transfer_steps": 7},
}


def stage_names(surrogates: tuple[tuple[str, float], ...] = SURROGATE_ENSEMBLE, version: str = "v1") -> list[str]:
    """The stage names of the cascade, in order (v2 adds the off-corner stages before Square)."""
    names = ["apgd-ce", "apgd-t"]
    names += [f"apgd-ce@{s}{'' if s == 'assg' else f'-{w:g}'}" for s, w in surrogates]
    names.append("apgd-ce@rga")
    if version == "v2":
        names.append("apgd-ce@interior")
    names.append("square")
    if version == "v2":
        names.append("square@interior")
    return names + ["transfer"]


def describe(budget: str = "full", version: str = "v1") -> str:
    """One line per stage: the definition printed by ``bench ls attacks``."""
    b = BUDGETS[budget]
    v2 = (f" -> v2: APGD-CE inside the ball ({INTERIOR_RADIUS:g} eps, per-pixel jitter) and Square at "
          f"{INTERIOR_RADIUS:g} eps ({b['queries'] // 5} queries), so no stage ends only on eps-ball corners"
          if version == "v2" else "")
    return (
        f"{PROTOCOL_VERSIONS[version]} ({budget}): cascade over still-robust samples, per-sample worst case, seeded: "
        f"APGD-CE {b['steps']} it (model's surrogate) -> APGD-T DLR ({b['target_classes']} targets) -> "
        f"APGD-CE under {', '.join(f'{s}' + ('' if s == 'assg' else f'({w:g})') for s, w in SURROGATE_ENSEMBLE)}"
        f" and RGA/BPTR -> Square {b['queries']} queries -> transfer PGD-{b['transfer_steps']} from the vanilla "
        f"substitute{v2}; EOT on for randomized models"
    )


#: Failed flags that are an artefact of the CI (smoke) budget, not of the model: a 20-iteration protocol may
#: sit above a 100-iteration APGD run of the same model, and more iterations may still lower it.
SMOKE_BUDGET_FLAGS = frozenset({"protocol_le_attacks", "more_iters"})


def blocks_rank(flag_kind: str, budget: str) -> bool:
    """A failed flag of this kind keeps a row off the ranking (listed as unreliable, its number an upper
    bound): every failed check does, except the smoke budget's own artefacts (:data:`SMOKE_BUDGET_FLAGS`)."""
    return not (budget != "full" and flag_kind in SMOKE_BUDGET_FLAGS)


def counts_toward_worst(cfg: Mapping[str, Any], eps: float, eval_eps: float | None = None) -> bool:
    """Whether a stored evaluation (its attack config JSON) may enter an L-inf worst case at ``eps``: the
    one rule that ``--attack worst``, the report and the gate share.

    Decided by the capability attributes stored with the evaluation (``attacks/base.py``): a bounded
    L-inf attack at an eps not above ``eps`` (``eval_eps`` given: at exactly ``eps``, as a leaderboard
    column at one budget needs). Clean rows, worst-case rows and the protocol's own final row (its stages
    are stored and count) are left out. Rows stored before the attributes existed fall back to
    ``norm == "linf"`` with the kinds that were unbounded then left out.
    """
    if cfg.get("kind") in ("clean", "worst") or cfg.get("from_store") or is_protocol(cfg):
        return False
    if "bounded" in cfg:
        ok = bool(cfg["bounded"]) and cfg.get("norm") == "linf"
    else:
        ok = cfg.get("norm", "linf") == "linf" and cfg.get("kind") not in ("gaussian", "cw_l2")
    if eval_eps is not None:
        return ok and abs(eval_eps - eps) <= 1e-9
    e = cfg.get("eps")
    return ok and (e is None or float(e) <= eps + EPS_TOL)


def worst_case(outcomes: list[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample worst case of ``(clean, adv)`` outcome pairs on the same samples: a sample is
    clean-correct only if every evaluation found it so, and robust only if no attack fooled it. The one
    reduction behind ``--attack worst``, the report's worst-case column and the API's ``Report.worst``."""
    if not outcomes:
        raise ValueError("worst_case needs at least one evaluation")
    clean = np.logical_and.reduce([np.asarray(c, bool) for c, _ in outcomes])
    adv = np.logical_and.reduce([np.asarray(a, bool) for _, a in outcomes])
    return clean, adv


def is_protocol(cfg: Mapping[str, Any]) -> bool:
    """A stored evaluation of the standard protocol (the leaderboard's ranking number)."""
    return cfg.get("kind") == PROTOCOL_KIND and "stage" not in cfg


def binomial_tolerance(p: float, n: int, k: float = 2.0, floor: float = 0.01) -> float:
    """``max(floor, k sqrt(p (1 - p) / n))``: how far two accuracies on n samples may differ by chance."""
    if n <= 0:
        return 1.0
    p = min(max(p, 0.0), 1.0)
    return max(floor, k * math.sqrt(p * (1 - p) / n))


def cascade_lines(artifact: Mapping[str, Any]) -> list[str]:
    """The protocol's cascade as text, one line per stage (``bench run``, ``print(report)``): each stage's
    robust accuracy is cumulative (after it and every earlier stage), ``broke`` counts the samples that
    stage was the first to break; a stage that could not run says why instead of "broke 0"."""
    n = int(artifact.get("n", 0))
    lines = [f"cascade {artifact.get('version', '?')} ({artifact.get('budget', '?')} budget), n={n}, "
             f"clean {100 * float(artifact.get('clean', 0.0)):.2f}%; robust is cumulative"]
    stages = list(artifact.get("stages", []))
    for i, s in enumerate(stages, 1):
        head = f"  {i:>2}/{len(stages)} {str(s.get('name', '?')):<22}"
        if s.get("skipped"):
            lines.append(f"{head} skipped: {s['skipped']}")
        else:
            lines.append(f"{head} robust {100 * float(s.get('robust', 0.0)):6.2f}%  broke {int(s.get('n_broken', 0)):>4}"
                         f"  ({float(s.get('seconds', 0.0)):.1f}s)")
    return lines
