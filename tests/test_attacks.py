"""Attack suite: every attack keeps the eps-ball and [0, 1], leaves labels and the global RNG alone, is
reproducible; strength orderings on a trained tiny model; EOT, BPTT/BPTR, torchattacks equivalence."""

from __future__ import annotations

import pytest
import torch
from _noisy import noisy_copy

from snnbench.attacks import ATTACKS
from snnbench.attacks.base import GradientParams
from snnbench.data import to_float
from snnbench.errors import BenchError
from snnbench.plan import make_attack
from snnbench.scoring import check_bounds, evaluate_attack

MODEL_ATTACKS = (
    "fgsm",
    "rfgsm",
    "pgd",
    "pgd_bptr",
    "bim",
    "cw",
    "cw_l2",
    "apgd",
    "apgd_dlr",
    "multi_pgd",
    "gaussian",
    "uniform",
)






def batch(prep, n=48):
    return to_float(prep.data.test.x[:n]), prep.data.test.y[:n].clone()


def attack(registry, name, **overrides):
    return make_attack(registry, name, registry.datasets["digits"], overrides)[1]


def test_registry_attacks_all_implemented(registry):
    for name, entry in registry.attacks.items():
        assert entry.kind in ATTACKS, f"{name}: kind {entry.kind} not implemented"
    for kind in (
        "fgsm",
        "rfgsm",
        "pgd",
        "bim",
        "cw",
        "apgd",
        "autoattack",
        "multi_pgd",
        "transfer",
        "gaussian",
        "uniform",
        "worst",
    ):
        assert kind in ATTACKS


@pytest.mark.parametrize("name", MODEL_ATTACKS)
def test_attack_contract(name, registry, trained_vanilla):
    """eps-ball and range, labels untouched, same seed -> same images, global RNG stream unchanged."""
    _, prep, _ = trained_vanilla
    x, y = batch(prep, 24)
    y0 = y.clone()
    atk = attack(registry, name)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    x1 = atk.generate(prep.model, x, y)
    assert torch.equal(torch.get_rng_state(), state), "the attack changed the global RNG stream"
    eps = atk.eps if atk.norm == "linf" else None
    check_bounds(x, x1, eps, name)
    assert torch.equal(y, y0)
    if name != "cw_l2":  # FEEL's C&W returns x where its 10 small Adam steps do not flip the label
        assert not torch.equal(x1, x), "the attack did nothing"
    assert torch.equal(atk.generate(prep.model, x, y), x1)


def test_noise_attacks_never_call_backward(registry, trained_vanilla, monkeypatch):
    _, prep, _ = trained_vanilla
    x, y = batch(prep, 16)

    def boom(*a, **k):
        raise AssertionError("backward called")

    monkeypatch.setattr(torch.autograd, "grad", boom)
    monkeypatch.setattr(torch.Tensor, "backward", boom)
    for name in ("gaussian", "uniform"):
        atk = attack(registry, name)
        assert not atk.uses_gradient and atk.eps == pytest.approx(0.1)
        check_bounds(x, atk.generate(prep.model, x, y), atk.eps if atk.norm else None, name)


def test_gaussian_is_unbounded_and_uniform_bounded(registry, trained_vanilla):
    _, prep, _ = trained_vanilla
    x, y = batch(prep, 64)
    g = attack(registry, "gaussian").generate(prep.model, x, y)
    assert (g - x).abs().max() > 0.1  # std 0.1: some pixels move further than 0.1
    u = attack(registry, "uniform").generate(prep.model, x, y)
    assert (u - x).abs().max() <= 0.1 + 1e-6


def robust(registry, prep, name, n=120, **overrides):
    atk = attack(registry, name, **overrides)
    out = evaluate_attack(prep.model, atk, prep.data.test, n, 256, torch.device("cpu"))
    return float(out.adv_correct.mean()), float(out.clean_correct.mean())


def test_strength_ordering(registry, trained_vanilla):
    """APGD-100 <= PGD-7 <= FGSM < clean on a trained model (same 120 samples)."""
    _, prep, _ = trained_vanilla
    fgsm, clean = robust(registry, prep, "fgsm")
    pgd, _ = robust(registry, prep, "pgd")
    apgd, _ = robust(registry, prep, "apgd")
    assert apgd <= pgd <= fgsm < clean


def test_matches_torchattacks_without_eot(registry, trained_vanilla):
    """With EOT off on a deterministic model our FGSM/PGD loops give torchattacks' images."""
    torchattacks = pytest.importorskip("torchattacks")
    _, prep, _ = trained_vanilla
    x, y = batch(prep, 32)
    pgd = attack(registry, "pgd")
    ours = pgd.generate(prep.model, x, y)
    with torch.random.fork_rng():
        torch.manual_seed(pgd.params.seed * 1_000_003)
        ref = torchattacks.PGD(
            pgd.view(prep.model), eps=pgd.eps, alpha=pgd.alpha, steps=7, random_start=True
        )(x, y)
    assert torch.allclose(ours, ref, atol=1e-6)
    fgsm = attack(registry, "fgsm")
    ref = torchattacks.FGSM(fgsm.view(prep.model), eps=fgsm.eps)(x, y)
    assert torch.allclose(fgsm.generate(prep.model, x, y), ref, atol=1e-6)


