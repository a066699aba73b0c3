"""The CI gate catches a removed defense (issue 23): in a temporary copy of the code, SR's regulariser weight
is set to 0 in defenses/sr.py (SR then trains like vanilla); `bench check` must fail on SR's row, and pass
again after the revert, with no `bench rm` between the runs.

The copy is an overlay package: the repository's folders copied under a temporary directory and importable
as ``snnbench`` through PYTHONPATH (ahead of the editable install), so the edit touches no file of the
checkout. A small suite (SR, 3 epochs, the smoke suite's n) keeps it to about a minute on 2 cores."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SUITE = {
    "description": "planted-regression test of the CI gate (tests/test_gate_planted.py)",
    "dataset": "digits", "model": "small_conv", "train": {"epochs": 3, "T": 4}, "n_eval": 120,
    "columns": ["clean", "fgsm", "pgd", {"attack": "apgd", "steps": 25, "label": "apgd (25 steps)"}],
    "rows": [{"defense": "sr"}],
}


def overlay(dst: Path) -> Path:
    """A copy of the code importable as ``snnbench`` from ``dst / 'pkg'`` (package-dir mapping by links)."""
    for name in ("bench", "attacks", "defenses", "perf"):
        shutil.copytree(ROOT / name, dst / name, symlinks=False, ignore=shutil.ignore_patterns("__pycache__", "resources"))
    (dst / "bench" / "resources").mkdir()
    (dst / "bench" / "resources" / "perf").symlink_to(dst / "perf")
    reg = yaml.safe_load((ROOT / "registry.yaml").read_text())
    reg["suites"] = {"gate": SUITE}
    (dst / "registry.yaml").write_text(yaml.safe_dump(reg, sort_keys=False))
    (dst / "bench" / "resources" / "registry.yaml").symlink_to(dst / "registry.yaml")
    (dst / "bench" / "attacks").symlink_to(dst / "attacks")
    (dst / "bench" / "defenses").symlink_to(dst / "defenses")
    (dst / "pkg").mkdir()
    (dst / "pkg" / "snnbench").symlink_to(dst / "bench")
    return dst / "pkg"


def bench(pkg: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pkg), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return subprocess.run([sys.executable, "-m", "snnbench", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=1200)


@pytest.mark.slow
def test_gate_fails_on_sr_without_its_regulariser_and_passes_after_the_revert(tmp_path):
    pkg = overlay(tmp_path / "copy")
    assert bench(pkg, "validate", cwd=tmp_path).returncode == 0
    probe = subprocess.run([sys.executable, "-c", "import snnbench.defenses.sr as m; print(m.__file__)"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(pkg)})
    assert str(tmp_path / "copy") in probe.stdout, probe.stdout + probe.stderr  # the copy, not the checkout
    res, base = ["--results-dir", str(tmp_path / "results")], ["--baseline", str(tmp_path / "baseline.json")]

    def suite_then_check(*extra: str) -> subprocess.CompletedProcess:
        run = bench(pkg, "run", "--suite", "gate", "-q", *res, cwd=tmp_path)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        return bench(pkg, "check", "--suite", "gate", *base, *res, *extra, cwd=tmp_path)

    assert suite_then_check("--update").returncode == 0
    sr = tmp_path / "copy" / "defenses" / "sr.py"
    text = sr.read_text()
    planted = re.sub(r"(lamb: float = )[0-9.e-]+", r"\g<1>0.0", text, count=1)
    assert planted != text
    sr.write_text(planted)  # the regulariser switched off
    broken = suite_then_check()
    assert broken.returncode == 1, broken.stdout
    assert "FAIL" in broken.stdout and "mechanism fd_gradient: moved against its mechanism" in broken.stdout, broken.stdout
    assert "paired:" in broken.stdout and "sign test" in broken.stdout, broken.stdout
    sr.write_text(text)  # the revert
    fixed = suite_then_check()
    assert fixed.returncode == 0, fixed.stdout
    assert "passed" in fixed.stdout
