"""The standard protocol (bench/protocol.py, attacks/standard.py, strategies.run_cascade) and the
gradient-masking checks, on planted models: a model whose gradient is masked must be caught (the
protocol's gradient-free stage breaks it and ``gradfree_gap`` fails); an honest model passes."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from snnbench import checks
from snnbench.plan import make_attack
from snnbench.prepare import Prepared, run_info
from snnbench.protocol import (
    BUDGETS,
    PROTOCOL_VERSION,
    counts_toward_worst,
    describe,
    is_protocol,
    stage_names,
)
from snnbench.store import Store
from snnbench.strategies import run_cascade, run_strategy

N = 60  # samples: seconds per protocol on 2 cores


class _NegGrad(torch.autograd.Function):
    """Identity forward, negated backward: every gradient attack climbs the wrong way."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return -g


class MaskedEncoder(nn.Module):
    """The model's own encoder behind a gradient-negating input layer (a planted gradient mask: the
    forward pass, so the decision surface, is the honest model's)."""

    def __init__(self, enc: nn.Module) -> None:
        super().__init__()
        self.enc = enc
        self.uses_normalization = enc.uses_normalization

    def forward(self, x, T):
        return self.enc(_NegGrad.apply(x), T)


def masked_copy(model):
    m = copy.deepcopy(model)
    m.encoder = MaskedEncoder(m.encoder)
    return m


def _protocol(registry, plan, prep, store: Store, model, n: int = N):
    """Run standard_smoke on ``model`` through the runner (the trained substitute is the model's own
    vanilla seed+1 twin; here the honest model itself stands in for it)."""
    p = dataclasses.replace(plan, n_eval=n)
    entry, attack = make_attack(registry, "standard_smoke", plan.dataset, {})
    for training in attack.substitute_trainings:  # v2: the vanilla and the AT substitute
        attack.set_substitute(prep.model, f"honest-substitute-{training}", training)
    run_id = store.upsert_run(run_info(p))
    pr = Prepared(model, prep.data, run_id, False, 0.0, prep.checkpoint)
    assert run_cascade(p, pr, entry, attack, store)
    evs = {e.attack: e for e in store.evaluations(run_id)}
    art = store.artifacts(run_id, "protocol")["standard_smoke"]
    flags = {(f.scope, f.kind): f for f in store.flags(run_id)}
    return p, pr, evs, art, flags


def test_definition_is_versioned_and_printed():
    names = stage_names()
    assert names[0] == "apgd-ce" and names[1] == "apgd-t" and names[-2:] == ["square", "transfer"]
    assert {"apgd-ce@triangle-0.5", "apgd-ce@triangle-1", "apgd-ce@triangle-2", "apgd-ce@sigmoid-4",
            "apgd-ce@atan-2", "apgd-ce@rectangle-1", "apgd-ce@assg", "apgd-ce@rga"} <= set(names)
    assert PROTOCOL_VERSION in describe("full") and "Square 5000" in describe("full")
    assert BUDGETS["full"]["steps"] == 100 and BUDGETS["full"]["queries"] == 5000
    v2 = stage_names(version="v2")  # v1's stages, its guessed assg stage replaced, plus the issue 20 stages
    assert [s for s in v2 if s not in names] == ["apgd-ce@quantile", "sapgd@assg", "sapgd@hart",
                                                 "apgd-ce@interior", "rays"]
    assert [s for s in names if s not in v2] == ["apgd-ce@triangle-2", "apgd-ce@assg"] and "apgd-ce@quantile" in v2
    d = describe("full", "v2")
    assert v2[-1] == "transfer" and "snn-standard-v2" in d and "inside the ball" in d and "RayS" in d
    assert "Square 5x1000" in d and "vanilla + AT substitutes" in d



def test_registry_descriptions_of_the_protocol_state_its_budget(registry):
    """A user reads the budget in `bench list`: each v2 protocol config's description names its Square
    split and RayS queries, and no stage the protocol does not run (PDSG was measured and dropped)."""
    from snnbench.protocol import budget_of

    v2 = {n: c for n, c in registry.attacks.items() if c.kind == "standard" and c.params.get("version") == "v2"}
    assert {"standard", "standard_smoke"} <= set(v2)
    for name, cfg in v2.items():
        b = budget_of(cfg.params.get("budget", "full"), "v2")
        r = b["square_restarts"]
        assert f"Square {r}x{b['queries'] // r}" in cfg.description, name
        assert f"RayS {b['rays_queries']}" in cfg.description, name
        assert "PDSG" not in cfg.description, name

