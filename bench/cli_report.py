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

from bench.cli_common import check_output_path, results_db_options, user_errors, write_text_atomic
from bench.cli_common import progress as _progress
from bench.cli_common import registry_option as _common
from bench.errors import BenchError

DEFAULT_SUITE = "smoke"


def _store(db: str | None, results_dir: str | None, create: bool = True):
    """The results store. ``create=False`` (report, check, export): nothing is created anywhere, the
    results directory need not be writable, and the database is opened read-only."""
    from bench.store import Store

    results = Path(results_dir or os.environ.get("BENCH_RESULTS", "results"))
    url = db or os.environ.get("BENCH_DB") or f"sqlite:///{results / 'bench.sqlite'}"
    if not create:
        return Store(url, readonly=True), results
    from bench.runner import ensure_writable

    ensure_writable(results)
    return Store(url), results


def run_suite_command(reg, o: dict[str, Any]) -> None:
    """``bench run --suite NAME``: every missing cell; cached cells and unimplemented names are skipped."""
    from bench.suites import run_suite

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
            "checkpoint",
            "n_eval",
        )
        if o.get(k) not in (None, False)
    ]
    if ignored:
        raise BenchError(
            f"--suite fixes every setting in registry.yaml; these flags do not apply: {', '.join(ignored)}"
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
            click.echo(f"{ev.status:<7} {c.row_label:<24} {c.col_label:<18} {c.key}", err=True)

    events = run_suite(reg, suite, store, results, o["device"], o["force"], _progress(quiet), notify)
    counts = Counter(ev.status for ev in events)
    for reason, n in sorted(skipped.items()):
        click.echo(f"skipped {n:>3} cells: {reason}")
    failed = [ev for ev in events if ev.status == "failed"]
    for ev in failed:
        click.echo(f"FAILED  {ev.cell.key}: {ev.message}")
    extra = f", {counts['failed']} failed" if failed else ""
    extra += f", {counts['claimed']} claimed by another process" if counts["claimed"] else ""
    click.echo(
        f"suite {suite.name}: {counts['ran']} cells run, {counts['cached']} cached, {counts['skipped']} skipped"
        f"{extra} of {len(suite.cells)} in {time.perf_counter() - t0:.1f}s (db {store.display_url})"
    )
    if failed:
        raise BenchError(f"{len(failed)} of {len(suite.cells)} cells failed (listed above); first: {failed[0].message}")


@click.command()
@click.option(
    "--out", type=click.Path(file_okay=False), default="site", show_default=True, help="Output directory."
)
@results_db_options
@_common
@user_errors
def report(out: str, results_dir: str | None, db: str | None, registry: str | None) -> None:
    """Render the static leaderboard into OUT: index, one page per suite, one page per run (offline HTML)."""
    from bench.registry import load_registry
    from bench.report import build_site

    check_output_path(Path(out) / "index.html", "--out")
    reg = load_registry(registry)
    store, _ = _store(db, results_dir, create=False)
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
    import math

    from bench.registry import load_registry
    from bench.regress import Tolerance, compare, load_baseline, make_baseline, write_baseline
    from bench.suites import measure_suite

    for flag, v in (("--k", k), ("--floor", floor)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise BenchError(f"{flag} must be a finite number >= 0, got {v}")
    path = Path(baseline)
    if update:
        check_output_path(path, "--baseline")
    else:
        from bench.specs import read_text_bounded

        if path.exists():
            read_text_bounded(path, "baseline")  # bounded size, UTF-8: else one line, before any work
    reg = load_registry(registry)
    s = reg.get("suites", suite, "--suite")
    store, _ = _store(db, results_dir, create=False)
    measured = measure_suite(reg, s, store)
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
    from bench.registry import load_registry

    if out:
        check_output_path(out, "--out")
    reg = load_registry(registry)
    store, _ = _store(db, results_dir, create=False)
    rows = suite_rows(reg, reg.get("suites", suite, "--suite"), store) if suite else evaluation_rows(store)
    text = write_rows(rows, fmt)
    if out:
        write_text_atomic(out, text)
        click.echo(f"wrote {len(rows)} rows to {out}", err=True)
    else:
        click.echo(text, nl=False)
