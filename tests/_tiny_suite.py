"""A tiny suite run once per test session, shared by test_suites/test_regress/test_report (each module
declares a fixture that calls :func:`tiny_suite_run`; the module-level cache makes it run once)."""

from __future__ import annotations

from pathlib import Path

import yaml

from snnbench.kinds import python_kinds
from snnbench.registry import DEFAULT_PATH, load_registry

_CACHE: dict[str, tuple] = {}

TINY = {
    "description": "test suite <b>escaped</b>: vanilla on digits, 2 epochs, T=2",
    "dataset": "digits",
    "source": "test table 1",
    "train": {"epochs": 2, "T": 2},
    "n_eval": 0,  # the whole 360-sample test split: bench check tolerances below 10 points
    "columns": [
        "clean",
        "fgsm",
        "pgd",
        {"attack": "pgd", "eps": 0.05, "label": "PGD eps 0.05", "group": "<i>grp</i>"},
    ],
    "rows": [
        {"defense": "vanilla", "reported": [95.0, 60.0, 30.0, None]},
        {"label": "paper-only <script>alert(1)</script>", "reported": [90.0, 50.0, 20.0, 40.0]},
    ],
    "sweeps": {"attack": "pgd", "eps": [0, 0.1, 0.3], "eps_steps": 2, "steps": [1, 3]},
}


def tiny_suite_run(tmp_path_factory) -> tuple:
    """(registry, suite, store, results_dir, events) after `run_suite` on the tiny suite."""
    if "run" in _CACHE:
        return _CACHE["run"]
    from snnbench.store import Store
    from snnbench.suites import run_suite

    root: Path = tmp_path_factory.mktemp("tiny_suite")
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["suites"] = {"tiny": TINY}
    reg_path = root / "registry.yaml"  # also the registry of `bench` subprocesses (cli_registry)
    reg_path.write_text(yaml.safe_dump(raw))
    _CACHE["cli_registry"] = reg_path
    reg = load_registry(reg_path, kinds=python_kinds())
    results = root / "results"
    (results / "checkpoints").mkdir(parents=True)
    store = Store(f"sqlite:///{results / 'bench.sqlite'}")
    events = run_suite(reg, reg.suites["tiny"], store, results, device="cpu")
    _CACHE["run"] = (reg, reg.suites["tiny"], store, results, events)
    return _CACHE["run"]


def cli_registry() -> Path:
    """registry.yaml for `bench` subprocesses: the repository's, with the tiny suite as its only suite."""
    return _CACHE["cli_registry"]
