"""``bench report``: the static leaderboard (plain files, works offline), built from the store.

Rows are built in Python (:mod:`bench.report_data`: intervals, ranking, provenance, labels; numbers stay
numbers until the template formats them) and rendered with Jinja (``autoescape=True``,
``StrictUndefined``: a missing field is an error, not an empty cell). Pages, each with CSV/JSON downloads of
its tables:

- ``index.html``: one board per dataset and threat model (norm x eps) by the standard protocol at the full
  budget, titled by what it is (RobustBench convention), with 95% Wilson intervals, rank ranges where
  intervals overlap, provenance, paper links, "potentially unreliable" marks, the spiking activity (firing
  rate, SynOps) and a robustness-vs-SynOps plot per board; the CI (smoke) budget's boards apart, not a
  ranking, their budget artefacts explained; models without the standard protocol listed apart with the
  command that ranks them; the suites; the papers with BibTeX. One small inline script sorts (click a
  header) and filters (a box per table) the tables; without JavaScript they are plain tables.
- ``suite-<name>.html``: the paper's table laid out as printed, reported beside measured with the delta
  coloured and the interval in the cell's tooltip; for cells not run yet the command that fills them and
  the projected GPU-hours (:mod:`bench.cost`); plots of the suite's models.
- ``run-<id>.html``: provenance, config, versions, device, every evaluation with its full attack label and
  interval, the protocol's stages, failed flags first (ok ones folded), the spiking activity per layer, the
  run's plots.
- ``submit.html``: how to evaluate your own model and get it on the board.

The site is written atomically: rendered into a temporary directory beside ``out`` and swapped in (Linux
``renameat2(RENAME_EXCHANGE)``; elsewhere two renames). A killed ``bench report`` leaves the old site or
the new one, never a mix; pages of runs no longer in the database disappear with the old site; dot-files
of the old site (``.gitkeep``, ``.nojekyll``) are carried over.

Only a site of ours is ever replaced (issue 24): every site carries the marker file :data:`SITE_MARKER`;
``out`` must be missing, empty (regular dot-files such as ``.gitkeep`` are carried over, so they do not
count), or hold that marker (or, for sites written before the marker, only the files a site holds). A folder that holds the results database or checkpoints, the current folder, or any
other non-empty folder is refused with one line and nothing is deleted.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from snnbench.cost import project
from snnbench.errors import BenchError
from snnbench.export import evaluation_rows, suite_rows, write_rows
from snnbench.registry import BenchRegistry
from snnbench.report_data import (
    Acc,
    ThreatModel,
    Unreadable,
    acc_from_fraction,
    attack_cfg,
    attack_label,
    fmt_eps,
    leaderboard,
    leaderboard_records,
    load_json,
    provenance,
    safe,
    sorted_flags,
    worst_case,
)
from snnbench.report_plots import Plot, hist_plot, marker_path, scatter_plot, si_unit, sweep_plots
from snnbench.store import Store
from snnbench.suite_results import Measured, measure_suite
from snnbench.suite_spec import CLEAN, Suite

TEMPLATES = Path(__file__).resolve().parent / "templates"


# --- suite tables ------------------------------------------------------------------------------------
@dataclass
class TableCell:
    reported: float | None
    measured: float | None
    delta: float | None
    klass: str  # ok | warn | bad | none
    status: str
    title: str
    run_id: int | None
    acc: Acc | None = None


def delta_class(delta: float | None, n: int, p: float | None) -> str:
    """Color of measured - reported: within 3 binomial standard errors (>= 2 points) ok, within 10 warn."""
    if delta is None or p is None:
        return "none"
    se = 100 * float(np.sqrt(max(p * (1 - p), 1e-4) / max(n, 1)))
    if abs(delta) <= max(2.0, 3 * se):
        return "ok"
    return "warn" if abs(delta) <= 10 else "bad"


def column_budgets(reg: BenchRegistry, suite: Suite) -> list[str]:
    """Per column, the attack's budget as resolved for its first runnable cell (``7 steps, α 0.025``)."""
    out = []
    for col in range(len(suite.col_labels)):
        text_ = ""
        cells = [c for c in suite.cells if c.col == col and c.runnable and c.attack != CLEAN]
        if len({(c.attack, tuple(sorted(c.attack_overrides.items()))) for c in cells}) != 1:
            out.append("")  # the rows, not the column, choose the attack (e.g. SNN-RAT Table 2)
            continue
        for cell in cells:  # from registry data only: the read side imports no attack code (no torch)
            entry = reg.attacks.get(cell.attack)
            ds = reg.datasets.get(cell.dataset)
            if entry is None or ds is None:
                continue
            over = {k: v for k, v in cell.attack_overrides.items() if k != "attack_params"}
            cfg = {"kind": entry.kind, **entry.params, **dict(cell.attack_overrides.get("attack_params", {})), **over}
            eps = cfg.get("eps") if cfg.get("eps") is not None else ds.eps
            if "alpha" not in cfg and entry.kind in ("pgd", "bim", "cw", "multi_pgd"):
                cfg["alpha"] = ds.alpha
            full = attack_label(entry.name, cfg)
            text_ = full[len(entry.name) :].strip(" ()") if full.startswith(entry.name) else full
            text_ = f"{text_}, ε {fmt_eps(eps)}".strip(", ")
            break
        out.append(text_)
    return out


