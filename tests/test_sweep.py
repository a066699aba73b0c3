"""``bench sweep`` (issue 7): missing cells grouped per model, run in-process or on a local Ray instance
(with a worker killed mid-task and retried), idempotent reruns, one-line user errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from snnbench.cli import main
from snnbench.kinds import python_kinds
from snnbench.registry import DEFAULT_PATH, load_registry
from snnbench.store import Store
from snnbench.sweep import FAULT_ENV, RayOptions, SweepConfig, plan_tasks, run_ray

SUITE = {
    "description": "two models x (clean, fgsm) on digits, 1 epoch",
    "dataset": "digits",
    "train": {"epochs": 1, "T": 2},
    "n_eval": 60,
    "columns": ["clean", "fgsm"],
    "rows": [{"defense": "vanilla"}, {"defense": "vanilla", "T": 3, "label": "vanilla T=3"}],
}


@pytest.fixture(scope="module")
def sweep_registry(tmp_path_factory) -> Path:
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["suites"] = {"sweep_tiny": SUITE}
    path = tmp_path_factory.mktemp("sweep") / "registry.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def local_sweep(sweep_registry, tmp_path_factory):
    """`bench sweep --executor local` once: (results dir, store, first output, second output)."""
    results = tmp_path_factory.mktemp("local") / "results"
    args = [
        "sweep",
        "--suite",
        "sweep_tiny",
        "--registry",
        str(sweep_registry),
        "--results-dir",
        str(results),
        "--device",
        "cpu",
    ]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    return results, Store(f"sqlite:///{results / 'bench.sqlite'}"), first.output, second.output


def _numbers(store: Store) -> dict[tuple[int, str], tuple[int, int, int]]:
    out = {}
    for run in store.runs():
        for e in store.evaluations(run.id):
            out[(run.T, e.attack)] = (e.n, e.n_clean_correct, e.n_robust_correct)
    return out


def test_local_sweep_runs_each_missing_cell_once(local_sweep, sweep_registry):
    results, store, first, second = local_sweep
    assert "4 cells to run in 2 tasks" in first and "[2/2]" in first and "2/2 tasks ok" in first
    assert "0 cells to run" in second
    assert store.counts()["run"] == 2 and store.counts()["evaluation"] == 4
    assert sorted(_numbers(store)) == [(2, "clean"), (2, "fgsm"), (3, "clean"), (3, "fgsm")]
    assert plan_tasks(load_registry(sweep_registry, kinds=python_kinds()), "sweep_tiny", store) == []
    assert len(list((results / "checkpoints").glob("*.pt"))) == 2


@pytest.mark.slow  # a real subprocess / Ray instance / 8 processes: seconds, not milliseconds
def test_ray_sweep_survives_a_killed_worker(local_sweep, sweep_registry, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(FAULT_ENV, str(marker))  # inherited by the Ray workers started below
    reg = load_registry(sweep_registry, kinds=python_kinds())
    results = tmp_path / "results"
    results.mkdir()
    store = Store(f"sqlite:///{results / 'bench.sqlite'}")
    tasks = plan_tasks(reg, "sweep_tiny", store)
    assert [len(t.cells) for t in tasks] == [2, 2]
    # 2 torch threads as in the in-process sweep (conftest), so the float results can match bitwise
    cfg = SweepConfig(
        sweep_registry.read_text(), "sweep_tiny", store.url, str(results), device="cpu", num_threads=2
    )
    seen = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = run_ray(cfg, tasks, RayOptions(num_cpus=1, max_retries=2), seen.append)
    finally:
        ray.shutdown()
    assert marker.exists(), "the fault hook did not kill a worker"
    assert [r.ok for r in out] == [True, True] and len(seen) == 2, [r.error for r in out]
    assert sorted(s for r in out for _, s, _ in r.events) == ["ran"] * 4
    # same cells, same seeds: the Ray workers stored exactly what the in-process sweep stored
    assert _numbers(store) == _numbers(local_sweep[1])
    assert store.counts() == local_sweep[1].counts()


def test_sweep_user_errors_are_one_line(sweep_registry, tmp_path):
    base = ["sweep", "--registry", str(sweep_registry), "--results-dir", str(tmp_path / "r")]
    for extra, fragment in (
        (["--suite", "sweep_tiy"], "did you mean 'sweep_tiny'"),
        (["--suite", "sweep_tiny", "--num-cpus", "-1"], "'--num-cpus': -1 must be >= 0.01"),
        (["--suite", "sweep_tiny", "--db", "nosuchdialect://x"], "--db"),
    ):
        res = CliRunner().invoke(main, [*base, *extra])
        lines = res.output.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and fragment in lines[0], res.output
