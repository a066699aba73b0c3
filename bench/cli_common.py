"""Shared pieces of the ``bench`` command modules (cli.py, cli_report.py, cli_sweep.py, cli_bench.py).

Kept apart from :mod:`snnbench.cli` so the command modules never import it back (``python -m snnbench.cli``
runs that module as ``__main__``; importing it again from a command module would be circular).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from snnbench import paths
from snnbench.errors import BenchError


class Number(click.ParamType):
    """A numeric flag, parsed by the one number parser (:func:`snnbench.specs.parse_number`: no
    underscores, NaN, infinities or subnormals) and checked against ``[lo, hi]`` here, before any work.
    ``integer``: ASCII digits only (Python's ``int`` would take ``1_0``); a bad value is one line
    ``error: Invalid value for '--flag': ...`` (exit 2)."""

    def __init__(self, lo: float | None = None, hi: float | None = None, integer: bool = False,
                 lo_open: bool = False) -> None:
        self.lo, self.hi, self.integer, self.lo_open = lo, hi, integer, lo_open
        self.name = "integer" if integer else "number"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        from snnbench.specs import parse_integer, parse_number

        if value is None:
            return value
        flag = param.opts[0] if param is not None and param.opts else "value"
        try:
            v = parse_integer(value, flag) if self.integer else parse_number(value, flag)
        except BenchError as e:
            self.fail(str(e).replace(f"{flag}: ", "", 1), param, ctx)
        lo_bad = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        if lo_bad or (self.hi is not None and v > self.hi):
            lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
            hi = "" if self.hi is None else f"<= {self.hi:g}"
            self.fail(f"{value!s:.40} must be {' and '.join(x for x in (lo, hi) if x)}", param, ctx)
        return v


def report_unreadable(store) -> None:  # type: ignore[no-untyped-def]
    """Say on stderr which stored rows a read-side command skipped (store.check_row failed): a bad row is
    reported by id with a count, never silently dropped."""
    bad = getattr(store, "unreadable", [])
    if bad:
        shown = "; ".join(bad[:5]) + (f"; ... ({len(bad) - 5} more)" if len(bad) > 5 else "")
        click.echo(f"warning: skipped {len(bad)} unreadable stored row{'s' if len(bad) != 1 else ''}: {shown}", err=True)


def fail(msg: str) -> None:
    """Print a one-line user error and exit 2."""
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def user_errors(fn):
    """The one user-error boundary of every command: one line ``error: ...`` and exit 2, never a traceback.

    Besides BenchError it maps what the environment and the user's files throw: OS errors (read-only or
    missing paths, disk full), database errors (SQLAlchemy), unreadable images (PIL), archives (zip/npz),
    text that is not UTF-8 or JSON, nesting too deep and memory exhausted by an input.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BenchError as e:
            fail(_one_line(str(e)))
        except Exception as e:  # noqa: BLE001 - the boundary: mapped below or re-raised
            msg = environment_error(e)
            if msg is None:
                raise
            fail(msg)

    return wrapper


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def environment_error(e: BaseException) -> str | None:
    """A one-line message for an error caused by the environment or a user's file, None for a bug."""
    import json
    import zipfile

    if isinstance(e, OSError):
        what = e.strerror or str(e) or type(e).__name__
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        return _one_line(f"{what}{where}")
    try:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(e, SQLAlchemyError):
            from snnbench.store import db_reason

            return _one_line(f"database error: {db_reason(e)}")
    except ImportError:  # pragma: no cover
        pass
    try:
        from PIL import Image, UnidentifiedImageError

        if isinstance(e, (Image.DecompressionBombError, UnidentifiedImageError)):
            return _one_line(f"unreadable image: {e}")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(e, zipfile.BadZipFile):
        return _one_line(f"not a valid zip/npz archive: {e}")
    if isinstance(e, json.JSONDecodeError):
        return _one_line(f"malformed JSON: {e}")
    if isinstance(e, UnicodeError):
        return _one_line(f"text is not UTF-8: {e}")
    if isinstance(e, RecursionError):
        return "input nested too deeply"
    if isinstance(e, MemoryError):
        return "out of memory reading the input"
    return None


def check_output_path(path: str | Path, what: str = "--out") -> Path:
    """Fail before any work when ``path`` cannot be written (its directory missing, a file, read-only).

    Nothing is created: the directory must exist (or be creatable, for a site directory) and be writable.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise BenchError(f"{what} {p}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BenchError(f"{what} {p}: directory {probe} is not writable")
    if p.is_dir() and what != "--out-dir":
        raise BenchError(f"{what} {p} is a directory; give a file name")
    return p


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed into place (removed on failure)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def registry_option(fn):
    """The ``--registry PATH`` option every command shares."""
    return click.option("--registry", type=click.Path(dir_okay=False), default=None, help="registry.yaml to use.")(fn)


def results_db_options(fn):
    """``--results-dir`` and ``--db``, for the commands that read the results database."""
    fn = click.option(
        "--db", default=None, help="SQLAlchemy URL (default: $BENCH_DB or sqlite:///RESULTS/bench.sqlite)."
    )(fn)
    return click.option(
        "--results-dir", type=click.Path(file_okay=False), default=None, help="Where bench.sqlite lives [results]."
    )(fn)


def progress(quiet: bool):
    """tqdm factory for progress bars on stderr (TTY only), or None when quiet."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    return functools.partial(tqdm, leave=False, dynamic_ncols=True, file=sys.stderr, disable=None)  # None: TTY only


def open_store(db: str | None, results_dir: str | None, create: bool = True):
    """The results store. ``create=False`` (report, check, export): nothing is created anywhere, the
    results directory need not be writable, and the database is opened read-only."""
    from snnbench.store import Store

    results = paths.results_dir(results_dir)
    url = paths.database_url(db, results)
    if not create:
        return Store(url, readonly=True), results
    from snnbench.prepare import ensure_writable

    paths.persistent_url(url)
    ensure_writable(results)
    return Store(url), results


def open_database(db: str | None, results_dir: str | None):
    """The results store for a command that only edits rows (``bench rm``): the database must already
    exist, and nothing else is created (no results or checkpoint folder)."""
    from snnbench.store import Store

    url = paths.persistent_url(paths.database_url(db, paths.results_dir(results_dir)))
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):].split("?", 1)[0])
        if not path.is_file():
            raise BenchError(f"no results database at {path}; nothing to delete (pass --db or --results-dir)")
    return Store(url)
