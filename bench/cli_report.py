"""``bench run --suite``, ``bench report``, ``bench check`` and ``bench export`` (click, thin; prints).

Registered on the ``bench`` group at the bottom of :mod:`bench.cli`.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from bench.cli_common import progress as _progress
from bench.cli_common import registry_option as _common
from bench.cli_common import results_db_options, user_errors
from bench.errors import BenchError

DEFAULT_SUITE = "smoke"


def _store(db: str | None, results_dir: str | None, create: bool = True):
    from bench.runner import ensure_writable
    from bench.store import Store

    results = Path(results_dir or os.environ.get("BENCH_RESULTS", "results"))
    if create:
        ensure_writable(results)
    return Store(db or os.environ.get("BENCH_DB") or f"sqlite:///{results / 'bench.sqlite'}"), results


def run_suite_command(reg, o: dict[str, Any]) -> None:
    """``bench run --suite NAME``: every missing cell; cached cells and unimplemented names are skipped."""
    from bench.suites import SuiteOptions, run_suite

    if not o["suite"]:
        raise BenchError("give --defense and --attack (one run), or --suite NAME (bench ls suites)")
    if o["defense"] or o["attacks"]:
        raise BenchError("--suite runs the suite's own cells; drop --defense/--attack or drop --suite")
    ignored = [
        k
        for k in (
            "epochs",
            "batch_size",
            "T",
            "seed",
            "lr",
            "training",
            "eps",
            "alpha",
            "steps",
            "grad_mode",
            "eot",
            "surrogate",
            "gamma",
            "model",
            "checkpoint",
            "n_eval",
        )
        if o.get(k) not in (None, False)
    ]
    if ignored:
        flags = ", ".join("--" + k.replace("_", "-") for k in ignored)
        raise BenchError(
            f"--suite fixes every setting in registry.yaml; these flags do not apply: {flags} "
            "(suite mode takes --data-root, --checkpoint-dir, --device, --force, --sweep/--no-sweep)"
        )
    suite = reg.get("suites", o["suite"], "--suite")
    store, results = _store(o["db"], o["results_dir"])
    quiet = o["quiet"]
    t0 = time.perf_counter()
    skipped: Counter[str] = Counter()

    def notify(ev) -> None:
        if ev.status == "skipped":
            skipped[ev.message] += 1
        elif not quiet:
            c = ev.cell
            acc = "" if ev.robust_acc is None else f"clean {100 * ev.clean_acc:5.1f}% robust {100 * ev.robust_acc:5.1f}%"
            eta = ev.elapsed / max(ev.index, 1) * (ev.total - ev.index)
            click.echo(f"[{ev.index}/{ev.total} {ev.elapsed:6.0f}s eta {eta:5.0f}s] {ev.status:<7} "
                       f"{c.row_label:<22} {c.col_label:<24} {acc}", err=True)

    opts = SuiteOptions(device=o["device"], data_root=o["data_root"], checkpoint_dir=o["checkpoint_dir"],
                        force=o["force"], eps_sweep=o["sweep"])
    events = run_suite(reg, suite, store, results, progress=_progress(quiet), notify=notify, opts=opts)
    counts = Counter(ev.status for ev in events)
    for reason, n in sorted(skipped.items()):
        click.echo(f"skipped {n:>3} cells: {reason}")
    failed = [ev for ev in events if ev.status == "failed"]
    for ev in failed:
        click.echo(f"failed  {ev.cell.row_label} / {ev.cell.col_label}: {ev.message}", err=True)
    click.echo(
        f"suite {suite.name}: {counts['ran']} cells run, {counts['cached']} cached, {counts['skipped']} skipped, "
        f"{counts['failed']} failed of {len(suite.cells)} in {time.perf_counter() - t0:.1f}s (db {store.url})"
    )
    if failed:
        raise SystemExit(1)


@click.command()
@click.option(
    "--out", type=click.Path(file_okay=False), default="site", show_default=True, help="Output directory."
)
@results_db_options
@_common
@user_errors
def report(out: str, results_dir: str | None, db: str | None, registry: str | None) -> None:
    """Render the static leaderboard into OUT: index, one page per suite, one page per run (offline HTML)."""
    from bench.kinds import python_kinds
    from bench.registry import load_registry
    from bench.report import build_site

    reg = load_registry(registry, kinds=python_kinds())
    store, _ = _store(db, results_dir)
    pages = build_site(reg, store, Path(out))
    click.echo(f"wrote {len(pages)} pages to {out}/ (open {Path(out) / 'index.html'})")


@click.command()
@click.option("--suite", default=DEFAULT_SUITE, show_default=True, help="Suite to compare.")
@click.option(
    "--baseline", type=click.Path(dir_okay=False), default="results/baseline.json", show_default=True
)
@click.option("--update", is_flag=True, help="Rewrite the baseline from the latest results (on purpose).")
@click.option(
    "--k", type=float, default=None, help="Tolerance in binomial standard errors [baseline's, else 3]."
)
@click.option(
    "--floor", type=float, default=None, help="Smallest tolerance, accuracy units [baseline's, else 0.01]."
)
@results_db_options
@_common
@user_errors
def check(
    suite: str,
    baseline: str,
    update: bool,
    k: float | None,
    floor: float | None,
    results_dir: str | None,
    db: str | None,
    registry: str | None,
) -> None:
    """Compare a suite's latest results with the committed baseline; exit 1 on any violation.

    Each cell's clean and robust accuracy may move by at most max(floor, k * sqrt(p (1 - p) / n)) (p the
    baseline accuracy, n its sample count). A drop beyond it fails; a rise of robust accuracy beyond it
    fails too (it usually means a weaker attack); a rise of clean accuracy is a warning. Invariants: APGD <=
    PGD, worst <= every attack, eps=0 of the PGD sweep equals clean. Regenerate on purpose with --update.
    """
    from bench.kinds import python_kinds
    from bench.registry import load_registry
    from bench.regress import Tolerance, compare, load_baseline, make_baseline, write_baseline
    from bench.measured import measure_suite

    reg = load_registry(registry, kinds=python_kinds())
    s = reg.get("suites", suite, "--suite")
    store, _ = _store(db, results_dir)
    measured = measure_suite(reg, s, store)
    path = Path(baseline)
    if update:
        tol = Tolerance(k if k is not None else 3.0, floor if floor is not None else 0.01)
        base = make_baseline(s, measured, tol)
        write_baseline(base, path)
        click.echo(
            f"wrote {path}: {len(base['cells'])} cells of suite {suite} (k={tol.k}, floor={tol.floor})"
        )
        return
    base = load_baseline(path)
    result = compare(s, measured, base, k, floor, _artifacts_for(store, measured))
    for line in result.table():
        click.echo(line)
    click.echo(result.summary())
    sys.exit(1 if result.failures else 0)


def _artifacts_for(store, measured) -> dict[int, dict[str, Any]]:
    runs = {m.run_id for m in measured if m.run_id is not None}
    return {r: store.artifacts(r, "sweep") for r in sorted(runs)}


@click.command()
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="File to write (default: stdout).")
@click.option(
    "--suite", default=None, help="Only this suite's cells (with reported values); default: every evaluation."
)
@results_db_options
@_common
@user_errors
def export(
    fmt: str,
    out: str | None,
    suite: str | None,
    results_dir: str | None,
    db: str | None,
    registry: str | None,
) -> None:
    """Write every stored evaluation (or one suite's cells) as sorted CSV or JSON."""
    from bench.export import evaluation_rows, suite_rows, write_rows
    from bench.kinds import python_kinds
    from bench.registry import load_registry

    reg = load_registry(registry, kinds=python_kinds())
    store, _ = _store(db, results_dir)
    rows = suite_rows(reg, reg.get("suites", suite, "--suite"), store) if suite else evaluation_rows(store)
    text = write_rows(rows, fmt)
    if out:
        Path(out).write_text(text)
        click.echo(f"wrote {len(rows)} rows to {out}", err=True)
    else:
        click.echo(text, nl=False)
