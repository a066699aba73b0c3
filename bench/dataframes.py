"""Stored results as pandas DataFrames: every evaluation (``results``), the leaderboard (``leaderboard``),
a suite laid out as the paper's table (``suite``). Read-only; re-exported by :mod:`snnbench.api` and ``snnbench``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from snnbench.export import EVAL_FIELDS, evaluation_row
from snnbench.paths import database_url
from snnbench.registry import load_registry
from snnbench.store import EXTERNAL, Store


def evaluation_frame(run: Any, evals: list) -> pd.DataFrame:
    """Stored evaluations of ``run`` as a DataFrame: the export's evaluation rows (one row type,
    :func:`snnbench.export.evaluation_row`; columns :data:`snnbench.export.EVAL_FIELDS`)."""
    return pd.DataFrame([evaluation_row(run, e) for e in evals], columns=list(EVAL_FIELDS))


#: the run's columns that the evaluation rows lack (``name`` = the row's ``defense``: the defense config or
#: the name given to :func:`snnbench.evaluate`)
RUN_COLUMNS = ["run_id", "name", "status", "external", "description"]


def results(db: str | os.PathLike | None = None, samples: bool = False) -> pd.DataFrame:
    """Every stored evaluation, one row per (run, evaluation), sorted by run and evaluation id.

    Columns: the run's ``run_id, name`` (defense config or the name given to :func:`evaluate`), ``status,
    external, description``, then the evaluation row of ``bench export`` (docs/export_schema.md: ``dataset,
    model, defense, training, T, seed, attack, eps, n, eot, clean_acc, robust_acc`` with their intervals and
    counts, ``attack_kind, norm, grad_mode, surrogate, ..., paper, flags_failed, evaluation_id,
    created_at``). A run with no evaluation yet has one row with NaN there.

    With ``samples=True``: one row per (evaluation, test sample) instead, with ``sample`` (index into the
    test set), ``clean`` and ``adv`` (bool: correct in every scoring draw), plus the run and attack columns.

    Example::

        df = results("sqlite:///results/bench.sqlite")
        df.pivot_table(index="name", columns="attack", values="robust_acc")     # runs x attacks
        s = results("sqlite:///results/bench.sqlite", samples=True)
        s[s.eps <= 0.1].groupby(["run_id", "sample"]).adv.all().groupby("run_id").mean()  # worst case
    """
    store = Store(database_url(db))
    runs, frames = [], []
    for r in store.runs():
        card = store.artifacts(r.id, "model_card").get("", {})
        runs.append({"run_id": r.id, "name": r.defense, "status": r.status, "external": r.training == EXTERNAL,
                     "description": card.get("description", "")})
        paper = card.get("paper", "")
        ev = evaluation_frame(r, store.evaluations(r.id)).assign(run_id=r.id, paper=paper)
        if samples:
            ev = _samples(store, ev)
        elif ev.empty:  # a run without evaluations keeps one row: its own columns, NaN elsewhere
            ev = pd.DataFrame([{"run_id": r.id, "dataset": r.dataset, "model": r.model, "defense": r.defense,
                                "training": r.training, "T": r.T, "seed": r.seed, "paper": paper}])
        frames.append(ev)
    run_df = pd.DataFrame(runs, columns=RUN_COLUMNS)
    ev_df = pd.concat(frames, ignore_index=True) if frames else evaluation_frame(None, []).assign(run_id=pd.Series(dtype=int))
    how = "inner" if samples else "left"
    out = run_df.merge(ev_df, on="run_id", how=how)
    keys = ["run_id", "evaluation_id", "sample"] if samples else ["run_id", "evaluation_id"]
    return out.sort_values(keys, na_position="first").reset_index(drop=True)


#: the evaluation row's columns kept on every per-sample row
SAMPLE_KEYS = ("evaluation_id", "attack", "attack_kind", "eps", "norm", "run_id", "dataset", "model", "defense",
               "training", "T", "seed", "paper")


def _samples(store: Store, ev: pd.DataFrame) -> pd.DataFrame:
    """Explode each evaluation row into its per-sample outcomes (``sample, clean, adv``)."""
    parts = []
    for row in ev.itertuples(index=False):
        clean, adv = store.sample_outcomes(int(row.evaluation_id))
        part = pd.DataFrame({"sample": np.arange(len(clean)), "clean": clean, "adv": adv})
        parts.append(part.assign(**{c: getattr(row, c) for c in SAMPLE_KEYS}))
    cols = [*SAMPLE_KEYS, "sample", "clean", "adv"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def leaderboard(db: str | os.PathLike | None = None, registry: str | None = None) -> pd.DataFrame:
    """The ranking ``bench report`` draws, as one DataFrame: one row per model, the columns of the site's
    ``leaderboard.csv`` (one row type: ``report_data.leaderboard_records``; docs/export_schema.md). Ranked rows
    (``ranked`` True) carry their threat model, the standard protocol's robust accuracy with its 95% Wilson
    interval and the rank range; a protocol row with a failed check has ``ranked`` False and the checks in
    ``unranked_by`` (its robust accuracy is an upper bound); models without the standard protocol are listed
    with ``ranked`` False and their strongest stored attack (RobustBench's convention: only the fixed
    evaluation ranks).

    Example::

        lb = leaderboard()
        lb[lb.ranked][["threat_model", "rank", "defense", "clean_acc", "robust_acc", "robust_ci_low", "robust_ci_high"]]
    """
    from snnbench.report_data import leaderboard as board
    from snnbench.report_data import leaderboard_records

    tables, others = board(load_registry(registry, kinds=None), Store(database_url(db)))
    return pd.DataFrame(leaderboard_records(tables, others))


def suite(
    name: str, db: str | os.PathLike | None = None, registry: str | None = None, pivot: bool = False
) -> pd.DataFrame:
    """A suite's cells with the paper's number beside the stored one (read-only: nothing is run).

    Long form: one row per cell (``row, col, row_group, col_group, row_label, col_label, dataset, defense,
    training, attack, reported, measured, delta, n, status, run_id``; accuracies in percent, as printed).
    ``pivot=True``: the paper's table, rows ``(row_group, row_label)`` x columns ``(value, col_group,
    col_label)`` with value in reported / measured / delta (positions kept where labels repeat).

    Example::

        suite("smoke", pivot=True)["measured"]      # the smoke suite's measured table
    """
    from snnbench.suite_results import measure_suite
    from snnbench.suite_spec import CLEAN

    reg = load_registry(registry, kinds=None)
    spec = reg.get("suites", name, "suite")
    rows = []
    for m in measure_suite(reg, spec, Store(database_url(db))):
        c = m.cell
        acc = m.clean_acc if c.attack == CLEAN else m.robust_acc
        measured = None if acc is None else 100 * acc
        rows.append(
            {
                "row": c.row,
                "col": c.col,
                "row_group": c.row_group,
                "col_group": c.col_group,
                "row_label": c.row_label,
                "col_label": c.col_label,
                "dataset": c.dataset,
                "defense": c.defense,
                "training": c.training,
                "attack": c.attack,
                "reported": c.reported,
                "measured": measured,
                "delta": None if measured is None or c.reported is None else measured - c.reported,
                "n": m.n,
                "status": m.status,
                "run_id": m.run_id,
            }
        )
    df = pd.DataFrame(rows).astype({"reported": float, "measured": float, "delta": float})
    if not pivot:
        return df
    table = df.pivot(
        index=["row", "row_group", "row_label"],
        columns=["col", "col_group", "col_label"],
        values=["reported", "measured", "delta"],
    )
    table = pd.concat({v: table[v] for v in ("reported", "measured", "delta")}, axis=1)  # in this order
    if not table.index.droplevel("row").has_duplicates:  # positions only where labels repeat
        table = table.droplevel("row")
    if not table.columns.droplevel("col").has_duplicates:
        table = table.droplevel("col", axis=1)
    return table
