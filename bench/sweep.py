"""Sweeps: every missing cell of a suite, run in-process or as tasks on a Ray cluster.

A suite's cells (``bench/suite_spec.py``) are planned with the runner; the cells that have no stored
evaluation are grouped by trained model (config hash), and each group becomes one :class:`SweepTask`, so
one model is never trained twice at once by one sweep. A task runs :func:`bench.suites.run_suite` on its
cells - the same code path as ``bench run --suite`` - writing into the sweep's database URL and checkpoint
directory, which every worker must reach (PostgreSQL or an SQLite file on a shared disk; a shared
directory, see ``bench/train.py``).

Executors: ``local`` runs the tasks one after another in this process; ``ray`` submits them to Ray (an
existing engine, not a scheduler of our own) with ``num_cpus``/``num_gpus`` per task and ``max_retries``
for worker loss (a killed worker's task is re-run; the re-run resumes training from the per-epoch
checkpoint and skips stored evaluations), and reports progress with ``ray.wait`` as tasks finish. A task
that fails with a user error (``BenchError``) or a bug is reported and the sweep goes on; nothing stored by
other tasks is lost.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from snnbench.errors import BenchError
from snnbench.registry import BenchRegistry, load_registry
from snnbench.store import Store

# Fault injection for the worker-loss test: when set to a path that does not exist yet, the first Ray task
# creates it and kills its own worker process (as a pre-empted node would), so Ray must retry the task.
FAULT_ENV = "BENCH_FAULT_KILL_WORKER_ONCE"


@dataclass(frozen=True)
class SweepTask:
    """The missing cells of one trained model (indices into ``suite.cells`` and their keys, re-checked by
    the worker so a registry edited mid-sweep cannot run the wrong cells)."""

    config_hash: str
    cells: tuple[int, ...]
    keys: tuple[str, ...]
    label: str


@dataclass(frozen=True)
class SweepConfig:
    """What every worker needs; plain data, shipped to Ray workers. The registry travels as text so remote
    nodes need no copy of the file."""

    registry_text: str
    suite: str
    db_url: str
    results_dir: str
    checkpoint_dir: str | None = None
    device: str | None = None
    force: bool = False
    num_threads: int | None = None


@dataclass(frozen=True)
class TaskResult:
    task: SweepTask
    ok: bool
    events: tuple[tuple[str, str, str], ...] = ()  # (cell key, ran | cached | skipped, message)
    error: str = ""
    host: str = ""
    seconds: float = 0.0


def plan_tasks(reg: BenchRegistry, suite_name: str, store: Store, force: bool = False) -> list[SweepTask]:
    """The suite's missing cells (all runnable cells with ``force``), grouped by trained model."""
    from snnbench.suite_results import measure_suite
    from snnbench.suites import plan_cell

    suite = reg.get("suites", suite_name, "--suite")
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(measure_suite(reg, suite, store)):
        if m.status == "not run" or (force and m.status == "measured"):
            plan = plan_cell(reg, suite, m.cell, device="cpu")
            groups.setdefault(plan.config_hash, []).append(i)
    tasks = []
    for h, idx in groups.items():
        c = suite.cells[idx[0]]
        label = f"{c.dataset}/{c.model}/{c.defense}/{c.training}" + (f"/T{c.T}" if c.T else "")
        tasks.append(SweepTask(h, tuple(idx), tuple(suite.cells[i].key for i in idx), label))
    return tasks


