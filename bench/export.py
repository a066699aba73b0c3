"""``bench export``: stored results as sorted, deterministic CSV or JSON (reviewable diffs).

Schema: docs/export_schema.md. Every accuracy is a fraction in [0, 1] (never a string, never percent),
including the papers' reported values (``reported_acc`` = printed percent / 100), each with its 95% Wilson
interval; every setting that distinguishes two rows (training, epochs, seed, attack settings, gradient
mode, EOT, checkpoint origin) is a column.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from snnbench.registry import BenchRegistry
from snnbench.store import Store
from snnbench.suite_results import measure_suite
from snnbench.suite_spec import CLEAN, Suite

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
    # issue 15 (site): intervals, settings and provenance
    "clean_ci_low",
    "clean_ci_high",
    "robust_ci_low",
    "robust_ci_high",
    "attack_label",
    "attack_kind",
    "norm",
    "alpha",
    "steps",
    "grad_mode",
    "protocol",
    "budget",
    "attack_config",
    "epochs",
    "origin",
    "checkpoint_sha256",
    "checkpoint_source",
    "train_seconds",
    "paper",
    "flags_failed",
    "evaluation_id",
    "surrogate",
    "created_at",
)


def evaluation_row(run: Any, e: Any, flags_failed: str = "", paper: str = "") -> dict[str, Any]:
    """One row for evaluation ``e`` of ``run`` (an unreadable stored config exports as such): the one
    evaluation row type, taken by ``bench export``, the site's downloads and ``snnbench.results()`` /
    ``Report.table`` (columns: :data:`EVAL_FIELDS`, docs/export_schema.md)."""
    from snnbench.report_data import Acc, Unreadable, attack_cfg, attack_label, provenance

    try:
        cfg = attack_cfg(e)
        cfg_text = json.dumps(cfg, sort_keys=True)
    except Unreadable:
        cfg, cfg_text = {}, "unreadable"
    prov = provenance(run)
    return {
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
        **Acc(e.n_clean_correct, e.n).fields("clean"),
        **Acc(e.n_robust_correct, e.n).fields("robust"),
        "seconds": round(e.seconds, 3),
        "run_id": run.id,
        "config_hash": run.config_hash,
        "attack_hash": e.attack_hash,
        "git_sha": run.git_sha,
        "attack_label": attack_label(e.attack, cfg, e.eot) if cfg else f"{e.attack} (unreadable config)",
        "attack_kind": cfg.get("kind", ""),
        "norm": cfg.get("norm"),
        "alpha": cfg.get("alpha"),
        "steps": cfg.get("steps"),
        "grad_mode": cfg.get("grad_mode"),
        "protocol": cfg.get("protocol"),
        "budget": cfg.get("budget"),
        "attack_config": cfg_text,
        "epochs": prov.epochs,
        "origin": prov.origin,
        "checkpoint_sha256": prov.sha256,
        "checkpoint_source": prov.source,
        "train_seconds": None if prov.train_seconds is None else round(prov.train_seconds, 3),
        "paper": paper,
        "flags_failed": flags_failed,
        "evaluation_id": e.id,
        "surrogate": cfg.get("surrogate"),
        "created_at": str(e.created_at),
    }


def evaluation_rows(
    store: Store, papers: dict[str, str] | None = None, run_ids: set[int] | None = None
) -> list[dict[str, Any]]:
    """One row per stored evaluation, sorted by setting then attack (``papers``: defense -> paper id)."""
    rows = []
    for run in store.runs():
        if run_ids is not None and run.id not in run_ids:
            continue
        flags = "; ".join(sorted({f"{f.kind} ({f.scope})" for f in store.flags(run.id) if not f.ok}))
        for e in store.evaluations(run.id):
            rows.append(evaluation_row(run, e, flags, (papers or {}).get(run.defense, "")))
    rows.sort(
        key=lambda r: tuple(
            str(r[k]) if isinstance(r[k], str) else r[k]
            for k in ("dataset", "model", "defense", "training", "T", "seed", "attack", "eps", "attack_hash")
        )
    )
    return rows


def suite_rows(
    reg: BenchRegistry, suite: Suite, store: Store, measured: list | None = None
) -> list[dict[str, Any]]:
    """One row per suite cell, in table order: reported beside measured (both fractions)."""
    from snnbench.report_data import acc_from_fraction

    rows = []
    for m in measured if measured is not None else measure_suite(reg, suite, store):
        c = m.cell
        acc = m.clean_acc if c.attack == CLEAN else m.robust_acc
        reported = None if c.reported is None else round(c.reported / 100, 6)
        delta = None if acc is None or reported is None else round(acc - reported, 6)
        ci = acc_from_fraction(acc, m.n)
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
                "measured_ci_low": None if ci is None else round(ci.lo, 6),
                "measured_ci_high": None if ci is None else round(ci.hi, 6),
                "reported_acc": reported,
                "delta_acc": delta,
                "source": c.source,
                "paper": suite.paper or reg.defense_papers.get(c.defense or "", ""),
                "run_id": m.run_id,
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
    """One CSV cell: None -> empty; a string a spreadsheet would run as a formula (``=``, ``+``, ``-``,
    ``@``, tab or CR first, also after leading spaces or other whitespace, which spreadsheets skip; OWASP
    "CSV injection") gets a leading ``'``. Numbers stay numbers (a negative number is data, not a formula)."""
    if value is None:
        return ""
    if isinstance(value, str) and (value.startswith(FORMULA_LEAD) or value.lstrip(" \u00a0\f\v\n").startswith(FORMULA_LEAD)):
        return "'" + value
    return value
