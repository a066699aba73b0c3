"""Reliability checks (bench/checks.py) and the runner's use of them: transfer substitute, `worst`,
flags stored and printed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _noisy import noisy_copy
from click.testing import CliRunner
from torch import nn

from snnbench import checks
from snnbench.cli import main
from snnbench.data import to_float
from snnbench.diagnostics import run_checks
from snnbench.errors import BenchError
from snnbench.plan import RunRequest, resolve
from snnbench.prepare import attach_substitutes
from snnbench.store import Store
from snnbench.strategies import run_strategy


class Constant(nn.Module):
    """Logits that ignore the input: zero input gradient everywhere."""

    randomized = False

    def forward(self, x):
        return torch.zeros(x.shape[0], 10) + 0 * x.flatten(1).sum(1, keepdim=True)


def test_zero_grad_fraction(trained_vanilla):
    _, prep, _ = trained_vanilla
    x, y = to_float(prep.data.test.x[:32]), prep.data.test.y[:32]
    assert checks.zero_grad_fraction(Constant(), x.clone(), y) == 1.0
    frac = checks.zero_grad_fraction(prep.model, x, y)
    assert frac < checks.ZERO_GRAD_MAX and checks.zero_grad_flag("pgd", frac).ok
    assert not checks.zero_grad_flag("pgd", 1.0).ok


def test_zero_grad_under_the_attackers_own_surrogate_informs_but_does_not_fail():
    """A narrow attacker surrogate that vanishes on a foreign model (snntorch, spikingjelly tutorials) is
    the stage's weakness, not masking: kept as information; the model's own gradient still fails."""
    chosen = checks.zero_grad_flag("standard/apgd-ce@triangle-0.5", 0.9, attacker_gradient=True)
    assert chosen.ok and chosen.value == 0.9 and "informative" in chosen.message
    assert not checks.zero_grad_flag("standard/apgd-ce", 0.9, attacker_gradient=False).ok


def test_randomized_flag_catches_undeclared_and_missing_randomness(trained_vanilla):
    _, prep, _ = trained_vanilla
    x = to_float(prep.data.test.x[:16])
    det, noisy = prep.model, noisy_copy(prep.model)
    assert checks.randomized_flag(checks.logit_spread(det, x), det.randomized).ok
    assert checks.randomized_flag(checks.logit_spread(noisy, x), noisy.randomized).ok
    undeclared = copy.deepcopy(noisy)
    for n in undeclared.neurons():
        n.randomized = False  # noise on, but EOT would stay off
    assert not undeclared.randomized
    assert not checks.randomized_flag(checks.logit_spread(undeclared, x), undeclared.randomized).ok


def test_monotone_and_comparison_flags():
    assert checks.monotone_flag([0, 0.05, 0.1], [0.9, 0.7, 0.5], 0.0).ok
    assert not checks.monotone_flag([0, 0.05, 0.1], [0.9, 0.5, 0.6], 0.0).ok
    S = checks.EvalSummary
    good = [S("pgd", "pgd", 0.1, 0.4), S("apgd", "apgd", 0.1, 0.2), S("transfer", "transfer", 0.1, 0.8)]
    assert all(f.ok for f in checks.comparison_flags(good, 0.0))
    assert {f.kind for f in checks.comparison_flags(good, 0.0)} == {"apgd_le_pgd", "bb_ge_wb"}
    bad = [S("pgd", "pgd", 0.1, 0.4), S("apgd", "apgd", 0.1, 0.5), S("transfer", "transfer", 0.1, 0.1)]
    assert not any(f.ok for f in checks.comparison_flags(bad, 0.0))
    other_eps = [S("pgd", "pgd", 0.05, 0.4), S("apgd", "apgd", 0.1, 0.5)]
    assert checks.comparison_flags(other_eps, 0.0) == []
    dlr = [S("pgd", "pgd", 0.1, 0.4), S("apgd_dlr", "apgd", 0.1, 0.5, loss="dlr")]
    assert checks.comparison_flags(dlr, 0.0) == []  # a different loss is not a like-for-like comparison


def _plan(registry, prep_plan, attacks, n_eval=60):
    req = RunRequest(
        defense="vanilla", attacks=attacks, train_overrides={"epochs": 8}, device="cpu", n_eval=n_eval
    )
    plan = resolve(registry, req)
    assert plan.config_hash == prep_plan.config_hash
    return plan


def test_transfer_worst_and_checks_through_the_runner(registry, trained_vanilla):
    """Substitute = vanilla seed + 1 through the cache; worst = per-sample AND of stored outcomes."""
    plan0, prep, store = trained_vanilla
    plan = _plan(registry, plan0, ("worst", "transfer", "pgd", "fgsm"))
    assert [e.name for e, _ in plan.attacks][-1] == "worst"
    assert (
        plan.substitute.train.seed == plan.train.seed + 1 and plan.substitute.defense_entry.name == "vanilla"
    )
    sub = attach_substitutes(plan, store, prep.checkpoint.parent.parent)
    assert sub.checkpoint != prep.checkpoint
    for entry, atk in plan.attacks:
        assert run_strategy(plan, prep, entry, atk, store, force=True)
    ev = {e.attack: e for e in store.evaluations(prep.run_id) if e.n == 60}
    worst = ev["worst"]
    assert worst.robust_acc <= min(ev[a].robust_acc for a in ("pgd", "fgsm", "transfer"))
    expected = np.logical_and.reduce(
        [store.sample_outcomes(ev[a].id)[1] for a in ("pgd", "fgsm", "transfer")]
    )
    assert np.array_equal(store.sample_outcomes(worst.id)[1], expected)
    flags = run_checks(plan, prep, store, sweep=True)
    kinds = {(f.scope, f.kind): f for f in flags}
    assert kinds[("run", "randomized_logits")].ok and kinds[("run", "eps_monotone")].ok
    assert kinds[("transfer", "bb_ge_wb")].ok  # black-box weaker than white-box on a vanilla model
    stored = {(f.scope, f.kind) for f in store.flags(prep.run_id)}
    assert {("pgd", "in_eps_ball"), ("pgd", "zero_grad"), ("run", "eps_monotone")} <= stored
    assert store.artifacts(prep.run_id, "eps_sweep")["pgd7"]["n"] == 60


def test_worst_without_stored_evaluations_is_a_user_error(registry, trained_vanilla):
    plan0, prep, store = trained_vanilla
    plan = _plan(registry, plan0, ("worst",), n_eval=7)
    with pytest.raises(BenchError, match="no L-inf evaluation"):
        run_strategy(plan, prep, *plan.attacks[0], store)


def test_cli_prints_checks(tmp_path):
    results = tmp_path / "results"
    args = [
        "run",
        "-q",
        "--defense",
        "vanilla",
        "--attack",
        "pgd",
        "--attack",
        "apgd",
        "--attack",
        "worst",
        "--epochs",
        "2",
        "--n-eval",
        "40",
        "--results-dir",
        str(results),
        "--device",
        "cpu",
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "checks:" in r.output and "apgd_le_pgd" in r.output and "eps_monotone" in r.output
    assert "worst" in r.output
    store = Store(f"sqlite:///{results / 'bench.sqlite'}")
    assert store.artifacts(store.runs()[0].id, "eps_sweep")
