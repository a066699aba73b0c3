"""``bench report``: the static leaderboard (plain files, works offline), built from the store.

Rows are built in Python (numbers stay numbers until the template formats them) and rendered with Jinja
(``autoescape=True``, ``StrictUndefined``: a missing field is an error, not an empty cell). Pages:

- ``index.html``: per dataset, every stored model ranked by its worst case over attacks (per-sample: a
  sample counts as robust only if no stored L-inf attack at the dataset's eps fooled it), with clean
  accuracy, failed reliability flags, T, architecture and training mode; then the suites.
- ``suite-<name>.html``: the paper's table laid out as printed, reported beside measured with the delta
  colored, plus robust accuracy vs eps / vs steps and membrane-potential histograms of the suite's models.
- ``run-<id>.html``: config, versions, device, timings, flags, every evaluation, the run's plots.

Plots are inline SVG computed here (geometry) and drawn by the ``_plots.html`` macros (markup).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from bench.registry import BenchRegistry
from bench.store import Store
from bench.suite_spec import CLEAN, Suite
from bench.measured import Measured, measure_suite

TEMPLATES = Path(__file__).resolve().parent / "templates"
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
)
NOISE_KINDS = ("gaussian", "uniform")  # random perturbations: shown, but not part of the worst case


# --- plots -------------------------------------------------------------------------------------------
@dataclass
class Series:
    label: str
    color: str
    points: str  # "x,y x,y ..." in SVG coordinates
    dots: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Plot:
    """A line chart in SVG coordinates (drawn by the ``line_plot`` macro)."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    xticks: list[tuple[float, str]]
    yticks: list[tuple[float, str]]
    vlines: list[float] = field(default_factory=list)
    width: int = 460
    height: int = 280
    left: int = 48
    right: int = 130
    top: int = 26
    bottom: int = 40

    @property
    def x0(self) -> int:
        return self.left

    @property
    def x1(self) -> int:
        return self.width - self.right

    @property
    def y0(self) -> int:
        return self.height - self.bottom

    @property
    def y1(self) -> int:
        return self.top


def line_plot(
    title: str,
    xlabel: str,
    ylabel: str,
    curves: list[tuple[str, list[tuple[float, float]]]],
    ymax: float | None = None,
    vlines: tuple[float, ...] = (),
    xfmt: str = "{:.3g}",
    xtick_values: list[float] | None = None,
) -> Plot:
    """Lay out curves ``[(label, [(x, y), ...])]`` on shared axes; y starts at 0."""
    xs = [x for _, pts in curves for x, _ in pts] or [0.0, 1.0]
    ys = [y for _, pts in curves for _, y in pts] or [1.0]
    xmin, xmax = min(xs), max(xs)
    xmax = xmax if xmax > xmin else xmin + 1
    top = ymax if ymax is not None else _nice(max(ys) * 1.1 or 1.0)
    p = Plot(title, xlabel, ylabel, [], [], [])
    sx = lambda x: p.x0 + (x - xmin) / (xmax - xmin) * (p.x1 - p.x0)  # noqa: E731
    sy = lambda y: p.y0 - min(y, top) / top * (p.y0 - p.y1)  # noqa: E731
    for i, (label, pts) in enumerate(curves):
        pts = sorted(pts)
        coords = [(round(sx(x), 1), round(sy(y), 1)) for x, y in pts]
        p.series.append(
            Series(
                label,
                PALETTE[i % len(PALETTE)],
                " ".join(f"{a},{b}" for a, b in coords),
                coords if len(pts) <= 20 else [],
            )
        )
    ticks = (
        xtick_values
        if xtick_values is not None
        else sorted(set(xs))
        if len(set(xs)) <= 8
        else list(np.linspace(xmin, xmax, 6))
    )
    p.xticks = [(round(sx(x), 1), xfmt.format(x)) for x in ticks]
    p.yticks = [(round(sy(v), 1), f"{v:g}") for v in np.linspace(0, top, 5)]
    p.vlines = [round(sx(v), 1) for v in vlines if xmin <= v <= xmax]
    return p


def _nice(v: float) -> float:
    for step in (1, 2, 5, 10, 20, 25, 50, 100):
        if v <= step:
            return float(step)
    return float(np.ceil(v / 100) * 100)


