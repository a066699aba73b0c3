"""``bench export``: stored results as sorted, deterministic CSV or JSON (reviewable diffs).

Accuracies are numbers in [0, 1] (never strings, never percent); reported paper values stay in percent as
printed, in a column that says so.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from bench.registry import BenchRegistry
from bench.store import Store
from bench.suite_spec import CLEAN, Suite
from bench.suites import measure_suite

EVAL_FIELDS = (
    "dataset",
    "model",
    "defense",
    "training",
    "T",
    "seed",
    "attack",
    "eps",
    "n",
    "eot",
    "clean_acc",
    "robust_acc",
    "n_clean_correct",
    "n_robust_correct",
    "seconds",
    "run_id",
    "config_hash",
    "attack_hash",
    "git_sha",
)
SUITE_FIELDS = (
    "suite",
    "row",
    "col",
    "row_label",
    "col_label",
    "key",
    "dataset",
    "model",
    "T",
    "training",
    "defense",
    "attack",
    "status",
    "n",
    "clean_acc",
    "measured_acc",
    "reported_percent",
    "delta_points",
    "source",
)


def evaluation_rows(store: Store) -> list[dict[str, Any]]:
    """One row per stored evaluation, sorted by setting then attack."""
    rows = []
    for run in store.runs():
        for e in store.evaluations(run.id):
            rows.append(
                {
                    "dataset": run.dataset,
                    "model": run.model,
                    "defense": run.defense,
                    "training": run.training,
                    "T": run.T,
                    "seed": run.seed,
                    "attack": e.attack,
                    "eps": round(e.eps, 8),
                    "n": e.n,
                    "eot": e.eot,
                    "clean_acc": round(e.clean_acc, 6),
                    "robust_acc": round(e.robust_acc, 6),
                    "n_clean_correct": e.n_clean_correct,
                    "n_robust_correct": e.n_robust_correct,
                    "seconds": round(e.seconds, 3),
                    "run_id": run.id,
                    "config_hash": run.config_hash,
                    "attack_hash": e.attack_hash,
                    "git_sha": run.git_sha,
                }
            )
    rows.sort(
        key=lambda r: tuple(
            str(r[k]) if isinstance(r[k], str) else r[k]
            for k in ("dataset", "model", "defense", "training", "T", "seed", "attack", "eps", "attack_hash")
        )
    )
    return rows


def suite_rows(reg: BenchRegistry, suite: Suite, store: Store) -> list[dict[str, Any]]:
    """One row per suite cell, in table order: reported (percent) beside measured (fraction)."""
    rows = []
    for m in measure_suite(reg, suite, store):
        c = m.cell
        acc = m.clean_acc if c.attack == CLEAN else m.robust_acc
        delta = None if acc is None or c.reported is None else round(100 * acc - c.reported, 4)
        rows.append(
            {
                "suite": suite.name,
                "row": c.row,
                "col": c.col,
                "row_label": c.row_label,
                "col_label": c.col_label,
                "key": c.key,
                "dataset": c.dataset,
                "model": c.model,
                "T": c.T,
                "training": c.training,
                "defense": c.defense,
                "attack": c.attack,
                "status": m.status,
                "n": m.n or None,
                "clean_acc": None if m.clean_acc is None else round(m.clean_acc, 6),
                "measured_acc": None if acc is None else round(acc, 6),
                "reported_percent": c.reported,
                "delta_points": delta,
                "source": c.source,
            }
        )
    return rows


def write_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    """CSV (header from the first row's keys; empty cells for None) or JSON (a list, sorted keys)."""
    if fmt == "json":
        return json.dumps(rows, indent=1, sort_keys=True) + "\n"
    buf = io.StringIO()
    fields = list(rows[0]) if rows else list(EVAL_FIELDS)
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(v) for k, v in r.items()})
    return buf.getvalue()


FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """One CSV cell: None -> empty; a string a spreadsheet would run as a formula (leading ``=``, ``+``,
    ``-``, ``@``, tab or CR; OWASP "CSV injection") gets a leading ``'``. Numbers stay numbers (a
    negative number is data, not a formula)."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_LEAD):
        return "'" + value
    return value
