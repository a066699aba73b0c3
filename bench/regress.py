"""``bench check``: accuracy regression gate against a committed baseline, plus invariants.

Paired gate (baseline format 2, issue 23): the baseline keeps every cell's per-sample outcomes, so a cell is
compared with itself sample by sample: the exact McNemar test on the discordant samples (robust before and
not now, or the reverse; two-sided binomial with p = 1/2), failing at p < :data:`PAIRED_ALPHA` (a drop, or
a rise of robust accuracy); and a defense's row is tested as a whole: per sample, the number of the row's
attack cells it survives before and now, a sign test on the samples that got worse against those that got
better (the samples are the independent units; pooling the row's cells would count one sample many times).
At the smoke suite's n = 120 a cell fails when 11 samples are lost and none gained (9.2 points), 14
against 1, 17 against 2, 21 against 4; a row fails at the same counts of samples that got worse against
better, however the drop spreads over its cells (``binomial_p``; tests/test_regress.py). Baselines of format 1 (accuracies only) fall back to the tolerance below.

Mechanism gate (issue 23): each defense row's own mechanism statistic (``Defense.mechanism``, stored per run
as the ``mechanism`` artifact: SR's finite-difference gradient, TGO's near-threshold share, RAT's singular
values, ...) is kept in the baseline and must not move against the direction the mechanism pushes it by more
than :data:`MECHANISM_TOL` of its baseline value: a regulariser switched off fails here even when the
accuracies stay within noise.

Tolerance per cell and metric (docs/ecosystem.md 5.6): ``max(floor, k * sqrt(p (1 - p) / n))`` with ``p``
the baseline accuracy and ``n`` its sample count (k = 3, floor = 0.01 by default, stored in the baseline).
The real bound of the CI gate: the smoke suite's cells use n = 120, where the tolerance is at most 13.7
points (p = 0.5) and 8.2 points at p = 0.1 or 0.9; so a 10-point drop fails for accuracies below 16% or
above 84% and may pass in between (at n = 360 the bound is 7.9 points and every 10-point drop fails).
Choices (documented in README "Leaderboard and CI gate"):

- a *drop* of clean or robust accuracy beyond tolerance fails;
- a *rise* of robust accuracy beyond tolerance fails too: it usually means an attack got weaker;
- a *rise* of clean accuracy beyond tolerance is a warning (a better model is not a regression);
- a baseline cell that is no longer measured fails (a defense or attack disappeared); a measured cell
  missing from the baseline is reported as new (run ``bench check --update`` to adopt it).

Invariants that need no baseline (failures), matched by the stored attack configs (kind and capability
attributes, not cell names or overrides): APGD-CE <= PGD (same gradient mode and eps), the standard
protocol and ``worst`` <= every other bounded L-inf attack on the same model and samples (within
tolerance), the PGD eps sweep at eps = 0 equals clean accuracy (exactly for deterministic models, within
tolerance for randomized ones), and the eps sweep is non-increasing (within tolerance).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snnbench.errors import BenchError
from snnbench.protocol import binomial_tail
from snnbench.store import pack, unpack
from snnbench.suite_results import Measured
from snnbench.suite_spec import CLEAN, Suite

BASELINE_FORMAT = 2
MECHANISM_TOL = 0.3  # relative move of a mechanism statistic against its sense that fails the gate
PAIRED_ALPHA = 1e-3  # per cell and per defense row: a chance failure of a rerun that differs only by noise
Outcomes = Callable[[int], tuple[np.ndarray, np.ndarray]]  # evaluation id -> (clean, adv) per sample


@dataclass(frozen=True)
class Tolerance:
    k: float = 3.0
    floor: float = 0.01

    def of(self, p: float, n: int) -> float:
        """Allowed absolute change of an accuracy ``p`` measured on ``n`` samples."""
        se = math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else 1.0
        return max(self.floor, self.k * se)


@dataclass(frozen=True)
class Finding:
    severity: str  # fail | warn | new
    cell: str
    metric: str
    baseline: float | None
    measured: float | None
    tol: float | None
    message: str


@dataclass
class CheckResult:
    suite: str
    checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "fail"]

    def table(self) -> list[str]:
        if not self.findings:
            return []
        lines = [
            f"{'status':<6} {'metric':<8} {'baseline':>8} {'now':>8} {'delta':>8} {'tol':>6}  cell / reason"
        ]
        order = {"fail": 0, "warn": 1, "new": 2}
        for f in sorted(self.findings, key=lambda f: (order[f.severity], f.cell, f.metric)):
            s = 1 if f.metric == "mechanism" else 100  # accuracies in percent, mechanism statistics as they are
            b = "" if f.baseline is None else f"{s * f.baseline:.4g}"
            m = "" if f.measured is None else f"{s * f.measured:.4g}"
            d = "" if f.baseline is None or f.measured is None else f"{s * (f.measured - f.baseline):+.4g}"
            t = "" if f.tol is None else f"{s * f.tol:.4g}"
            lines.append(
                f"{f.severity.upper():<6} {f.metric:<8} {b:>8} {m:>8} {d:>8} {t:>6}  {f.cell}: {f.message}"
            )
        return lines

    def summary(self) -> str:
        n_fail = len(self.failures)
        n_warn = sum(f.severity == "warn" for f in self.findings)
        verdict = "FAILED" if n_fail else "passed"
        return f"bench check {self.suite}: {verdict} ({self.checked} cells compared, {n_fail} violations, {n_warn} warnings)"


def to_bits(a: np.ndarray) -> str:
    """Per-sample booleans as hex (packed bits): 120 samples are 30 characters."""
    return pack(a).hex()


def from_bits(text: str, n: int) -> np.ndarray:
    return unpack(bytes.fromhex(text), n)


def row_mechanisms(measured: list[Measured], artifacts: Callable[[int], dict[str, Any]]) -> dict[str, dict]:
    """Each suite row's mechanism statistics ({stat: {value, sense}}) from its run's ``mechanism`` artifact
    (``artifacts(run_id)``), for the rows whose defense has one."""
    out: dict[str, dict] = {}
    for m in measured:
        if m.status == "measured" and m.run_id is not None and m.cell.row_label not in out:
            stats = artifacts(m.run_id).get("", {}).get("stats")
            if stats:
                out[m.cell.row_label] = stats
    return out


def make_baseline(suite: Suite, measured: list[Measured], tol: Tolerance, outcomes: Outcomes | None = None,
                  mechanisms: dict[str, dict] | None = None) -> dict[str, Any]:
    """Baseline document from the measured cells of a suite (sorted keys: reviewable diffs), with each cell's
    per-sample outcomes when ``outcomes`` reads them (the paired gate) and each row's mechanism statistics."""
    cells = {}
    for m in measured:
        if m.status != "measured":
            continue
        cells[m.cell.key] = {
            "row": m.cell.row_label,
            "col": m.cell.col_label,
            "n": m.n,
            "clean_acc": round(m.clean_acc, 6),
            "robust_acc": round(m.robust_acc, 6),
            "randomized": m.randomized,
        }
        if outcomes is not None and m.evaluation_id is not None:
            clean, adv = outcomes(m.evaluation_id)
            cells[m.cell.key].update(clean_bits=to_bits(clean), adv_bits=to_bits(adv))
    return {
        "format": BASELINE_FORMAT,
        "suite": suite.name,
        "tolerance": {"k": tol.k, "floor": tol.floor},
        "cells": dict(sorted(cells.items())),
        "mechanisms": {row: {k: {"value": round(float(v["value"]), 6), "sense": v["sense"]} for k, v in sorted(st.items())}
                       for row, st in sorted((mechanisms or {}).items())},
    }


