"""Crash safety (issue 7): ``kill -9`` during training resumes from the last saved epoch and ends with the
weights of an uninterrupted run; ``kill -9`` inside an evaluation's transaction leaves no partial row.

The uninterrupted reference is the session fixture ``trained_vanilla`` (vanilla small_conv on digits, 8
epochs, seed 42), so only the killed run and its resume are extra work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snnbench.plan import RunRequest, resolve
from snnbench.prepare import prepare
from snnbench.store import Store
from snnbench.strategies import run_strategy
from snnbench.train import load_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}  # the in-process threads (conftest)
BENCH = [sys.executable, "-c", "from snnbench.cli import main; main()"]  # the `bench` console script
ARGS = ["run", "-q", "--defense", "vanilla", "--attack", "fgsm", "--device", "cpu"]


def _wait_for(pred, timeout: float, proc: subprocess.Popen, what: str) -> None:
    t0 = time.monotonic()
    while not pred():
        assert proc.poll() is None, f"process ended (rc {proc.returncode}) before {what}"
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.slow  # a real subprocess / Ray instance / 8 processes: seconds, not milliseconds
def test_kill_mid_epoch_then_resume_equals_uninterrupted(trained_vanilla, tmp_path, registry):
    ref_plan, ref_prep, _ = trained_vanilla
    results = tmp_path / "results"
    db = f"sqlite:///{tmp_path / 'bench.sqlite'}"
    partial = results / "checkpoints" / f"{ref_plan.config_hash[:32]}.partial.pt"
    proc = subprocess.Popen(
        [*BENCH, *ARGS, "--epochs", "8", "--results-dir", str(results), "--db", db], env=ENV
    )
    try:
        _wait_for(partial.exists, 240, proc, "the first partial checkpoint")
        t1, m1 = time.monotonic(), partial.stat().st_mtime_ns
        _wait_for(lambda: partial.stat().st_mtime_ns != m1, 120, proc, "the second partial checkpoint")
        time.sleep((time.monotonic() - t1) / 2)  # half an epoch into the next one
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved_epoch = int(load_checkpoint(partial)["epoch"])
    final = results / "checkpoints" / f"{ref_plan.config_hash[:32]}.pt"
    assert 2 <= saved_epoch < 8 and not final.exists()
    store = Store(db)
    assert store.runs()[0].status == "running"

    # rerun the same request (what `bench run` calls): resumes, finishes, records where it resumed
    plan = resolve(
        registry,
        RunRequest(defense="vanilla", attacks=("fgsm",), train_overrides={"epochs": 8}, device="cpu"),
    )
    assert plan.config_hash == ref_plan.config_hash
    prep = prepare(plan, store, results)
    assert prep.trained and not partial.exists()
    run = store.runs()[0]
    assert run.status == "trained" and run.resumed_from == saved_epoch
    got, ref = prep.model.state_dict(), ref_prep.model.state_dict()
    assert got.keys() == ref.keys()
    diff = max(float((got[k].float() - ref[k].float()).abs().max()) for k in ref)
    print(f"\nkilled after epoch {saved_epoch}/8, resumed: max |w_resumed - w_uninterrupted| = {diff:.3g}")
    assert diff <= 1e-5


# A `bench run` whose store hangs while the evaluation row is flushed but not committed.
_HANG_IN_TRANSACTION = """
import sys, time
import snnbench.store as st
real_pack = st.pack
def hang(bits):
    print("in-transaction", flush=True)
    time.sleep(600)
    return real_pack(bits)
st.pack = hang
from snnbench.cli import main
sys.argv = ["bench", *sys.argv[1:]]
main()
"""


def test_kill_inside_evaluation_leaves_no_partial_row(trained_vanilla, tmp_path, registry):
    _, ref_prep, _ = trained_vanilla
    results, db = tmp_path / "results", f"sqlite:///{tmp_path / 'bench.sqlite'}"
    args = [
        *ARGS,
        "--n-eval",
        "40",
        "--checkpoint",
        str(ref_prep.checkpoint),
        "--results-dir",
        str(results),
        "--db",
        db,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", _HANG_IN_TRANSACTION, *args], env=ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "in-transaction"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    store = Store(db)
    counts = store.counts()
    assert counts["run"] == 1 and counts["evaluation"] == 0 and counts["sample_outcome"] == 0
    # the rerun writes the evaluation completely
    plan = resolve(
        registry,
        RunRequest(
            defense="vanilla", attacks=("fgsm",), checkpoint=str(ref_prep.checkpoint), n_eval=40, device="cpu"
        ),
    )
    prep = prepare(plan, store, results)
    entry, attack = plan.attacks[0]
    assert run_strategy(plan, prep, entry, attack, store)
    assert store.counts()["evaluation"] == 1 and store.counts()["sample_outcome"] == 1
    assert Path(ref_prep.checkpoint).exists()


def test_shared_checkpoint_dir_reuses_verified_checkpoint(trained_vanilla, tmp_path, registry):
    """A second results directory (another worker) with the same --checkpoint-dir loads, not retrains, and
    records the digest of the .sha256 file beside the checkpoint."""
    _, ref_prep, _ = trained_vanilla
    shared = ref_prep.checkpoint.parent
    req = RunRequest(
        defense="vanilla",
        attacks=("fgsm",),
        train_overrides={"epochs": 8},
        device="cpu",
        checkpoint_dir=str(shared),
    )
    store = Store(f"sqlite:///{tmp_path / 'other.sqlite'}")
    prep = prepare(resolve(registry, req), store, tmp_path / "other_results")
    assert not prep.trained and prep.checkpoint == ref_prep.checkpoint
    recorded = ref_prep.checkpoint.with_name(ref_prep.checkpoint.name + ".sha256").read_text().split()[0]
    assert store.runs()[0].checkpoint_sha256 == recorded
    assert not (tmp_path / "other_results" / "checkpoints").exists()
