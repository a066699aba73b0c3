"""torchattacks in real use (attacks/torchattacks_kind.py) and the cross-check of our loops against it:
our FGSM/PGD/BIM give torchattacks' images from the same start on a deterministic model; the kind goes
through AttackerView (gradient mode, surrogate), EOT and our bounds check; the --no-deps install holds."""

from __future__ import annotations

import copy
import importlib.metadata

import pytest
import torch
from _noisy import make_noisy

from snnbench.attacks.torchattacks_kind import MeanLogits, TorchAttacks
from snnbench.data import to_float
from snnbench.errors import BenchError
from snnbench.plan import make_attack
from snnbench.scoring import AttackBoundsError, evaluate_attack

torchattacks = pytest.importorskip("torchattacks")
CPU = torch.device("cpu")


def ours(registry, name, **overrides):
    return make_attack(registry, name, registry.datasets["digits"], overrides)[1]


def kind(name, **params):
    return TorchAttacks(TorchAttacks.Params(name=name, **params), eps=0.1, alpha=0.025)


@pytest.fixture(scope="module")
def xy(trained_vanilla):
    _, prep, _ = trained_vanilla
    return to_float(prep.data.test.x[:48]), prep.data.test.y[:48].clone()


@pytest.mark.parametrize(("name", "ta_name"), [("fgsm", "FGSM"), ("pgd", "PGD"), ("bim", "BIM")])
def test_our_loops_match_torchattacks(registry, trained_vanilla, xy, name, ta_name):
    """Same model view, same start (PGD: the same seeded uniform draw), same images."""
    _, prep, _ = trained_vanilla
    x, y = xy
    atk = ours(registry, name)
    mine = atk.generate(prep.model, x, y)
    args = (
        {"eps": atk.eps}
        if name == "fgsm"
        else {"eps": atk.eps, "alpha": atk.alpha, "steps": atk.params.steps}
    )
    with torch.random.fork_rng():
        torch.manual_seed(atk.params.seed * 1_000_003)  # what Attack.generate seeds for batch 0
        ref = getattr(torchattacks, ta_name)(atk.view(prep.model), **args)(x, y)
    assert torch.allclose(mine, ref, atol=1e-6)
    via_kind = kind(ta_name, steps=atk.params.steps).generate(prep.model, x, y)  # the same through our kind
    assert torch.allclose(via_kind, mine, atol=1e-6)
    assert not torch.equal(mine, x)


def test_bim_accuracies_agree(registry, trained_vanilla):
    _, prep, _ = trained_vanilla
    a = evaluate_attack(prep.model, ours(registry, "bim"), prep.data.test, 60, 60, CPU)
    b = evaluate_attack(prep.model, kind("BIM", steps=7), prep.data.test, 60, 60, CPU)
    assert (a.adv_correct == b.adv_correct).all() and a.adv_correct.mean() < a.clean_correct.mean() - 0.2


def test_kind_uses_the_attackers_view(registry, trained_vanilla, xy):
    """grad_mode and surrogate reach the model: torchattacks' PGD under BPTR / FGSM under atan equal ours."""
    _, prep, _ = trained_vanilla
    x, y = xy
    bptr = kind("PGD", steps=7, grad_mode="bptr").generate(prep.model, x, y)
    assert torch.allclose(bptr, ours(registry, "pgd_bptr").generate(prep.model, x, y), atol=1e-6)
    assert not torch.equal(bptr, kind("PGD", steps=7).generate(prep.model, x, y))
    atan = kind("FGSM", surrogate="atan", gamma=2.0).generate(prep.model, x, y)
    assert torch.allclose(
        atan, ours(registry, "fgsm", surrogate="atan", gamma=2.0).generate(prep.model, x, y), atol=1e-6
    )
    assert not torch.equal(atan, ours(registry, "fgsm").generate(prep.model, x, y))




def test_eot_where_the_class_supports_it(trained_vanilla, xy):
    _, prep, _ = trained_vanilla
    noisy = copy.deepcopy(prep.model)
    make_noisy(noisy)
    x, _ = xy
    eot = kind("EOTPGD", steps=2)
    assert eot.eot_via(noisy) == "eot_iter" and eot.build(noisy, x).eot_iter == 10
    mi = kind("MIFGSM", steps=2)
    assert mi.eot_via(noisy) == "mean_logits"
    built = mi.build(noisy, x)
    assert isinstance(built.model, MeanLogits) and built.model.samples == 10
    assert mi.eot_via(prep.model) == "none" and not isinstance(mi.build(prep.model, x).model, MeanLogits)
    out = evaluate_attack(noisy, mi, prep.data.test, 32, 32, CPU)
    assert out.draws == 5  # randomized: scored over several draws


def test_bounds_check_applies(trained_vanilla, monkeypatch):
    """A torchattacks class that left the eps-ball would be refused by the evaluator, not stored."""
    _, prep, _ = trained_vanilla
    atk = kind("FGSM")
    real_build = TorchAttacks.build

    def too_far(self, model, x):
        built = real_build(self, model, x)
        built.eps = 2 * self.eps
        return built

    monkeypatch.setattr(TorchAttacks, "build", too_far)
    with pytest.raises(AttackBoundsError, match="exceeds eps"):
        evaluate_attack(prep.model, atk, prep.data.test, 16, 16, CPU)


def test_norms_and_bad_input():
    assert kind("PGD").norm == "linf" and kind("PGDL2").norm == "l2" and kind("CW").norm is None
    assert kind("Square", args={"norm": "L2"}).norm == "l2" and not kind("Square").uses_gradient
    with pytest.raises(BenchError, match="did you mean 'PGD'"):
        kind("PGDD")
    with pytest.raises(BenchError, match="use the `autoattack` attack"):
        kind("AutoAttack")
    with pytest.raises(BenchError, match=r"args.eps: set `eps` as an attack option"):
        kind("PGD", args={"eps": 0.3})
    with pytest.raises(BenchError, match=r"args.decay: PGD takes no argument 'decay'"):
        kind("PGD", args={"decay": 1.0})


def test_registry_entry_runs(registry, trained_vanilla):
    _, prep, _ = trained_vanilla
    atk = ours(registry, "ta_mifgsm")
    out = evaluate_attack(prep.model, atk, prep.data.test, 60, 60, CPU)
    assert atk.config()["library"] == "torchattacks" and out.max_linf <= atk.eps + 1e-6
    assert out.adv_correct.mean() < out.clean_correct.mean()


def test_installed_without_its_stale_pins():
    """README/.ci/run: `pip install --no-deps torchattacks==3.5.1`, so `requests` is not downgraded."""
    assert importlib.metadata.version("torchattacks") == "3.5.1"
    try:
        requests = importlib.metadata.version("requests")
    except importlib.metadata.PackageNotFoundError:
        return
    major, minor = (int(p) for p in requests.split(".")[:2])
    assert (major, minor) >= (2, 26), f"requests {requests}: torchattacks' requests~=2.25.1 pin was applied"
