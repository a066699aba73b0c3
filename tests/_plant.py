"""Plant runs, evaluations, flags and artifacts directly into a Store (no training): leaderboard tests.

``standard`` evaluations follow the protocol contract the report ranks by: attack config JSON with
``"kind": "standard"``, ``"protocol"``, ``"budget"`` and capability fields; per-stage numbers as a
``protocol`` artifact keyed by the evaluation's attack name.
"""

from __future__ import annotations

import numpy as np

from snnbench.store import EvalRecord, FlagRecord, RunInfo, Store

PROTOCOL = "snn-standard-v1"


def outcomes(n: int, k: int) -> np.ndarray:
    """A bool vector of n samples with exactly k True (the first k)."""
    out = np.zeros(n, bool)
    out[:k] = True
    return out


def plant_run(
    store: Store,
    defense: str,
    *,
    dataset: str = "digits",
    training: str = "standard",
    seed: int = 42,
    epochs: int = 3,
    external: str | None = None,
    source: str = "",
) -> int:
    config = {
        "dataset": {"name": dataset},
        "defense": {"kind": defense, "params": {}},
        "train": {"epochs": epochs, "seed": seed, "training": training, "T": 4},
        "format": 1,
        "tag": f"{defense}-{training}-{seed}-{external}",
    }
    if external is not None:
        config["checkpoint_sha256"] = external
        if source:
            config["checkpoint_source"] = source
    info = RunInfo(
        f"{defense}-{training}-{seed}-{dataset}-{external}",
        config,
        dataset,
        "small_conv",
        defense,
        training,
        4,
        seed,
        device="cpu",
    )
    rid = store.upsert_run(info)
    store.finish_run(
        rid,
        status="trained",
        train_seconds=12.5 if external is None else None,
        checkpoint_path=f"/ck/{defense}.pt",
        checkpoint_sha256=external or "ab" * 32,
    )
    return rid


def plant_eval(
    store: Store,
    run_id: int,
    attack: str,
    n: int,
    clean: int,
    robust: int,
    *,
    eps: float = 0.1,
    kind: str | None = None,
    budget: str = "smoke",
    norm: str | None = "linf",
    **cfg,
) -> None:
    kind = kind or attack
    config = {"kind": kind, "eps": eps, "norm": norm, "bounded": True, **cfg}
    if kind == "standard":
        config.update({"protocol": PROTOCOL, "budget": budget})
    rec = EvalRecord(
        attack, f"{attack}-{eps}-{n}-{budget}", config, eps, outcomes(n, clean), outcomes(n, robust), 1.5
    )
    store.record_evaluation(run_id, rec)
    if kind == "standard":
        stages = [
            {"name": "apgd-ce", "robust": (robust + 3) / n, "n_broken": clean - robust - 3},
            {"name": "square", "robust": robust / n, "n_broken": 3},
        ]
        store.put_artifact(run_id, "protocol", attack, {"version": PROTOCOL, "stages": stages})


def plant_flag(store: Store, run_id: int, kind: str, ok: bool, message: str = "") -> None:
    store.record_flags(run_id, [FlagRecord("run", kind, ok, 0.2, message or kind)])
