"""Store hardening (issue 7): 8 concurrent writer processes on SQLite (WAL) and PostgreSQL, schema
migration 1 -> 2 in one transaction, refusal of unknown versions, retries, password masking.

PostgreSQL tests need ``BENCH_TEST_PG_URL`` (``.ci/run`` starts a throw-away server); each test gets its
own schema through ``search_path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from _store_writer import ATTACKS, N_CELLS, N_SAMPLES
from _store_writer import info as _info
from _store_writer import pattern as _pattern
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import IntegrityError

from snnbench.errors import BenchError
from snnbench.store import SCHEMA_VERSION, EvalRecord, FlagRecord, Store

PG_URL = os.environ.get("BENCH_TEST_PG_URL")
N_PROC = 8
WRITER = Path(__file__).with_name("_store_writer.py")


def _pg_schema():
    """A fresh schema on the test server: (URL whose search_path is that schema, drop function)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as c:
        c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with admin.begin() as c:
            c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()

    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}", drop


@pytest.fixture
def pg_url():
    if not PG_URL:
        pytest.skip("BENCH_TEST_PG_URL is unset (.ci/run starts a PostgreSQL server and sets it)")
    url, drop = _pg_schema()
    yield url
    drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bench.sqlite'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="module")
def hammered(tmp_path_factory) -> dict[str, tuple[str, dict[int, int], int]]:
    """8 writer processes started at the same instant on SQLite (and PostgreSQL when available)."""
    urls = {"sqlite": f"sqlite:///{tmp_path_factory.mktemp('conc') / 'bench.sqlite'}"}
    schema = _pg_schema() if PG_URL else None
    if schema:
        urls["postgresql"] = schema[0]
    start = time.time() + 4.0  # every interpreter is up by then, so all first opens and writes overlap
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), str(w), str(start), *urls.values()],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(N_PROC)
    ]
    outs = [json.loads(p.communicate(timeout=180)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    result = {}
    for i, dialect in enumerate(urls):
        ids: dict[int, int] = {}
        for o in outs:
            for cell, rid in o["ids"][i].items():
                assert ids.setdefault(int(cell), rid) == rid, (
                    f"{dialect}: two writers got different run ids for cell {cell}"
                )
        result[dialect] = (urls[dialect], ids, sum(o["retries"][i] for o in outs))
    yield result
    if schema:
        schema[1]()


@pytest.mark.slow  # a real subprocess / Ray instance / 8 processes: seconds, not milliseconds
@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_eight_concurrent_writers_lose_and_duplicate_nothing(hammered, dialect):
    if dialect not in hammered:
        pytest.skip("BENCH_TEST_PG_URL is unset (.ci/run starts a PostgreSQL server and sets it)")
    url, ids, retries = hammered[dialect]
    store = Store(url)
    n_eval = N_CELLS * len(ATTACKS)
    assert store.counts() == {
        "run": N_CELLS,
        "evaluation": n_eval,
        "sample_outcome": n_eval,
        "flag": n_eval,
        "artifact": N_CELLS * 2,
    }
    for cell, rid in ids.items():
        assert store.run_by_hash(_info(cell).config_hash).id == rid
        evs = store.evaluations(rid)
        assert sorted(e.attack for e in evs) == sorted(ATTACKS)
        for e in evs:  # every stored row is one writer's complete, uncorrupted write
            writer = json.loads(e.attack_config_json)["writer"]
            clean, adv = store.sample_outcomes(e.id)
            assert clean.all() and np.array_equal(adv, _pattern(writer, cell, ATTACKS.index(e.attack)))
            assert e.n == N_SAMPLES and e.n_robust_correct == int(adv.sum())
    print(
        f"\n{dialect}: {N_PROC} processes x {N_CELLS} runs + {n_eval} evaluations + {N_CELLS} artifacts "
        f"= {N_PROC * (2 * N_CELLS + n_eval)} write transactions; counts {store.counts()}; retried {retries}"
    )


def _downgrade_to_v1(url: str) -> None:
    """Turn a fresh database into the foundation's schema version 1 (no run.host / run.resumed_from)."""
    eng = create_engine(url)
    with eng.begin() as c:
        c.exec_driver_sql("ALTER TABLE run DROP COLUMN host")
        c.exec_driver_sql("ALTER TABLE run DROP COLUMN resumed_from")
        c.exec_driver_sql("UPDATE meta SET value='1' WHERE key='schema_version'")
    eng.dispose()


def _columns(url: str) -> dict[str, set[str]]:
    eng = create_engine(url)
    insp = inspect(eng)
    cols = {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}
    eng.dispose()
    return cols


def test_old_schema_is_migrated_in_place(db_url, tmp_path):
    store = Store(db_url)
    rid = store.upsert_run(_info(1))
    fresh = _columns(db_url)
    _downgrade_to_v1(db_url)
    assert "host" not in _columns(db_url)["run"]
    store = Store(db_url)  # migrates 1 -> 2 -> 3
    assert store.schema_version() == SCHEMA_VERSION == 3
    assert _columns(db_url) == fresh
    old = store.run_by_hash(_info(1).config_hash)
    assert old.id == rid and old.host == "" and old.resumed_from == 0
    store.finish_run(rid, status="trained", resumed_from=3)
    assert store.run_by_hash(_info(1).config_hash).resumed_from == 3


def _downgrade_flags_to_v2(url: str) -> None:
    """The flag table of schema version 2: keyed by (run, scope, kind), no attack_hash."""
    eng = create_engine(url)
    with eng.begin() as c:
        if eng.dialect.name == "sqlite":
            c.exec_driver_sql(
                "CREATE TABLE flag_v2 (id INTEGER NOT NULL PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES run (id) "
                "ON DELETE CASCADE, scope VARCHAR(64) NOT NULL, kind VARCHAR(64) NOT NULL, ok BOOLEAN NOT NULL, "
                "value FLOAT, message TEXT NOT NULL, CONSTRAINT uq_flag UNIQUE (run_id, scope, kind))")
            c.exec_driver_sql("INSERT INTO flag_v2 SELECT id, run_id, scope, kind, ok, value, message FROM flag")
            c.exec_driver_sql("DROP TABLE flag")
            c.exec_driver_sql("ALTER TABLE flag_v2 RENAME TO flag")
            c.exec_driver_sql("CREATE INDEX ix_flag_run_id ON flag (run_id)")
        else:
            c.exec_driver_sql("ALTER TABLE flag DROP CONSTRAINT uq_flag")
            c.exec_driver_sql("ALTER TABLE flag DROP COLUMN attack_hash")
            c.exec_driver_sql("ALTER TABLE flag ADD CONSTRAINT uq_flag UNIQUE (run_id, scope, kind)")
        c.exec_driver_sql("UPDATE meta SET value='2' WHERE key='schema_version'")
    eng.dispose()


def test_flags_are_keyed_by_the_evaluation_and_a_v2_database_migrates(db_url):
    """Issue 24: two evaluations of one attack name (another n, another eps) keep their own flags; a flag
    stored before the key existed migrates as a model-level one."""
    store = Store(db_url)
    rid = store.upsert_run(_info(1))
    store.record_flags(rid, [FlagRecord("pgd", "zero_grad", False, 1.0, "old")])
    _downgrade_flags_to_v2(db_url)
    store = Store(db_url)  # migrates 2 -> 3
    assert store.schema_version() == 3 and [(f.scope, f.attack_hash, f.message) for f in store.flags(rid)] == [
        ("pgd", "", "old")]
    ok, bad = np.ones(4, bool), np.zeros(4, bool)
    for h, flag_ok in (("hash-n100", True), ("hash-n360", False)):
        store.record_evaluation(rid, EvalRecord("pgd", h, {"kind": "pgd"}, 0.1, ok, bad, 1.0, 1),
                                [FlagRecord("pgd", "zero_grad", flag_ok, 0.0, h)])
    mine = {f.attack_hash: f.ok for f in store.flags(rid) if f.kind == "zero_grad"}
    assert mine == {"": False, "hash-n100": True, "hash-n360": False}


def test_failed_migration_rolls_back(db_url):
    Store(db_url).upsert_run(_info(1))
    _downgrade_to_v1(db_url)
    eng = create_engine(db_url)
    with eng.begin() as c:  # a conflicting column makes the second ALTER of the migration fail
        c.exec_driver_sql("ALTER TABLE run ADD COLUMN resumed_from VARCHAR(3)")
    eng.dispose()
    with pytest.raises(BenchError, match="cannot open database"):
        Store(db_url)
    cols = _columns(db_url)
    assert "host" not in cols["run"]  # the first ALTER was rolled back with the failed one
    eng = create_engine(db_url)
    with eng.connect() as c:
        assert c.exec_driver_sql("SELECT value FROM meta").scalar() == "1"
    eng.dispose()


@pytest.mark.parametrize(
    "version,fragment", [("0", "no migration to 3"), ("junk", "unreadable"), ("99", "newer")]
)
def test_unknown_versions_are_refused(db_url, version, fragment):
    Store(db_url).upsert_run(_info(1))
    eng = create_engine(db_url)
    with eng.begin() as c:
        c.exec_driver_sql(f"UPDATE meta SET value='{version}' WHERE key='schema_version'")
    eng.dispose()
    with pytest.raises(BenchError, match=fragment):
        Store(db_url)


def test_lost_race_is_retried(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    calls = []

    def tx(s):
        calls.append(1)
        if len(calls) < 3:
            raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed: run.config_hash"))
        return "done"

    assert store._write(tx) == "done" and len(calls) == 3 and store.retries == 2


def test_password_never_shown():
    with pytest.raises(BenchError) as e:
        Store("postgresql+nosuchdriver://alice:s3cret@127.0.0.1:1/x")
    assert "s3cret" not in str(e.value)
    if PG_URL:
        with pytest.raises(BenchError, match="cannot open database") as e:
            Store("postgresql+psycopg://alice:s3cret@127.0.0.1:1/x")
        assert "s3cret" not in str(e.value)