def test_bptt_and_bptr_both_attack(registry, trained_vanilla):
    _, prep, _ = trained_vanilla
    x, y = batch(prep, 64)
    bptt, bptr = attack(registry, "pgd"), attack(registry, "pgd", grad_mode="bptr")
    xa, xr = bptt.generate(prep.model, x, y), bptr.generate(prep.model, x, y)
    assert not torch.equal(xa, xr)  # different gradients
    clean = (prep.model(x).argmax(1) == y).float().mean()
    for xadv in (xa, xr):
        assert (prep.model(xadv).argmax(1) == y).float().mean() < clean - 0.1


def test_eot_lowers_robust_accuracy_of_noisy_model(registry, trained_vanilla):
    """Test-time membrane noise: PGD with EOT (automatic, 10 draws) beats PGD on single-draw gradients."""
    _, prep, _ = trained_vanilla
    model = noisy_copy(prep.model)
    assert model.randomized
    auto = attack(registry, "pgd")
    assert auto.eot_samples(model) == 10 and auto.eot_samples(prep.model) == 1
    test = prep.data.test
    with_eot = evaluate_attack(model, auto, test, 120, 256, torch.device("cpu"))
    without = evaluate_attack(model, attack(registry, "pgd", eot=1), test, 120, 256, torch.device("cpu"))
    assert with_eot.draws == 5
    assert with_eot.adv_expected < without.adv_expected
    # the stored per-sample outcome is "correct in every draw": never above the expected accuracy
    assert with_eot.adv_correct.mean() <= with_eot.adv_expected


def test_bad_params_are_user_errors(registry):
    ds = registry.datasets["digits"]
    for cls, params in (
        ("apgd", {"loss": "hinge"}),
        ("autoattack", {"version": "plus2"}),
        ("transfer", {"source": "gaussian"}),
        ("multi_pgd", {"restarts": 0}),
        ("pgd", {"eot": 0}),
    ):
        kind = ATTACKS.get(cls)
        with pytest.raises(BenchError):
            kind(kind.Params(**params), ds.eps, ds.alpha)


def test_rfgsm_is_single_step_tramer(registry):
    atk = attack(registry, "rfgsm")
    assert atk.alpha == pytest.approx(atk.eps / 2)
    assert isinstance(atk.params, GradientParams)


def test_costs_come_from_the_classes_and_the_protocol_is_the_sum_of_its_stages(registry):
    """Attack.cost (bench/cost.py projects from it): steps x restarts x EOT, queries count half a step, the
    protocol's cost is the sum of its stages'."""
    from snnbench.attacks.base import Cost

    ds = registry.datasets["digits"]
    pgd = attack(registry, "pgd")
    assert pgd.cost(False) == Cost(gradients=7) and pgd.cost(True) == Cost(gradients=70)  # EOT 10
    assert attack(registry, "fgsm").cost(False).gradients == 1
    assert attack(registry, "square").cost(False) == Cost(forwards=5000) and attack(registry, "square").cost(False).steps == 2500
    proto = attack(registry, "standard")
    assert proto.cost(False) == sum((st.cost(False) for _, st in proto.stages()), Cost())
    aa = attack(registry, "autoattack")
    assert aa.cost(False) == Cost(gradients=101 + 9 * 101 + 9 * 100, forwards=5000)
    assert aa.cost(True) == Cost(gradients=2 * 101 * 20)  # rand: APGD-CE + APGD-DLR, EOT 20
    from snnbench.cost import attack_steps, defense_workload

    assert attack_steps(registry, "pgd", {"steps": 3}, ds, False) == 3
    assert defense_workload(registry, "mpd_sgr") == (("mpd", "fused"), False)
    assert defense_workload(registry, "tgo_eot")[1] and not defense_workload(registry, "tgo")[1]


def test_an_attack_that_moves_nothing_is_an_error_not_a_result(registry, trained_vanilla):
    """Issue 24: a no-op attack (here FGSM on a model whose input gradient is zero everywhere) would store
    clean accuracy as robust; the evaluator refuses it in one line."""
    import torch.nn as nn

    _, prep, _ = trained_vanilla

    class ZeroGrad(nn.Module):
        randomized = False

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x.detach()) + 0 * x.sum()  # the input gradient exists and is zero

    from snnbench.adapters import ForeignModel

    fgsm = attack(registry, "fgsm")
    with pytest.raises(BenchError, match="not one pixel of the 20 inputs moved"):
        evaluate_attack(ForeignModel(ZeroGrad(prep.model), randomized=False), fgsm, prep.data.test, 20, 20,
                        torch.device("cpu"))
    assert evaluate_attack(prep.model, fgsm, prep.data.test, 20, 20, torch.device("cpu")).max_linf > 0
