"""The pipeline: every evaluation, from ``bench run``, a suite cell, a sweep task or :func:`snnbench.evaluate`,
is plans (:mod:`snnbench.plan`) handed to :func:`evaluate_plans`, which reads top to bottom:

1. **model**: train, load or take the plans' one model and register its run (:func:`snnbench.prepare.prepare`);
2. **diagnostics before attacks**: the membrane-potential histogram; the spiking activity (firing rate,
   SynOps; :mod:`snnbench.activity`) on the first clean test samples;
3. **clean**: a plan without attacks stores its clean accuracy;
4. **strategies**: each attack entry as a single attack, the protocol's cascade or the worst case
   (:mod:`snnbench.strategies`); stored evaluations are read, not rerun;
5. **checks**: the reliability and gradient-masking checks over all of them (:mod:`snnbench.diagnostics`);
6. **sweeps**: a suite's eps/steps sweeps when asked.

Recipes and external models therefore get the same clean row, histogram, activity, checks and flags.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from snnbench.diagnostics import record_activity, record_mechanism, record_vpre_hist, run_checks, run_sweeps
from snnbench.plan import Plan, canonical_hash
from snnbench.prepare import Prepared, attach_substitutes, prepare
from snnbench.registry import BenchRegistry
from snnbench.scoring import clean_correct
from snnbench.store import EvalRecord, Store
from snnbench.strategies import run_strategy
from snnbench.suite_spec import CLEAN


def clean_hash(plan: Plan) -> str:
    return canonical_hash({"attack": {"kind": CLEAN}, "n_eval": plan.n_eval, "name": CLEAN})


def evaluate_plans(
    reg: BenchRegistry,
    plans: Sequence[Plan],
    store: Store,
    results_dir: Path,
    *,
    force: bool = False,
    progress: Callable | None = None,
    checks: bool = True,
    eps_sweep: bool = True,
    sweeps: dict[str, Any] | None = None,
    on_plan: Callable[[int, bool, Prepared], None] | None = None,
) -> Prepared:
    """Prepare the model shared by ``plans`` once, then evaluate every plan's attacks (a plan without
    attacks stores clean accuracy), run the checks over all of them (unless ``checks=False``), and the
    sweeps. ``on_plan(i, ran, prep)`` is called after plan ``i`` (``ran``: something was computed, not
    read from the store)."""
    if not plans:
        raise ValueError("evaluate_plans needs at least one plan")
    first = plans[0]
    if any(p.config_hash != first.config_hash for p in plans):
        raise ValueError("evaluate_plans: the plans must share one model (config hash)")
    prep = prepare(first, store, results_dir, progress)
    record_vpre_hist(first, prep, store)
    record_mechanism(first, prep, store)
    record_activity(first, prep, store)
    for i in plan_order(plans):
        plan = plans[i]
        if plan.substitutes:
            attach_substitutes(plan, store, results_dir, progress)
        ran = False
        if not plan.attacks:
            ran = run_clean(plan, prep, store, force)
        for entry, attack in plan.attacks:
            ran = run_strategy(plan, prep, entry, attack, store, force, progress) or ran
        if on_plan:
            on_plan(i, ran, prep)
    if checks:
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
    correct = clean_correct(prep.model, prep.data.test, plan.n_eval, plan.request.eval_batch_size, plan.device,
                            plan.seed)
    rec = EvalRecord(CLEAN, h, {"kind": CLEAN}, 0.0, correct, correct, time.perf_counter() - t0, 1)
    store.record_evaluation(prep.run_id, rec)
    return True
