"""The model of a plan, ready to attack: trained, loaded or taken from the user, with its run registered.

:func:`prepare` is the pipeline's first step for both kinds of plan (:mod:`snnbench.plan`): a recipe is
loaded from the checkpoint cache or a given checkpoint, or trained (resuming a partial run); an external
module is used as it is. Either way the run row is written from one :func:`run_info` and the test data is
loaded once. :func:`attach_substitutes` prepares the transfer substitute the same way.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snnbench.contract import check_logits, check_weights, contract_flags, data_fingerprint
from snnbench.data import Data, load_data, to_float
from snnbench.errors import BenchError
from snnbench.plan import Plan
from snnbench.provenance import device_name, git_sha, versions
from snnbench.scoring import eval_size
from snnbench.seeding import seeded
from snnbench.specs import to_dict
from snnbench.store import EXTERNAL, RunInfo, Store
from snnbench.train import (
    apply_state_dict,
    build_model,
    checkpoint_dir,
    checkpoint_lock,
    code_fingerprint,
    failed_run_guard,
    load_checkpoint,
    load_verified,
    save_final,
    sha256_file,
    train,
)

LOG = logging.getLogger(__name__)


def ensure_writable(results_dir: Path) -> None:
    try:
        (results_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = results_dir / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise BenchError(f"results directory {results_dir} is not writable ({e.strerror}); pass --results-dir DIR") from None


@dataclass
class Prepared:
    """A plan's model on its device, its data, its run id; ``checkpoint`` is None for an external model."""

    model: nn.Module
    data: Data
    run_id: int
    trained: bool
    train_seconds: float
    checkpoint: Path | None
    fingerprint: str = ""  # sha256 of the test images when prepared (snnbench.contract.data_fingerprint)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = data_fingerprint(self.data.test.x)

    def verify_data(self, after: str) -> None:
        """Raise unless the test images are byte-equal to what they were when the model was prepared
        (a model or attack that edits its input in place would change every later attack's data)."""
        if data_fingerprint(self.data.test.x) != self.fingerprint:
            raise BenchError(f"the test data changed during {after}: the model (or attack) edits its input in "
                             "place; nothing after it was stored (clone x in forward before editing it)")

    def check_batch(self, plan: Plan, n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` evaluated test samples, on the plan's device: the batch every check uses."""
        n = min(n, eval_size(self.data.test, plan.n_eval))
        return to_float(self.data.test.x[:n]).to(plan.device), self.data.test.y[:n].to(plan.device)


def prepare(plan: Plan, store: Store, results_dir: Path, progress: Callable | None = None) -> Prepared:
    """The plan's model, ready to attack, and its registered run (recipe: train or load; external: as is)."""
    if plan.external is not None:
        return _prepare_external(plan, store)
    return _prepare_recipe(plan, store, results_dir, progress)


def _load_eval_data(plan: Plan) -> Data:
    data = plan.external.data if plan.external is not None and plan.external.data is not None else None
    data = data or load_data(plan.dataset, plan.request.data_root)
    if plan.n_eval > len(data.test):  # n_eval 0 = all; above the test set would store a duplicate "all"
        raise BenchError(f"--n-eval {plan.n_eval} exceeds the test set of {plan.dataset.name} ({len(data.test)} samples)")
    return data


def _prepare_external(plan: Plan, store: Store) -> Prepared:
    """Register a user's module: its run row (training ``external``, no checkpoint: the weights' sha256 is
    in the config) and its model card artifact (a later call without description/paper keeps them)."""
    assert plan.external is not None
    data = _load_eval_data(plan)
    card = plan.external.card
    run_id = store.upsert_run(run_info(plan))
    store.finish_run(run_id, status=EXTERNAL)
    old = store.artifacts(run_id, "model_card").get("", {})
    keep = {k: old[k] for k in ("description", "paper") if old.get(k) and not getattr(card, k)}
    store.put_artifact(run_id, "model_card", "", {**to_dict(card), **keep})
    report = getattr(plan.external.module, "contract", None)
    if report is not None:  # what the contract probe found (snnbench.contract): kept even with checks=False
        store.record_flags(run_id, contract_flags(report))
    return Prepared(plan.external.module, data, run_id, False, 0.0, None)


def _prepare_recipe(plan: Plan, store: Store, results_dir: Path, progress: Callable | None) -> Prepared:
    """Load data; load the foreign/cached checkpoint or train (resuming a partial run); register the run."""
    data = _load_eval_data(plan)
    with seeded(plan.train.seed, plan.device):
        model = build_model(plan.dataset, plan.model, plan.defense, plan.train.T)
        ck_dir = checkpoint_dir(results_dir, plan.request.checkpoint_dir)
        final = ck_dir / f"{plan.config_hash[:32]}.pt"
        trained, seconds, resumed = False, 0.0, None
        known = store.run_by_hash(plan.config_hash)
        code = code_fingerprint(plan.defense)
        if plan.request.checkpoint:
            ck = load_checkpoint(plan.request.checkpoint)
            apply_state_dict(model, ck["state_dict"], plan.request.checkpoint)
            final = Path(plan.request.checkpoint)
            _check_loaded(model, data, plan)
        else:
            with checkpoint_lock(final):  # a worker sharing the directory may be training this config
                ck = load_verified(final, plan.config_hash, known.checkpoint_sha256 if known else "") \
                    if final.exists() else None
                stale = _stale(code, ck, known)
                if stale:  # trained by code that has changed since: its checkpoint and results are redone
                    LOG.warning("%s: %s; retraining and re-evaluating", plan.config_hash[:12], stale)
                    _set_aside(final)
                    if known is not None:
                        store.clear_results(known.id)
                    ck = None
                if ck is not None:
                    apply_state_dict(model, ck["state_dict"], str(final))
                else:
                    store.upsert_run(run_info(plan))  # status "running" until the checkpoint exists
                    partial = ck_dir / f"{plan.config_hash[:32]}.partial.pt"
                    with failed_run_guard(store, plan.config_hash):  # an error marks the run "failed"
                        out = train(model, plan.defense, data, plan.train, partial, plan.device, progress)
                        save_final(model.state_dict(), plan.config_hash, final, code)
                    partial.unlink(missing_ok=True)
                    trained, seconds, resumed = True, out.seconds, out.resumed_from
    model.to(plan.device).eval()
    run_id = store.upsert_run(run_info(plan))
    if trained or plan.request.checkpoint or not store.run_by_hash(plan.config_hash).checkpoint_sha256:
        store.finish_run(run_id, status="trained", train_seconds=seconds if trained else None,
                         checkpoint_path=str(final), checkpoint_sha256=sha256_file(final), resumed_from=resumed)
    return Prepared(model, data, run_id, trained, seconds, final)


def _stale(code: str, ck: dict | None, known: Any) -> str:
    """Why the cached model of a recipe was made by other code than the running one ("" when it was not,
    or when either side has no fingerprint: checkpoints and runs from before fingerprints still load)."""
    if not code:
        return ""
    if ck is not None and ck.get("code") and ck["code"] != code:
        return f"its checkpoint was trained by code {ck['code']}, this is {code}"
    if known is not None:
        try:
            stored = json.loads(known.versions_json or "{}").get("code", "")
        except ValueError:
            stored = ""
        if stored and stored != code and (known.checkpoint_sha256 or ck is None):
            return f"its results were produced by code {stored}, this is {code}"
    return ""


def _set_aside(final: Path) -> None:
    """Keep a stale checkpoint as ``<name>.stale.pt`` (one slot) instead of deleting it."""
    if final.exists():
        final.replace(final.with_name(final.stem + ".stale.pt"))
    final.with_name(final.name + ".sha256").unlink(missing_ok=True)


def _check_loaded(model: nn.Module, data: Data, plan: Plan) -> None:
    """A given checkpoint's weights are finite and its logits finite on a few test images (the model
    contract, snnbench.contract), before its run row is written."""
    check_weights(model)
    x = to_float(data.test.x[:8]).clone()
    with torch.no_grad():
        check_logits(model.eval()(x), len(x), plan.dataset.classes)


def run_info(plan: Plan) -> RunInfo:
    """The run row of either kind of plan (an external model: its card's name and class, training
    ``external``, the declared T, seed 0)."""
    trains = plan.recipe is not None and not plan.request.checkpoint  # a model this code trains
    if plan.recipe is not None:
        r = plan.recipe
        who = {"model": r.model.name, "defense": r.defense_entry.name, "training": r.train.training,
               "T": r.train.T, "seed": r.train.seed}
    else:
        assert plan.external is not None
        card = plan.external.card
        who = {"model": card.module.rsplit(".", 1)[-1][:64], "defense": card.name, "training": EXTERNAL,
               "T": plan.external.T, "seed": 0}
    return RunInfo(
        config_hash=plan.config_hash,
        config=plan.config,
        dataset=plan.dataset.name,
        git_sha=git_sha(),
        versions={**versions(), **({"code": code_fingerprint(plan.defense)} if trains else {})},
        device=device_name(plan.device),
        host=platform.node(),
        **who,
    )


def attach_substitutes(plan: Plan, store: Store, results_dir: Path, progress: Callable | None = None) -> Prepared | None:
    """Train or load each substitute model of the plan and hand it to every attack that needs it; returns
    the vanilla (standard-training) one, if any."""
    out = None
    for training, sub_plan in plan.substitutes.items():
        sub = prepare(sub_plan, store, results_dir, progress)
        for _, attack in plan.attacks:
            if training in attack.substitute_trainings:
                attack.set_substitute(sub.model, sub_plan.config_hash, training)
        if training == "standard":
            out = sub
    return out