def test_worst_case_membership_follows_capabilities():
    assert counts_toward_worst({"kind": "pgd", "norm": "linf", "bounded": True, "eps": 0.1}, 0.1)
    assert not counts_toward_worst({"kind": "cw_l2", "norm": "l2", "bounded": False, "eps": 0.1}, 0.1)
    assert not counts_toward_worst({"kind": "gaussian", "norm": None, "bounded": False, "eps": 0.1}, 0.1)
    assert not counts_toward_worst({"kind": "pgd", "norm": "linf", "bounded": True, "eps": 0.2}, 0.1)
    assert counts_toward_worst({"kind": "uniform", "norm": "linf", "bounded": True, "eps": 0.1}, 0.1)
    # rows stored before the attributes existed: the old unbounded kinds stay out
    assert not counts_toward_worst({"kind": "cw_l2", "eps": 0.1}, 0.1)
    assert is_protocol({"kind": "standard"}) and not is_protocol({"kind": "standard", "stage": "square"})


def test_capabilities_are_stored_with_every_evaluation(registry):
    ds = registry.datasets["digits"]
    for name, bounded, free in (("pgd", True, False), ("cw_l2", False, False), ("square", True, True),
                                ("gaussian", False, True)):
        _, a = make_attack(registry, name, ds, {})
        cfg = a.config()
        assert cfg["bounded"] is bounded and cfg["gradient_free"] is free, name


@pytest.mark.slow
def test_masked_model_is_caught_and_honest_model_passes(registry, trained_vanilla, tmp_path):
    plan, prep, _ = trained_vanilla
    store = Store(f"sqlite:///{tmp_path / 'p.sqlite'}")
    honest_plan = dataclasses.replace(plan, config_hash="honest" + plan.config_hash[6:])
    masked_plan = dataclasses.replace(plan, config_hash="masked" + plan.config_hash[6:])

    # APGD alone is fooled by the mask: it reports (near) clean accuracy
    _, apgd = make_attack(registry, "apgd", plan.dataset, {"steps": 20})
    p = dataclasses.replace(masked_plan, n_eval=N, attacks=[(registry.attacks["apgd"], apgd)])
    run_id = store.upsert_run(run_info(p))
    masked = masked_copy(prep.model)
    pr = Prepared(masked, prep.data, run_id, False, 0.0, prep.checkpoint)
    run_strategy(p, pr, registry.attacks["apgd"], apgd, store)
    apgd_masked = next(e for e in store.evaluations(run_id) if e.attack == "apgd").robust_acc

    _, _, evs_h, art_h, flags_h = _protocol(registry, honest_plan, prep, store, prep.model)
    _, _, evs_m, art_m, flags_m = _protocol(registry, masked_plan, prep, store, masked)

    honest, masked_acc = evs_h["standard_smoke"].robust_acc, evs_m["standard_smoke"].robust_acc
    assert apgd_masked > 0.8, apgd_masked  # the planted mask works
    assert masked_acc < apgd_masked - 0.25, (masked_acc, apgd_masked)  # the protocol brings it down
    assert not flags_m[("standard_smoke", "gradfree_gap")].ok  # ... and says the gradients were masked
    assert flags_h[("standard_smoke", "gradfree_gap")].ok
    assert honest <= masked_acc + 0.15  # same forward pass: similar robustness once Square/transfer ran

    # stages are stored cumulatively, non-increasing, and name the stage that broke each sample
    robust = [s["robust"] for s in art_h["stages"]]
    assert all(b <= a + 1e-12 for a, b in zip(robust, robust[1:], strict=False))
    assert abs(robust[-1] - honest) < 1e-12
    bb = np.array(art_h["broken_by"])
    assert (bb == -1).mean() == pytest.approx(honest)
    assert len(art_h["stages"]) == len(stage_names(version="v2"))
    cfg = json.loads(evs_h["standard_smoke"].attack_config_json)
    assert cfg["protocol"] == "snn-standard-v2" and cfg["budget"] == "smoke" and cfg["version"] == "v2"


@pytest.mark.slow
def test_protocol_resumes_from_stored_stages(registry, trained_vanilla, tmp_path):
    plan, prep, _ = trained_vanilla
    store = Store(f"sqlite:///{tmp_path / 'r.sqlite'}")
    p, pr, evs, art, _ = _protocol(registry, plan, prep, store, prep.model, n=30)
    before = store.counts()
    # drop the final row: a rerun must rebuild it from the stored stages, attacking nothing
    entry, attack = make_attack(registry, "standard_smoke", plan.dataset, {})
    for training in attack.substitute_trainings:
        attack.set_substitute(prep.model, f"honest-substitute-{training}", training)

    class Boom(nn.Module):
        def forward(self, x):  # pragma: no cover - must not be called
            raise AssertionError("a stored stage was rerun")

    pr2 = dataclasses.replace(pr, model=prep.model)
    with store.engine.begin() as c:  # the test reaches into the store on purpose
        from sqlalchemy import text

        eid = evs["standard_smoke"].id
        c.execute(text("DELETE FROM sample_outcome WHERE evaluation_id = :i"), {"i": eid})
        c.execute(text("DELETE FROM flag WHERE run_id = :r AND scope = 'standard_smoke'"), {"r": pr.run_id})
        c.execute(text("DELETE FROM evaluation WHERE id = :i"), {"i": eid})
    import snnbench.strategies as runner_mod

    calls = []
    orig = runner_mod.evaluate_attack
    runner_mod.evaluate_attack = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        assert run_cascade(p, pr2, entry, attack, store)
    finally:
        runner_mod.evaluate_attack = orig
    assert calls == []
    again = {e.attack: e for e in store.evaluations(pr.run_id)}
    assert again["standard_smoke"].robust_acc == evs["standard_smoke"].robust_acc
    assert store.counts()["evaluation"] == before["evaluation"]