def suite_table(suite: Suite, measured: list[Measured], reg: BenchRegistry | None = None) -> dict[str, Any]:
    """The suite's table as printed: column groups, row groups, cells with reported/measured/delta."""
    grid: dict[tuple[int, int], TableCell] = {}
    for m in measured:
        c = m.cell
        acc = m.clean_acc if c.attack == CLEAN else m.robust_acc
        ci = acc_from_fraction(acc, m.n)
        value = None if acc is None else 100 * acc
        delta = None if value is None or c.reported is None else value - c.reported
        title = (
            f"{c.key}"
            + (f" | n={m.n}, 95% CI {100 * ci.lo:.1f}–{100 * ci.hi:.1f}" if ci else "")
            + (f" | {m.reason}" if m.reason else "")
            + (f" | {c.note}" if c.note else "")
        )
        grid[(c.row, c.col)] = TableCell(
            c.reported, value, delta, delta_class(delta, m.n, acc), m.status, title, m.run_id, ci
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
        "budgets": column_budgets(reg, suite) if reg is not None else [""] * ncols,
        "col_groups": col_groups if any(g for g, _ in col_groups) else [],
        "rows": rows,
        "counts": dict(sorted(counts.items())),
        "n_cells": len(measured),
        "n_rows": len(suite.row_labels),
        "n_cols": ncols,
        "has_reported": any(c.reported is not None for c in suite.cells),
    }


# --- rendering ---------------------------------------------------------------------------------------
def _ci(a: Acc | None, digits: int = 1) -> str:
    return "" if a is None else f"[{100 * a.lo:.{digits}f}, {100 * a.hi:.{digits}f}]"


def si(v: float | None) -> str:
    """A count with 3 significant digits and an SI suffix: ``123k``, ``23.5k``, ``1.2M``; "–" for None."""
    if v is None:
        return "–"
    div, _ = si_unit(abs(v))
    return f"{v / div:.3g}" + {1e9: "G", 1e6: "M", 1e3: "k"}.get(div, "")


def rate(v: float | None) -> str:
    """A firing rate (spikes per neuron per time step) in percent: ``12.5%``; "–" for None."""
    if v is None:
        return "–"
    return f"{100 * v:.1f}%" if v >= 0.001 or v == 0 else f"{100 * v:.2g}%"


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
    env.filters["ci"] = _ci
    env.filters["eps"] = lambda v: "–" if v is None else fmt_eps(v)
    env.filters["si"] = si
    env.filters["rate"] = rate
    env.globals["marker_path"] = marker_path
    env.globals["papers_by_id"] = {}
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
    plots = sweep_plots(
        [(label, safe(lambda rid=rid: store.artifacts(rid, "sweep"), {})) for label, rid in runs]
    )
    hists = []
    for label, rid in runs:
        h = safe(lambda rid=rid: store.artifacts(rid, "vpre_hist"), {}).get("test")
        if isinstance(h, dict) and {"edges", "counts", "total"} <= set(h):
            hists.append((label, h))
    if hists:
        plots.append(hist_plot("Membrane potential v_pre - v_th (one test batch)", hists))
    return plots


