"""Results store (SQLAlchemy 2): the only module that speaks SQL.

Tables: ``run`` (one trained model: config hash, canonical config, versions, device, seed, checkpoint
sha256, timings), ``evaluation`` (one attack on one run: clean and robust accuracy with counts), 
``sample_outcome`` (per-sample clean/adversarial correctness, bit-packed), ``flag`` (reliability checks),
``meta`` (schema version). Unique keys make every write idempotent: re-running a cell replaces its row in
one transaction, so an interrupted run leaves either the old row or the new one, never a partial one.
SQLite by default (WAL, busy timeout); any SQLAlchemy URL works (PostgreSQL for a shared server).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

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
    event,
    inspect,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.errors import BenchError

SCHEMA_VERSION = 1


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


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
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluation.id", ondelete="CASCADE"), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    clean_bits: Mapped[bytes] = mapped_column(LargeBinary)
    adv_bits: Mapped[bytes] = mapped_column(LargeBinary)


class Flag(Base):
    __tablename__ = "flag"
    __table_args__ = (UniqueConstraint("run_id", "scope", "kind", name="uq_flag"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(64))  # "run" or an attack name
    kind: Mapped[str] = mapped_column(String(64))
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


@dataclass(frozen=True)
class EvalRecord:
    """One evaluation as produced by bench/evaluate.py."""

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


def pack(bits: np.ndarray) -> bytes:
    return np.packbits(np.asarray(bits, dtype=bool)).tobytes()


def unpack(data: bytes, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n).astype(bool)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Store:
    """Results database behind any SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        try:
            self.engine: Engine = create_engine(url, future=True)
        except (ArgumentError, SQLAlchemyError, ImportError) as e:
            raise BenchError(f"--db {url!r}: not a usable SQLAlchemy URL ({e}); e.g. sqlite:///results/bench.sqlite") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.url = url
        self._init_schema()

    def _init_schema(self) -> None:
        try:
            names = set(inspect(self.engine).get_table_names())
            if "meta" in names:
                with Session(self.engine) as s:
                    row = s.get(Meta, "schema_version")
                    found = int(row.value) if row else 0
                if found > SCHEMA_VERSION:
                    raise BenchError(
                        f"database {self.url} has schema version {found}, newer than this snnbench ({SCHEMA_VERSION}); "
                        "upgrade snnbench or use another --db"
                    )
                if found < SCHEMA_VERSION:
                    raise BenchError(
                        f"database {self.url} has schema version {found}; no migration to {SCHEMA_VERSION} exists, "
                        "export it with an older snnbench or use a new --db"
                    )
            elif names & {"run", "evaluation"}:
                raise BenchError(f"database {self.url} has snnbench-like tables but no schema version; use a new --db")
            Base.metadata.create_all(self.engine)
            with Session(self.engine) as s, s.begin():
                if s.get(Meta, "schema_version") is None:
                    s.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
        except OperationalError as e:
            raise BenchError(f"cannot open database {self.url}: {e.orig}") from None

    # --- runs ---------------------------------------------------------------------------------------
    def upsert_run(self, info: RunInfo) -> int:
        """Create the run row for a config hash (or return the existing id)."""
        with Session(self.engine) as s, s.begin():
            row = s.scalar(select(Run).where(Run.config_hash == info.config_hash))
            if row is None:
                row = Run(
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
            row.git_sha, row.versions_json, row.device = info.git_sha, json.dumps(info.versions, sort_keys=True), info.device
            s.flush()
            return int(row.id)

    def finish_run(self, run_id: int, *, status: str, train_seconds: float | None = None, checkpoint_path: str = "",
                   checkpoint_sha256: str = "") -> None:
        with Session(self.engine) as s, s.begin():
            row = s.get(Run, run_id)
            row.status = status
            if train_seconds is not None:
                row.train_seconds = float(train_seconds)
            if checkpoint_path:
                row.checkpoint_path, row.checkpoint_sha256 = checkpoint_path, checkpoint_sha256

    def run_by_hash(self, config_hash: str) -> Run | None:
        with Session(self.engine) as s:
            return s.scalar(select(Run).where(Run.config_hash == config_hash))

    # --- evaluations --------------------------------------------------------------------------------
    def has_evaluation(self, run_id: int, attack_hash: str) -> bool:
        with Session(self.engine) as s:
            q = select(Evaluation.id).where(Evaluation.run_id == run_id, Evaluation.attack_hash == attack_hash)
            return s.scalar(q) is not None

    def record_evaluation(self, run_id: int, rec: EvalRecord, flags: list[FlagRecord] = ()) -> int:
        """Write one evaluation, its per-sample outcomes and flags atomically (replacing an old copy)."""
        n = rec.n
        with Session(self.engine) as s, s.begin():
            old = s.scalar(select(Evaluation).where(Evaluation.run_id == run_id, Evaluation.attack_hash == rec.attack_hash))
            if old is not None:
                s.query(SampleOutcome).filter_by(evaluation_id=old.id).delete()
                s.delete(old)
                s.flush()
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
            s.add(SampleOutcome(evaluation_id=ev.id, n=n, clean_bits=pack(rec.clean_correct), adv_bits=pack(rec.adv_correct)))
            for f in flags:
                self._put_flag(s, run_id, f)
            return int(ev.id)

    def record_flags(self, run_id: int, flags: list[FlagRecord]) -> None:
        with Session(self.engine) as s, s.begin():
            for f in flags:
                self._put_flag(s, run_id, f)

    @staticmethod
    def _put_flag(s: Session, run_id: int, f: FlagRecord) -> None:
        row = s.scalar(select(Flag).where(Flag.run_id == run_id, Flag.scope == f.scope, Flag.kind == f.kind))
        if row is None:
            row = Flag(run_id=run_id, scope=f.scope, kind=f.kind)
            s.add(row)
        row.ok, row.value, row.message = bool(f.ok), f.value, f.message

    def put_artifact(self, run_id: int, kind: str, key: str, payload: Any) -> None:
        """Store (replace) a JSON artifact for a run."""
        with Session(self.engine) as s, s.begin():
            row = s.scalar(select(Artifact).where(Artifact.run_id == run_id, Artifact.kind == kind, Artifact.key == key))
            if row is None:
                row = Artifact(run_id=run_id, kind=kind, key=key, json="")
                s.add(row)
            row.json = json.dumps(payload, sort_keys=True)

    def artifacts(self, run_id: int, kind: str) -> dict[str, Any]:
        with Session(self.engine) as s:
            rows = s.scalars(select(Artifact).where(Artifact.run_id == run_id, Artifact.kind == kind))
            return {r.key: json.loads(r.json) for r in rows}

    def evaluations(self, run_id: int) -> list[Evaluation]:
        with Session(self.engine) as s:
            return list(s.scalars(select(Evaluation).where(Evaluation.run_id == run_id).order_by(Evaluation.id)))

    def sample_outcomes(self, evaluation_id: int) -> tuple[np.ndarray, np.ndarray]:
        with Session(self.engine) as s:
            row = s.get(SampleOutcome, evaluation_id)
            return unpack(row.clean_bits, row.n), unpack(row.adv_bits, row.n)

    def flags(self, run_id: int) -> list[Flag]:
        with Session(self.engine) as s:
            return list(s.scalars(select(Flag).where(Flag.run_id == run_id).order_by(Flag.scope, Flag.kind)))

    def runs(self) -> list[Run]:
        with Session(self.engine) as s:
            return list(s.scalars(select(Run).order_by(Run.id)))

    def counts(self) -> dict[str, int]:
        """Row counts per table (tests and `bench` diagnostics)."""
        from sqlalchemy import func

        with Session(self.engine) as s:
            return {
                t.__tablename__: int(s.scalar(select(func.count()).select_from(t)))
                for t in (Run, Evaluation, SampleOutcome, Flag, Artifact)
            }
