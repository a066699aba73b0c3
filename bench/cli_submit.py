"""``bench submit`` and ``bench export --submission``: a run's results sent offline as a bundle, verified by
re-running a seeded sample on the checkpoint, and imported into another results store (issue 23 item 4;
the bundle format, what is re-run and the tolerance: :mod:`snnbench.submission`).

``submit`` is registered on the ``bench`` group at the bottom of :mod:`snnbench.cli`; the ``--submission``
options of ``bench export`` (:mod:`snnbench.cli_report`) are defined here (:func:`submission_options`) and
handled by :func:`export_submission`, so a bundle is written by the command that writes every other export.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from snnbench.cli_common import Number, check_output_path, report_unreadable, results_db_options, user_errors
from snnbench.cli_common import open_store as _store
from snnbench.cli_common import progress as _progress
from snnbench.cli_common import registry_option as _common
from snnbench.errors import BenchError

EPILOG = """\b
Examples:
  bench export --submission my_run.zip --run 3 --with-checkpoint     # at the submitter
  bench submit --verify my_run.zip --db sqlite:///board.sqlite        # at the board: re-run a sample, import
  bench submit --verify my_run.zip --checkpoint model.pt --sample 64 --seed 7
  bench submit --unverified external_run.zip                          # an external model: imported, not ranked
"""


def submission_options(fn):
    """``bench export``'s options for a submission bundle (:func:`export_submission`)."""
    fn = click.option("--with-checkpoint", is_flag=True,
                      help="With --submission: put the checkpoint file itself in the bundle.")(fn)
    fn = click.option("--attack", "submission_attacks", multiple=True,
                      help="With --submission: only this evaluation (repeatable; a protocol brings its stages, a "
                      "worst case its sources; default: every evaluation of the run).")(fn)
    fn = click.option("--run", "run_id", type=Number(1, 2**63 - 1, integer=True), default=None,
                      help="With --submission: the run to export (ids: bench ls runs).")(fn)
    return click.option("--submission", type=click.Path(dir_okay=False), default=None,
                        help="Write run --run's submission bundle (a zip: results, per-sample outcomes, model card, "
                        "the weights' sha256, code version) to this file; `bench submit` verifies and imports it.")(fn)


def export_submission(fmt: str, out: str | None, suite: str | None, results_dir: str | None, db: str | None, *,
                      submission: str | None, run_id: int | None, submission_attacks: tuple[str, ...],
                      with_checkpoint: bool) -> None:
    """``bench export --submission OUT --run ID``: write the run's bundle (read-only on the database)."""
    from snnbench.submission import write_bundle

    if not submission:
        raise BenchError("--run, --attack and --with-checkpoint go with --submission FILE (a submission bundle)")
    if out or suite or fmt != "csv":
        raise BenchError("--submission writes a bundle (a zip); it takes no --out, --suite or --format")
    if run_id is None:
        raise BenchError("--submission needs --run ID (the run to export; ids: bench ls runs)")
    check_output_path(submission, "--submission")
    store, _ = _store(db, results_dir, create=False)
    bundle, notes = write_bundle(store, int(run_id), submission, submission_attacks, with_checkpoint)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    report_unreadable(store)
    size = Path(submission).stat().st_size
    sent = ("" if bundle.has_checkpoint else
            "; send the checkpoint with it (or export --with-checkpoint)" if not bundle.external else "")
    click.echo(f"wrote {submission} ({size / 1024:.1f} KiB): {bundle.describe()}, {len(bundle.flags)} flags, "
               f"{len(bundle.artifacts)} artifacts{sent}", err=True)


@click.command(name="submit", epilog=EPILOG)
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--verify/--unverified", "verify", default=True, show_default=True,
              help="Re-run a seeded sample of every evaluation on the checkpoint and import only when the bundle's "
              "per-sample outcomes reproduce (--verify); or import without re-running, marked by a failed "
              "`unverified_submission` flag that keeps the row off the ranking (--unverified: the only way for an "
              "external model, which snnbench cannot rebuild).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="The weights (default: the bundle's own, when exported --with-checkpoint); their sha256 must be "
              "the bundle's.")
