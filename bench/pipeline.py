"""One per-model pipeline for single runs (``bench run``), suite cells and the Python API.

:func:`evaluate_model` takes the plans of one trained model (they share a config hash: one per suite cell,
or the one plan of ``bench run``) and does, in order: train or load the model (``runner.prepare``), record
the membrane-potential histogram, evaluate clean accuracy and every attack (stored evaluations are read,
not rerun), run the reliability and gradient-masking checks, and the suite's eps/steps sweeps when asked.
Single runs and suites therefore get the same flags, histograms and sweeps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnbench.data import Split, to_float
from snnbench.scoring import evaluate_attack, predict
from snnbench.registry import BenchRegistry
from snnbench.runner import (
    Plan,
    Prepared,
    attach_substitutes,
    canonical_hash,
    make_attack,
    prepare,
    run_attack,
    run_checks,
)
from snnbench.store import EvalRecord, Store
from snnbench.suite_spec import CLEAN

VPRE_EDGES = [round(-3.0 + 0.1 * i, 2) for i in range(46)]  # v_pre - v_th in [-3, 1.5], 0.1 wide bins
NEAR_THRESHOLD = 0.1  # |v_pre - v_th| below this counts as "near threshold" (TGO Fig. 4; our choice [I])


def clean_hash(plan: Plan) -> str:
    return canonical_hash({"attack": {"kind": CLEAN}, "n_eval": plan.n_eval, "name": CLEAN})


def evaluate_model(
    reg: BenchRegistry,
    plans: Sequence[Plan],
    store: Store,
    results_dir: Path,
    *,
    force: bool = False,
    progress: Callable | None = None,
    eps_sweep: bool = True,
    sweeps: dict[str, Any] | None = None,
    on_plan: Callable[[int, bool, Prepared], None] | None = None,
) -> Prepared:
    """Train or load the model shared by ``plans`` once, then evaluate every plan's attacks (a plan without
    attacks stores clean accuracy), run the checks over all of them, and the sweeps. ``on_plan(i, ran,
    prep)`` is called after plan ``i`` (``ran``: something was computed, not read from the store)."""
    if not plans:
        raise ValueError("evaluate_model needs at least one plan")
    first = plans[0]
    if any(p.config_hash != first.config_hash for p in plans):
        raise ValueError("evaluate_model: the plans must share one trained model (config hash)")
    prep = prepare(first, store, results_dir, progress)
    record_vpre_hist(first, prep, store)
    for i in plan_order(plans):
        plan = plans[i]
        if plan.substitute is not None:
            attach_substitutes(plan, store, results_dir, progress)
        ran = False
        if not plan.attacks:
            ran = run_clean(plan, prep, store, force)
        for entry, attack in plan.attacks:
            ran = run_attack(plan, prep, entry, attack, store, force, progress) or ran
        if on_plan:
            on_plan(i, ran, prep)
    merged = dataclasses.replace(first, attacks=[ea for p in plans for ea in p.attacks])
    run_checks(merged, prep, store, eps_sweep, progress)
    if sweeps:
        run_sweeps(reg, sweeps, first, prep, store, force)
    return prep


def plan_order(plans: Sequence[Plan]) -> list[int]:
    """Indices of ``plans`` in run order: attacks that read the others' stored outcomes (``worst``) last."""
    return sorted(range(len(plans)), key=lambda i: any(a.from_store for _, a in plans[i].attacks))


def run_clean(plan: Plan, prep: Prepared, store: Store, force: bool = False) -> bool:
    """Clean accuracy on the cell's samples, stored as the evaluation ``clean`` (eps 0, adv = clean)."""
    h = clean_hash(plan)
    if not force and store.has_evaluation(prep.run_id, h):
        return False
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[plan.device] if plan.device.type == "cuda" else []):
        torch.manual_seed(plan.train.seed)  # randomized models: a reproducible draw
        correct = _clean_correct(
            prep.model, prep.data.test, plan.n_eval, plan.request.eval_batch_size, plan.device
        )
    rec = EvalRecord(CLEAN, h, {"kind": CLEAN}, 0.0, correct, correct, time.perf_counter() - t0, 1)
    store.record_evaluation(prep.run_id, rec)
    return True


def _clean_correct(
    model: torch.nn.Module, split: Split, n: int, batch_size: int, device: torch.device
) -> np.ndarray:
    n = min(n, len(split)) if n > 0 else len(split)
    out = []
    for start in range(0, n, batch_size):
        x = to_float(split.x[start : min(n, start + batch_size)]).to(device)  # [B, C, H, W]
        y = split.y[start : min(n, start + batch_size)].to(device)
        out.append((predict(model, x) == y).cpu())
    return torch.cat(out).numpy().astype(bool) if out else np.zeros(0, bool)


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
    with torch.random.fork_rng(devices=[plan.device] if plan.device.type == "cuda" else []):
        torch.manual_seed(plan.train.seed)  # randomized neurons: a reproducible draw
        payload = vpre_histogram(prep.model, x)
    payload["T"] = plan.train.T
    store.put_artifact(prep.run_id, "vpre_hist", "test", payload)


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


