"""Bad input never corrupts state (issue 7): every case below is one ``bench run`` that must exit with code 2
and one ``error:`` line (no traceback) and leave the results database exactly as it was.

Inputs tried: malformed YAML, unknown keys, wrong types, NaN/inf eps (registry and flag), huge T (registry
and flag), a truncated / foreign / tampered cached checkpoint, npz datasets with a wrong shape, labels out
of range, too many classes, mismatched train/test shapes or NaN pixels, and databases at an unknown, newer
or unreadable schema version.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from snnbench.cli import main
from snnbench.registry import DEFAULT_PATH
from snnbench.store import RunInfo, Store

RUN = ["run", "-q", "--defense", "vanilla", "--attack", "fgsm", "--device", "cpu", "--n-eval", "20"]


@pytest.fixture
def env(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'bench.sqlite'}"
    store = Store(db)
    store.upsert_run(RunInfo("e" * 64, {}, "digits", "small_conv", "vanilla", "standard", 4, 0))
    return tmp_path, db, store


def _invoke(args: list[str], tmp: Path, db: str):
    return CliRunner().invoke(main, [*RUN, "--results-dir", str(tmp / "results"), "--db", db, *args])


def _one_line_error(res, fragment: str) -> None:
    lines = [ln for ln in res.output.strip().splitlines() if ln]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    assert fragment in lines[0], (fragment, lines[0])


def _registry(tmp: Path, mutate) -> list[str]:
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    mutate(raw)
    path = tmp / "registry.yaml"
    path.write_text(yaml.safe_dump(raw))
    return ["--registry", str(path)]


def _set(path: str, value):
    def mutate(raw: dict) -> None:
        *parents, leaf = path.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    return mutate


def _npz(tmp: Path, **over) -> list[str]:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.random((30, 8, 8), dtype=np.float32),
        "y_train": np.arange(30) % 3,
        "x_test": rng.random((10, 8, 8), dtype=np.float32),
        "y_test": np.arange(10) % 3,
    }
    arrays.update(over)
    path = tmp / "user.npz"
    np.savez(path, **arrays)
    return ["--dataset", str(path)]


def _malformed(tmp: Path) -> list[str]:
    (tmp / "r.yaml").write_text("datasets: {digits: [1, 2\n")
    return ["--registry", str(tmp / "r.yaml")]


NAN_IMAGES = np.full((30, 8, 8), np.nan, dtype=np.float32)
CASES = {
    "malformed_yaml": (_malformed, "malformed YAML"),
    "unknown_key": (lambda t: _registry(t, _set("defenses.vanilla.colour", "red")), "unknown key 'colour'"),
    "unknown_top_level_key": (lambda t: _registry(t, _set("defences", {})), "did you mean 'defenses'"),
    "wrong_type": (lambda t: _registry(t, _set("datasets.digits.classes", "ten")), "expected an integer"),
    "wrong_type_list": (lambda t: _registry(t, _set("datasets.digits.shape", "8x8")), "expected a list"),
    "nan_eps_registry": (
        lambda t: _registry(t, _set("attacks.fgsm.params", {"eps": float("nan")})),
        "not a finite",
    ),
    "inf_eps_registry": (lambda t: _registry(t, _set("datasets.digits.eps", float("inf"))), "not a finite"),
    "huge_T_registry": (lambda t: _registry(t, _set("datasets.digits.train.T", 10**6)), "T must be <= 1024"),
    "nan_eps_flag": (lambda t: ["--eps", "nan"], "--eps"),
    "inf_eps_flag": (lambda t: ["--eps", "inf"], "not a finite"),
    "overflow_eps_flag": (lambda t: ["--eps", "1e400"], "not a finite"),
    "zero_division_eps": (lambda t: ["--eps", "1/0"], "not a number"),
    "huge_T_flag": (lambda t: ["--T", "100000"], "<= 1024"),
    "npz_wrong_shape": (lambda t: _npz(t, x_train=np.zeros((30, 64), np.float32)), "images must be"),
    "npz_negative_label": (lambda t: _npz(t, y_train=np.arange(30) % 3 - 1), "out of range"),
    "npz_label_too_large": (lambda t: _npz(t, y_test=np.full(10, 10**7)), "at most 100000 classes"),
    "npz_float_labels": (lambda t: _npz(t, y_train=np.zeros(30, np.float32)), "labels must be integers"),
    "npz_label_count": (lambda t: _npz(t, y_train=np.zeros(29, int)), "1-D array of 30"),
    "npz_train_test_shapes": (
        lambda t: _npz(t, x_test=np.zeros((10, 9, 9), np.float32)),
        "differ from train",
    ),
    "npz_nan_pixels": (lambda t: _npz(t, x_train=NAN_IMAGES), "finite and in [0, 1]"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_changes_nothing(env, case):
    tmp, db, store = env
    make, fragment = CASES[case]
    before = store.counts()
    _one_line_error(_invoke(make(tmp), tmp, db), fragment)
    assert store.counts() == before
    assert not list((tmp / "results").glob("checkpoints/*.pt"))


def _checkpoint_case(tmp: Path, ref: Path, kind: str) -> list[str]:
    bad = tmp / f"{kind}.pt"
    if kind == "truncated":
        data = ref.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:  # a real state dict of another architecture
        from snnbench.snn.models import ARCHITECTURES
        from snnbench.snn.neuron import LIFNeuron, NeuronSpec

        net = ARCHITECTURES["vgg11"]((1, 8, 8), 10, lambda s: LIFNeuron(NeuronSpec(), s), width=0.0625, fc=8)
        torch.save({"state_dict": net.state_dict()}, bad)
    return ["--checkpoint", str(bad)]


@pytest.mark.parametrize("kind,fragment", [("truncated", "corrupt"), ("foreign", "does not match")])
def test_bad_checkpoint_files(env, trained_vanilla, kind, fragment):
    tmp, db, store = env
    before = store.counts()
    _one_line_error(_invoke(_checkpoint_case(tmp, trained_vanilla[1].checkpoint, kind), tmp, db), fragment)
    assert store.counts() == before


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_tampered_cached_checkpoint_is_refused(env, trained_vanilla, damage):
    """A cached checkpoint whose bytes no longer match its .sha256 record is never loaded."""
    tmp, db, store = env
    plan, prep, _ = trained_vanilla
    ck_dir = tmp / "results" / "checkpoints"
    ck_dir.mkdir(parents=True)
    cached = ck_dir / prep.checkpoint.name
    shutil.copy(prep.checkpoint, cached)
    shutil.copy(prep.checkpoint.with_name(prep.checkpoint.name + ".sha256"), ck_dir)
    data = bytearray(cached.read_bytes())
    if damage == "truncate":
        del data[len(data) // 3 :]
    else:
        data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    before = store.counts()
    _one_line_error(_invoke(["--epochs", "8"], tmp, db), "differs from")
    assert store.counts() == before and cached.read_bytes() == bytes(data)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "version,fragment",
    [("0", "no migration"), ("7", "newer than this snnbench"), (None, "cannot open database")],
)
def test_database_at_unusable_schema_is_left_alone(tmp_path, version, fragment):
    path = tmp_path / "old.sqlite"
    if version is None:
        path.write_bytes(b"SQLite format 2\x00" + bytes(range(256)) * 8)  # not a database
    else:
        store = Store(f"sqlite:///{path}")
        store.upsert_run(RunInfo("a" * 64, {}, "digits", "small_conv", "vanilla", "standard", 4, 0))
        with store.engine.begin() as c:
            c.exec_driver_sql(f"UPDATE meta SET value='{version}' WHERE key='schema_version'")
        store.engine.dispose()  # the last connection closing checkpoints the WAL into the file
    digest = _sha(path)
    _one_line_error(_invoke([], tmp_path, f"sqlite:///{path}"), fragment)
    assert _sha(path) == digest