def activity_plot(t: ThreatModel) -> Plot | None:
    """Robust accuracy vs SynOps per inference of a board's models (those with a measured activity)."""
    points = [(f"{r.defense} ({r.training}), run {r.run_id}", r.activity.synops, 100 * r.robust.value)
              for r in t.rows if r.activity.synops is not None]
    if not points:
        return None
    return scatter_plot(
        f"{t.title}: robust accuracy vs SynOps per inference",
        "synaptic operations per inference on clean test samples",
        "robust accuracy %",
        points,
        caption=(
            "Each point is one model of this board: its robust accuracy under the standard protocol (y) against "
            "its synaptic operations per inference (x: every spike times the fan-out it reaches in the next "
            "synaptic layer, average pools folded in; measured on the first 256 clean test samples, "
            "snnbench.activity). Up and to the left: more robust with fewer operations. Firing rates are in "
            "the table; models whose activity was not measured are not drawn."
        ),
    )


def board_note(reg: BenchRegistry, t: ThreatModel) -> str:
    """What the board's protocol budget runs (the registry's description of its attack config), when that
    description is of the stored protocol version ("" otherwise: the config has moved on since)."""
    entry = reg.attacks.get(t.rows[0].protocol_name) if t.rows else None
    desc = entry.description if entry is not None else ""
    return desc if t.protocol and t.protocol in desc else ""


def _activity(store: Store, run_id: int) -> dict[str, Any] | None:
    """The run page's activity: the stored artifact with every number checked (None: none stored)."""
    art = safe(lambda: store.artifacts(run_id, "activity").get(""), None)
    if not isinstance(art, dict):
        return None

    def num(v: Any) -> float | None:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None

    layers = art.get("layers") if isinstance(art.get("layers"), list) else []
    return {
        "measured": art.get("status") == "measured",
        "reason": str(art.get("reason") or ""),
        **{k: num(art.get(k)) for k in ("n_samples", "T", "firing_rate", "synops", "spikes", "dense_macs")},
        "layers": [
            {"name": str(x.get("name", "?")), **{k: num(x.get(k)) for k in
                                                ("neurons", "firing_rate", "spikes", "synops", "fan_out")}}
            for x in layers if isinstance(x, dict)
        ],
    }


def _eval_rows(store: Store, run: Any, evals: list) -> list[dict[str, Any]]:
    rows = []
    for e in evals:
        try:
            cfg = attack_cfg(e)
            label, err = attack_label(e.attack, cfg, e.eot), ""
        except Unreadable as x:
            cfg, label, err = {}, f"{e.attack} (unreadable)", str(x)
        n = e.n or 0
        rows.append(
            {
                "e": e,
                "label": label,
                "kind": cfg.get("kind", "?"),
                "norm": cfg.get("norm") or ("–" if e.attack == CLEAN else "?"),
                "clean": Acc(e.n_clean_correct, n) if n else None,
                "robust": Acc(e.n_robust_correct, n) if n else None,
                "error": err,
                "stages": _stage_rows(store, run.id, e.attack) if cfg.get("kind") == "standard" else [],
            }
        )
    return rows


def _stage_rows(store: Store, run_id: int, attack: str) -> list[dict[str, Any]]:
    from snnbench.report_data import _stages

    return _stages(store, run_id, attack)


CARD_FIELDS = ("name", "description", "module", "libraries", "randomized", "attacker_controls", "weights_sha256")


def _model_card(store: Store, run_id: int) -> dict[str, Any]:
    """The ``model_card`` artifact of a model evaluated through the API (``bench/api.py`` ``ModelCard``), as
    display rows; the paper link is kept only when it is an http(s) URL (it becomes an ``href``)."""
    card = safe(lambda: store.artifacts(run_id, "model_card").get("", {}), {})
    if not isinstance(card, dict) or not card:
        return {}
    rows = []
    for k in CARD_FIELDS:
        v = card.get(k)
        if k == "randomized" and v is not None:
            v = f"{'yes' if v else 'no'} ({card.get('randomized_source', 'declared')})"
        elif isinstance(v, (list, tuple)):
            v = ", ".join(map(str, v)) or "none"
        if v not in (None, ""):
            rows.append((k.replace("_", " "), str(v)))
    paper = str(card.get("paper") or "")
    link = paper if paper.startswith(("https://", "http://")) else ""
    return {"rows": rows, "paper": paper, "paper_href": link}


