"""The standard SNN evaluation protocol: its versions, stages and the read-side rules (torch-free).

An adaptive L-inf evaluation run as a cascade over the samples that are still robust (AutoAttack's
convention; Croce & Hein 2020), per-sample worst case, seeded. Full design and measurements:
docs/protocol.md.

``snn-standard-v1`` (stored rows stay readable; ``standard_v1`` reruns it):

1. ``apgd-ce``: APGD-CE under the model's own surrogate and gradient mode (BPTT);
2. ``apgd-t``: APGD on the targeted DLR loss (fra31's APGD-T, ``n_target_classes`` targets);
3. ``apgd-ce@<surrogate>``: APGD-CE under each attacker surrogate of the ensemble: triangle at widths
   0.5/1/2, sigmoid, atan, rectangle (surrogate dependence: arXiv 2209.03358) and ``assg``; then
   ``apgd-ce@rga`` through the rate gradient approximation (BPTR, Bu et al. 2023);
4. ``square``: Square Attack (gradient-free, Andriushchenko et al. 2020), ``queries`` queries;
5. ``transfer``: PGD on the vanilla substitute (same data, model, T; seed + 1), evaluated on the target.

``snn-standard-v2`` (issue 20: the strongest SNN attacks, and a floor that a model built to fool gradient
attacks cannot lift):

1-2. ``apgd-ce``, ``apgd-t`` as in v1;
3. ``apgd-ce@<surrogate>`` for five fixed surrogates of v1 (triangle 0.5 and 1, sigmoid, atan, rectangle)
   and its adaptive one, which was a guess at ASSG (a triangle as wide as the median ``|V - V_th|`` of the
   layer) and is kept as ``quantile``;
4. ``sapgd@assg``: SA-PGD with the ASSG surrogate (Wang et al. 2025, arXiv 2512.22522; official code's
   step rule, moments and defaults), its ``a`` searched per batch on a grid inside the official interval;
5. ``sapgd@hart``: SA-PGD through HART's time-averaged gradient (ICLR 2024), its width searched likewise;
6. ``apgd-ce@rga`` as in v1;
7. ``apgd-ce@interior``: APGD-CE ending strictly inside the ball (no eps-ball corners);
8. ``square``: Square, the same 5000 queries as 5 restarts of 1000 (p_init 0.3): random search stalls on
   small images, restarts close most of that gap (docs/protocol.md);
9. ``rays``: RayS, a hard-label (decision-only) ray search (Chen & Gu 2020), ``rays_queries`` queries:
   scores that mislead cannot steer it, and its examples lie at the boundary's radius, off the eps-ball's
   corners;
10. ``transfer``: APGD-CE on the ensemble of two substitutes, vanilla and vanilla with PGD AT (seed + 1).

Measured and left out (docs/protocol.md): v1's triangle of width 2 and APGD-CE under PDSG (CVPR 2025)
broke no sample on any digits recipe after the stages before them; Square at 0.95 eps (RayS and the
interior APGD stage already end off the corners). PDSG stays an attack of its own (``apgd_pdsg``).

Inside every APGD stage a sample leaves the batch once it is fooled (deterministic models; fra31 iterates
it to the end): the same samples are fooled at a fraction of the cost (issue 25).

Stages 4-6 need snnbench neurons (a foreign model's stage is skipped with its reason). Randomized models
get EOT in every gradient stage (batched) and the logits averaged over EOT draws in Square; every stage is
scored over several inference draws ("correct in every draw"). The ``full`` budget is the setting above
(100 iterations, 5000 Square queries); ``smoke`` is the CI budget (README "Leaderboard and CI gate").

This module holds only data and rules the read side needs (report, ``bench check``, export), so they do
not import torch: which stored evaluations count toward a worst case, the masking flags, the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
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

#: attacker surrogates of v1's stage 3 (name, width); v2 keeps the first six (its ASSG stage is SA-PGD)
SURROGATE_ENSEMBLE: tuple[tuple[str, float], ...] = (
    ("triangle", 0.5),
    ("triangle", 1.0),
    ("triangle", 2.0),
    ("sigmoid", 4.0),
    ("atan", 2.0),
    ("rectangle", 1.0),
    ("assg", 1.0),
)

#: v2's fixed and quantile-width surrogates (v1's guessed ``assg`` stage was the quantile rule: it keeps its
#: place under its own name; the faithful ASSG runs as SA-PGD)
#: (v2 drops v1's triangle of width 2: it broke no sample on any of the nine digits recipes after the stages
#: before it, docs/protocol.md)
V2_SURROGATES: tuple[tuple[str, float], ...] = (*SURROGATE_ENSEMBLE[:2], *SURROGATE_ENSEMBLE[3:6], ("quantile", 1.0))

BUDGETS: dict[str, dict[str, int]] = {
    # AutoAttack's standard setting: 100 APGD iterations, 9 target classes, 5000 Square queries
    "full": {"steps": 100, "target_classes": 9, "queries": 5000, "transfer_steps": 10},
    # CI budget (smoke suite, digits, 2 CPU cores): same stages, fewer iterations and queries
    "smoke": {"steps": 20, "target_classes": 3, "queries": 300, "transfer_steps": 7},
}


#: budget numbers only v2 has (kept out of BUDGETS so v1's stored configs hash as before)
V2_BUDGETS: dict[str, dict[str, int]] = {
    "full": {"square_restarts": 5, "rays_queries": 1000},
    "smoke": {"square_restarts": 2, "rays_queries": 200},
}
#: v2's Square: the budget's queries split over ``square_restarts`` restarts, with this initial square size
SQUARE_P_INIT_V2 = 0.3
#: the substitutes of v2's transfer stage (by training): vanilla and vanilla with PGD AT
V2_SUBSTITUTES = ("standard", "at")


def budget_of(budget: str, version: str) -> dict[str, int]:
    """The numbers of a budget at a protocol version."""
    return {**BUDGETS[budget], **(V2_BUDGETS[budget] if version == "v2" else {})}


def stage_names(surrogates: tuple[tuple[str, float], ...] = SURROGATE_ENSEMBLE, version: str = "v1") -> list[str]:
    """The stage names of the cascade, in order."""
    names = ["apgd-ce", "apgd-t"]
    if version == "v1":
        names += [f"apgd-ce@{s}{'' if s == 'assg' else f'-{w:g}'}" for s, w in surrogates]
        return names + ["apgd-ce@rga", "square", "transfer"]
    names += [f"apgd-ce@{s}" + ("" if s == "quantile" else f"-{w:g}") for s, w in V2_SURROGATES]
    names += ["sapgd@assg", "sapgd@hart", "apgd-ce@rga", "apgd-ce@interior"]
    return names + ["square", "rays", "transfer"]


def describe(budget: str = "full", version: str = "v1") -> str:
    """The definition in one paragraph, printed by ``bench ls attacks``."""
    b = budget_of(budget, version)
    if version == "v2":
        r = b["square_restarts"]
        return (
            f"{PROTOCOL_VERSIONS[version]} ({budget}): cascade over still-robust samples, per-sample worst case, "
            f"seeded: APGD-CE {b['steps']} it -> APGD-T DLR ({b['target_classes']} targets) -> APGD-CE under "
            f"{', '.join(f'{s}({w:g})' for s, w in V2_SURROGATES)} -> SA-PGD with ASSG (a searched) -> SA-PGD "
            f"through HART (width searched) -> APGD-CE through RGA/BPTR -> APGD-CE inside "
            f"the ball ({INTERIOR_RADIUS:g} eps, jitter) -> Square {r}x{b['queries'] // r} queries -> RayS "
            f"hard-label {b['rays_queries']} queries -> transfer APGD-CE {b['steps']} it from the vanilla + AT substitutes; EOT on for "
            "randomized models"
        )
    return (
        f"{PROTOCOL_VERSIONS[version]} ({budget}): cascade over still-robust samples, per-sample worst case, seeded: "
        f"APGD-CE {b['steps']} it (model's surrogate) -> APGD-T DLR ({b['target_classes']} targets) -> "
        f"APGD-CE under {', '.join(f'{s}' + ('' if s == 'assg' else f'({w:g})') for s, w in SURROGATE_ENSEMBLE)}"
        f" and RGA/BPTR -> Square {b['queries']} queries -> transfer PGD-{b['transfer_steps']} from the vanilla "
        f"substitute; EOT on for randomized models"
    )


#: Failed flags that are an artefact of the CI (smoke) budget, not of the model: a 20-iteration protocol may
#: sit above a 100-iteration APGD run of the same model, and more iterations may still lower it.
SMOKE_BUDGET_FLAGS = frozenset({"protocol_le_attacks", "more_iters"})


#: scopes of the checks about the model itself (not about one evaluation of it)
RUN_SCOPES = frozenset({"run", "model"})


def blocks_rank(flag_kind: str, budget: str) -> bool:
    """A failed flag of this kind keeps a row off the ranking (listed as unreliable, its number an upper
    bound): every failed check does, except the smoke budget's own artefacts (:data:`SMOKE_BUDGET_FLAGS`)."""
    return not (budget != "full" and flag_kind in SMOKE_BUDGET_FLAGS)


def ranking_blockers(failed: Iterable[str], protocol: str, budget: str) -> list[str]:
    """The one rule (report, CLI, API) for which failed checks, written ``"kind (scope)"``, keep the protocol
    row of the evaluation named ``protocol`` off the ranking: the checks about the model (scope ``run`` or
    ``model``: masking, randomness, non-differentiability, batch dependence) and the protocol's own (its
    scope or one of its stages), except the smoke budget's artefacts (:func:`blocks_rank`); an unreadable
    stored row always. A check of another evaluation of the model (an AutoAttack "unreliable" warning, zero
    gradients of a plain PGD) speaks about that evaluation, not the protocol's number."""
    out = []
    for f in failed:
        kind, _, scope = f.partition(" (")
        scope = scope[:-1] if scope.endswith(")") else scope
        ours = scope in RUN_SCOPES or scope == protocol or scope.startswith(protocol + "/")
        if f.startswith("unreadable") or (ours and blocks_rank(kind, budget)):
            out.append(f)
    return out


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


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exact: the tail behind the gate's McNemar/sign tests and the
    submission check's sign test."""
    return sum(math.comb(n, i) for i in range(max(k, 0), n + 1)) / 2.0**n


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