@click.option("--sample", type=Number(1, 10**6, integer=True), default=32, show_default=True,
              help="Samples re-run per evaluation at least: whole batches (of 256) drawn at random until they hold "
              "this many, every outcome compared.")
@click.option("--seed", type=Number(0, 2**32 - 1, integer=True), default=None,
              help="Seed of the sample (default: a fresh random one, printed, so a submitter cannot know it).")
@click.option("--dry-run", is_flag=True, help="Verify only; import nothing.")
@click.option("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda when available).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Where torchvision datasets live.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
              help="Checkpoint directory: transfer substitutes are loaded or trained there, a bundle's checkpoint is "
              "kept in its submitted/ folder (default: $BENCH_CHECKPOINTS or RESULTS/checkpoints).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@results_db_options
@_common
@user_errors
def submit(bundle: str, verify: bool, checkpoint: str | None, sample: int, seed: int | None, dry_run: bool,
           device: str | None, data_root: str | None, checkpoint_dir: str | None, quiet: bool,
           results_dir: str | None, db: str | None, registry: str | None) -> None:
    """Verify a submission bundle (bench export --submission) and import it into the results database.

    The bundle's checkpoint sha256 and model config must match; a seeded random sample of every evaluation
    is re-run (whole batches, same seeds) and must reproduce the bundle's per-sample outcomes: exactly for a
    deterministic model verified on the kind of device (CPU or GPU) the bundle was made on, else within a
    one-sided sign test. A refused bundle is one line `error: bundle refused: ...`, exit 2, and nothing is
    imported.
    """
    import secrets

    from snnbench.paths import database_url, persistent_url
    from snnbench.paths import results_dir as _results_dir
    from snnbench.submission import (
        check_bundle,
        extract_checkpoint,
        import_bundle,
        keep_checkpoint,
        read_bundle,
    )

    b = read_bundle(bundle)
    check_bundle(b)
    results = _results_dir(results_dir)
    persistent_url(database_url(db, results))  # a bad --db fails now, before any work
    click.echo(f"bundle   {bundle}: {b.describe()}", err=True)
    if not verify:
        if dry_run:
            click.echo("dry run: the bundle is consistent; nothing imported (--unverified re-runs nothing)", err=True)
            return
        store, _ = _store(db, results_dir)
        run_id = import_bundle(b, store, None, None)
        click.echo(f"imported run {run_id} into {store.display_url} UNVERIFIED (flag unverified_submission: not ranked): "
                   f"{len(b.evaluations)} evaluations, {len(b.flags)} flags, {len(b.artifacts)} artifacts")
        report_unreadable(store)
        return
    from snnbench.kinds import python_kinds
    from snnbench.prepare import ensure_writable
    from snnbench.registry import load_registry
    from snnbench.submission import verify as verify_bundle
    from snnbench.train import checkpoint_dir as _checkpoint_dir

    if seed is None:
        seed = secrets.randbelow(2**31)
    reg = load_registry(registry, kinds=python_kinds())
    ensure_writable(results)  # the transfer substitutes' checkpoint cache
    with tempfile.TemporaryDirectory(prefix="snnbench-bundle-") as tmp:
        ck = Path(checkpoint) if checkpoint else (None if b.external else extract_checkpoint(b, Path(tmp) / "checkpoint.pt"))
        v = verify_bundle(b, reg, ck or "", results, sample=int(sample), seed=int(seed), device=device,
                          data_root=data_root, checkpoint_dir=checkpoint_dir, progress=_progress(quiet))
        click.echo(f"verified {v.summary()}", err=True)
        if dry_run:
            click.echo("dry run: nothing imported", err=True)
            return
        store, _ = _store(db, results_dir)
        if not checkpoint:  # the bundle's own checkpoint: kept beside the others, content-addressed
            ck = keep_checkpoint(ck, b.checkpoint_sha256, _checkpoint_dir(results, checkpoint_dir))
        run_id = import_bundle(b, store, ck, v)
    click.echo(f"imported run {run_id} into {store.display_url}: {len(b.evaluations)} evaluations, "
               f"{len(b.flags)} flags, {len(b.artifacts)} artifacts")
    report_unreadable(store)