def _run_page(reg: BenchRegistry, store: Store, run: Any) -> dict[str, Any]:
    """Everything a run page shows; unreadable stored parts become messages, not exceptions."""
    problems = []
    try:
        config = json.dumps(load_json(run.config_json, "run config"), indent=2, sort_keys=True)
    except Unreadable as e:
        config, problems = "unreadable", [str(e)]
    try:
        versions = sorted(load_json(run.versions_json or "{}", "library versions").items())
    except Unreadable as e:
        versions, problems = [], [*problems, str(e)]
    evals = safe(lambda: store.evaluations(run.id), [])
    flags = safe(lambda: store.flags(run.id), [])
    failed, ok = sorted_flags(flags)
    ds = reg.datasets.get(run.dataset)
    worst, covered = worst_case(store, evals, ds.eps) if ds else (None, [])
    return {
        "run": run,
        "prov": provenance(run),
        "paper": reg.papers.get(reg.defense_papers.get(run.defense, "")),
        "config": config,
        "versions": versions,
        "evals": _eval_rows(store, run, evals),
        "failed": failed,
        "ok_flags": ok,
        "worst": worst,
        "worst_eps": ds.eps if ds else None,
        "worst_covers": covered,
        "problems": problems,
        "card": _model_card(store, run.id),
        "activity": _activity(store, run.id),
    }


def render_site(reg: BenchRegistry, store: Store, out: Path) -> list[str]:
    """Render every page and download into the existing empty directory ``out``; returns file names."""
    env = environment()
    env.globals["papers_by_id"] = reg.papers
    written: list[str] = []

    def write(name: str, text: str) -> None:
        (out / name).write_text(text)
        written.append(name)

    def page(name: str, template: str, **ctx: Any) -> None:
        write(name, env.get_template(template).render(**ctx))

    def downloads(stem: str, rows: list[dict[str, Any]]) -> dict[str, str]:
        write(f"{stem}.csv", write_rows(rows, "csv"))
        write(f"{stem}.json", write_rows(rows, "json"))
        return {"csv": f"{stem}.csv", "json": f"{stem}.json"}

    shutil.copyfile(TEMPLATES / "style.css", out / "style.css")
    written.append("style.css")
    suites = []
    for name, suite in sorted(reg.suites.items()):
        measured = measure_suite(reg, suite, store)
        table = suite_table(suite, measured, reg)
        cost = project(reg, suite, measured)
        suites.append({"name": name, "suite": suite, "table": table, "cost": cost})
        runs = _suite_runs(measured)
        page(
            f"suite-{name}.html",
            "suite.html",
            title=f"Suite {name}",
            suite=suite,
            paper=reg.papers.get(suite.paper),
            table=table,
            cost=cost,
            plots=run_plots(store, runs),
            runs=runs,
            files=downloads(f"suite-{name}", suite_rows(reg, suite, store, measured)),
        )
    tables, others = leaderboard(reg, store)
    for run in store.runs():
        ctx = _run_page(reg, store, run)
        page(
            f"run-{run.id}.html",
            "run.html",
            title=f"Run {run.id}: {run.defense} on {run.dataset}",
            plots=run_plots(store, [(run.defense, run.id)]),
            files=downloads(f"run-{run.id}", evaluation_rows(store, reg.defense_papers, {run.id})),
            **ctx,
        )
    page(
        "index.html",
        "index.html",
        title="snnbench leaderboard",
        tables=tables,
        others=others,
        activity_plots={t.key: activity_plot(t) for t in tables},
        board_notes={t.key: board_note(reg, t) for t in tables},
        suites=suites,
        papers=sorted(reg.papers.values(), key=lambda p: (p.year, p.id)),
        files=downloads("leaderboard", leaderboard_records(tables, others)),
        all_files=downloads("evaluations", evaluation_rows(store, reg.defense_papers)),
        unreadable=list(store.unreadable),  # every row was read by now: the pages above skipped these
    )
    page("submit.html", "submit.html", title="Submit / evaluate your model", suites=sorted(reg.suites))
    return written


