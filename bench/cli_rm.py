"""``bench rm``: delete runs (and everything stored with them) by id or by defense, after confirmation.

Registered on the ``bench`` group at the bottom of :mod:`snnbench.cli`. Deleting is one transaction
(:meth:`snnbench.store.Store.delete_runs`); without ``--yes`` the command lists what it would delete and asks on
a terminal, or refuses (exit 2) in a script. Checkpoint files stay in the checkpoint directory (they are a
cache keyed by config hash, possibly shared); the next ``bench report`` drops the runs' pages.
"""

from __future__ import annotations

import sys

import click

from snnbench.cli_common import Number, open_database, results_db_options, user_errors
from snnbench.cli_common import registry_option as _common
from snnbench.errors import BenchError

EPILOG = """\b
Examples:
  bench rm --run 7 --run 9            # asks before deleting (refuses without --yes when not on a terminal)
  bench rm --defense old_defense --yes
  bench rm --defense vanilla --dataset digits --yes
"""


@click.command(name="rm", epilog=EPILOG)
@click.option(
    "--run",
    "run_ids",
    type=Number(1, 2**63 - 1, integer=True),
    multiple=True,
    help="Run id to delete (repeatable; ids: bench report / bench export).",
)
@click.option("--defense", default=None, help="Delete every run of this defense config.")
@click.option("--dataset", default=None, help="With --defense: only runs on this dataset.")
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
@results_db_options
@_common
@user_errors
def rm(
    run_ids: tuple[int, ...],
    defense: str | None,
    dataset: str | None,
    yes: bool,
    results_dir: str | None,
    db: str | None,
    registry: str | None,
) -> None:
    """Delete runs from the results database, with their evaluations, flags and artifacts.

    Select runs with --run ID (repeatable) and/or --defense NAME [--dataset NAME]. Nothing is deleted
    without confirmation: --yes, or answering the prompt on a terminal.
    """
    if dataset and not defense:
        raise BenchError("--dataset narrows --defense; give --defense too")
    if not run_ids and not defense:
        raise BenchError("give --run ID (repeatable) or --defense NAME; nothing selected")
    store = open_database(db, results_dir)  # rm edits rows of an existing database and creates nothing
    runs = {r.id: r for r in store.runs()}
    missing = [i for i in run_ids if i not in runs]
    if missing:
        known = ", ".join(str(i) for i in sorted(runs)[:20]) or "none"
        raise BenchError(f"--run {missing[0]}: no such run in {store.display_url} (run ids: {known})")
    chosen = {i: runs[i] for i in run_ids}
    if defense:
        matched = {
            i: r for i, r in runs.items() if r.defense == defense and (not dataset or r.dataset == dataset)
        }
        if not matched:
            names = sorted({r.defense for r in runs.values()})
            raise BenchError(
                f"--defense {defense}{' --dataset ' + dataset if dataset else ''}: no stored run matches "
                f"(stored defenses: {', '.join(names) or 'none'})"
            )
        chosen.update(matched)
    for i, r in sorted(chosen.items()):
        click.echo(
            f"run {i:>5}  {r.dataset:<12} {r.defense:<14} {r.training:<8} T={r.T:<3} seed {r.seed}  {r.config_hash[:12]}"
        )
    what = f"{len(chosen)} run{'s' if len(chosen) != 1 else ''}"
    if not yes:
        if not sys.stdin.isatty():
            raise BenchError(f"refusing to delete {what} without confirmation; rerun with --yes")
        if not click.confirm(f"delete {what} and everything stored with them?", default=False):
            click.echo("nothing deleted", err=True)
            sys.exit(1)
    counts = store.delete_runs(chosen)
    click.echo(
        f"deleted {what} ({counts.get('evaluation', 0)} evaluations, {counts.get('flag', 0)} flags, "
        f"{counts.get('artifact', 0)} artifacts) from {store.display_url}; checkpoint files kept; "
        "run `bench report` to update the site",
        err=True,
    )
