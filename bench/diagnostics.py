"""Diagnostics after the attacks: reliability and gradient-masking checks (stored as flags), the
membrane-potential histogram, the spiking activity, and a suite's eps/steps sweeps (stored as artifacts).

Each measured check is stored as an artifact and reused by a later call with the same settings, so a
resumed or repeated run does not pay for it twice. The flag logic itself is in :mod:`snnbench.checks`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from snnbench import checks
from snnbench.activity import ACTIVITY_SAMPLES, measure_activity
from snnbench.attacks import ATTACKS
from snnbench.attacks.base import Attack, GradientParams
from snnbench.data import to_float
from snnbench.plan import Plan, make_attack
from snnbench.prepare import Prepared
from snnbench.registry import BenchRegistry
from snnbench.scoring import eval_size, evaluate_attack
from snnbench.seeding import seeded
from snnbench.store import FlagRecord, Store

VPRE_EDGES = [round(-3.0 + 0.1 * i, 2) for i in range(46)]  # v_pre - v_th in [-3, 1.5], 0.1 wide bins


NEAR_THRESHOLD = 0.1  # |v_pre - v_th| below this counts as "near threshold" (TGO Fig. 4; our choice [I])


def run_checks(plan: Plan, prep: Prepared, store: Store, sweep: bool = True, progress: Callable | None = None) -> list[FlagRecord]:
    """Run-level reliability checks (bench/checks.py), stored as flags with scope "run" or an attack name.

    Each measured check is stored as an artifact (``eps_sweep``, ``masking``) and reused by a later call
    with the same settings, so a resumed or repeated run does not pay for it twice.
    """
    model = prep.model
    x, y = prep.check_batch(plan)
    flags = [checks.randomized_flag(checks.logit_spread(model, x), model.randomized)]
    tol = 0.02 if model.randomized else 0.0  # randomized: allow draw-to-draw noise [I]
    contract = getattr(model, "contract", None)
    if contract is not None and not contract.differentiable:
        # the gradient checks cannot run; the failed non_differentiable flag (scope model) says why
        sweep = False
    elif sweep:
        flags.append(_eps_sweep_flag(plan, prep, store, x, y, tol, progress))
    if any(a.composite for _, a in plan.attacks) and (contract is None or contract.differentiable):
        # the standard protocol brings its masking diagnostics
        flags += _masking_flags(plan, prep, store, len(y), progress)
    rows = [checks.EvalSummary.of(e) for e in store.evaluations(prep.run_id)]
    flags += checks.comparison_flags(rows, tol)
    store.record_flags(prep.run_id, flags)
    return flags


def _attacked_eps(plan: Plan) -> float:
    """The largest L-inf budget this plan attacks with (the dataset's when none)."""
    eps = [a.eps for _, a in plan.attacks if a.bounded and a.norm == "linf" and not a.from_store]
    return max(eps, default=plan.dataset.eps)


def _pgd(eps: float, steps: int, alpha: float | None = None) -> Attack:
    a = alpha if alpha is not None else (2.5 * eps / steps if eps > 0 else 0.0)
    return ATTACKS.get("pgd")(GradientParams(eps=eps, alpha=a, steps=steps), eps, a)


def _eps_sweep_flag(plan: Plan, prep: Prepared, store: Store, x: torch.Tensor, y: torch.Tensor, tol: float,
                    progress: Callable | None) -> FlagRecord:
    """``eps_monotone`` along a PGD-7 sweep from 0 up to the largest eps actually attacked."""
    model, top = prep.model, _attacked_eps(plan)
    eps = [f * top for f in (0.0, 0.25, 0.5, 1.0)]
    prev = store.artifacts(prep.run_id, "eps_sweep").get("pgd7")
    if prev and prev["n"] == len(y) and [round(e, 9) for e in prev["eps"]] == [round(e, 9) for e in eps]:
        return checks.monotone_flag(prev["eps"], prev["expected" if model.randomized else "robust"], tol, len(y),
                                    eval_size(prep.data.test, plan.n_eval))
    accs, expected = [], []
    for e in eps:
        alpha = plan.dataset.alpha * e / plan.dataset.eps if plan.dataset.eps else 2.5 * e / 7
        out = evaluate_attack(model, _pgd(e, 7, alpha), prep.data.test, len(y), plan.request.eval_batch_size,
                              plan.device, progress, desc=f"check eps sweep {e:.3g}")
        accs.append(float(out.adv_correct.mean()))
        expected.append(out.adv_expected)
    store.put_artifact(prep.run_id, "eps_sweep", "pgd7", {"eps": eps, "robust": accs, "expected": expected, "n": len(y)})
    return checks.monotone_flag(eps, expected if model.randomized else accs, tol, len(y),
                                eval_size(prep.data.test, plan.n_eval))


def _masking_flags(plan: Plan, prep: Prepared, store: Store, n: int, progress: Callable | None) -> list[FlagRecord]:
    """``large_eps`` (PGD-20 at eps 0.5 must bring accuracy near 0) and ``more_iters`` (APGD-CE with twice
    the protocol's iterations and a second restart must not be much stronger than APGD-CE at the protocol's
    budget: the evaluation had converged), on the check batch."""
    model, eps = prep.model, _attacked_eps(plan)
    short = next((a.budget["steps"] for _, a in plan.attacks if a.composite), 100)
    steps = 2 * short
    spec = {"n": n, "large_eps": checks.LARGE_EPS, "eps": round(eps, 9), "short": short, "long": steps}
    prev = store.artifacts(prep.run_id, "masking").get("v1")
    if prev and prev.get("spec") == spec:
        m = prev
    else:
        def robust(attack: Attack, desc: str) -> float:
            out = evaluate_attack(model, attack, prep.data.test, n, plan.request.eval_batch_size, plan.device,
                                  progress, desc=desc)
            return float(out.adv_correct.mean())

        apgd = ATTACKS.get("apgd")
        m = {
            "spec": spec,
            "large_eps": robust(_pgd(checks.LARGE_EPS, 20), f"check PGD-20 at eps {checks.LARGE_EPS}"),
            "short": robust(apgd(apgd.Params(eps=eps, steps=short, loss="ce"), eps, 0.0), f"check APGD-{short}"),
            "long": robust(apgd(apgd.Params(eps=eps, steps=steps, loss="ce", restarts=2), eps, 0.0),
                           f"check APGD-{steps} x2"),
        }
        store.put_artifact(prep.run_id, "masking", "v1", m)
    return [checks.large_eps_flag(m["large_eps"], checks.LARGE_EPS, n),
            checks.more_iters_flag(m["short"], m["long"], n, f"APGD-CE {short} -> {steps} iterations")]


def vpre_histogram(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """Histogram of ``v_pre - v_th`` over every spiking layer, time step and unit for one batch."""
    with torch.no_grad(), model.recording() as neurons:
        model(x)
        diffs = [(n.v_pre - n.spec.v_th).flatten().float().cpu() for n in neurons if n.v_pre is not None]
        layers = [
            {
                "layer": i,
                "near_threshold": float((d.abs() < NEAR_THRESHOLD).float().mean()),
                "mean": float(d.mean()),
            }
            for i, d in enumerate(diffs)
        ]
    v = torch.cat(diffs) if diffs else torch.zeros(0)
    edges = torch.tensor(VPRE_EDGES)
    inside = v[(v >= edges[0]) & (v < edges[-1])]
    counts = torch.histc(inside, bins=len(VPRE_EDGES) - 1, min=VPRE_EDGES[0], max=VPRE_EDGES[-1])
    return {
        "edges": VPRE_EDGES,
        "counts": [int(c) for c in counts.tolist()],
        "below": int((v < edges[0]).sum()),
        "above": int((v >= edges[-1]).sum()),
        "total": int(v.numel()),
        "near_threshold": float((v.abs() < NEAR_THRESHOLD).float().mean()) if v.numel() else 0.0,
        "near_width": NEAR_THRESHOLD,
        "n_samples": int(x.shape[0]),
        "layers": layers,
    }


def record_vpre_hist(plan: Plan, prep: Prepared, store: Store, batch: int = 256) -> None:
    """Store the membrane-potential histogram of the first test batch once per run (artifact vpre_hist)."""
    if store.artifacts(prep.run_id, "vpre_hist"):
        return
    x = to_float(prep.data.test.x[:batch]).to(plan.device)  # [B, C, H, W]
    with seeded(plan.seed, plan.device):  # randomized neurons: a reproducible draw
        payload = vpre_histogram(prep.model, x)
    if not payload["total"]:  # no snnbench neuron found in a foreign model: nothing to show
        return
    payload["T"] = plan.train.T if plan.recipe is not None else plan.external.T
    store.put_artifact(prep.run_id, "vpre_hist", "test", payload)


#: clean test samples a defense's mechanism statistic is measured on (issue 23's mechanism gate)
MECHANISM_SAMPLES = 128


def record_mechanism(plan: Plan, prep: Prepared, store: Store, n: int = MECHANISM_SAMPLES) -> None:
    """Store once per run the defense's own mechanism statistics (``Defense.mechanism``: SR's finite-difference
    gradient, TGO's near-threshold share, ...) on the first ``n`` clean test samples (artifact ``mechanism``),
    with the direction each is pushed by the mechanism; ``bench check`` compares them with the baseline."""
    if plan.recipe is None or store.artifacts(prep.run_id, "mechanism"):
        return
    defense = plan.defense
    x = to_float(prep.data.test.x[:n]).to(plan.device)
    y = prep.data.test.y[:n].to(plan.device)
    with seeded(plan.seed, plan.device):
        stats = defense.mechanism(prep.model.eval(), x, y)
    if stats:
        store.put_artifact(prep.run_id, "mechanism", "", {
            "defense": plan.defense_entry.kind, "n": len(y),
            "stats": {k: {"value": float(v), "sense": defense.mechanism_sense.get(k, "lower")} for k, v in stats.items()},
        })


def record_activity(plan: Plan, prep: Prepared, store: Store, n: int = ACTIVITY_SAMPLES) -> None:
    """Store the spiking activity (firing rate per layer, SynOps per inference; :mod:`snnbench.activity`) of
    the first ``n`` clean test samples once per run (artifact ``activity``, key ""); a model whose neurons
    cannot be found stores "not measured" with the reason."""
    if store.artifacts(prep.run_id, "activity"):
        return
    x = to_float(prep.data.test.x[:n]).to(plan.device)  # [N, C, H, W]
    T = plan.train.T if plan.recipe is not None else plan.external.T
    with seeded(plan.seed, plan.device):  # randomized neurons and gates: a reproducible draw
        payload = measure_activity(prep.model, x, T=T or None)
    store.put_artifact(prep.run_id, "activity", "", payload)


def run_sweeps(
    reg: BenchRegistry, sweeps: dict[str, Any], plan: Plan, prep: Prepared, store: Store, force: bool = False
) -> None:
    """Robust accuracy vs eps (fixed steps, alpha = 2.5 eps / steps) and vs steps (dataset eps and alpha),
    as a suite's ``sweeps`` asks (artifact ``sweep``)."""
    sw = sweeps
    name = sw.get("attack", "pgd")
    eps_steps = int(sw.get("eps_steps", 4))
    axes = {
        "eps": [
            {"eps": float(e), "steps": eps_steps, "alpha": 2.5 * float(e) / eps_steps}
            for e in sw.get("eps", [])
        ],
        "steps": [{"steps": int(k)} for k in sw.get("steps", [])],
    }
    have = store.artifacts(prep.run_id, "sweep")
    for axis, points in axes.items():
        if not points:
            continue
        spec = {"attack": name, "points": points, "n_eval": plan.n_eval}
        key = f"{name}:{axis}"
        if not force and have.get(key, {}).get("spec") == spec:
            continue
        rows = []
        for overrides in points:
            entry, attack = make_attack(reg, name, plan.dataset, overrides)
            out = evaluate_attack(
                prep.model, attack, prep.data.test, plan.n_eval, plan.request.eval_batch_size, plan.device
            )
            rows.append(
                {
                    "x": overrides[axis],
                    "eps": attack.eps,
                    "steps": overrides.get("steps", getattr(attack.params, "steps", None)),
                    "n": int(len(out.clean_correct)),
                    "clean": float(out.clean_correct.mean()),
                    "robust": float(out.adv_correct.mean()),
                }
            )
        payload = {
            "spec": spec,
            "attack": name,
            "axis": axis,
            "points": rows,
            "randomized": bool(prep.model.randomized),
        }
        store.put_artifact(prep.run_id, "sweep", key, payload)
