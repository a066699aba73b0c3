"""The committed smoke baseline (results/baseline.json, the real numbers CI gates on) satisfies the
invariants ``bench check`` enforces: per model, the standard protocol and the per-sample worst case are not
above any bounded L-inf attack, and APGD-CE is not above PGD, within the baseline's binomial tolerance.
Which columns are bounded attacks comes from the attack classes' capability attributes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from snnbench.attacks import ATTACKS

BASELINE = Path(__file__).resolve().parents[1] / "results" / "baseline.json"


def _rows(registry):
    doc = json.loads(BASELINE.read_text())
    suite = registry.suites[doc["suite"]]
    kinds = {c.key: registry.attacks[c.attack].kind for c in suite.cells if c.attack in registry.attacks}
    rows: dict[str, dict[str, tuple[str, dict]]] = {}
    for key, cell in doc["cells"].items():
        if key in kinds:
            rows.setdefault(cell["row"], {})[cell["col"]] = (kinds[key], cell)
    return doc, rows


def _tol(doc, p: float, n: int) -> float:
    t = doc["tolerance"]
    return max(t["floor"], t["k"] * math.sqrt(p * (1 - p) / n))


def test_baseline_smoke_invariants(registry):
    doc, rows = _rows(registry)
    assert rows, "baseline has no attack cells"
    checked = 0
    for row, cols in rows.items():
        bounded = {c: v for c, v in cols.items()
                   if ATTACKS.get(v[0]).bounded and ATTACKS.get(v[0]).norm == "linf"
                   and not ATTACKS.get(v[0]).from_store and not ATTACKS.get(v[0]).composite}
        for col, (kind, cell) in cols.items():
            cls = ATTACKS.get(kind)
            if not (cls.from_store or cls.composite):
                continue
            for ocol, (_, other) in bounded.items():
                t = _tol(doc, other["robust_acc"], min(cell["n"], other["n"]))
                assert cell["robust_acc"] <= other["robust_acc"] + t, (row, col, ocol)
                checked += 1
        apgd = [v for v in cols.values() if v[0] == "apgd"]
        pgd = [v for v in cols.values() if v[0] == "pgd"]
        for (_, a) in apgd:
            for (_, p) in pgd:
                assert a["robust_acc"] <= p["robust_acc"] + _tol(doc, p["robust_acc"], p["n"]), row
    assert checked > 0


@pytest.mark.parametrize("p,n,bound", [(0.5, 120, 0.137), (0.5, 360, 0.079)])
def test_readme_bound_of_the_gate(p, n, bound):
    """README and bench/regress.py state these bounds: keep them true."""
    from snnbench.regress import Tolerance

    assert Tolerance().of(p, n) == pytest.approx(bound, abs=5e-4)