def hist_plot(title: str, hists: list[tuple[str, dict[str, Any]]]) -> Plot:
    """Membrane-potential histograms (percent of values per 0.1 bin of v_pre - v_th), threshold at 0; the
    legend starts with the share of potentials within 0.1 of the threshold (TGO Fig. 4's quantity)."""
    curves = []
    for label, h in hists:
        edges, counts, total = h["edges"], h["counts"], max(1, h["total"])
        centers = [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)]
        near = 100 * h.get("near_threshold", 0.0)
        curves.append(
            (
                f"{near:.1f}% {label}",
                [(c, 100 * n / total) for c, n in zip(centers, counts, strict=True)],
            )
        )
    return line_plot(
        title,
        "v_pre - v_th",
        "% of potentials",
        curves,
        vlines=(0.0,),
        xfmt="{:g}",
        xtick_values=[-3.0, -2.0, -1.0, 0.0, 1.0],
    )


def sweep_plots(runs: list[tuple[str, dict[str, Any]]]) -> list[Plot]:
    """Robust accuracy vs eps and vs steps (MPD-SGR Fig. 2), one curve per model."""
    out = []
    for axis, xlabel in (("eps", "eps (L-inf, pixel units)"), ("steps", "attack steps")):
        curves = []
        attack = ""
        for label, arts in runs:
            for _key, art in sorted(arts.items()):
                if art.get("axis") == axis:
                    attack = art["attack"]
                    curves.append((label, [(p["x"], 100 * p["robust"]) for p in art["points"]]))
        if curves:
            fixed = "k fixed" if axis == "eps" else "eps fixed"
            out.append(
                line_plot(
                    f"{attack.upper()}: robust accuracy vs {axis} ({fixed})",
                    xlabel,
                    "robust accuracy %",
                    curves,
                    ymax=100.0,
                    xfmt="{:.3g}" if axis == "eps" else "{:.0f}",
                )
            )
    return out


# --- rows --------------------------------------------------------------------------------------------
@dataclass
class LeaderRow:
    rank: int
    run_id: int
    dataset: str
    model: str
    arch: str
    defense: str
    training: str
    T: int
    clean: float | None
    worst: float | None
    worst_attack: str
    n_attacks: int
    n: int
    flags: list[str]
    randomized: bool


def leaderboard(reg: BenchRegistry, store: Store) -> dict[str, list[LeaderRow]]:
    """Per dataset, every run ranked by per-sample worst case over its L-inf attacks at the dataset's eps."""
    rows: dict[str, list[LeaderRow]] = {}
    for run in store.runs():
        evals = store.evaluations(run.id)
        ds = reg.datasets.get(run.dataset)
        eps = ds.eps if ds else max((e.eps for e in evals), default=0.0)
        attacks = [e for e in evals if _kind(e) not in (CLEAN, "worst", *NOISE_KINDS) and e.eps <= eps + 1e-9]
        n = Counter(e.n for e in attacks).most_common(1)[0][0] if attacks else 0
        same = [e for e in attacks if e.n == n]
        worst, worst_attack = None, ""
        if same:
            adv = np.logical_and.reduce([store.sample_outcomes(e.id)[1] for e in same])
            worst = float(adv.mean()) if len(adv) else 0.0
            worst_attack = min(same, key=lambda e: e.robust_acc).attack
        clean_evals = [e for e in evals if _kind(e) == CLEAN] or evals
        clean = max(clean_evals, key=lambda e: e.n).clean_acc if clean_evals else None
        flags = sorted({f"{f.kind} ({f.scope})" for f in store.flags(run.id) if not f.ok})
        model = reg.models.get(run.model)
        rows.setdefault(run.dataset, []).append(
            LeaderRow(
                0,
                run.id,
                run.dataset,
                run.model,
                model.arch if model else run.model,
                run.defense,
                run.training,
                run.T,
                clean,
                worst,
                worst_attack,
                len(same),
                n,
                flags,
                any(e.eot > 1 for e in evals),
            )
        )
    for ds_rows in rows.values():
        ds_rows.sort(key=lambda r: (r.worst is None, -(r.worst or 0), -(r.clean or 0), r.run_id))
        for i, r in enumerate(ds_rows, 1):
            r.rank = i
    return dict(sorted(rows.items()))


def _kind(e: Any) -> str:
    if e.attack == CLEAN:
        return CLEAN
    try:
        return str(json.loads(e.attack_config_json).get("kind", e.attack))
    except (TypeError, ValueError):
        return e.attack


@dataclass
class TableCell:
    reported: float | None
    measured: float | None
    delta: float | None
    klass: str  # ok | warn | bad | none
    status: str
    title: str
    run_id: int | None


def delta_class(delta: float | None, n: int, p: float | None) -> str:
    """Color of measured - reported: within 3 binomial standard errors (>= 2 points) ok, within 10 warn."""
    if delta is None or p is None:
        return "none"
    se = 100 * float(np.sqrt(max(p * (1 - p), 1e-4) / max(n, 1)))
    if abs(delta) <= max(2.0, 3 * se):
        return "ok"
    return "warn" if abs(delta) <= 10 else "bad"


