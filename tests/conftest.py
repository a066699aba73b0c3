"""Shared fixtures: the registry, a temporary results dir, and a small vanilla SNN trained on digits once
per test session (seconds on 2 CPU cores)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def registry():
    from snnbench.kinds import python_kinds
    from snnbench.registry import load_registry

    return load_registry(kinds=python_kinds())


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    d = tmp_path / "results"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def digits_data(registry):
    from snnbench.data import load_data

    return load_data(registry.datasets["digits"])


@pytest.fixture(scope="session")
def trained_vanilla(registry, tmp_path_factory):
    """(plan, prepared) for vanilla small_conv on digits, 8 epochs, T=4: clean accuracy ~97%."""
    from snnbench.plan import RunRequest, resolve
    from snnbench.prepare import prepare
    from snnbench.store import Store

    results = tmp_path_factory.mktemp("shared_results")
    plan = resolve(registry, RunRequest(defense="vanilla", attacks=("pgd", "fgsm"), train_overrides={"epochs": 8}, device="cpu"))
    store = Store(f"sqlite:///{results / 'bench.sqlite'}")
    prep = prepare(plan, store, results)
    return plan, prep, store
