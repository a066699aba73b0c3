"""Hostile and careless inputs (issue 16): never a wrong number, never a traceback.

Every case of ``tests/hostile_cases.py`` (at least one per failure the issue lists) runs one ``bench``
command in-process and asserts what the case expects: exit 2 with exactly one ``error:`` line, no
traceback, database content unchanged (or the run it created marked ``failed``) and no stray file; or,
for inputs a correct snnbench accepts (a corrupt partial checkpoint, eps -0, formula-like names), exit 0
with the right result. The same catalogue is the probe that measured the counts before and after
(``PYTHONPATH=. python tests/hostile_cases.py``).
"""

from __future__ import annotations

import sqlite3
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hostile_cases import (
    CASES,
    Case,
    Ctx,
    db_dump,
    files_under,
    hold_lock,
    imagefolder,
    init_db,
    prepare_case,
    verdict,
)

from snnbench.cli import main


def _invoke(argv: list[str]):
    res = CliRunner().invoke(main, argv)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        tb = "".join(traceback.format_exception(res.exception))
        pytest.fail(f"traceback from bench {' '.join(argv[:3])}...:\n{tb}")
    return res


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch):
    """A clean cwd and environment: nothing a case sets leaks into later tests."""
    monkeypatch.chdir(tmp_path)
    for k in ("BENCH_LOCK_TIMEOUT", "BENCH_REGISTRY", "BENCH_DB", "BENCH_RESULTS", "BENCH_CHECKPOINTS"):
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    return tmp_path


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in CASES]
)
def test_hostile_input(case: Case, isolated: Path, monkeypatch) -> None:
    ctx, argv = prepare_case(case, isolated)
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    if case.patch:
        case.patch(monkeypatch)
    if case.pre:
        assert _invoke(case.pre(ctx)).exit_code == 0
    before_db, before_files = db_dump(ctx), files_under(ctx.root)
    locker = hold_lock(ctx) if case.id == "db_write_locked" else None
    try:
        res = _invoke(argv)
    finally:
        if locker:
            locker.rollback()
            locker.close()
    category, detail = verdict(case, ctx, res.exit_code, res.output, before_db, before_files)
    assert category == "clean", f"{category}: {detail}\n{res.output}"


def test_failed_run_is_listed_with_its_reason(isolated: Path) -> None:
    """A diverged training leaves its run "failed" with the reason, which `bench ls runs` shows."""
    ctx = Ctx(isolated)
    init_db(ctx)
    assert _invoke(ctx.run("--lr", "1e30")).exit_code == 2
    out = _invoke(["ls", "runs", "--db", ctx.db]).output
    line = next(ln for ln in out.splitlines() if "failed" in ln)
    assert "diverged" in line, out


def test_imagefolder_test_classes_mapped_by_name(isolated: Path, registry) -> None:
    """A test split with a subset of the train classes keeps each image's train label (no relabelling)."""
    from snnbench.data import infer_custom_spec, load_imagefolder

    root = imagefolder(Ctx(isolated), {"a": 2, "b": 2, "c": 2}, {"c": 3})
    spec = infer_custom_spec(root, registry.datasets["digits"])
    data = load_imagefolder(spec, root)
    assert spec.classes == 3 and data.test.y.tolist() == [2, 2, 2]


@pytest.mark.parametrize("shape,layout,expected", [
    ((4, 8, 8, 3), "", (4, 3, 8, 8)),
    ((4, 3, 8, 8), "", (4, 3, 8, 8)),
    ((4, 8, 8, 4), "last", (4, 4, 8, 8)),
    ((4, 8, 8, 4), "first", (4, 8, 8, 4)),
])
def test_channel_layout(shape, layout, expected) -> None:
    from snnbench.data import _as_images

    assert tuple(_as_images(np.zeros(shape, np.uint8), "x", layout).shape) == expected


def test_yaml_bounds() -> None:
    from snnbench.errors import BenchError
    from snnbench.specs import safe_yaml, shown

    assert safe_yaml("a: [1, {b: 8/255}]", "t") == {"a": [1, {"b": "8/255"}]}
    assert safe_yaml("a: &x [1]\nb: *x", "t") == {"a": [1], "b": [1]}  # yaml.safe_dump writes aliases
    laughs = "a: [" + ", ".join(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9))
    for text in ("a0: &a0 [x, x]\n" + laughs.replace("a: [", "b: [") + "]", "a: " + "[" * 100 + "]" * 100):
        with pytest.raises(BenchError):
            safe_yaml(text, "t")
    assert len(shown("x" * 10**6)) <= 60 and shown(list(range(10**5))) == "a list of 100000 items"


def test_claims_make_concurrent_suites_compute_each_model_once(tmp_path: Path, registry) -> None:
    """A model claimed by another process is skipped (event "claimed"), not computed a second time; a
    released claim can be taken again."""
    from snnbench.store import Store
    from snnbench.suite_spec import load_suite
    from snnbench.suites import plan_cell, run_suite

    store = Store(f"sqlite:///{tmp_path / 'bench.sqlite'}")
    assert store.claim("k", "a") and not store.claim("k", "b") and store.claim("k", "a")
    store.release("k", "a")
    assert store.claim("k", "b")
    raw = {"dataset": "digits", "train": {"epochs": 1, "T": 2}, "n_eval": 20, "columns": ["clean"],
           "rows": [{"defense": "vanilla"}]}
    names = {"datasets": registry.datasets, "models": registry.models, "defenses": registry.defenses,
             "attacks": registry.attacks}
    from snnbench.attacks import ATTACKS

    suite = load_suite("one", raw, "suites.one", names, ATTACKS)
    plan = plan_cell(registry, suite, suite.cells[0], "cpu")
    assert store.claim(f"suite-model:{plan.config_hash}", "other-process")
    events = run_suite(registry, suite, store, tmp_path, device="cpu")
    assert [e.status for e in events] == ["claimed"] and store.counts()["evaluation"] == 0


def test_atomic_save_leaves_no_tmp_on_disk_full(tmp_path: Path, monkeypatch) -> None:
    from snnbench.errors import BenchError
    from snnbench.train import atomic_save

    def full(obj, f, *a, **k):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(BenchError, match="No space left"):
        atomic_save({"a": 1}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_csv_cells_neutralised_numbers_kept() -> None:
    from snnbench.export import write_rows

    text = write_rows([{"a": "=1+2", "b": -0.5, "c": "@x", "d": "ok"}], "csv")
    assert text.splitlines()[1] == "'=1+2,-0.5,'@x,ok"


def test_read_only_commands_open_sqlite_read_only(tmp_path: Path) -> None:
    """`bench export --db` reads a database it could not write: the file is opened with mode=ro."""
    ctx = Ctx(tmp_path)
    init_db(ctx)
    before = ctx.db_path.read_bytes()
    assert _invoke(["export", "--db", ctx.db, "--format", "json"]).exit_code == 0
    assert ctx.db_path.read_bytes() == before
    with sqlite3.connect(ctx.db_path) as c:
        assert c.execute("SELECT count(*) FROM run").fetchone()[0] == 1
