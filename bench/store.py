"""Results store (SQLAlchemy 2): the only module that speaks SQL.

Tables: ``run`` (one trained model: config hash, canonical config, versions, device, seed, checkpoint
sha256, timings), ``evaluation`` (one attack on one run: clean and robust accuracy with counts),
``sample_outcome`` (per-sample clean/adversarial correctness, bit-packed), ``flag`` (reliability checks),
``meta`` (schema version). Unique keys make every write idempotent: re-running a cell replaces its row in
one transaction, so an interrupted run leaves either the old row or the new one, never a partial one.
SQLite by default (WAL, busy timeout); any SQLAlchemy URL works (PostgreSQL for a shared server).

Concurrency (many sweep workers writing one database): every write is one transaction run by
:meth:`Store._write`, which retries it when it loses a race - a unique-key collision (two processes
creating the same run or evaluation: the retry re-reads and updates the winner's row), SQLite's
"database is locked", PostgreSQL's serialization failure or deadlock. SQLite write transactions start
with ``BEGIN IMMEDIATE`` so writers queue on the busy timeout instead of failing when they upgrade a read
lock. Schema creation and migration run under a lock (``BEGIN IMMEDIATE`` / a PostgreSQL advisory lock)
so concurrent first opens are safe. Older schema versions are migrated in one transaction
(:data:`MIGRATIONS`); newer ones, and versions without a migration path, are refused with a message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    type_coerce,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from snnbench.errors import BenchError

log = logging.getLogger(__name__)
R = TypeVar("R")

SCHEMA_VERSION = 3
EXTERNAL = "external"  # run.training (and run.status) of a model snnbench did not train (snnbench.evaluate)
# MIGRATIONS[v]: DDL taking a database from schema version v to v + 1, run in one transaction.
# A migration is one tuple for every dialect, or a {dialect: tuple} mapping.
# 1 -> 2 (issue 7): the worker host of a run, and the epoch a killed training resumed from.
# 2 -> 3 (issue 24): a flag is keyed by the evaluation it checks (its attack hash; '' = about the model), so a
#   second evaluation of the same attack name keeps its own flags. SQLite cannot change a table's constraints:
#   the table is rebuilt.
MIGRATIONS: dict[int, tuple[str, ...] | dict[str, tuple[str, ...]]] = {
    1: (
        "ALTER TABLE run ADD COLUMN host VARCHAR(255) DEFAULT '' NOT NULL",
        "ALTER TABLE run ADD COLUMN resumed_from INTEGER DEFAULT 0 NOT NULL",
    ),
    2: {
        "sqlite": (
            "CREATE TABLE flag_v3 (id INTEGER NOT NULL PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES run (id) "
            "ON DELETE CASCADE, scope VARCHAR(64) NOT NULL, kind VARCHAR(64) NOT NULL, attack_hash VARCHAR(64) "
            "DEFAULT '' NOT NULL, ok BOOLEAN NOT NULL, value FLOAT, message TEXT NOT NULL, "
            "CONSTRAINT uq_flag UNIQUE (run_id, scope, kind, attack_hash))",
            "INSERT INTO flag_v3 (id, run_id, scope, kind, attack_hash, ok, value, message) "
            "SELECT id, run_id, scope, kind, '', ok, value, message FROM flag",
            "DROP TABLE flag",
            "ALTER TABLE flag_v3 RENAME TO flag",
            "CREATE INDEX ix_flag_run_id ON flag (run_id)",
        ),
        "postgresql": (
            "ALTER TABLE flag ADD COLUMN IF NOT EXISTS attack_hash VARCHAR(64) DEFAULT '' NOT NULL",
            "ALTER TABLE flag DROP CONSTRAINT IF EXISTS uq_flag",
            "ALTER TABLE flag ADD CONSTRAINT uq_flag UNIQUE (run_id, scope, kind, attack_hash)",
        ),
    },
}
WRITE_ATTEMPTS = 10  # a write that keeps losing races this often is a real error
_PG_RETRY_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_PG_INIT_LOCK = 0x736E6E62  # advisory lock key ("snnb") held while creating/migrating the schema


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _number(r: dict[str, Any], k: str, lo: float | None = None, hi: float | None = None, integer: bool = False,
            nullable: bool = False) -> Any:
    v = r[k]
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{k} {str(v)[:40]!r} is not a number")
    if not math.isfinite(v) or (integer and not float(v).is_integer()):
        raise ValueError(f"{k} {v!r} is not {'an integer' if integer else 'a finite number'}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{k} {v:g} outside [{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]")
    return int(v) if integer else float(v)


def _text(r: dict[str, Any], k: str) -> str:
    if not isinstance(r[k], str):
        raise ValueError(f"{k} {str(r[k])[:40]!r} is not text")
    return r[k]


def _date(r: dict[str, Any], k: str) -> dt.datetime:
    v = r[k]
    if isinstance(v, dt.datetime):
        return v
    if not isinstance(v, str):
        raise ValueError(f"{k} {str(v)[:40]!r} is not a date")
    try:
        return dt.datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(f"{k} {v[:40]!r} is not an ISO 8601 date") from None


def _json_object(r: dict[str, Any], k: str) -> str:
    text = _text(r, k)
    try:
        ok = isinstance(json.loads(text), dict)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{k} is not a JSON object")
    return text


def check_row(table: str, r: dict[str, Any]) -> dict[str, Any]:
    """A stored row, checked when read (issue 24): numbers are finite numbers in their range, counts within
    ``n`` and agreeing with the stored accuracies, dates ISO 8601, JSON columns JSON objects, text text.
    Returns the row with its values typed; raises ValueError naming the first bad column."""
    out = dict(r)
    if table == "evaluation":
        n = out["n"] = _number(r, "n", 0, None, integer=True)
        for acc, count in (("clean_acc", "n_clean_correct"), ("robust_acc", "n_robust_correct")):
            out[count] = _number(r, count, 0, n, integer=True)
            out[acc] = _number(r, acc, 0, 1)
            if n and abs(out[acc] - out[count] / n) > 1e-6:
                raise ValueError(f"{acc} {out[acc]:g} disagrees with {count}/n = {out[count]}/{n}")
        out["eps"] = _number(r, "eps", 0, 1)
        out["eot"] = _number(r, "eot", 1, None, integer=True)
        out["seconds"] = _number(r, "seconds", 0)
        out["attack_config_json"] = _json_object(r, "attack_config_json")
        for k in ("attack", "attack_hash"):
            _text(r, k)
        out["created_at"] = _date(r, "created_at")
    elif table == "run":
        out["T"] = _number(r, "T", 0, None, integer=True)
        out["seed"] = _number(r, "seed", 0, None, integer=True)
        out["train_seconds"] = _number(r, "train_seconds", 0, nullable=True)
        out["resumed_from"] = _number(r, "resumed_from", 0, None, integer=True)
        out["config_json"] = _json_object(r, "config_json")
        for k in ("config_hash", "dataset", "model", "defense", "training", "status"):
            _text(r, k)
        out["created_at"], out["updated_at"] = _date(r, "created_at"), _date(r, "updated_at")
    elif table == "flag":
        if r["ok"] not in (0, 1):  # True/False, or SQLite's 0/1
            raise ValueError(f"ok {str(r['ok'])[:40]!r} is not true/false")
        out["ok"] = bool(r["ok"])
        out["value"] = _number(r, "value", nullable=True)
        for k in ("scope", "kind", "message"):
            _text(r, k)
    return out


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Run(Base):
    __tablename__ = "run"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    config_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    config_json: Mapped[str] = mapped_column(Text)
    dataset: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    defense: Mapped[str] = mapped_column(String(64))
    training: Mapped[str] = mapped_column(String(16))
    T: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    git_sha: Mapped[str] = mapped_column(String(64), default="")
    versions_json: Mapped[str] = mapped_column(Text, default="{}")
    device: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16), default="running")
    train_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    checkpoint_path: Mapped[str] = mapped_column(Text, default="")
    checkpoint_sha256: Mapped[str] = mapped_column(String(64), default="")
    host: Mapped[str] = mapped_column(String(255), default="", server_default="")
    resumed_from: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now, onupdate=_now)


class Evaluation(Base):
    __tablename__ = "evaluation"
    __table_args__ = (UniqueConstraint("run_id", "attack_hash", name="uq_eval_run_attack"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), index=True)
    attack: Mapped[str] = mapped_column(String(64))
    attack_hash: Mapped[str] = mapped_column(String(64))
    attack_config_json: Mapped[str] = mapped_column(Text)
    eps: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    n_clean_correct: Mapped[int] = mapped_column(Integer)
    n_robust_correct: Mapped[int] = mapped_column(Integer)
    clean_acc: Mapped[float] = mapped_column(Float)
    robust_acc: Mapped[float] = mapped_column(Float)
    eot: Mapped[int] = mapped_column(Integer, default=1)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


class SampleOutcome(Base):
    __tablename__ = "sample_outcome"
    evaluation_id: Mapped[int] = mapped_column(
        ForeignKey("evaluation.id", ondelete="CASCADE"), primary_key=True
    )
    n: Mapped[int] = mapped_column(Integer)
    clean_bits: Mapped[bytes] = mapped_column(LargeBinary)
    adv_bits: Mapped[bytes] = mapped_column(LargeBinary)


class Flag(Base):
    __tablename__ = "flag"
    __table_args__ = (UniqueConstraint("run_id", "scope", "kind", "attack_hash", name="uq_flag"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(64))  # "run", "model", an attack name or "<protocol>/<stage>"
    kind: Mapped[str] = mapped_column(String(64))
    #: the evaluation the flag checks ('' = a check about the model or the run): two evaluations of one attack
    #: name keep their own flags
    attack_hash: Mapped[str] = mapped_column(String(64), default="", server_default="")
    ok: Mapped[bool] = mapped_column(Boolean)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")


class Artifact(Base):
    """Small JSON payloads attached to a run (membrane-potential histograms, eps sweeps, timings)."""

    __tablename__ = "artifact"
    __table_args__ = (UniqueConstraint("run_id", "kind", "key", name="uq_artifact"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(128), default="")
    json: Mapped[str] = mapped_column(Text)


class Claim(Base):
    """A unit of work (a suite's model and its cells) taken by one process, so that two suites sharing a
    results database compute it once. Added by ``create_all`` on open (no schema version change: older
    snnbench versions ignore the table)."""

    __tablename__ = "claim"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    claimed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


@dataclass(frozen=True)
class EvalRecord:
    """One evaluation as produced by bench/scoring.py."""

    attack: str
    attack_hash: str
    attack_config: dict[str, Any]
    eps: float
    clean_correct: np.ndarray  # bool [n]
    adv_correct: np.ndarray  # bool [n]
    seconds: float
    eot: int = 1

    @property
    def n(self) -> int:
        return int(len(self.clean_correct))


@dataclass(frozen=True)
class FlagRecord:
    scope: str
    kind: str
    ok: bool
    value: float | None = None
    message: str = ""
    attack_hash: str = ""  # the evaluation it checks ('' = the model/run); record_evaluation fills it in


@dataclass
class RunInfo:
    config_hash: str
    config: dict[str, Any]
    dataset: str
    model: str
    defense: str
    training: str
    T: int
    seed: int
    git_sha: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    device: str = ""
    host: str = ""


def pack(bits: np.ndarray) -> bytes:
    return np.packbits(np.asarray(bits, dtype=bool)).tobytes()


def unpack(data: bytes, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n).astype(bool)


def lock_timeout() -> float:
    """Seconds a command waits for another process's database write lock before it gives up with a
    message: ``$BENCH_LOCK_TIMEOUT``, default 60 (writes are short; a longer wait means a stuck process)."""
    import os

    try:
        v = float(os.environ.get("BENCH_LOCK_TIMEOUT", "60"))
    except ValueError:
        raise BenchError("$BENCH_LOCK_TIMEOUT must be a number of seconds") from None
    return min(max(v, 0.1), 86400.0)


def _sqlite_connect(dbapi_conn, _record) -> None:
    # Autocommit at the driver level: SQLAlchemy's "begin" event below emits BEGIN itself, so write
    # transactions can be BEGIN IMMEDIATE (the SQLAlchemy pysqlite recipe for serializable transactions).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # first: the WAL switch may wait for a lock. Short: Store._retry re-runs the transaction (with a
    # message) until lock_timeout() has passed.
    cur.execute(f"PRAGMA busy_timeout={int(1000 * min(2.0, lock_timeout()))}")
    cur.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a commit survives a killed process (it is in the WAL before COMMIT returns); only a
    # power loss may drop the last commits, never corrupt the file (sqlite.org/pragma.html#pragma_synchronous).
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_connect_ro(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={int(1000 * lock_timeout())}")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("bench_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _hide_password(url: str) -> str:
    """The URL for messages and headers: a PostgreSQL password never reaches a log or a terminal."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url.rsplit("@", 1)[-1] if "@" in url else url


def db_reason(e: Exception) -> str:
    """The first line of a database error's cause, without SQL or parameters (one-line messages)."""
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return text[0][:200] if text else type(orig).__name__


def _locked(e: DBAPIError) -> bool:
    msg = str(e.orig).lower()
    return isinstance(e, OperationalError) and ("locked" in msg or "busy" in msg)


def _retryable(e: DBAPIError) -> bool:
    """A transaction that lost a race with another writer (worth re-running from the start)."""
    if isinstance(e, IntegrityError):
        return True  # unique key taken by a concurrent writer: the retry reads and updates that row
    if getattr(e.orig, "sqlstate", None) in _PG_RETRY_SQLSTATES:
        return True
    msg = str(e.orig).lower()
    return isinstance(e, OperationalError) and ("locked" in msg or "busy" in msg)


class Store:
    """Results database behind any SQLAlchemy URL (safe for many concurrent writer processes)."""

    def __init__(self, url: str, readonly: bool = False) -> None:
        """Open (and create or migrate, unless ``readonly``) the database at ``url``.

        ``readonly``: for report/check/export. A SQLite file must exist (nothing is created) and is opened
        with ``mode=ro``; other databases are opened as they are, and the schema is only checked.
        """
        self.display_url = _hide_password(url)
        self.readonly = readonly
        engine_url = url
        if readonly and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            path = url[len("sqlite:///"):].split("?", 1)[0]
            import os
            from urllib.parse import quote

            if not os.path.isfile(path):
                raise BenchError(
                    f"no results database at {path}; run `bench run` first, or pass --db / --results-dir"
                )
            engine_url = f"sqlite:///file:{quote(os.path.abspath(path))}?mode=ro&uri=true"
        try:
            self.engine: Engine = create_engine(engine_url, pool_pre_ping=True)
        except (ArgumentError, SQLAlchemyError, ImportError, ValueError) as e:
            raise BenchError(
                f"--db {self.display_url!r}: not a usable SQLAlchemy URL ({e}); e.g. sqlite:///results/bench.sqlite"
            ) from None
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_connect_ro if readonly else _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._writer = self.engine.execution_options(bench_write=True)
        self.url = url
        self._jitter = random.Random()  # private stream: never touch the global RNG
        self.retries = 0  # transactions re-run after losing a race (diagnostics, tests)
        #: stored rows skipped on read because they failed :func:`check_row` ("table id: reason"); the read-side
        #: commands print them and the site shows them, so a bad row is never silent
        self.unreadable: list[str] = []
        try:
            self._retry(self._check_schema if readonly else self._init_schema)
        except (DBAPIError, SQLAlchemyError) as e:
            raise BenchError(f"cannot open database {self.display_url}: {db_reason(e)}") from None

    # --- transactions -------------------------------------------------------------------------------
    def _retry(self, fn: Callable[[], R]) -> R:
        """Run ``fn``; re-run it when it loses a race (up to WRITE_ATTEMPTS times) or finds the database
        locked by another process (logged once, retried until :func:`lock_timeout` seconds have passed,
        then a BenchError saying what it waited for)."""
        deadline = time.monotonic() + lock_timeout()
        attempt, told = 0, False
        while True:
            try:
                return fn()
            except DBAPIError as e:
                locked = _locked(e)
                if locked and time.monotonic() >= deadline:
                    raise BenchError(
                        f"database {self.display_url} is locked by another process: waited {lock_timeout():.0f}s "
                        "for its write lock (set $BENCH_LOCK_TIMEOUT to wait longer)"
                    ) from None
                attempt += 1
                if (attempt >= WRITE_ATTEMPTS and not locked) or not _retryable(e):
                    raise
                if locked and not told:
                    log.warning("waiting for another process's write lock on %s (up to %.0fs)", self.display_url, lock_timeout())
                    told = True
                self.retries += 1
                log.debug("retrying a write that lost a race (%s)", type(e.orig).__name__)
                time.sleep(min(2.0, 0.02 * 2 ** min(attempt, 10)) * (0.5 + self._jitter.random()))

    def _write(self, fn: Callable[[Session], R]) -> R:
        """Run ``fn(session)`` in one write transaction, retried from the start when it loses a race."""

        def once() -> R:
            with Session(self._writer) as s, s.begin():
                return fn(s)

        return self._retry(once)

    # --- schema -------------------------------------------------------------------------------------
    def _init_schema(self) -> None:
        """Create, check or migrate the schema, under a lock so concurrent first opens are safe."""
        with self._writer.begin() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_INIT_LOCK})")
            names = set(inspect(conn).get_table_names())
            if "meta" in names:
                row = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
                found = int(row) if row is not None and str(row).isdigit() else -1
                if found > SCHEMA_VERSION:
                    raise BenchError(
                        f"database {self.display_url} has schema version {found}, newer than this snnbench "
                        f"({SCHEMA_VERSION}); upgrade snnbench or use another --db"
                    )
                if found < SCHEMA_VERSION:
                    self._migrate(conn, found)
            elif names & {"run", "evaluation"}:
                raise BenchError(
                    f"database {self.display_url} has snnbench-like tables but no schema version; use a new --db"
                )
            Base.metadata.create_all(conn)
            if conn.execute(select(Meta.key).where(Meta.key == "schema_version")).first() is None:
                conn.execute(Meta.__table__.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))

    def _check_schema(self) -> None:
        """Read-only open: the schema must exist at this version (nothing is created or migrated)."""
        with self.engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
            if "meta" not in names:
                raise BenchError(f"database {self.display_url} is not an snnbench results database (no meta table)")
            row = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
            found = int(row) if row is not None and str(row).isdigit() else -1
            if found != SCHEMA_VERSION:
                raise BenchError(
                    f"database {self.display_url} has schema version {found}, this snnbench reads {SCHEMA_VERSION}; "
                    "run any `bench run` on it once to migrate, or upgrade snnbench"
                )

    def _migrate(self, conn: Connection, found: int) -> None:
        """Apply MIGRATIONS[found], MIGRATIONS[found + 1], ... in the caller's transaction, or refuse."""
        missing = [v for v in range(found, SCHEMA_VERSION) if v not in MIGRATIONS]
        if found < 0 or missing:
            raise BenchError(
                f"database {self.display_url} has schema version {found if found >= 0 else 'unreadable'}; "
                f"no migration to {SCHEMA_VERSION} exists (migrations from: {sorted(MIGRATIONS)}); "
                "export it with an older snnbench or use a new --db"
            )
        for v in range(found, SCHEMA_VERSION):
            step = MIGRATIONS[v]
            for ddl in step.get(self.dialect, ()) if isinstance(step, dict) else step:
                conn.exec_driver_sql(ddl)
            log.info("migrated %s from schema version %d to %d", self.display_url, v, v + 1)
        conn.execute(
            Meta.__table__.update().where(Meta.key == "schema_version").values(value=str(SCHEMA_VERSION))
        )

    def schema_version(self) -> int:
        with Session(self.engine) as s:
            return int(s.get(Meta, "schema_version").value)

    # --- runs ---------------------------------------------------------------------------------------
    def upsert_run(self, info: RunInfo) -> int:
        """Create the run row for a config hash (or update and return the existing one)."""

        def tx(s: Session) -> int:
            row = s.scalar(select(Run).where(Run.config_hash == info.config_hash))
            if row is None:
                row = Run(
                    id=self._next_run_id(s),
                    config_hash=info.config_hash,
                    config_json=json.dumps(info.config, sort_keys=True),
                    dataset=info.dataset,
                    model=info.model,
                    defense=info.defense,
                    training=info.training,
                    T=info.T,
                    seed=info.seed,
                )
                s.add(row)
            if row.status == "failed":  # retried: running again (the reason stays as an artifact)
                row.status = "running"
            row.git_sha, row.device = info.git_sha, info.device
            row.versions_json, row.host = json.dumps(info.versions, sort_keys=True), info.host
            s.flush()  # a concurrent insert of the same hash fails here -> retried, then found above
            return int(row.id)

        return self._write(tx)

    def _next_run_id(self, s: Session) -> int | None:
        """A run id never used before in this database (issue 23: a deleted run's id must not come back as
        another model's): one above the highest id ever given out, kept in ``meta`` (SQLite reuses the
        highest free rowid; PostgreSQL sequences never reuse, so it lets the sequence choose)."""
        if self.dialect != "sqlite":
            return None
        top = max(int(s.scalar(select(func.max(Run.id))) or 0), self._meta_int(s, "max_run_id"))
        self._set_meta(s, "max_run_id", str(top + 1))
        return top + 1

    @staticmethod
    def _meta_int(s: Session, key: str) -> int:
        row = s.get(Meta, key)
        return int(row.value) if row is not None and str(row.value).isdigit() else 0

    @staticmethod
    def _set_meta(s: Session, key: str, value: str) -> None:
        row = s.get(Meta, key)
        if row is None:
            s.add(Meta(key=key, value=value))
        else:
            row.value = value

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        train_seconds: float | None = None,
        checkpoint_path: str = "",
        checkpoint_sha256: str = "",
        resumed_from: int | None = None,
    ) -> None:
        def tx(s: Session) -> None:
            row = s.get(Run, run_id)
            if row is None:
                raise BenchError(f"run {run_id} does not exist in {self.display_url}")
            row.status = status
            if train_seconds is not None:
                row.train_seconds = float(train_seconds)
            if checkpoint_path:
                row.checkpoint_path, row.checkpoint_sha256 = checkpoint_path, checkpoint_sha256
            if resumed_from is not None:
                row.resumed_from = int(resumed_from)

        self._write(tx)

    def fail_run(self, config_hash: str, reason: str) -> None:
        """Mark the run of ``config_hash`` "failed" (when it exists and is not trained) with ``reason``
        (artifact ``failure``), so that no row stays "running" after an error; shown by ``bench ls runs``."""
        reason = reason.strip().splitlines()[0][:500] if reason.strip() else "failed"

        def tx(s: Session) -> None:
            row = s.scalar(select(Run).where(Run.config_hash == config_hash))
            if row is None or row.status == "trained":
                return
            row.status = "failed"
            art = s.scalar(select(Artifact).where(Artifact.run_id == row.id, Artifact.kind == "failure"))
            if art is None:
                art = Artifact(run_id=row.id, kind="failure", key="", json="")
                s.add(art)
            art.json = json.dumps({"reason": reason, "at": _now().isoformat(timespec="seconds")})

        self._write(tx)

    def failure(self, run_id: int) -> str:
        """The reason stored by :meth:`fail_run` ("" when none)."""
        art = self.artifacts(run_id, "failure").get("", {})
        return str(art.get("reason", "")) if isinstance(art, dict) else ""

    def claim(self, key: str, owner: str, stale_after: float = 6 * 3600) -> bool:
        """Take ``key`` for ``owner`` unless another owner holds a fresh claim (younger than
        ``stale_after`` seconds; an older one is taken over: its process probably died). True when taken."""

        def tx(s: Session) -> bool:
            row = s.get(Claim, key)
            now = _now()
            if row is not None and row.owner != owner and (now - row.claimed_at).total_seconds() < stale_after:
                return False
            if row is None:
                s.add(Claim(key=key, owner=owner, claimed_at=now))
            else:
                row.owner, row.claimed_at = owner, now
            s.flush()
            return True

        return self._write(tx)

    def release(self, key: str, owner: str) -> None:
        """Drop ``owner``'s claim on ``key`` (work done or failed)."""
        self._write(lambda s: s.execute(delete(Claim).where(Claim.key == key, Claim.owner == owner)))

    def run_by_hash(self, config_hash: str) -> Run | None:
        with Session(self.engine) as s:
            return s.scalar(select(Run).where(Run.config_hash == config_hash))

    # --- evaluations --------------------------------------------------------------------------------
    def has_evaluation(self, run_id: int, attack_hash: str) -> bool:
        with Session(self.engine) as s:
            q = select(Evaluation.id).where(
                Evaluation.run_id == run_id, Evaluation.attack_hash == attack_hash
            )
            return s.scalar(q) is not None

    def record_evaluation(self, run_id: int, rec: EvalRecord, flags: Iterable[FlagRecord] = ()) -> int:
        """Write one evaluation, its per-sample outcomes and flags atomically (replacing an old copy).

        A process killed anywhere in here leaves the previous state: the old row or none, never a partial one.
        """
        n, flags = rec.n, list(flags)

        def tx(s: Session) -> int:
            old = select(Evaluation.id).where(
                Evaluation.run_id == run_id, Evaluation.attack_hash == rec.attack_hash
            )
            old_ids = list(s.scalars(old))
            if old_ids:  # explicit child delete: ON DELETE CASCADE needs foreign_keys=ON on SQLite
                s.execute(delete(SampleOutcome).where(SampleOutcome.evaluation_id.in_(old_ids)))
                s.execute(delete(Evaluation).where(Evaluation.id.in_(old_ids)))
            ev = Evaluation(
                run_id=run_id,
                attack=rec.attack,
                attack_hash=rec.attack_hash,
                attack_config_json=json.dumps(rec.attack_config, sort_keys=True),
                eps=float(rec.eps),
                n=n,
                n_clean_correct=int(rec.clean_correct.sum()),
                n_robust_correct=int(rec.adv_correct.sum()),
                clean_acc=float(rec.clean_correct.mean()) if n else 0.0,
                robust_acc=float(rec.adv_correct.mean()) if n else 0.0,
                eot=int(rec.eot),
                seconds=float(rec.seconds),
            )
            s.add(ev)
            s.flush()
            s.add(
                SampleOutcome(
                    evaluation_id=ev.id,
                    n=n,
                    clean_bits=pack(rec.clean_correct),
                    adv_bits=pack(rec.adv_correct),
                )
            )
            for f in flags:
                self._put_flag(s, run_id, f if f.attack_hash else dataclasses.replace(f, attack_hash=rec.attack_hash))
            s.flush()
            return int(ev.id)

        return self._write(tx)

    def record_flags(self, run_id: int, flags: Iterable[FlagRecord]) -> None:
        flags = list(flags)

        def tx(s: Session) -> None:
            for f in flags:
                self._put_flag(s, run_id, f)

        self._write(tx)

    @staticmethod
    def _put_flag(s: Session, run_id: int, f: FlagRecord) -> None:
        row = s.scalar(select(Flag).where(Flag.run_id == run_id, Flag.scope == f.scope, Flag.kind == f.kind,
                                          Flag.attack_hash == f.attack_hash))
        if row is None:
            row = Flag(run_id=run_id, scope=f.scope, kind=f.kind, attack_hash=f.attack_hash)
            s.add(row)
        row.ok, row.value, row.message = bool(f.ok), f.value, f.message

    def put_artifact(self, run_id: int, kind: str, key: str, payload: Any) -> None:
        """Store (replace) a JSON artifact for a run."""
        text = json.dumps(payload, sort_keys=True)

        def tx(s: Session) -> None:
            row = s.scalar(
                select(Artifact).where(Artifact.run_id == run_id, Artifact.kind == kind, Artifact.key == key)
            )
            if row is None:
                row = Artifact(run_id=run_id, kind=kind, key=key, json="")
                s.add(row)
            row.json = text

        self._write(tx)

    def point(self, run_id: int, kind: str, key: str, payload: Any) -> None:
        """Make ``run_id`` the one run whose artifact ``(kind, key)`` exists: a pointer such as a suite cell's
        current run (issue 23: a cell that a rerun finds cached becomes current again; before, the newest run
        of the cell stayed current after a revert)."""
        text = json.dumps(payload, sort_keys=True)

        def tx(s: Session) -> None:
            s.execute(delete(Artifact).where(Artifact.kind == kind, Artifact.key == key, Artifact.run_id != run_id))
            row = s.scalar(select(Artifact).where(Artifact.run_id == run_id, Artifact.kind == kind, Artifact.key == key))
            if row is None:
                s.add(Artifact(run_id=run_id, kind=kind, key=key, json=text))
            else:
                row.json = text

        self._write(tx)

    def artifacts(self, run_id: int, kind: str) -> dict[str, Any]:
        """The run's artifacts of one kind by key; one whose JSON does not parse is skipped and named in
        :attr:`unreadable`."""
        with Session(self.engine) as s:
            rows = s.scalars(select(Artifact).where(Artifact.run_id == run_id, Artifact.kind == kind))
            return {r.key: p for r in rows if (p := self._payload(r)) is not None}

    def _payload(self, row: Artifact) -> Any:
        try:
            return json.loads(row.json)
        except (TypeError, ValueError, RecursionError):
            note = f"artifact {row.id}: its JSON does not parse"
            if note not in self.unreadable:
                self.unreadable.append(note)
            return None

    def evaluations(self, run_id: int) -> list[Evaluation]:
        """The run's evaluations that pass :func:`check_row`; a bad one is skipped and listed in
        :attr:`unreadable`."""
        return self._checked(Evaluation, Evaluation.run_id == run_id, order_by=(Evaluation.id,))

    def _checked(self, model: type, *where: Any, order_by: tuple) -> list:
        """Rows of ``model`` read column by column as stored (dates as text), each validated by
        :func:`check_row` (types, ranges, ISO dates, JSON): a tampered or corrupt row never reaches a page as a
        wrong number or a traceback; it is skipped and named in :attr:`unreadable`."""
        t = model.__table__
        cols = [type_coerce(c, Text).label(c.name) if isinstance(c.type, DateTime) else c for c in t.c]
        with self.engine.connect() as conn:
            raw = conn.execute(select(*cols).where(*where).order_by(*order_by)).mappings().all()
        out = []
        for r in raw:
            try:
                out.append(model(**check_row(t.name, dict(r))))
            except (TypeError, ValueError, OverflowError) as e:
                note = f"{t.name} {r.get('id', '?')}: {str(e)[:160]}"
                if note not in self.unreadable:
                    self.unreadable.append(note)
        return out

    def sample_outcomes(self, evaluation_id: int) -> tuple[np.ndarray, np.ndarray]:
        with Session(self.engine) as s:
            row = s.get(SampleOutcome, evaluation_id)
            return unpack(row.clean_bits, row.n), unpack(row.adv_bits, row.n)

    def flags(self, run_id: int) -> list[Flag]:
        """The run's flags that pass :func:`check_row` (a bad one is named in :attr:`unreadable`)."""
        return self._checked(Flag, Flag.run_id == run_id, order_by=(Flag.scope, Flag.kind))

    def delete_runs(self, run_ids: Iterable[int]) -> dict[str, int]:
        """Delete runs with their evaluations, per-sample outcomes, flags and artifacts in one transaction
        (``bench rm``); returns the rows deleted per table. Checkpoint files are not touched."""
        return self._delete(run_ids, keep_runs=False)

    def clear_results(self, run_id: int) -> dict[str, int]:
        """Delete what a run's model produced (evaluations, outcomes, flags, artifacts), keeping the run row:
        its model is being retrained by changed code, so those results are no longer current."""
        return self._delete([run_id], keep_runs=True)

    def _delete(self, run_ids: Iterable[int], keep_runs: bool) -> dict[str, int]:
        ids = sorted({int(i) for i in run_ids})

        def tx(s: Session) -> dict[str, int]:
            evals = select(Evaluation.id).where(Evaluation.run_id.in_(ids))
            counts = {
                "sample_outcome": s.execute(delete(SampleOutcome).where(SampleOutcome.evaluation_id.in_(evals))).rowcount,
                "evaluation": s.execute(delete(Evaluation).where(Evaluation.run_id.in_(ids))).rowcount,
                "flag": s.execute(delete(Flag).where(Flag.run_id.in_(ids))).rowcount,
                "artifact": s.execute(delete(Artifact).where(Artifact.run_id.in_(ids))).rowcount,
            }
            if not keep_runs:
                counts["run"] = s.execute(delete(Run).where(Run.id.in_(ids))).rowcount
            return {k: int(v or 0) for k, v in counts.items()}

        return self._write(tx) if ids else {}

    def runs(self) -> list[Run]:
        """Every run that passes :func:`check_row` (a bad one is named in :attr:`unreadable`)."""
        return self._checked(Run, order_by=(Run.id,))

    def counts(self) -> dict[str, int]:
        """Row counts per table (tests and `bench` diagnostics)."""
        with Session(self.engine) as s:
            return {
                t.__tablename__: int(s.scalar(select(func.count()).select_from(t)))
                for t in (Run, Evaluation, SampleOutcome, Flag, Artifact)
            }

    def artifacts_of_kind(self, kind: str) -> list[tuple[int, str, Any]]:
        """Every run's artifacts of one kind, as ``(run_id, key, payload)`` (the read side's cell index)."""
        with Session(self.engine) as s:
            rows = s.scalars(select(Artifact).where(Artifact.kind == kind).order_by(Artifact.id))
            return [(r.run_id, r.key, p) for r in rows if (p := self._payload(r)) is not None]