def write_baseline(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(
            f"baseline {path} does not exist; create it with: bench run --suite smoke && bench check --update"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise BenchError(
            f"baseline {path} is unreadable ({e}); regenerate it with bench check --update"
        ) from None
    if (
        not isinstance(doc, dict)
        or doc.get("format") not in (1, BASELINE_FORMAT)
        or not isinstance(doc.get("cells"), dict)
    ):
        raise BenchError(
            f"baseline {path}: expected format {BASELINE_FORMAT} with a 'cells' mapping; regenerate it with bench check --update"
        )
    return doc


def compare(
    suite: Suite,
    measured: list[Measured],
    base: dict[str, Any],
    k: float | None = None,
    floor: float | None = None,
    sweeps: dict[int, dict[str, Any]] | None = None,
    outcomes: Outcomes | None = None,
    mechanisms: dict[str, dict] | None = None,
) -> CheckResult:
    """Compare measured cells with the baseline and check the invariants: paired (per sample, module
    docstring) where the baseline holds the cell's outcomes and ``outcomes`` reads the current ones, else
    by the unpaired tolerance."""
    if base.get("suite") != suite.name:
        raise BenchError(
            f"baseline is for suite {base.get('suite')!r}, not {suite.name!r}; pass --suite {base.get('suite')}"
        )
    bt = base.get("tolerance", {})
    tol = Tolerance(
        k if k is not None else float(bt.get("k", 3.0)),
        floor if floor is not None else float(bt.get("floor", 0.01)),
    )
    result = CheckResult(suite.name)
    now = {m.cell.key: m for m in measured if m.status == "measured"}
    rows: dict[str, list[tuple[Measured, np.ndarray, np.ndarray]]] = {}  # row -> (cell, base adv, now adv)
    for key, b in sorted(base["cells"].items()):
        m = now.get(key)
        if m is None:
            why = next((x.reason for x in measured if x.cell.key == key), "cell no longer in the suite")
            result.findings.append(
                Finding("fail", key, "missing", None, None, None, f"in the baseline but not measured ({why})")
            )
            continue
        result.checked += 1
        pair = _paired(b, m, outcomes)
        if pair is not None:
            result.findings.extend(_cell_findings(key, b, m, *pair))
            rows.setdefault(m.cell.row_label, []).append((m, pair[0][1], pair[1][1]))
            continue
        metrics = [("clean", "clean_acc", m.clean_acc)] + (
            [("robust", "robust_acc", m.robust_acc)] if m.cell.attack != CLEAN else []
        )
        for metric, field_name, value in metrics:
            p, n = float(b[field_name]), int(b["n"])
            t = tol.of(p, min(n, m.n) if m.n else n)
            delta = value - p
            if delta < -t:
                result.findings.append(Finding("fail", key, metric, p, value, t, "dropped beyond tolerance"))
            elif delta > t:
                sev, why = (
                    ("fail", "rose beyond tolerance: a weaker attack?")
                    if metric == "robust"
                    else ("warn", "rose beyond tolerance")
                )
                result.findings.append(Finding(sev, key, metric, p, value, t, why))
    for key in sorted(set(now) - set(base["cells"])):
        result.findings.append(
            Finding(
                "new", key, "-", None, now[key].robust_acc, None, "not in the baseline (bench check --update)"
            )
        )
    result.findings.extend(_row_findings(rows))
    if mechanisms is not None:
        result.findings.extend(mechanism_findings(base.get("mechanisms", {}), mechanisms))
    result.findings.extend(invariants(measured, tol, sweeps or {}))
    return result


def mechanism_findings(base: dict[str, dict], now: dict[str, dict]) -> list[Finding]:
    """A row's mechanism statistic that moved against its sense by more than MECHANISM_TOL of its baseline
    value fails (its mechanism was switched off or weakened); one that is gone fails as missing."""
    out = []
    for row, stats in sorted(base.items()):
        for name, b in sorted(stats.items()):
            cur = now.get(row, {}).get(name)
            where = f"row {row} mechanism {name}"
            if cur is None:
                out.append(Finding("fail", where, "mechanism", float(b["value"]), None, None,
                                   "not measured (the defense's mechanism statistic is missing)"))
                continue
            bv, v = float(b["value"]), float(cur["value"])
            allowed = MECHANISM_TOL * abs(bv)
            against = v - bv if b["sense"] == "lower" else bv - v
            if against > allowed:
                out.append(Finding("fail", where, "mechanism", bv, v, allowed,
                                   f"moved against its mechanism ({b['sense']} expected) by {against:.4g} > "
                                   f"{MECHANISM_TOL:.0%} of the baseline: the defense's mechanism is weaker or off"))
    return out


def binomial_p(k: int, n: int) -> float:
    """Two-sided exact binomial test of ``k`` successes in ``n`` trials at p = 1/2 (McNemar on discordant
    pairs; the sign test)."""
    if n == 0:
        return 1.0
    return min(1.0, 2 * binomial_tail(n - min(k, n - k), n))  # P(X <= lo) = P(X >= n - lo) at p = 1/2


def _paired(b: dict[str, Any], m: Measured, outcomes: Outcomes | None):  # type: ignore[no-untyped-def]
    """((base clean, base adv), (now clean, now adv)) when the cell can be compared sample by sample."""
    if outcomes is None or m.evaluation_id is None or "adv_bits" not in b or int(b["n"]) != m.n:
        return None
    n = m.n
    now = outcomes(m.evaluation_id)
    if len(now[0]) != n:
        return None
    return (from_bits(b["clean_bits"], n), from_bits(b["adv_bits"], n)), now


def _cell_findings(key: str, b: dict[str, Any], m: Measured, base: tuple, now: tuple) -> list[Finding]:
    out = []
    metrics = [("clean", 0, "clean_acc")] + ([("robust", 1, "robust_acc")] if m.cell.attack != CLEAN else [])
    for metric, i, field_name in metrics:
        lost, gained = int((base[i] & ~now[i]).sum()), int((~base[i] & now[i]).sum())
        p = binomial_p(lost, lost + gained)
        if p >= PAIRED_ALPHA:
            continue
        value = float(m.clean_acc if i == 0 else m.robust_acc)
        why = f"paired: {lost} samples lost, {gained} gained (exact McNemar p = {p:.1e})"
        if lost > gained:
            out.append(Finding("fail", key, metric, float(b[field_name]), value, None, why))
        else:
            sev = "fail" if metric == "robust" else "warn"
            out.append(Finding(sev, key, metric, float(b[field_name]), value, None,
                               why + ("; a weaker attack?" if metric == "robust" else "")))
    return out


def _row_findings(rows: dict[str, list[tuple[Measured, np.ndarray, np.ndarray]]]) -> list[Finding]:
    """A defense row as a whole: per sample, the attack cells it survives before and now; a sign test on
    the samples that got worse against those that got better (module docstring)."""
    out = []
    for label, cells in sorted(rows.items()):
        by_n: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for m, base, now in cells:
            if m.cell.attack != CLEAN:
                by_n.setdefault(m.n, []).append((base, now))
        for group in by_n.values():
            if len(group) < 2:
                continue
            before = np.sum([b.astype(int) for b, _ in group], axis=0)
            after = np.sum([a.astype(int) for _, a in group], axis=0)
            worse, better = int((after < before).sum()), int((after > before).sum())
            p = binomial_p(worse, worse + better)
            if p < PAIRED_ALPHA:
                out.append(Finding("fail" if worse > better else "warn", f"row {label}", "row", None, None, None,
                                   f"{len(group)} attack cells together, per sample: {worse} samples worse, "
                                   f"{better} better (sign test p = {p:.1e})"
                                   + ("" if worse > better else "; a weaker attack suite?")))
    return out



def invariants(measured: list[Measured], tol: Tolerance, sweeps: dict[int, dict[str, Any]]) -> list[Finding]:
    """APGD <= PGD, protocol and worst <= every bounded attack, sweep eps=0 == clean, sweep non-increasing."""
    out: list[Finding] = []
    by_run: dict[int, list[Measured]] = {}
    for m in measured:
        if m.status == "measured" and m.cell.attack != CLEAN and m.run_id is not None:
            by_run.setdefault(m.run_id, []).append(m)
    for cells in by_run.values():
        for strong, weak in _pairs(cells):
            t = tol.of(weak.robust_acc, min(strong.n, weak.n))
            if strong.robust_acc > weak.robust_acc + t:
                out.append(Finding("fail", strong.cell.key, "invariant", weak.robust_acc, strong.robust_acc, t,
                                   f"{strong.cell.col_label} weaker than {weak.cell.col_label}"))
    for run_id, arts in sorted(sweeps.items()):
        for key, art in sorted(arts.items()):
            if art.get("axis") != "eps" or not art.get("points"):
                continue
            out.extend(_sweep_findings(run_id, key, art, tol))
    return out


def _pairs(cells: list[Measured]) -> list[tuple[Measured, Measured]]:
    """(must be at most, reference) pairs among one model's cells, from their stored configs."""
    from snnbench.protocol import counts_toward_worst, is_protocol

    pairs = []
    for s in cells:
        cs = s.config
        for w in cells:
            cw = w.config
            if w is s or w.n != s.n:
                continue
            if cs.get("kind") == "apgd" and cs.get("loss", "ce") == "ce" and cw.get("kind") == "pgd" \
                    and cs.get("grad_mode", "bptt") == cw.get("grad_mode", "bptt") \
                    and cs.get("surrogate") == cw.get("surrogate") and abs((s.eps or 0) - (w.eps or 0)) < 1e-9:
                pairs.append((s, w))
            elif (cs.get("kind") == "worst" or is_protocol(cs)) and counts_toward_worst(cw, s.eps or 0.0) \
                    and not is_protocol(cw):
                pairs.append((s, w))
    return pairs


def _sweep_findings(run_id: int, key: str, art: dict[str, Any], tol: Tolerance) -> list[Finding]:
    out = []
    pts = sorted(art["points"], key=lambda p: p["x"])
    where = f"run {run_id} sweep {key}"
    for p in pts:
        if p["x"] == 0:
            t = tol.of(p["clean"], p["n"]) if art.get("randomized") else 1e-9
            if abs(p["robust"] - p["clean"]) > t:
                out.append(
                    Finding(
                        "fail",
                        where,
                        "eps=0",
                        p["clean"],
                        p["robust"],
                        t,
                        "robust accuracy at eps=0 differs from clean",
                    )
                )
    for a, b in zip(pts, pts[1:], strict=False):
        t = tol.of(a["robust"], min(a["n"], b["n"]))
        if b["robust"] > a["robust"] + t:
            out.append(
                Finding(
                    "fail",
                    where,
                    "monotone",
                    a["robust"],
                    b["robust"],
                    t,
                    f"accuracy rose from eps {a['x']:.4g} to {b['x']:.4g}",
                )
            )
    return out