def suite_table(suite: Suite, measured: list[Measured]) -> dict[str, Any]:
    """The suite's table as printed: column groups, row groups, cells with reported/measured/delta."""
    grid: dict[tuple[int, int], TableCell] = {}
    for m in measured:
        c = m.cell
        acc = m.clean_acc if c.attack == CLEAN else m.robust_acc
        value = None if acc is None else 100 * acc
        delta = None if value is None or c.reported is None else value - c.reported
        title = (
            f"{c.key}"
            + (f" | n={m.n}" if m.n else "")
            + (f" | {m.reason}" if m.reason else "")
            + (f" | {c.note}" if c.note else "")
        )
        grid[(c.row, c.col)] = TableCell(
            c.reported, value, delta, delta_class(delta, m.n, acc), m.status, title, m.run_id
        )
    ncols = len(suite.col_labels)
    col_groups: list[tuple[str, int]] = []
    for c in sorted({(x.col, x.col_group) for x in suite.cells}):
        if col_groups and col_groups[-1][0] == c[1]:
            col_groups[-1] = (c[1], col_groups[-1][1] + 1)
        else:
            col_groups.append((c[1], 1))
    rows = []
    last_group = None
    for r, label in enumerate(suite.row_labels):
        group = next(x.row_group for x in suite.cells if x.row == r)
        if group and group != last_group:
            rows.append({"group": group, "label": "", "cells": []})
        last_group = group
        rows.append({"group": "", "label": label, "cells": [grid[(r, c)] for c in range(ncols)]})
    counts = Counter(m.status for m in measured)
    return {
        "columns": suite.col_labels,
        "col_groups": col_groups if any(g for g, _ in col_groups) else [],
        "rows": rows,
        "counts": dict(sorted(counts.items())),
        "n_cells": len(measured),
        "has_reported": any(c.reported is not None for c in suite.cells),
    }


# --- pages -------------------------------------------------------------------------------------------
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["pct"] = lambda v, d=2: "–" if v is None else f"{100 * v:.{d}f}"
    env.filters["num"] = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"
    env.filters["signed"] = lambda v, d=2: "" if v is None else f"{v:+.{d}f}"
    return env


def _suite_runs(measured: list[Measured]) -> list[tuple[str, int]]:
    """(label, run id) of the measured models of a suite, first row label that uses each run."""
    seen: dict[int, str] = {}
    for m in measured:
        if m.run_id is not None and m.run_id not in seen:
            seen[m.run_id] = (
                f"{m.cell.row_label}"
                if m.cell.dataset == measured[0].cell.dataset
                else f"{m.cell.row_label} {m.cell.dataset}"
            )
    return [(label, rid) for rid, label in seen.items()]


def run_plots(store: Store, runs: list[tuple[str, int]]) -> list[Plot]:
    plots = sweep_plots([(label, store.artifacts(rid, "sweep")) for label, rid in runs])
    hists = [
        (label, h["test"]) for label, rid in runs if (h := store.artifacts(rid, "vpre_hist")).get("test")
    ]
    if hists:
        plots.append(hist_plot("Membrane potential v_pre - v_th (one test batch)", hists))
    return plots


def build_site(reg: BenchRegistry, store: Store, out: Path) -> list[Path]:
    """Render every page into ``out`` (created); returns the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    written = []

    def write(name: str, template: str, **ctx: Any) -> None:
        path = out / name
        path.write_text(env.get_template(template).render(**ctx))
        written.append(path)

    shutil.copyfile(TEMPLATES / "style.css", out / "style.css")
    written.append(out / "style.css")
    suites = []
    for name, suite in sorted(reg.suites.items()):
        measured = measure_suite(reg, suite, store)
        table = suite_table(suite, measured)
        suites.append({"name": name, "suite": suite, "counts": table["counts"], "n_cells": table["n_cells"]})
        runs = _suite_runs(measured)
        write(
            f"suite-{name}.html",
            "suite.html",
            title=f"Suite {name}",
            suite=suite,
            table=table,
            plots=run_plots(store, runs),
            runs=runs,
        )
    board = leaderboard(reg, store)
    for run in store.runs():
        evals = store.evaluations(run.id)
        write(
            f"run-{run.id}.html",
            "run.html",
            title=f"Run {run.id}: {run.defense} on {run.dataset}",
            run=run,
            config=json.dumps(json.loads(run.config_json), indent=2, sort_keys=True),
            versions=sorted(json.loads(run.versions_json or "{}").items()),
            evals=evals,
            kinds={e.id: _kind(e) for e in evals},
            flags=store.flags(run.id),
            plots=run_plots(store, [(run.defense, run.id)]),
        )
    write("index.html", "index.html", title="snnbench leaderboard", board=board, suites=suites)
    return written
