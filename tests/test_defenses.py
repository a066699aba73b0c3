"""Defense recipes: registry consistency, and one test per mechanism that fails when the mechanism is removed."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnbench.data import Data, Split, to_float
from snnbench.defenses import DEFENSES
from snnbench.defenses.base import StepState, TrainContext
from snnbench.defenses.dlif import DLIFNeuron, perturbation_dynamics
from snnbench.defenses.feel import EvolutionaryLeakNeuron, FrequencyEncoder, default_radii
from snnbench.defenses.mpd_sgr import gradient_interval, layer_overlap, overlap
from snnbench.defenses.rat import orthogonal_retraction, project_simplex, single_step_examples
from snnbench.defenses.sr import finite_difference_penalty, true_vs_best_other
from snnbench.defenses.stog import StochasticGate
from snnbench.defenses.tgo import cosine_ramp, threshold_guard_penalty
from snnbench.plan import make_defense
from snnbench.snn.neuron import LIFNeuron, NeuronSpec
from snnbench.snn.surrogate import SURROGATES
from snnbench.specs import TrainSpec
from snnbench.train import build_model, train


def _model(registry, name: str, T: int = 4, seed: int = 0, **params):
    entry, defense = make_defense(registry, name)
    if params:
        defense = type(defense)(dataclasses.replace(defense.params, **params))
    ds = registry.datasets["digits"]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(ds, registry.models["small_conv"], defense, T)
    return model, defense


def _batch(digits_data, n: int = 64, offset: int = 0):
    x = to_float(digits_data.train.x[offset : offset + n])
    return x, digits_data.train.y[offset : offset + n]


# --- registry -------------------------------------------------------------------------------------------


def test_every_kind_has_a_config_paper_and_description(registry):
    kinds = {e.kind for e in registry.defenses.values()}
    for kind in DEFENSES:
        cls = DEFENSES.get(kind)
        assert kind in kinds, f"defense kind {kind} has no registry.yaml entry"
        assert cls.paper and cls.description and cls.__doc__


@pytest.mark.parametrize("kind", sorted(DEFENSES))
def test_each_kind_trains_one_adversarial_step(kind, registry, digits_data, tmp_path):
    name = next(n for n, e in registry.defenses.items() if e.kind == kind)
    model, defense = _model(registry, name)
    small = Data(
        digits_data.spec, Split(digits_data.train.x[:64], digits_data.train.y[:64]), digits_data.test
    )
    spec = TrainSpec(epochs=1, batch_size=64, T=4, training="at")
    before = [p.detach().clone() for p in model.parameters()]
    out = train(model, defense, small, spec, tmp_path / "p.pt", torch.device("cpu"))
    assert math.isfinite(out.final_loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


# --- RAT ------------------------------------------------------------------------------------------------


def _top_sv_gap(model: nn.Module) -> float:
    gaps = [
        abs(float(torch.linalg.matrix_norm(m.weight.detach().reshape(m.weight.shape[0], -1), ord=2)) - 1)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    return sum(gaps) / len(gaps)


def test_rat_retraction_moves_top_singular_values_toward_one(registry):
    model, defense = _model(registry, "rat")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(2.0)  # sigma_max well above 1
    gap0 = _top_sv_gap(model)
    ctx = TrainContext(
        model, registry.datasets["digits"], TrainSpec(), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        for _ in range(200):
            defense.after_step(model, ctx)  # beta = 0.001, the paper's VGG value
    assert _top_sv_gap(model) < 0.8 * gap0


def test_rat_large_linear_retracts_a_random_30_percent_of_rows():
    lin = nn.Linear(16, 400)
    w0 = lin.weight.detach().clone()
    with torch.no_grad():
        orthogonal_retraction(lin, 0.01, generator=torch.Generator().manual_seed(0))
    changed = (lin.weight != w0).any(1).sum().item()
    assert changed == 120


def test_rat_convex_projection_lands_on_simplex():
    p = project_simplex(torch.tensor([0.9, 0.4]))
    assert p.sum().item() == pytest.approx(1.0) and (p >= 0).all()
    assert torch.allclose(p, torch.tensor([0.75, 0.25]))


def test_rat_single_step_examples_are_fgsm_and_rfgsm(registry, digits_data):
    model, _ = _model(registry, "rat")
    model.eval()
    x, y = _batch(digits_data, 16)
    eps = 0.05
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    fgsm = single_step_examples(model, x, y, eps, "bptt")
    assert torch.allclose(fgsm, (x + eps * g.sign()).clamp(0, 1))
    rfgsm = single_step_examples(model, x, y, eps, "bptr", True, torch.Generator().manual_seed(1))
    assert (rfgsm - x).abs().max() <= eps + 1e-6 and not torch.allclose(rfgsm, fgsm)


# --- StoG -----------------------------------------------------------------------------------------------


def _seeded_logits(model, x, seed):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        with torch.no_grad():
            return model(x)


@pytest.mark.parametrize("name", ["stog", "tgo_eot"])
def test_randomized_defenses_sample_at_inference_reproducibly(name, registry, digits_data):
    model, _ = _model(registry, name, **({"p_min": 0.5} if name == "stog" else {}))
    if name == "stog":
        for g in model.modules():
            if isinstance(g, StochasticGate):
                g.theta.data.fill_(0.5)  # p = 0.5: many gates closed
    model.eval()
    x, _ = _batch(digits_data, 32)
    assert model.randomized
    a, b, c = (_seeded_logits(model, x, s) for s in (1, 1, 2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_tgo_without_inference_noise_is_deterministic(registry, digits_data):
    model, _ = _model(registry, "tgo")
    model.eval()
    x, _ = _batch(digits_data, 32)
    assert not model.randomized
    assert torch.equal(_seeded_logits(model, x, 1), _seeded_logits(model, x, 2))


def test_stog_gate_keeps_spikes_with_probability_p_and_trains_then_freezes(registry, digits_data):
    gate = StochasticGate((1000,), p_min=0.1)
    gate.theta.data.fill_(0.3)
    kept = gate(torch.ones(200, 1000)).mean().item()
    assert kept == pytest.approx(0.3, abs=0.02)

    model, defense = _model(registry, "stog")
    gates = [g for g in model.modules() if isinstance(g, StochasticGate)]
    for g in gates:
        g.theta.data.fill_(0.7)
    x, y = _batch(digits_data, 32)
    F.cross_entropy(model(x), y).backward()
    assert all(g.theta.grad is not None and g.theta.grad.abs().sum() > 0 for g in gates)
    groups = defense.param_groups(model, TrainSpec())
    assert groups[1]["weight_decay"] == 0 and len(groups[1]["params"]) == len(gates)
    ctx = TrainContext(model, registry.datasets["digits"], TrainSpec(epochs=10), epoch=5)
    defense.on_epoch_start(ctx, None)  # K = half the epochs: frozen from epoch 5
    assert not any(g.theta.requires_grad for g in gates)


# --- FEEL -----------------------------------------------------------------------------------------------


def test_feel_leak_parameters_receive_gradients(registry, digits_data):
    model, _ = _model(registry, "feel")
    neurons = [n for n in model.modules() if isinstance(n, EvolutionaryLeakNeuron)]
    assert neurons and all(n.taus.shape[0] == 4 for n in neurons)
    x, y = _batch(digits_data, 32)
    F.cross_entropy(model(x), y).backward()
    for n in neurons:
        assert n.taus.grad is not None
        assert n.taus.grad[1:].abs().sum() > 0  # t = 0 has no carried potential


def test_feel_frequency_encoding_low_passes_more_at_later_steps(digits_data):
    assert default_radii(4, 32, 32) == (16, 14, 12, 10)  # FEEL's CIFAR radii
    radii = default_radii(4, 8, 8)
    assert radii == (4, 3, 2, 1)
    enc = FrequencyEncoder(radii, 8, 8)
    x, _ = _batch(digits_data, 8)
    out = enc(x, 4).view(4, *x.shape)  # [T, B, C, H, W]
    assert torch.allclose(out[0], x, atol=1e-5)  # r_1 = H/2 keeps the whole spectrum
    high = [(out[t] - out[t].mean((-2, -1), keepdim=True)).pow(2).mean().item() for t in range(4)]
    assert high == sorted(high, reverse=True) and high[-1] < 0.7 * high[0]


# --- SR -------------------------------------------------------------------------------------------------


def test_sr_penalty_equals_its_finite_difference(registry, digits_data):
    model, _ = _model(registry, "sr")
    model.eval()  # BN running stats: both forwards see the same normalisation
    x, y = _batch(digits_data, 16)
    h = 0.01
    xr = x.clone().requires_grad_(True)
    r = finite_difference_penalty(model, xr, y, model(xr), h)
    # by hand: f = softmax over {true, best other at x}; v = sign(grad f); ((f(x + h v) - f(x)) / h)^2
    with torch.no_grad():
        z = model(x)
        other = z.scatter(1, y[:, None], float("-inf")).argmax(1)
    xg = x.clone().requires_grad_(True)

    def f_of(inp):  # softmax over {true class, best other at x}
        z2 = model(inp)
        return torch.softmax(
            torch.stack([z2.gather(1, y[:, None])[:, 0], z2.gather(1, other[:, None])[:, 0]], 1), 1
        )[:, 0]

    f1 = f_of(xg)
    (g,) = torch.autograd.grad(f1.sum(), xg)
    with torch.no_grad():
        expected = ((f_of(x + h * g.sign()) - f1.detach()) / h).pow(2).mean()
    assert r.item() == pytest.approx(expected.item(), rel=1e-4)
    assert r.item() > 0
    f_check, _ = true_vs_best_other(z, y)
    assert torch.allclose(f_check, f1.detach(), atol=1e-6)


def test_sr_regularizer_reaches_the_weights(registry, digits_data):
    model, defense = _model(registry, "sr")
    x, y = _batch(digits_data, 32)
    ctx = TrainContext(model, registry.datasets["digits"], TrainSpec(), generator=torch.Generator())
    xin = defense.perturb(ctx, x, y)
    assert xin.requires_grad
    reg = defense.regularizer(StepState(ctx, xin, y, model(xin), []))
    reg.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# --- MPD-SGR --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mu,sigma,gamma", [(0.0, 1.0, 1.0), (0.7, 0.3, 1.0), (-1.5, 0.8, 0.5)])
def test_mpd_overlap_matches_numerical_gaussian_integral(mu, sigma, gamma):
    u = torch.linspace(-gamma, gamma, 20001, dtype=torch.float64)
    pdf = torch.exp(-0.5 * ((u - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    integral = torch.trapezoid(pdf, u).item()
    got = overlap(
        torch.tensor(mu, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64), gamma
    ).item()
    assert got == pytest.approx(integral, abs=1e-6)


COMPACT = ("triangle", "rectangle")


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("gamma", [1.0, 0.5, 4.0])
def test_mpd_overlap_follows_the_surrogate_actually_used(surrogate, gamma):
    """Omega is the Gaussian mass over the gradient-available interval of the surrogate the model trains
    with (MPD-SGR Eq. 13 for the triangle's [-gamma, gamma]; the rectangle's support is |z| < gamma/2).
    Reference: integrate N(mu, sigma^2) numerically over {z: h(z) > 0} (compact support) or
    {z: h(z) >= h(0)/2} (unbounded), found from the surrogate function itself."""
    h = SURROGATES[surrogate]
    z = torch.linspace(-12, 12, 480001, dtype=torch.float64)
    hz, h0 = h(z, gamma), h(torch.zeros(1, dtype=torch.float64), gamma)
    inside = (hz > 0) if surrogate in COMPACT else (hz >= h0 / 2)
    assert not bool(inside.all()), "the interval must be bounded"
    for mu, sigma in ((0.0, 1.0), (0.3, 0.2), (-0.8, 0.5)):
        pdf = torch.exp(-0.5 * ((z - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        integral = torch.trapezoid(pdf * inside, z).item()
        a = gradient_interval(surrogate, gamma)
        got = overlap(torch.tensor(mu, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64), a).item()
        assert got == pytest.approx(integral, abs=2e-4), (surrogate, gamma, mu, sigma)


def test_mpd_layer_overlap_reads_the_neurons_surrogate():
    """A "Rec" model (MPD-SGR Table 4) regularises |z| < gamma/2, not the triangle's [-gamma, gamma]."""
    v = 1.0 + 0.6 * torch.randn(4, 256, 3, generator=torch.Generator().manual_seed(0))
    tri, rec = LIFNeuron(NeuronSpec(), (3,)), LIFNeuron(NeuronSpec(surrogate="rectangle"), (3,))
    tri.v_pre = rec.v_pre = v
    assert layer_overlap(rec).item() < 0.7 * layer_overlap(tri).item()
    assert layer_overlap(rec).item() == pytest.approx(layer_overlap(tri, gamma=0.5).item(), rel=1e-6)


