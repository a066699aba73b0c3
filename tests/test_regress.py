"""`bench check`: fails on a planted 10-point drop, passes on an unchanged run, checks invariants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from snnbench.regress import Tolerance, compare, invariants, make_baseline
from snnbench.store import EvalRecord
from snnbench.suite_results import Measured, measure_suite


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory):
    from _tiny_suite import tiny_suite_run

    return tiny_suite_run(tmp_path_factory)


def _bench(args: list[str], reg, results) -> subprocess.CompletedProcess:
    from _tiny_suite import cli_registry

    env = {**os.environ, "BENCH_REGISTRY": str(cli_registry())}
    cmd = [sys.executable, "-c", "from snnbench.cli import main; main()", *args, "--results-dir", str(results)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_tolerance_is_binomial_with_floor():
    tol = Tolerance(3.0, 0.01)
    assert tol.of(0.5, 360) == pytest.approx(3 * np.sqrt(0.25 / 360))
    assert tol.of(1.0, 360) == 0.01  # p = 1: no sampling noise, the floor applies
    assert tol.of(0.5, 360) < 0.10  # the smoke suite's n: a 10-point drop always fails


def test_check_passes_unchanged_and_fails_planted_drop(tiny_suite, tmp_path):
    reg, suite, store, results, _ = tiny_suite
    baseline = tmp_path / "baseline.json"
    up = _bench(["check", "--suite", "tiny", "--baseline", str(baseline), "--update"], reg, results)
    assert up.returncode == 0, up.stderr
    doc = json.loads(baseline.read_text())
    assert doc["suite"] == "tiny" and len(doc["cells"]) == 4
    ok = _bench(["check", "--suite", "tiny", "--baseline", str(baseline)], reg, results)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "passed" in ok.stdout

    # plant a 10-point drop of PGD robust accuracy in the store (same evaluation key, 10 samples flipped)
    m = next(
        x for x in measure_suite(reg, suite, store) if x.cell.attack == "pgd" and not x.cell.attack_overrides
    )
    ev = next(e for e in store.evaluations(m.run_id) if e.attack == "pgd" and abs(e.eps - 0.1) < 1e-9)
    clean, adv = store.sample_outcomes(ev.id)
    dropped = adv.copy()
    n_drop = round(0.1 * len(adv))  # 10 points of the 360 samples
    assert adv.sum() >= n_drop
    dropped[np.flatnonzero(adv)[:n_drop]] = False
    cfg = json.loads(ev.attack_config_json)
    store.record_evaluation(
        m.run_id, EvalRecord(ev.attack, ev.attack_hash, cfg, ev.eps, clean, dropped, ev.seconds, ev.eot)
    )
    try:
        bad = _bench(["check", "--suite", "tiny", "--baseline", str(baseline)], reg, results)
        assert bad.returncode == 1
        assert "FAIL" in bad.stdout and "robust" in bad.stdout and f"paired: {n_drop} samples lost, 0 gained" in bad.stdout
        assert f"{-100 * n_drop / len(adv):+.4g}" in bad.stdout
    finally:
        store.record_evaluation(
            m.run_id, EvalRecord(ev.attack, ev.attack_hash, cfg, ev.eps, clean, adv, ev.seconds, ev.eot)
        )


def _measured(tiny_suite) -> list[Measured]:
    reg, suite, store, _, _ = tiny_suite
    return measure_suite(reg, suite, store)


def test_rise_missing_and_new_cells(tiny_suite):
    suite = tiny_suite[1]
    measured = _measured(tiny_suite)
    base = make_baseline(suite, measured, Tolerance())
    pgd_key = next(m.cell.key for m in measured if m.cell.attack == "pgd" and m.status == "measured")
    clean_key = next(m.cell.key for m in measured if m.cell.attack == "clean" and m.status == "measured")
    base["cells"][pgd_key]["robust_acc"] -= 0.2  # now: robust accuracy rose by 20 points (weaker attack?)
    base["cells"][clean_key]["clean_acc"] -= 0.2  # clean rose by 20 points: a warning only
    base["cells"]["digits/small_conv/T2/standard/vanilla/cw/n=0"] = dict(base["cells"][pgd_key])  # gone now
    new_key = next(k for k in base["cells"] if "eps=0.05" in k)
    base["cells"].pop(new_key)
    res = compare(suite, measured, base)
    sev = {(f.cell, f.metric): f.severity for f in res.findings}
    assert sev[(pgd_key, "robust")] == "fail"
    assert sev[(clean_key, "clean")] == "warn"
    assert sev[("digits/small_conv/T2/standard/vanilla/cw/n=0", "missing")] == "fail"
    assert sev[(new_key, "-")] == "new"
    assert len(res.failures) == 2


def test_invariants_apgd_and_eps0(tiny_suite):
    measured = _measured(tiny_suite)
    pgd = next(
        m
        for m in measured
        if m.cell.attack == "pgd" and m.status == "measured" and not m.cell.attack_overrides
    )
    assert pgd.config["kind"] == "pgd" and pgd.config["bounded"] is True  # stored capabilities
    # matched by the stored kind, not the cell's name: an APGD cell with a steps override is compared too
    apgd = replace(pgd, cell=replace(pgd.cell, attack="apgd", col_label="apgd (25 steps)",
                                     attack_overrides={"steps": 25}),
                   config={**pgd.config, "kind": "apgd", "loss": "ce", "steps": 25}, robust_acc=pgd.robust_acc + 0.2)
    found = invariants([pgd, apgd], Tolerance(), {})
    assert [f.message for f in found] == [f"apgd (25 steps) weaker than {pgd.cell.col_label}"]
    proto = replace(apgd, cell=replace(apgd.cell, attack="standard_smoke", col_label="standard"),
                    config={**pgd.config, "kind": "standard", "protocol": "snn-standard-v1"})
    assert [f.message for f in invariants([pgd, proto], Tolerance(), {})] == [
        f"standard weaker than {pgd.cell.col_label}"]
    assert invariants([pgd, replace(apgd, robust_acc=pgd.robust_acc - 0.05)], Tolerance(), {}) == []
    sweep = {
        "axis": "eps",
        "randomized": False,
        "points": [
            {"x": 0.0, "n": 100, "clean": 0.9, "robust": 0.88},
            {"x": 0.1, "n": 100, "clean": 0.9, "robust": 0.5},
            {"x": 0.2, "n": 100, "clean": 0.9, "robust": 0.7},
        ],
    }
    msgs = sorted(f.metric for f in invariants([], Tolerance(), {1: {"pgd:eps": sweep}}))
    assert msgs == ["eps=0", "monotone"]
    sweep["randomized"] = True  # a randomized model may differ at eps=0 within the binomial tolerance
    assert sorted(f.metric for f in invariants([], Tolerance(), {1: {"pgd:eps": sweep}})) == ["monotone"]


def test_check_errors_are_one_line(tiny_suite, tmp_path):
    reg, _, _, results, _ = tiny_suite
    missing = _bench(["check", "--suite", "tiny", "--baseline", str(tmp_path / "nope.json")], reg, results)
    assert (
        missing.returncode == 2
        and "bench check --update" in missing.stderr
        and "Traceback" not in missing.stderr
    )
    (tmp_path / "bad.json").write_text("{not json")
    bad = _bench(["check", "--suite", "tiny", "--baseline", str(tmp_path / "bad.json")], reg, results)
    assert bad.returncode == 2 and "unreadable" in bad.stderr


def test_results_of_changed_code_are_redone_and_run_ids_are_never_reused(registry, tmp_path, monkeypatch):
    """Issue 23 item 2: a model trained by code that has changed since (its fingerprint differs) is retrained
    and its stored results cleared, so after a regression and its revert the current results are the current
    code's, with no `bench rm`; a deleted run's id is not given to the next model."""
    import snnbench.prepare as prep_mod
    from snnbench.plan import RunRequest, resolve
    from snnbench.store import Store

    store = Store(f"sqlite:///{tmp_path / 'b.sqlite'}")
    plan = resolve(registry, RunRequest(defense="vanilla", train_overrides={"epochs": 1, "T": 2}, device="cpu"))
    first = prep_mod.prepare(plan, store, tmp_path)
    assert first.trained
    ok = np.ones(4, bool)
    store.record_evaluation(first.run_id, EvalRecord("pgd", "h" * 64, {"kind": "pgd"}, 0.1, ok, ok, 1.0, 1))
    assert not prep_mod.prepare(plan, store, tmp_path).trained  # same code: the cache holds
    real = prep_mod.code_fingerprint
    monkeypatch.setattr(prep_mod, "code_fingerprint", lambda d: "regressed-code")  # e.g. a regulariser removed
    again = prep_mod.prepare(plan, store, tmp_path)
    assert again.trained and again.run_id == first.run_id and store.evaluations(first.run_id) == []
    monkeypatch.setattr(prep_mod, "code_fingerprint", real)  # the revert
    assert prep_mod.prepare(plan, store, tmp_path).trained  # the regressed model is not kept either
    assert not prep_mod.prepare(plan, store, tmp_path).trained
    assert (tmp_path / "checkpoints" / f"{plan.config_hash[:32]}.stale.pt").exists()  # set aside, not deleted
    store.delete_runs([first.run_id])
    other = resolve(registry, RunRequest(defense="vanilla", train_overrides={"epochs": 1, "T": 3}, device="cpu"))
    assert prep_mod.prepare(other, store, tmp_path).run_id > first.run_id


def test_paired_gate_counts_discordant_samples_per_cell_and_per_row():
    """Issue 23 item 1: the exact McNemar test per cell and the per-sample sign test per defense row; the
    smallest failing drops at n = 120 stated in bench/regress.py."""
    from snnbench.regress import _cell_findings, _row_findings, binomial_p, from_bits, to_bits
    from snnbench.suite_spec import Cell

    assert [next(lost for lost in range(1, 200) if binomial_p(g, lost + g) < 1e-3) for g in (0, 1, 2, 4)] == [11, 14, 17, 21]
    a = np.random.default_rng(0).random(120) < 0.4
    assert np.array_equal(from_bits(to_bits(a), 120), a)
    cell = Cell(suite="s", row=0, col=0, row_label="sr", col_label="pgd", dataset="digits", model="m", T=4,
                training="standard", defense="sr", attack="pgd", n_eval=120)
    m = Measured(cell, "measured", "", 1, 120, 0.9, 0.3, 0.1, 1.0, False, {"kind": "pgd"}, 7)
    clean = np.ones(120, bool)
    base = a.copy()
    now = base.copy()
    now[np.flatnonzero(base)[:11]] = False  # 11 robust samples lost, none gained
    b = {"clean_acc": 1.0, "robust_acc": float(base.mean())}
    assert [f.metric for f in _cell_findings("k", b, m, (clean, base), (clean, now)) if f.severity == "fail"] == ["robust"]
    now10 = base.copy()
    now10[np.flatnonzero(base)[:10]] = False
    assert _cell_findings("k", b, m, (clean, base), (clean, now10)) == []
    # a row: each of 6 cells loses 2 different samples (no single cell fails), 12 samples worse overall
    lost = np.flatnonzero(base)[:12]
    cells = []
    for j in range(6):
        nj = base.copy()
        nj[lost[2 * j: 2 * j + 2]] = False
        assert _cell_findings("k", b, m, (clean, base), (clean, nj)) == []
        cells.append((m, base, nj))
    rows = _row_findings({"sr": cells})
    assert [(f.cell, f.severity) for f in rows] == [("row sr", "fail")] and "12 samples worse, 0 better" in rows[0].message
