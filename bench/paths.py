"""Where snnbench's files are: the packaged registry and perf data, the results folder, the database URL.

One module for every default path (issue 21, "each rule once"). The registry and the measured perf rates
ship inside the package (``snnbench/resources/``; in the repository they are links to the top-level
``registry.yaml`` and ``perf/``), so a built wheel finds them from any folder. The results folder and the
database follow one precedence everywhere, CLI and API alike:

- results folder: ``--results-dir`` / ``results_dir=`` > ``$BENCH_RESULTS`` > ``./results``;
- database: ``--db`` / ``db=`` (a SQLAlchemy URL, or a path to a .sqlite file) > ``$BENCH_DB`` >
  ``sqlite:///<results folder>/bench.sqlite``.

Nothing here creates a folder: commands that write call ``runner.ensure_writable`` themselves, and
read-only commands never create anything.
"""

from __future__ import annotations

import os
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent / "resources"
REGISTRY_PATH = RESOURCES / "registry.yaml"  # the packaged registry.yaml (the repository's top-level file)
PERF_DIR = RESOURCES / "perf"  # measured GPU rates that `bench run --suite --dry-run` projects cost from


def results_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The results folder: ``explicit`` > ``$BENCH_RESULTS`` > ``results`` (not created)."""
    return Path(explicit or os.environ.get("BENCH_RESULTS") or "results")


def database_url(db: str | os.PathLike | None = None, results: str | os.PathLike | None = None) -> str:
    """A SQLAlchemy URL from ``db`` (a URL, or a path to a .sqlite file), else ``$BENCH_DB``, else the
    results folder's ``bench.sqlite``."""
    if db is None or os.fspath(db) == "":
        env = os.environ.get("BENCH_DB")
        if env:
            return env
        return f"sqlite:///{results_dir(results) / 'bench.sqlite'}"
    text = os.fspath(db)
    return text if "://" in text else f"sqlite:///{text}"


def results_dir_of(db: str | os.PathLike | None, results: str | os.PathLike | None = None) -> Path:
    """The folder that holds the checkpoint cache for a store: beside a .sqlite path given as ``db``, else
    the results folder."""
    if db is not None and "://" not in os.fspath(db):
        return Path(os.fspath(db)).parent
    return results_dir(results)


def persistent_url(url: str) -> str:
    """``url`` if results written there outlive the command; an in-memory SQLite database (``sqlite://``,
    ``:memory:``, ``mode=memory``) would throw every result away at exit, so a writer refuses it."""
    from snnbench.errors import BenchError

    low = url.lower()
    if low in ("sqlite://", "sqlite:///") or ":memory:" in low or "mode=memory" in low:
        raise BenchError(f"--db {url}: an in-memory database loses every result when the command ends; give a file "
                         "(e.g. --db results/bench.sqlite) or a server URL")
    return url


def make_sqlite_folder(url: str) -> None:
    """Create the folder of a local SQLite database file (writers only; other URLs need nothing)."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url[len("sqlite:///"):].split("?", 1)[0]).parent.mkdir(parents=True, exist_ok=True)
