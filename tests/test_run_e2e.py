"""`bench run` end to end on digits: trains once, caches, stores rows, evaluates a given checkpoint."""

from __future__ import annotations

from click.testing import CliRunner

from snnbench.cli import main
from snnbench.store import Store


def test_run_trains_caches_and_stores(tmp_path):
    results = tmp_path / "results"
    args = ["run", "-q", "--defense", "vanilla", "--attack", "pgd", "--attack", "fgsm", "--epochs", "3",
            "--n-eval", "120", "--results-dir", str(results), "--device", "cpu"]
    r1 = CliRunner().invoke(main, args)
    assert r1.exit_code == 0, r1.output
    assert "pgd" in r1.output and "fgsm" in r1.output
    store = Store(f"sqlite:///{results / 'bench.sqlite'}")
    counts = store.counts()
    assert counts["run"] == 1 and counts["evaluation"] == 2 and counts["sample_outcome"] == 2
    ckpts = list((results / "checkpoints").glob("*.pt"))
    assert len(ckpts) == 1 and not list((results / "checkpoints").glob("*.partial.pt"))
    mtime = ckpts[0].stat().st_mtime_ns
    # second identical run: loads the checkpoint, skips stored evaluations, prints the same table
    r2 = CliRunner().invoke(main, args)
    assert r2.exit_code == 0 and "* (stored)" in r2.output and "* (stored)" not in r1.output
    unmarked = [ln.rstrip("*").split() for ln in r2.output.splitlines() if not ln.startswith("* (stored)")]
    assert unmarked == [ln.split() for ln in r1.output.splitlines()]  # same numbers, marked as reused
    assert ckpts[0].stat().st_mtime_ns == mtime and store.counts() == counts
    run = store.runs()[0]
    assert run.status == "trained" and len(run.checkpoint_sha256) == 64
    ev = {e.attack: e for e in store.evaluations(run.id)}
    assert ev["pgd"].robust_acc < ev["pgd"].clean_acc and ev["pgd"].n == 120
    # evaluating the cached file as a foreign checkpoint gives the same clean accuracy
    r3 = CliRunner().invoke(main, [*args, "--checkpoint", str(ckpts[0])])
    assert r3.exit_code == 0, r3.output
    r4 = CliRunner().invoke(main, [a for a in args if a != "-q"] + ["--checkpoint", str(ckpts[0])])
    assert "not trained here, training settings do not apply" in r4.output and "epochs=" not in r4.output
    assert store.counts()["run"] == 2
    runs = store.runs()
    ev3 = {e.attack: e for e in store.evaluations(runs[1].id)}
    assert ev3["pgd"].clean_acc == ev["pgd"].clean_acc


def test_run_prints_protocol_stages_when_not_a_terminal(tmp_path):
    """A log file or CI sees one line per protocol stage as it finishes (a terminal has progress bars)."""
    args = ["run", "--defense", "vanilla", "--attack", "standard_smoke", "--epochs", "1", "--n-eval", "30",
            "--results-dir", str(tmp_path / "r"), "--device", "cpu"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("  stage standard_smoke ")]
    from snnbench.protocol import stage_names

    assert len(lines) == len(stage_names(version="v2")), r.stderr
    assert lines[0].startswith("  stage standard_smoke 1/") and "apgd-ce" in lines[0] and "cumulative" in lines[0]
    quiet = CliRunner().invoke(main, [*args, "-q"])
    assert quiet.exit_code == 0 and "  stage " not in quiet.stderr
