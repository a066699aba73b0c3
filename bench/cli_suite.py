"""``bench run --suite``: every missing cell of a suite, with progress and a results grid (click, thin;
prints). Called by ``bench run`` (:mod:`snnbench.cli`).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

import click

from snnbench.cli_common import open_store as _store
from snnbench.cli_common import progress as _progress
from snnbench.errors import BenchError


def run_suite_command(reg, o: dict[str, Any]) -> None:
    """``bench run --suite NAME``: every missing cell; cached cells and unimplemented names are skipped."""
    from snnbench.suites import SuiteOptions, run_suite

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
            "(suite mode takes --data-root, --checkpoint-dir, --device, --force, --eps-sweep/--no-eps-sweep)"
        )
    suite = reg.get("suites", o["suite"], "--suite")
    store, results = _store(o["db"], o["results_dir"])
    quiet = o["quiet"]
    t0 = time.perf_counter()
    tracker = SuiteProgress(reg, suite, store, quiet)
    bars = _progress(quiet) if sys.stderr.isatty() else (None if quiet else line_progress)
    sweep = o["eps_sweep"]
    opts = SuiteOptions(device=o["device"], data_root=o["data_root"], checkpoint_dir=o["checkpoint_dir"],
                        force=o["force"], eps_sweep=sweep)
    events = run_suite(reg, suite, store, results, progress=bars, notify=tracker, opts=opts)
    counts = Counter(ev.status for ev in events)
    for reason, n in sorted(tracker.skipped.items()):
        click.echo(f"skipped {n:>3} cells: {reason}")
    failed = [ev for ev in events if ev.status == "failed"]
    for ev in failed:
        click.echo(f"FAILED  {ev.cell.row_label} x {ev.cell.col_label}: {ev.message}")
    if not quiet:
        for line in results_table(reg, suite, store):
            click.echo(line)
    extra = f", {counts['failed']} failed" if failed else ""
    extra += f", {counts['claimed']} claimed by another process" if counts["claimed"] else ""
    click.echo(
        f"suite {suite.name}: {counts['ran']} cells run, {counts['cached']} cached, {counts['skipped']} skipped"
        f"{extra} of {len(suite.cells)} in {time.perf_counter() - t0:.1f}s (db {store.display_url})"
    )
    if failed:
        raise BenchError(f"{len(failed)} of {len(suite.cells)} cells failed (listed above); first: {failed[0].message}")


def _hms(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class SuiteProgress:
    """The suite's ``notify`` callback: one line per finished cell on stderr (TTY or log file):
    ``[i/N] elapsed 0:01:02, ETA 0:03:10  row x column: clean 91.7% robust 41.7% [33.2, 50.6] (ran)``.

    N counts the cells that will be run or read from the cache (skipped ones are summed up at the end);
    the ETA extrapolates the mean time of the cells run so far to the cells left.
    """

    def __init__(self, reg, suite, store, quiet: bool = False, echo=None) -> None:
        self.reg, self.suite, self.store, self.quiet = reg, suite, store, quiet
        self.echo = echo or (lambda line: click.echo(line, err=True))
        self.skipped: Counter[str] = Counter()
        self.done = 0
        self.ran = 0
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.ran_seconds = 0.0

    def __call__(self, ev) -> None:
        now = time.perf_counter()
        if ev.status == "skipped":
            self.skipped[ev.message] += 1
            self.last = now
            return
        self.done += 1
        if ev.status == "ran":
            self.ran += 1
            self.ran_seconds += now - self.last
        self.last = now
        if self.quiet:
            return
        total = len(self.suite.cells) - sum(self.skipped.values())
        left = max(0, total - self.done)
        eta = _hms(self.ran_seconds / self.ran * left) if self.ran else "?"
        c = ev.cell
        self.echo(
            f"[{self.done}/{total}] elapsed {_hms(now - self.t0)}, ETA {eta}  "
            f"{c.row_label} x {c.col_label}: {self.accuracy(ev)} ({ev.status})"
        )

    @staticmethod
    def accuracy(ev) -> str:
        """The stored clean/robust accuracy the event carries, with the 95% interval."""
        from snnbench.report_data import Acc

        if not ev.n:
            return "no stored result"
        clean, robust = Acc(ev.n_clean, ev.n), Acc(ev.n_robust, ev.n)
        if ev.cell.attack == "clean":
            return f"clean {100 * clean.value:.1f}% [{100 * clean.lo:.1f}, {100 * clean.hi:.1f}] n={ev.n}"
        return (
            f"clean {100 * clean.value:.1f}% robust {100 * robust.value:.1f}% "
            f"[{100 * robust.lo:.1f}, {100 * robust.hi:.1f}] n={ev.n}"
        )


class _LineBar:
    """A progress bar for logs (not a TTY): a line every ``every`` seconds and at the end of long work."""

    def __init__(
        self, total: int = 0, initial: int = 0, desc: str = "", every: float = 30.0, **_: Any
    ) -> None:
        self.total, self.n, self.desc, self.every = total, initial, desc, every
        self.t0 = self.last = time.perf_counter()
        self.start = initial

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        done = self.n - self.start
        rate = done / max(now - self.t0, 1e-9)
        eta = _hms((self.total - self.n) / rate) if rate > 0 else "?"
        post = f" ({self.postfix})" if getattr(self, "postfix", "") else ""
        click.echo(
            f"    {self.desc}: {self.n}/{self.total}, elapsed {_hms(now - self.t0)}, ETA {eta}{post}", err=True
        )

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """tqdm's API (training reports its loss this way); a log line shows it with the next update."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items()) if kwargs else str(args[0] if args else "")

    def set_description(self, desc: str = "", *args: Any, **kwargs: Any) -> None:
        self.desc = desc

    def close(self) -> None:
        now = time.perf_counter()
        if now - self.t0 >= self.every:
            self._line(now)


def line_progress(**kwargs: Any) -> _LineBar:
    """Progress factory for non-TTY logs (training epochs and attack batches inside a cell)."""
    return _LineBar(**kwargs)


def results_table(reg, suite, store, width: int = 10) -> list[str]:
    """The suite's measured accuracies as a text grid (percent; '-' not measured), rows x columns."""
    from snnbench.suite_results import measure_suite

    measured = measure_suite(reg, suite, store)
    grid = {(m.cell.row, m.cell.col): m for m in measured}
    cols = suite.col_labels
    head = max([len(r) for r in suite.row_labels] + [6])
    lines = [f"results of suite {suite.name} (percent of n test samples; - = not measured):"]
    lines.append(" " * head + " " + " ".join(f"{c[:width]:>{width}}" for c in cols))
    for r, label in enumerate(suite.row_labels):
        cells = []
        for c in range(len(cols)):
            m = grid.get((r, c))
            acc = None if m is None else (m.clean_acc if m.cell.attack == "clean" else m.robust_acc)
            cells.append(f"{'-' if acc is None else f'{100 * acc:.1f}':>{width}}")
        lines.append(f"{label:<{head}} " + " ".join(cells))
    return lines