# --- atomic swap -------------------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _remove_stale_builds(parent: Path, name: str) -> None:
    """Temporary directories of killed ``bench report`` runs (their pid no longer exists)."""
    for p in parent.glob(f".{name}.build-*"):
        try:
            pid = int(p.name.split("-")[1])
            os.kill(pid, 0)
            if pid != os.getpid():
                continue  # another report is still writing it
        except ProcessLookupError:
            pass
        except (ValueError, IndexError, PermissionError):
            continue
        shutil.rmtree(p, ignore_errors=True)


def _swap_in(tmp: Path, out: Path) -> None:
    """Make ``tmp`` the site at ``out``; afterwards ``tmp`` holds the old site (or is gone)."""
    if not out.exists() and not out.is_symlink():
        os.rename(tmp, out)
        return
    if not out.is_dir():
        raise BenchError(f"--out {out}: exists and is not a directory")
    if _exchange(tmp, out):
        return
    old = tmp.with_name(tmp.name + "-old")
    os.rename(out, old)  # fallback: a short window in which `out` is missing
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


SITE_MARKER = ".snnbench-site"
_SITE_SUFFIXES = {".html", ".csv", ".json", ".css", ".png", ".svg"}


def _is_old_site(out: Path) -> bool:
    """A site written before :data:`SITE_MARKER`: index.html and only regular site files (dot-files too)."""
    if not (out / "index.html").is_file():
        return False
    return all(
        p.is_file() and not p.is_symlink() and (p.name.startswith(".") or p.suffix in _SITE_SUFFIXES)
        for p in out.iterdir()
    )


def check_site_folder(out: Path, protect: tuple[Path, ...] = ()) -> None:
    """Refuse ``out`` unless replacing it can only lose one of our sites (issue 24 item 1).

    ``protect``: paths (results folder, database file) that must not be inside or equal to ``out``.
    """
    out = Path(out).absolute()
    real = Path(os.path.realpath(out))
    if real == Path(os.path.realpath(Path.cwd())) or real == real.parent:
        raise BenchError(f"--out {out}: refusing to replace the current folder or a root; give a new folder")
    for p in protect:
        rp = Path(os.path.realpath(p))
        if rp == real or real in rp.parents:
            raise BenchError(f"--out {out}: holds {p} (results); give a separate folder for the site")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise BenchError(f"--out {out}: exists and is not a directory")
    if not out.is_dir():
        return
    try:
        entries = list(out.iterdir())
    except OSError as e:
        raise BenchError(f"--out {out}: cannot read it ({e.strerror})") from None
    # regular dot-files (.gitkeep, .nojekyll) are carried into the new site, so they do not count
    kept = [p for p in entries if not (p.name.startswith(".") and p.is_file() and not p.is_symlink())]
    if kept and not (out / SITE_MARKER).is_file() and not _is_old_site(out):
        raise BenchError(
            f"--out {out}: folder is not empty and is not a site written by bench report; give a new folder"
        )


def build_site(reg: BenchRegistry, store: Store, out: Path, protect: tuple[Path, ...] = ()) -> list[Path]:
    """Render every page into a temporary directory beside ``out`` and swap it in atomically.

    ``out`` is checked first by :func:`check_site_folder` (nothing else is ever replaced).
    """
    out = Path(out).absolute()
    check_site_folder(out, protect)
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_builds(parent, out.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise BenchError(f"--out {out}: cannot create the site there ({e.strerror})") from None
    try:
        os.chmod(tmp, 0o755)
        names = render_site(reg, store, tmp)
        if out.is_dir():
            for p in out.iterdir():
                if p.name.startswith(".") and p.is_file() and not p.is_symlink():
                    shutil.copyfile(p, tmp / p.name)
        (tmp / SITE_MARKER).write_text("written by snnbench bench report; this folder is replaced as a whole\n")
        _swap_in(tmp, out)
    except OSError as e:
        raise BenchError(
            f"--out {out}: cannot write the site ({e.strerror or e}); the old site is unchanged"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return [out / n for n in names]
