"""Every user error of `bench run` is one line, exit code 2, no traceback, and leaves the database as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from snnbench.cli import main
from snnbench.store import Store


@pytest.fixture
def env(tmp_path: Path):
    results = tmp_path / "results"
    db = f"sqlite:///{tmp_path / 'bench.sqlite'}"
    store = Store(db)
    store.upsert_run(__import__("snnbench.store", fromlist=["RunInfo"]).RunInfo("h" * 64, {}, "digits", "m", "vanilla", "standard", 4, 0))
    return tmp_path, results, db, store


def _run(args: list[str], results: Path, db: str):
    return CliRunner().invoke(main, ["run", "-q", "--results-dir", str(results), "--db", db, "--device", "cpu", *args])


def _assert_user_error(res, *fragments: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--defense", "vanila", "--attack", "pgd"], ["unknown defense 'vanila'", "did you mean 'vanilla'"]),
        (["--defense", "vanilla", "--attack", "pgdd"], ["unknown attack 'pgdd'", "did you mean 'pgd'"]),
        (["--defense", "vanilla", "--attack", "pgd", "--dataset", "cifar11"], ["unknown dataset 'cifar11'", "cifar10"]),
        (["--defense", "vanilla", "--attack", "pgd", "--eps", "1.5"], ["--eps", "[0, 1]"]),
        (["--defense", "vanilla", "--attack", "pgd", "--eps", "-0.1"], ["--eps", "[0, 1]"]),
        (["--defense", "vanilla", "--attack", "pgd", "--eps", "nan"], ["--eps"]),
        (["--defense", "vanilla", "--attack", "pgd", "--eps", "abc"], ["--eps", "not a number"]),
        (["--defense", "vanilla", "--attack", "pgd", "--T", "0"], ["'--T': 0 must be >= 1"]),
        (["--defense", "vanilla", "--attack", "pgd", "--dataset", "cifar10", "--data-root", "/nonexistent/x"],
         ["--data-root", "does not exist"]),
        (["--defense", "vanilla", "--attack", "pgd", "--model", "vgg12"], ["unknown model 'vgg12'"]),
    ],
)
def test_bad_flags_exit_2_one_line(env, args, fragments):
    _, results, db, store = env
    before = store.counts()
    _assert_user_error(_run(args, results, db), *fragments)
    assert store.counts() == before


def test_corrupt_checkpoint(env):
    tmp, results, db, store = env
    bad = tmp / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    before = store.counts()
    _assert_user_error(_run(["--defense", "vanilla", "--attack", "pgd", "--checkpoint", str(bad)], results, db),
                       "corrupt", "bad.pt")
    assert store.counts() == before


def test_mismatched_checkpoint(env):
    tmp, results, db, store = env
    foreign = tmp / "foreign.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, foreign)
    before = store.counts()
    _assert_user_error(_run(["--defense", "vanilla", "--attack", "pgd", "--checkpoint", str(foreign)], results, db),
                       "does not match", "missing")
    assert store.counts() == before


def test_pickled_object_checkpoint_is_refused_by_weights_only(env):
    tmp, results, db, store = env
    evil = tmp / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": Path("/")}, evil)  # an arbitrary class in the pickle
    _assert_user_error(_run(["--defense", "vanilla", "--attack", "pgd", "--checkpoint", str(evil)], results, db),
                       "corrupt or not a plain state dict")


def test_missing_checkpoint_file(env):
    tmp, results, db, _ = env
    _assert_user_error(_run(["--defense", "vanilla", "--attack", "pgd", "--checkpoint", str(tmp / "nope.pt")], results, db),
                       "no such file")


def test_unwritable_results_dir(env):
    tmp, _, db, store = env
    blocker = tmp / "a_file"
    blocker.write_text("x")
    before = store.counts()
    _assert_user_error(_run(["--defense", "vanilla", "--attack", "pgd"], blocker / "results", db), "not writable")
    assert store.counts() == before


def test_bad_db_url(env):
    _, results, _, _ = env
    _assert_user_error(_run(["--defense", "vanilla", "--attack", "pgd"], results, "nosuchdialect://x"), "--db")


def test_validate_and_ls(tmp_path):
    r = CliRunner().invoke(main, ["validate"])
    assert r.exit_code == 0 and "ok" in r.output
    r = CliRunner().invoke(main, ["ls", "defenses"])
    assert r.exit_code == 0 and "vanilla" in r.output
    bad = tmp_path / "r.yaml"
    bad.write_text("datasets: [1, 2\n")
    r = CliRunner().invoke(main, ["validate", "--registry", str(bad)])
    assert r.exit_code == 2 and "malformed YAML" in r.output
