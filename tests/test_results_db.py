"""Store basics: idempotent writes, packed per-sample outcomes, schema version guard."""

from __future__ import annotations

import numpy as np
import pytest

from snnbench.errors import BenchError
from snnbench.store import EvalRecord, FlagRecord, RunInfo, Store, pack, unpack


def _rec(adv: list[bool], h: str = "a" * 64) -> EvalRecord:
    return EvalRecord("pgd", h, {"kind": "pgd"}, 0.1, np.ones(len(adv), bool), np.array(adv), 1.0)


def test_pack_roundtrip():
    bits = np.random.default_rng(0).random(1001) < 0.5
    assert np.array_equal(unpack(pack(bits), 1001), bits)


def test_rewrites_are_idempotent(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    info = RunInfo("c" * 64, {"x": 1}, "digits", "small_conv", "vanilla", "standard", 4, 42)
    rid = store.upsert_run(info)
    assert store.upsert_run(info) == rid
    store.record_evaluation(rid, _rec([True, False, True]), [FlagRecord("pgd", "in_eps_ball", True)])
    first = store.counts()
    eid = store.record_evaluation(rid, _rec([False, False, True]), [FlagRecord("pgd", "in_eps_ball", True)])
    assert store.counts() == first == {"run": 1, "evaluation": 1, "sample_outcome": 1, "flag": 1, "artifact": 0}
    ev = store.evaluations(rid)[0]
    assert ev.n_robust_correct == 1 and ev.robust_acc == pytest.approx(1 / 3)
    clean, adv = store.sample_outcomes(eid)
    assert adv.tolist() == [False, False, True] and clean.all()


def test_newer_schema_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(url)
    with store.engine.begin() as c:
        c.exec_driver_sql("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(BenchError, match="schema version 99"):
        Store(url)
