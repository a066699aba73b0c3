"""Run a suite's cells and look up what was measured for them.

``run_suite`` resolves every cell with the runner (``resolve`` / ``prepare`` / ``run_attack``), groups the
cells by trained model (config hash), trains or loads each model once, and evaluates the cells that are not
stored yet: an interrupted suite resumes where it stopped (training from its per-epoch checkpoint,
evaluations from the store). Cells whose defense or attack is declared but not implemented yet, and
reported-only cells, are skipped with a reason, never a failure.

After a model is ready it also records what the report plots: the histogram of pre-spike membrane
potentials minus threshold on one test batch (artifact ``vpre_hist``, TGO Fig. 4 style) and, when the
suite asks, robust accuracy vs eps and vs attack steps (artifact ``sweep``, MPD-SGR Fig. 2 style).

``measure_suite`` is read-only: it resolves the same cells and reads their latest stored numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench import runner
from bench.data import Split, to_float
from bench.errors import BenchError, NotImplementedYet
from bench.evaluate import evaluate_attack, predict
from bench.registry import BenchRegistry
from bench.runner import (
    Plan,
    Prepared,
    RunRequest,
    attack_hash,
    canonical_hash,
    make_attack,
    prepare,
    resolve,
    run_attack,
)
from bench.store import EvalRecord, Store
from bench.suite_spec import CLEAN, Cell, Suite

VPRE_EDGES = [round(-3.0 + 0.1 * i, 2) for i in range(46)]  # v_pre - v_th in [-3, 1.5], 0.1 wide bins
NEAR_THRESHOLD = 0.1  # |v_pre - v_th| below this counts as "near threshold" (TGO Fig. 4; our choice [I])


@dataclass(frozen=True)
class CellEvent:
    """What happened to one cell: ``ran``, ``cached``, ``skipped``, ``failed`` (with the reason) or
    ``claimed`` (another process sharing the database is computing it)."""

    cell: Cell
    status: str
    message: str = ""


@dataclass(frozen=True)
class Measured:
    """The latest stored numbers for one cell; ``status`` is measured / not run / not implemented /
    reported only."""

    cell: Cell
    status: str
    reason: str = ""
    run_id: int | None = None
    n: int = 0
    clean_acc: float | None = None
    robust_acc: float | None = None
    eps: float | None = None
    seconds: float | None = None
    randomized: bool = False


def cell_request(cell: Cell, device: str | None = None) -> RunRequest:
    return RunRequest(
        defense=cell.defense or "",
        attacks=() if cell.attack == CLEAN else (cell.attack,),
        dataset=cell.dataset,
        model=cell.model,
        train_overrides={"T": cell.T, "training": cell.training},
        attack_overrides=dict(cell.attack_overrides),
        n_eval=cell.n_eval,
        device=device,
    )


def plan_cell(reg: BenchRegistry, suite: Suite, cell: Cell, device: str | None = None) -> Plan:
    """Resolve one cell (raises NotImplementedYet for planned defenses/attacks)."""
    return resolve(reg, cell_request(cell, device), suite_train=suite.train)


def clean_hash(plan: Plan) -> str:
    return canonical_hash({"attack": {"kind": CLEAN}, "n_eval": plan.n_eval, "name": CLEAN})


def cell_hash(plan: Plan) -> str:
    """The stored evaluation's key. A transfer attack's config names its substitute (by config hash), which
    the runner attaches before attacking; for a read-only lookup only that identity is set."""
    if not plan.attacks:
        return clean_hash(plan)
    entry, attack = plan.attacks[0]
    sub = getattr(plan, "substitute", None)
    if sub is not None and getattr(attack, "needs_substitute", False) and not attack.substitute_id:
        attack.substitute_id = sub.config_hash
    return attack_hash(plan, entry, attack)


def _planned(
    reg: BenchRegistry, suite: Suite, device: str | None
) -> tuple[list[tuple[Cell, Plan]], list[CellEvent]]:
    plans, skipped = [], []
    for cell in suite.cells:
        if not cell.runnable:
            skipped.append(
                CellEvent(cell, "skipped", "reported only (no config for this method in registry.yaml)")
            )
            continue
        try:
            plans.append((cell, plan_cell(reg, suite, cell, device)))
        except NotImplementedYet as e:
            skipped.append(CellEvent(cell, "skipped", str(e)))
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
) -> list[CellEvent]:
    """Run every missing cell of ``suite``; returns one event per cell (skipped ones included)."""
    plans, events = _planned(reg, suite, device)
    for ev in events:
        if notify:
            notify(ev)
    by_run: dict[str, list[tuple[Cell, Plan]]] = {}
    for cell, plan in plans:
        by_run.setdefault(plan.config_hash, []).append((cell, plan))
    owner = claim_owner()
    for group in by_run.values():
        # attacks that read the others' stored outcomes (``worst``) go last
        group.sort(key=lambda cp: bool(cp[1].attacks and getattr(cp[1].attacks[0][1], "from_store", False)))
        key = f"suite-model:{group[0][1].config_hash}"
        if not store.claim(key, owner):  # another suite on this database is computing this model's cells
            for cell, _ in group:
                _emit(events, notify, CellEvent(cell, "claimed", "being computed by another process"))
            continue
        done: set[int] = set()
        try:
            prep = prepare(group[0][1], store, results_dir, progress)
            record_vpre_hist(group[0][1], prep, store)
            for i, (cell, plan) in enumerate(group):
                if plan.attacks:
                    entry, attack = plan.attacks[0]
                    if getattr(plan, "substitute", None) is not None:  # transfer: train/load the substitute
                        runner.attach_substitutes(plan, store, results_dir, progress)
                    ran = run_attack(plan, prep, entry, attack, store, force, progress)
                else:
                    ran = run_clean(plan, prep, store, force)
                done.add(i)
                _emit(events, notify, CellEvent(cell, "ran" if ran else "cached"))
            if suite.sweeps:
                run_sweeps(reg, suite, group[0][1], prep, store, force)
        except Exception as e:  # record the failure, go on with the next model; the CLI exits non-zero
            why = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            if not isinstance(e, BenchError):
                why = f"{type(e).__name__}: {why}"
            pending = [cell for i, (cell, _) in enumerate(group) if i not in done]
            for cell in pending or [group[0][0]]:  # all cells stored: the sweeps failed, still reported
                _emit(events, notify, CellEvent(cell, "failed", why if pending else f"sweeps: {why}"))
        finally:
            store.release(key, owner)
    return events


def claim_owner() -> str:
    """Who holds a claim: host, process id and a random tag (unique across concurrent suites)."""
    import os
    import platform
    import uuid

    return f"{platform.node()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _emit(events: list[CellEvent], notify: Callable[[CellEvent], None] | None, ev: CellEvent) -> None:
    events.append(ev)
    if notify:
        notify(ev)


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
    reg: BenchRegistry, suite: Suite, plan: Plan, prep: Prepared, store: Store, force: bool = False
) -> None:
    """Robust accuracy vs eps (fixed steps, alpha = 2.5 eps / steps) and vs steps (dataset eps and alpha)."""
    sw = suite.sweeps
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


def measure_suite(reg: BenchRegistry, suite: Suite, store: Store) -> list[Measured]:
    """The latest stored numbers for every cell (read-only; nothing is trained or attacked)."""
    out: list[Measured] = []
    evals: dict[int, dict[str, object]] = {}
    for cell in suite.cells:
        if not cell.runnable:
            out.append(Measured(cell, "reported only", "no config for this method"))
            continue
        try:
            plan = plan_cell(reg, suite, cell, device="cpu")
        except NotImplementedYet as e:
            out.append(Measured(cell, "not implemented", str(e)))
            continue
        run = store.run_by_hash(plan.config_hash)
        if run is None:
            out.append(Measured(cell, "not run", "no trained model stored"))
            continue
        if run.id not in evals:
            evals[run.id] = {e.attack_hash: e for e in store.evaluations(run.id)}
        ev = evals[run.id].get(cell_hash(plan))
        if ev is None:
            out.append(Measured(cell, "not run", "model stored, evaluation missing", run.id))
            continue
        out.append(
            Measured(
                cell,
                "measured",
                "",
                run.id,
                ev.n,
                ev.clean_acc,
                ev.robust_acc,
                ev.eps,
                ev.seconds,
                plan.defense.randomized,
            )
        )
    return out
