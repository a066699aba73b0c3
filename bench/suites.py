"""Run a suite's cells and look up what was measured for them.

``run_suite`` resolves every cell with the runner (``resolve``), groups the cells by trained model (config
hash) and hands each group to the one per-model pipeline (:func:`snnbench.pipeline.evaluate_plans`, the same
as ``bench run``): train or load once, histogram, clean and attack cells not stored yet, checks, sweeps.
An interrupted suite resumes where it stopped (training from its per-epoch checkpoint, evaluations from
the store). Reported-only cells are skipped with a reason; a model whose training or evaluation fails is
recorded as failed cells and the suite goes on.

``measure_suite`` is read-only: it resolves the same cells and reads their latest stored numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from snnbench.errors import BenchError
from snnbench.pipeline import clean_hash, evaluate_plans
from snnbench.plan import Plan, RunRequest, resolve
from snnbench.registry import BenchRegistry
from snnbench.store import Store
from snnbench.strategies import attack_config_hash
from snnbench.suite_results import CELL_INDEX, cell_spec_hash, index_key
from snnbench.suite_spec import CLEAN, Cell, Suite


@dataclass(frozen=True, kw_only=True)
class CellEvent:
    """What happened to one cell: ``ran``, ``cached``, ``skipped``, ``failed`` (with the reason) or
    ``claimed`` (another process sharing the database is computing it); for ran/cached cells the counts of
    the stored evaluation; ``index`` of ``total`` cells, ``elapsed`` seconds so far."""

    cell: Cell
    status: str
    message: str = ""
    n: int = 0  # samples of the stored evaluation (0: none read)
    n_clean: int = 0  # of them correct without attack
    n_robust: int = 0  # of them still correct under the attack
    index: int = 0
    total: int = 0
    elapsed: float = 0.0


@dataclass(frozen=True, kw_only=True)
class SuiteOptions:
    """The CLI flags that apply to every cell of a suite (the rest are fixed by registry.yaml)."""

    device: str | None = None
    data_root: str | None = None
    checkpoint_dir: str | None = None
    force: bool = False
    eps_sweep: bool = True


def cell_request(cell: Cell, device: str | None = None, data_root: str | None = None,
                 checkpoint_dir: str | None = None) -> RunRequest:
    return RunRequest(
        defense=cell.defense or "",
        attacks=() if cell.attack == CLEAN else (cell.attack,),
        dataset=cell.dataset,
        model=cell.model,
        train_overrides={"T": cell.T, "training": cell.training},
        attack_overrides=dict(cell.attack_overrides),
        n_eval=cell.n_eval,
        device=device,
        data_root=data_root,
        checkpoint_dir=checkpoint_dir,
    )


def plan_cell(reg: BenchRegistry, suite: Suite, cell: Cell, device: str | None = None,
              opts: SuiteOptions | None = None) -> Plan:
    """Resolve one cell into a plan (user errors raise BenchError)."""
    o = opts or SuiteOptions(device=device)
    req = cell_request(cell, o.device or device, o.data_root, o.checkpoint_dir)
    return resolve(reg, req, suite_train=suite.train)


def cell_hash(plan: Plan) -> str:
    """The stored evaluation's key. A transfer attack's config names its substitute (by config hash), which
    the runner attaches before attacking; a read-only lookup names it without attaching (nothing mutated)."""
    if not plan.attacks:
        return clean_hash(plan)
    entry, attack = plan.attacks[0]
    cfg = attack.config()
    if plan.substitutes and attack.needs_substitute and not cfg.get("substitute"):
        cfg["substitute"] = attack.substitute_identity({t: p.config_hash for t, p in plan.substitutes.items()})
    return attack_config_hash(plan, entry, cfg)


def _planned(
    reg: BenchRegistry, suite: Suite, opts: SuiteOptions
) -> tuple[list[tuple[Cell, Plan]], list[CellEvent]]:
    plans, skipped = [], []
    for cell in suite.cells:
        if not cell.runnable:
            skipped.append(
                CellEvent(cell=cell, status="skipped", message="reported only (no config for this method in registry.yaml)")
            )
            continue
        plans.append((cell, plan_cell(reg, suite, cell, opts=opts)))
    return plans, skipped


def run_suite(
    reg: BenchRegistry,
    suite: Suite,
    store: Store,
    results_dir: Path,
    device: str | None = None,
    force: bool = False,
    progress: Callable | None = None,
    notify: Callable[[CellEvent], None] | None = None,
    opts: SuiteOptions | None = None,
) -> list[CellEvent]:
    """Run every missing cell of ``suite``; returns one event per cell (skipped and failed ones included).

    A model whose training or evaluation raises a user error (``BenchError``) is recorded as failed cells
    with the message and the suite goes on with the next model; the caller decides the exit code.
    """
    opts = opts or SuiteOptions(device=device, force=force)
    t0 = time.perf_counter()
    plans, events = _planned(reg, suite, opts)
    total = len(suite.cells)

    def emit(ev: CellEvent) -> None:
        events.append(ev)
        if notify:
            notify(ev)

    for ev in list(events):
        if notify:
            notify(ev)
    by_run: dict[str, list[tuple[Cell, Plan]]] = {}
    for cell, plan in plans:
        by_run.setdefault(plan.config_hash, []).append((cell, plan))
    owner = claim_owner()
    for group in by_run.values():
        cells, group_plans = [c for c, _ in group], [p for _, p in group]
        key = f"suite-model:{group_plans[0].config_hash}"
        if not store.claim(key, owner):  # another suite on this database is computing this model's cells
            for cell in cells:
                emit(CellEvent(cell=cell, status="claimed", message="being computed by another process",
                               index=len(events) + 1, total=total, elapsed=time.perf_counter() - t0))
            continue

        def on_plan(i: int, ran: bool, prep, cells=cells, group_plans=group_plans) -> None:
            store.point(prep.run_id, CELL_INDEX, index_key(suite, cells[i]), {  # ran or cached: current now
                "spec": cell_spec_hash(reg, suite, cells[i]), "attack_hash": cell_hash(group_plans[i]),
                "randomized": bool(prep.model.randomized)})
            m = _lookup(store, group_plans[i])
            emit(CellEvent(cell=cells[i], status="ran" if ran else "cached",
                           n=m[0] if m else 0, n_clean=m[1] if m else 0, n_robust=m[2] if m else 0,
                           index=len(events) + 1, total=total, elapsed=time.perf_counter() - t0))

        done = len(events)
        try:
            evaluate_plans(reg, group_plans, store, results_dir, force=opts.force, progress=progress,
                           eps_sweep=opts.eps_sweep, sweeps=suite.sweeps or None, on_plan=on_plan)
        except Exception as e:  # record the failure, go on with the next model; the CLI exits non-zero
            why = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            if not isinstance(e, BenchError):
                why = f"{type(e).__name__}: {why}"
            reported = {id(ev.cell) for ev in events[done:]}
            pending = [cell for cell in cells if id(cell) not in reported]
            for cell in pending or cells[:1]:  # every cell stored: the checks or sweeps failed, still reported
                emit(CellEvent(cell=cell, status="failed", message=why if pending else f"checks/sweeps: {why}",
                               index=len(events) + 1, total=total, elapsed=time.perf_counter() - t0))
        finally:
            store.release(key, owner)
    return events


def claim_owner() -> str:
    """Who holds a claim: host, process id and a random tag (unique across concurrent suites)."""
    import os
    import platform
    import uuid

    return f"{platform.node()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _lookup(store: Store, plan: Plan) -> tuple[int, int, int] | None:
    """(n, correct clean, correct under attack) of the plan's stored evaluation, None if absent."""
    run = store.run_by_hash(plan.config_hash)
    if run is None:
        return None
    h = cell_hash(plan)
    for e in store.evaluations(run.id):
        if e.attack_hash == h:
            return e.n, e.n_clean_correct, e.n_robust_correct
    return None
