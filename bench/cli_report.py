"""``bench report``, ``bench check`` and ``bench export``: the read side (click, thin; prints).

Registered on the ``bench`` group at the bottom of :mod:`snnbench.cli`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from snnbench.cli_common import (
    Number,
    check_output_path,
    report_unreadable,
    results_db_options,
    user_errors,
    write_text_atomic,
)
from snnbench.cli_common import open_store as _store
from snnbench.cli_common import registry_option as _common
from snnbench.cli_submit import submission_options
from snnbench.errors import BenchError

DEFAULT_SUITE = "smoke"


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="site",
    show_default=True,
    help="Directory the site is written to (open OUT/index.html). Replaced as a whole, so it must be new, "
    "empty or a previous site (marker file .snnbench-site); the results folder and '.' are refused.",
)
@results_db_options
@_common
@user_errors
def report(out: str, results_dir: str | None, db: str | None, registry: str | None) -> None:
    """Render the static leaderboard (plain HTML, no scripts, works offline) into the --out directory.

    Pages: index.html (one ranked table per threat model by the standard protocol, 95% intervals,
    models without it listed apart), suite-NAME.html (each paper's table, reported beside measured),
    run-ID.html (provenance, every evaluation, checks, plots), submit.html; CSV/JSON beside every table.
    The site is rendered into a temporary directory and swapped in: a killed report leaves the old site.
    """
    from snnbench.registry import load_registry
    from snnbench.report import build_site

    check_output_path(Path(out) / "index.html", "--out")
    reg = load_registry(registry, kinds=None)  # read side: no torch
    store, results = _store(db, results_dir, create=False)
    db_file = store.url[len("sqlite:///"):].split("?", 1)[0] if store.url.startswith("sqlite:///") else ""
    protect = (results, *([Path(db_file)] if db_file and db_file != ":memory:" else []))
    pages = build_site(reg, store, Path(out), protect)
    report_unreadable(store)
    click.echo(
        f"wrote {sum(p.suffix == '.html' for p in pages)} pages and {sum(p.suffix != '.html' for p in pages)} other files to {out}/ (open {Path(out) / 'index.html'})"
    )


@click.command()
@click.option("--suite", default=DEFAULT_SUITE, show_default=True, help="Suite to compare.")
@click.option(
    "--baseline", type=click.Path(dir_okay=False), default="results/baseline.json", show_default=True
)
@click.option("--update", is_flag=True, help="Rewrite the baseline from the latest results (on purpose).")
@click.option(
    "--k", type=Number(0.1, 100.0), default=None, help="Tolerance in binomial standard errors [baseline's, else 3]."
)
@click.option(
    "--floor", type=Number(0.0, 1.0), default=None, help="Smallest tolerance, accuracy units [baseline's, else 0.01]."
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

    Paired (the baseline keeps each cell's per-sample outcomes): a cell fails when the samples it lost
    outnumber those it gained beyond chance (exact McNemar, p < 0.001), a defense row when, per sample, more
    samples got worse than better over its attack cells together (sign test, p < 0.001); a rise of robust
    accuracy fails too (a weaker attack), a rise of clean accuracy warns. Cells without stored outcomes use
    the unpaired tolerance max(floor, k * sqrt(p (1 - p) / n)). Invariants: APGD <= PGD, the standard
    protocol and worst <= every bounded attack, eps=0 of the PGD sweep equals clean. Regenerate on purpose
    with --update.
    """
    import math

    from snnbench.registry import load_registry
    from snnbench.regress import (
        Tolerance,
        compare,
        load_baseline,
        make_baseline,
        row_mechanisms,
        write_baseline,
    )
    from snnbench.suite_results import measure_suite

    for flag, v in (("--k", k), ("--floor", floor)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise BenchError(f"{flag} must be a finite number >= 0, got {v}")
    path = Path(baseline)
    if update:
        check_output_path(path, "--baseline")
    else:
        from snnbench.specs import read_text_bounded

        if path.exists():
            read_text_bounded(path, "baseline")  # bounded size, UTF-8: else one line, before any work
    reg = load_registry(registry, kinds=None)  # read side: no torch
    s = reg.get("suites", suite, "--suite")
    store, _ = _store(db, results_dir, create=False)
    measured = measure_suite(reg, s, store)
    report_unreadable(store)
    if update:
        tol = Tolerance(k if k is not None else 3.0, floor if floor is not None else 0.01)
        base = make_baseline(s, measured, tol, store.sample_outcomes,
                             row_mechanisms(measured, lambda r: store.artifacts(r, "mechanism")))
        write_baseline(base, path)
        click.echo(
            f"wrote {path}: {len(base['cells'])} cells of suite {suite} (k={tol.k}, floor={tol.floor})"
        )
        return
    base = load_baseline(path)
    result = compare(s, measured, base, k, floor, _artifacts_for(store, measured), store.sample_outcomes,
                     row_mechanisms(measured, lambda r: store.artifacts(r, "mechanism")))
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
@submission_options
@_common
@user_errors
def export(
    fmt: str,
    out: str | None,
    suite: str | None,
    results_dir: str | None,
    db: str | None,
    registry: str | None,
    **submission: Any,
) -> None:
    """Write every stored evaluation (or one suite's cells) as sorted CSV or JSON, or one run's submission
    bundle (--submission FILE --run ID: what `bench submit` verifies and imports)."""
    from snnbench.export import evaluation_rows, suite_rows, write_rows
    from snnbench.registry import load_registry

    if any(submission.values()):
        from snnbench.cli_submit import export_submission

        return export_submission(fmt, out, suite, results_dir, db, **submission)
    if out:
        check_output_path(out, "--out")
    reg = load_registry(registry, kinds=None)  # read side: no torch
    store, _ = _store(db, results_dir, create=False)
    rows = (
        suite_rows(reg, reg.get("suites", suite, "--suite"), store)
        if suite
        else evaluation_rows(store, reg.defense_papers)
    )
    text = write_rows(rows, fmt)
    report_unreadable(store)
    if out:
        write_text_atomic(out, text)
        click.echo(f"wrote {len(rows)} rows to {out}", err=True)
    else:
        click.echo(text, nl=False)