def run_task(cfg: SweepConfig, task: SweepTask) -> TaskResult:
    """Run one task's cells (in this process); user errors become a failed result, not an exception."""
    from snnbench.suites import SuiteOptions, run_suite

    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
            path = Path(tmp) / "registry.yaml"
            path.write_text(cfg.registry_text)
            from snnbench.kinds import python_kinds

            reg = load_registry(path, kinds=python_kinds())
        suite = reg.get("suites", cfg.suite, "--suite")
        cells = tuple(suite.cells[i] for i in task.cells if i < len(suite.cells))
        if tuple(c.key for c in cells) != task.keys:
            raise BenchError(f"suite {cfg.suite!r} changed since the sweep was planned; rerun bench sweep")
        store = Store(cfg.db_url)
        sub = dataclasses.replace(suite, cells=cells)
        opts = SuiteOptions(device=cfg.device, force=cfg.force, checkpoint_dir=cfg.checkpoint_dir)
        events = run_suite(reg, sub, store, Path(cfg.results_dir), opts=opts)
    except BenchError as e:
        return TaskResult(task, False, error=str(e), host=platform.node(), seconds=time.perf_counter() - t0)
    out = tuple((e.cell.key, e.status, e.message) for e in events)
    failed = [e for e in events if e.status == "failed"]
    err = f"{len(failed)} cells failed: {failed[0].message}" if failed else ""
    return TaskResult(task, not failed, out, error=err, host=platform.node(), seconds=time.perf_counter() - t0)


def run_local(
    cfg: SweepConfig, tasks: list[SweepTask], notify: Callable[[TaskResult], None] | None = None
) -> list[TaskResult]:
    """Run the tasks in order in this process; a task that crashes is reported and the sweep goes on."""
    results = []
    for task in tasks:
        try:
            res = run_task(cfg, task)
        except Exception as e:  # a bug in one cell must not cost the others their results
            res = TaskResult(task, False, error=f"{type(e).__name__}: {e}", host=platform.node())
        results.append(res)
        if notify:
            notify(res)
    return results


def _ray_entry(cfg: SweepConfig, task: SweepTask) -> TaskResult:
    """Body of the Ray task (runs in a worker process)."""
    marker = os.environ.get(FAULT_ENV)
    if marker and not os.path.exists(marker):
        Path(marker).write_text(task.config_hash)
        os._exit(1)  # the worker dies mid-task, as on a pre-empted node
    if cfg.num_threads:
        import torch

        torch.set_num_threads(cfg.num_threads)
    return run_task(cfg, task)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local instance; "auto" or "ray://host:10001": join a cluster
    num_cpus: float = 1.0  # per task
    num_gpus: float = 0.0  # per task
    max_retries: int = 3  # re-runs of a task whose worker died


RAY_CONNECT_TIMEOUT = 5.0  # seconds to wait for a Ray head's port to accept a connection


def check_reachable(address: str, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Fail within ``timeout`` seconds when a ``host:port`` / ``ray://host:port`` address does not answer
    (``ray.init`` itself retries for minutes). ``auto`` and addresses without a port are left to Ray."""
    import socket

    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise BenchError(
            f"--address {address}: no Ray head answers there ({e.strerror or type(e).__name__} within "
            f"{timeout:.0f}s); start one with `ray start --head` or check the address"
        ) from None


def run_ray(
    cfg: SweepConfig,
    tasks: list[SweepTask],
    opts: RayOptions,
    notify: Callable[[TaskResult], None] | None = None,
) -> list[TaskResult]:
    """Submit one Ray task per model; collect results as they finish (``ray.wait``)."""
    try:
        import ray
        from ray.exceptions import RayError
    except ImportError:
        raise BenchError('--executor ray: Ray is not installed; pip install "snnbench[sweep]"') from None
    started = not ray.is_initialized()
    if started and opts.address:
        check_reachable(opts.address)
    if started:
        try:
            ray.init(
                address=opts.address, include_dashboard=False, log_to_driver=False, configure_logging=False
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BenchError(
                f"--address {opts.address}: cannot join the Ray cluster ({str(e).splitlines()[0]})"
            ) from None
    if cfg.num_threads is None:
        cfg = dataclasses.replace(cfg, num_threads=max(1, int(opts.num_cpus)))
    remote = ray.remote(_ray_entry).options(
        num_cpus=opts.num_cpus, num_gpus=opts.num_gpus, max_retries=opts.max_retries, retry_exceptions=False
    )
    try:
        pending = {remote.remote(cfg, t): t for t in tasks}
        results = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except RayError as e:  # the task raised a bug, or its worker died more than max_retries times
                    res = TaskResult(
                        task, False, error=f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"
                    )
                results.append(res)
                if notify:
                    notify(res)
        return results
    finally:
        if started:
            ray.shutdown()
