"""``bench sweep``: run every missing cell of a suite locally or on a Ray cluster (bench/sweep.py).

Registered on the ``bench`` group at the bottom of bench/cli.py; like cli.py, the only other place that
prints.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from snnbench.cli_common import Number, user_errors
from snnbench.cli_common import registry_option as _common
from snnbench.errors import BenchError
from snnbench.paths import database_url, persistent_url, results_dir

EPILOG = """\b
Examples:
  bench sweep --suite smoke                                   # in this process, cell after cell
  bench sweep --suite smoke --executor ray --num-cpus 2       # local Ray instance, 2 CPUs per task
  bench sweep --suite table1 --executor ray --address auto --num-gpus 1 \\
      --db postgresql+psycopg://user@dbhost/bench --checkpoint-dir /shared/checkpoints
"""


@click.command(epilog=EPILOG)
@click.option("--suite", required=True, help="Suite to complete (bench ls suites).")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where cells run.",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster to join ('auto', 'ray://host:10001'); default: a local instance.",
)
@click.option(
    "--num-cpus", type=Number(0.01, 4096.0), default=1.0, show_default=True, help="CPUs per Ray task (also torch threads)."
)
@click.option("--num-gpus", type=Number(0.0, 1024.0), default=0.0, show_default=True, help="GPUs per Ray task.")
@click.option(
    "--max-retries", type=Number(0, 100, integer=True), default=3, show_default=True, help="Re-runs of a task whose Ray worker died."
)
@click.option("--device", default=None, help="cpu or cuda (default: cuda when the worker has one).")
@click.option(
    "--results-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Checkpoints and SQLite DB [results].",
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Shared checkpoint directory (default: $BENCH_CHECKPOINTS or RESULTS/checkpoints).",
)
@click.option(
    "--db",
    default=None,
    help="SQLAlchemy URL every worker writes to (default: $BENCH_DB or RESULTS/bench.sqlite).",
)
@click.option("--force", is_flag=True, help="Re-run cells that are already stored.")
@click.option("--dry-run", is_flag=True, help="List the tasks (one per model) and exit.")
@_common
@user_errors
def sweep(**o) -> None:
    """Run every missing cell of a suite; one task per trained model, progress as tasks finish.

    Every worker writes into the same database and checkpoint directory, so an interrupted sweep resumes
    where it stopped: rerun the same command.
    """
    from snnbench.kinds import python_kinds
    from snnbench.prepare import ensure_writable
    from snnbench.registry import load_registry
    from snnbench.store import Store
    from snnbench.sweep import RayOptions, SweepConfig, plan_tasks, run_local, run_ray

    for name in ("num_cpus", "num_gpus", "max_retries"):
        if o[name] < 0:
            raise BenchError(f"--{name.replace('_', '-')} must be >= 0, got {o[name]}")
    if o["device"]:
        from snnbench.train import check_device

        check_device(o["device"])
    if o["executor"] == "ray" and o["address"]:
        from snnbench.sweep import check_reachable

        check_reachable(o["address"])  # seconds, before planning: ray.init retries for minutes
    reg = load_registry(o["registry"], kinds=python_kinds())
    results = results_dir(o["results_dir"]).resolve()
    ensure_writable(results)
    ck_dir = o["checkpoint_dir"] or os.environ.get("BENCH_CHECKPOINTS")
    if ck_dir:
        ck_dir = str(Path(ck_dir).resolve())  # handed to every task in SweepConfig (workers on other nodes too)
    store = Store(persistent_url(database_url(o["db"], results)))
    tasks = plan_tasks(reg, o["suite"], store, o["force"])
    n_cells = sum(len(t.cells) for t in tasks)
    click.echo(
        f"sweep {o['suite']}: {n_cells} cells to run in {len(tasks)} tasks ({o['executor']}), db {store.display_url}",
        err=True,
    )
    if o["dry_run"] or not tasks:
        for t in tasks:
            click.echo(f"{t.config_hash[:12]}  {t.label:<40} {len(t.cells)} cells")
        return
    cfg = SweepConfig(
        Path(reg.path).read_text(), o["suite"], store.url, str(results), ck_dir, o["device"], o["force"]
    )
    done = [0]

    def notify(res) -> None:
        done[0] += 1
        cached = sum(s == "cached" for _, s, _ in res.events)
        ran = sum(s == "ran" for _, s, _ in res.events)
        state = f"ok ({ran} ran, {cached} cached)" if res.ok else f"FAILED: {res.error}"
        where = f" on {res.host}" if res.host else ""
        click.echo(f"[{done[0]}/{len(tasks)}] {res.task.label}: {state}{where} {res.seconds:.1f}s", err=True)

    if o["executor"] == "ray":
        opts = RayOptions(o["address"], o["num_cpus"], o["num_gpus"], o["max_retries"])
        out = run_ray(cfg, tasks, opts, notify)
    else:
        out = run_local(cfg, tasks, notify)
    failed = [r for r in out if not r.ok]
    click.echo(f"sweep {o['suite']}: {len(out) - len(failed)}/{len(out)} tasks ok", err=True)
    if failed:
        sys.exit(1)