def test_mpd_overlap_gradient_lowers_it():
    neuron = LIFNeuron(NeuronSpec(), (3,))
    v = (1.0 + torch.randn(4, 64, 3, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    opt = torch.optim.SGD([v], lr=50.0)
    values = []
    for _ in range(20):
        neuron.v_pre = v  # [T, B, F] ~ N(V_th, 1): Omega ~ 0.68 at the start
        omega = layer_overlap(neuron)
        values.append(omega.item())
        opt.zero_grad()
        omega.backward()
        opt.step()
    assert values[-1] < 0.8 * values[0]


# --- TGO ------------------------------------------------------------------------------------------------


def test_tgo_lambda_schedule_is_a_cosine_ramp():
    lams = [cosine_ramp(e, 10, 0.6) for e in range(11)]
    assert lams[0] == 0 and lams[-1] == pytest.approx(0.6) and lams == sorted(lams)
    assert lams[5] == pytest.approx(0.3)


def test_tgo_penalty_is_eq12_a_sum_over_neurons_over_T_and_layers():
    """TGO Eq. 12: C(V_l) = 1/(T N) sum_{i=1}^{n} max(0, delta - |V_i - V_th|), "N and T represent the number
    of time steps and the total number of layers": a sum over the layer's neurons, not a mean."""
    v = torch.tensor([[[1.0, 1.2, 0.0, 1.6]], [[0.7, 1.0, 2.0, 0.9]]])  # [T=2, B=1, n=4]
    # hinge (delta 0.5): t0: 0.5, 0.3, 0, 0; t1: 0.2, 0.5, 0, 0.4 -> sum 1.9
    assert threshold_guard_penalty(v, 1.0, 0.5, n_layers=3).item() == pytest.approx(1.9 / (2 * 3))
    wide = torch.cat([v, v], dim=2)  # twice the neurons: twice the penalty (a mean would not change)
    assert threshold_guard_penalty(wide, 1.0, 0.5, 3).item() == pytest.approx(2 * 1.9 / 6)
    batch = torch.cat([v, v], dim=1)  # samples are averaged
    assert threshold_guard_penalty(batch, 1.0, 0.5, 3).item() == pytest.approx(1.9 / 6)


def test_tgo_regularizer_sums_layers_with_lambda(registry, digits_data):
    """Eq. 13: L = Loss + lambda sum_l C(V_l), with N = the number of spiking layers in every C."""
    model, defense = _model(registry, "tgo")
    x, y = _batch(digits_data, 8)
    ctx = TrainContext(model, registry.datasets["digits"], TrainSpec(epochs=2), epoch=1)
    with model.recording() as neurons:
        logits = model(x)
        reg = defense.regularizer(StepState(ctx, x, y, logits, neurons))
        by_hand = sum(threshold_guard_penalty(n.v_pre, 1.0, 0.5, len(neurons)) for n in neurons)
    assert len(neurons) == 2
    assert reg.item() == pytest.approx(defense.lam(1, 2) * by_hand.item(), rel=1e-6)


def test_tgo_configs_follow_the_paper(registry):
    """"No additional computational overhead during inference": tgo has no noise at test time; tgo_eot
    keeps it (the "TGO+AT (EoT)" row); lambda_max 0.6 for VGG-11, 0.4 for WRN-16 (paper notes)."""
    _, tgo = make_defense(registry, "tgo")
    _, eot = make_defense(registry, "tgo_eot")
    _, wrn = make_defense(registry, "tgo_wrn")
    assert not tgo.randomized and tgo.params.lam_max == 0.6
    assert eot.randomized and eot.params.noise_at_inference
    assert wrn.params.lam_max == 0.4 and not wrn.randomized
    wrn_rows = [c for s in ("tgo_main", "tgo_strong") for c in registry.suites[s].cells if c.model == "wrn16_4"
                and c.defense and c.defense.startswith("tgo")]
    assert wrn_rows and all(c.defense in ("tgo_wrn", "tgo_wrn_eot") for c in wrn_rows)


def _near_threshold_fraction(model, x, delta=0.5) -> float:
    model.eval()
    with torch.no_grad(), model.recording() as neurons:
        model(x)
        return float(
            torch.cat([(n.v_pre - n.spec.v_th).abs().flatten() < delta for n in neurons]).float().mean()
        )


def test_tgo_lowers_near_threshold_potentials_versus_vanilla(registry, digits_data):
    """Same init, same batches, same steps: the hinge leaves fewer potentials within delta of V_th.

    Noise off (sigma = 0) isolates the hinge: with lambda = 0 this model *is* vanilla. The paper's lam_max
    0.6 (lambda 0.3 here, mid-ramp): Eq. 12 sums over neurons, so this is strong enough within 25 steps.
    """
    ds = registry.datasets["digits"]
    fractions = {}
    for name, params in (("vanilla", {}), ("tgo", {"sigma": 0.0})):
        model, defense = _model(registry, name, seed=3, **params)
        spec = TrainSpec(epochs=2, T=4)
        ctx = TrainContext(model, ds, spec, epoch=1)  # lambda = lam_max / 2
        opt = torch.optim.SGD(defense.param_groups(model, spec), lr=0.1, momentum=0.9)
        model.train()
        for step in range(25):
            x, y = _batch(digits_data, 64, offset=(step * 64) % 1280)
            with model.recording() if defense.records else contextlib.nullcontext([]) as neurons:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                reg = defense.regularizer(StepState(ctx, x, y, logits, neurons))
                loss = loss + (reg if reg is not None else 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        fractions[name] = _near_threshold_fraction(model, to_float(digits_data.test.x[:128]))
    assert fractions["tgo"] < 0.85 * fractions["vanilla"]


# --- DLIF -----------------------------------------------------------------------------------------------


def test_dlif_perturbation_dynamics_by_hand():
    clean = torch.tensor([[1.0], [2.0], [0.0]])
    pert = torch.tensor([[0.0], [1.0], [1.0]])
    # Y1 = 1; Y2 = 0.5 * 1 + 1 = 1.5; Y3 = 0.5 * 1.5 - 1 = -0.25
    assert perturbation_dynamics(clean, pert, 0.5).view(-1).tolist() == pytest.approx([1.0, 1.5, -0.25])


def test_dlif_stability_loss_reaches_the_input_gains(registry, digits_data):
    model, defense = _model(registry, "dlif")
    x, y = _batch(digits_data, 32)
    ctx = TrainContext(
        model, registry.datasets["digits"], TrainSpec(), generator=torch.Generator().manual_seed(0)
    )
    xp = defense.perturb(ctx, x, y)  # standard training: Gaussian mode
    assert not torch.equal(xp, x)
    with model.recording() as neurons:
        logits = model(xp)
        reg = defense.regularizer(StepState(ctx, xp, y, logits, neurons))
    reg.backward()
    gains = [n.gain for n in model.modules() if isinstance(n, DLIFNeuron)]
    assert gains and gains[-1].grad is not None and gains[-1].grad.abs().sum() > 0


# --- user errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,params,needle",
    [
        ("rat", {"beta": -1}, "rat.beta"),
        ("rat", {"mix_attacks": ["fgsm_bptt", "pgd_bptt"]}, "pgd_bptt"),
        ("stog", {"prior": "l3"}, "stog.prior"),
        ("stog", {"at_attack": "cw"}, "stog.at_attack"),
        ("feel", {"radii": [4, 0, 2, 1]}, "feel.radii"),
        ("sr", {"h": 0}, "sr.h"),
        ("mpd_sgr", {"eta": -0.5}, "mpd_sgr.eta"),
        ("tgo", {"delta": -1}, "tgo.delta"),
        ("dlif", {"kappa": 2}, "dlif.kappa"),
        ("tgo", {"noise": 0.1}, "unknown key 'noise'"),
    ],
)
def test_bad_defense_params_name_the_field(kind, params, needle):
    from snnbench.errors import BenchError
    from snnbench.specs import from_mapping

    with pytest.raises(BenchError, match=needle):
        from_mapping(DEFENSES.get(kind).Params, params, "defenses.x.params")


def test_feel_radii_must_match_T(registry):
    from snnbench.errors import BenchError

    _, defense = make_defense(registry, "feel")
    defense = type(defense)(dataclasses.replace(defense.params, radii=(4, 3)))
    with pytest.raises(BenchError, match="need T = 4"):
        build_model(registry.datasets["digits"], registry.models["small_conv"], defense, 4)
