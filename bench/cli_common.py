"""Shared pieces of the ``bench`` command modules (cli.py, cli_report.py, cli_sweep.py, cli_bench.py).

Kept apart from :mod:`bench.cli` so the command modules never import it back (``python -m bench.cli``
runs that module as ``__main__``; importing it again from a command module would be circular).
"""

from __future__ import annotations

import functools
import sys

import click

from bench.errors import BenchError


def fail(msg: str) -> None:
    """Print a one-line user error and exit 2."""
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def user_errors(fn):
    """Turn BenchError into 'error: ...' + exit 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BenchError as e:
            fail(str(e))

    return wrapper


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