def test_library_warnings_become_failed_flags():
    import warnings

    with checks.library_messages() as msgs:
        warnings.warn_explicit("Square Attack has decreased the robust accuracy ... unreliable", Warning,
                               "pyautoattack/checks.py", 80)
        print("robust accuracy: 50.00%")
    f = checks.library_flag("autoattack", msgs)
    assert not f.ok and "unreliable" in f.message
    with checks.library_messages() as msgs:
        print("initial accuracy: 97.00%")
    assert checks.library_flag("apgd", msgs).ok


def test_autoattack_logger_verdicts_become_failed_flags():
    """pyautoattack reports "unreliable" through logging.getLogger('auto-attack') (its checks.py with a
    logger), not through warnings: that path must fail the flag too, with the text stored."""
    import logging

    with checks.library_messages() as msgs:
        logging.getLogger("auto-attack").warning(
            "Square Attack has decreased the robust accuracy of 12.50%. This might indicate that the robustness "
            "evaluation using AutoAttack is unreliable.")
        logging.getLogger("auto-attack").info("clean accuracy: 97.00%")  # information, not a verdict
    f = checks.library_flag("autoattack", msgs)
    assert not f.ok and f.value == 1 and "unreliable" in f.message
    assert not logging.getLogger("auto-attack").handlers  # the handler is removed after the block


def test_masking_flag_rules():
    stages = [{"name": "apgd-ce", "kind": "apgd", "robust": 0.8, "n_broken": 10},
              {"name": "square", "kind": "square", "robust": 0.5, "n_broken": 60},
              {"name": "transfer", "kind": "transfer", "robust": 0.5, "n_broken": 0}]
    assert not checks.protocol_flags("standard", stages, 200)[0].ok
    stages[1]["robust"] = stages[2]["robust"] = 0.79
    assert checks.protocol_flags("standard", stages, 200)[0].ok
    assert not checks.large_eps_flag(0.6, 0.5, 100).ok and checks.large_eps_flag(0.0, 0.5, 100).ok
    assert not checks.more_iters_flag(0.6, 0.3, 100, "apgd").ok and checks.more_iters_flag(0.3, 0.29, 100, "x").ok


def test_square_averages_each_query_over_eot_draws(registry, digits_data):
    """Square on a randomized model answers every query with the logits averaged over ``eot`` draws, in
    one batched forward (rows = draws x queried samples)."""
    from snnbench.attacks.square import Square, SquareParams
    from snnbench.data import to_float

    rows = []

    class Noisy(nn.Module):
        randomized = True

        def forward(self, x):
            rows.append(x.shape[0])
            return torch.randn(x.shape[0], 10) + x.flatten(1)[:, :10]

    x, y = to_float(digits_data.test.x[:4]), digits_data.test.y[:4]
    atk = Square(SquareParams(queries=3, eot=5), 0.1, 0.025)
    out = atk.generate(Noisy(), x, y)
    assert out.shape == x.shape and (out - x).abs().max() <= 0.1 + 1e-6
    assert rows and all(r % 5 == 0 for r in rows)


def test_only_the_models_and_the_protocols_own_failed_checks_unrank_its_row():
    """An AutoAttack "unreliable" warning or a PGD's zero gradients speak about those evaluations; the
    protocol row is unranked by the model-level checks and its own (its scope or a stage's)."""
    from snnbench.protocol import ranking_blockers

    failed = ["library_warning (autoattack)", "zero_grad (pgd)", "gradfree_gap (standard)",
              "zero_grad (standard/apgd-ce)", "non_differentiable (model)", "eps_monotone (run)",
              "more_iters (run)", "gradfree_gap (standard_smoke)"]
    assert ranking_blockers(failed, "standard", "full") == [
        "gradfree_gap (standard)", "zero_grad (standard/apgd-ce)", "non_differentiable (model)",
        "eps_monotone (run)", "more_iters (run)"]
    # the smoke budget's own artefacts do not unrank; another protocol evaluation's flags are not this row's
    assert ranking_blockers(failed, "standard_smoke", "smoke") == [
        "non_differentiable (model)", "eps_monotone (run)", "gradfree_gap (standard_smoke)"]
    assert ranking_blockers(["library_warning (autoattack)"], "standard", "full") == []
