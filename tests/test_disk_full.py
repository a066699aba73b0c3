"""A real full disk (issue 24 item 6): a small tmpfs, not a mock. Every write point (the results database,
a checkpoint, the site, an export) ends in one line ``error: ...`` with exit 2, no traceback, and leaves no
half-written file behind. Skipped where this machine does not let the test mount a tmpfs (not root)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ["run", "-q", "--defense", "vanilla", "--attack", "fgsm", "--device", "cpu", "--n-eval", "20",
       "--no-eps-sweep", "--epochs", "1", "--T", "2"]


@pytest.fixture
def full(tmp_path):
    """A 256 KB tmpfs, filled to its last byte."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()[:100]}")
    try:
        with open(mnt / "filler", "wb", buffering=0) as f:
            for chunk in (4096, 512, 1):
                try:
                    while True:
                        f.write(b"\0" * chunk)
                except OSError:
                    pass
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "snnbench", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    out = (r.stdout + r.stderr).strip()
    assert "Traceback" not in out, out[-2000:]
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), out[-2000:]
    return lines[0]


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*") if p.is_file() and p.name != "filler")


def test_database_on_a_full_disk(full, tmp_path):
    line = one_error_line(bench(*RUN, "--results-dir", str(full / "results"), cwd=tmp_path))
    assert "full" in line or "space" in line, line


def test_checkpoint_on_a_full_disk(full, tmp_path):
    line = one_error_line(bench(*RUN, "--results-dir", str(tmp_path / "r"), "--checkpoint-dir", str(full / "ck"),
                                cwd=tmp_path))
    assert "checkpoint" in line and ("full" in line or "space" in line or "free" in line), line
    assert not [f for f in leftovers(full) if f.endswith(".pt") or ".tmp" in f], leftovers(full)


def test_site_and_export_on_a_full_disk(full, tmp_path):
    r = bench(*RUN, "--results-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-1000:]
    db = ["--db", str(tmp_path / "r" / "bench.sqlite")]
    one_error_line(bench("report", *db, "--out", str(full / "site"), cwd=tmp_path))
    one_error_line(bench("export", *db, "--out", str(full / "all.csv"), cwd=tmp_path))
    assert leftovers(full) == [], leftovers(full)  # no half-written page or export
