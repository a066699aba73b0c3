"""The SNN-specific attacker gradients and the black-box floor of snn-standard-v2 (issue 20): ASSG's moments
and SA-PGD's schedule as the official code has them, HART's time-averaged gradient, PDSG's width, RayS
finding the exact boundary of a linear model from labels alone, and the ensemble transfer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from snnbench.attacks import ATTACKS
from snnbench.attacks.sapgd import SAPGD, schedule, search_width
from snnbench.attacks.transfer import Ensemble, Transfer
from snnbench.data import to_float
from snnbench.plan import make_attack
from snnbench.scoring import evaluate_attack
from snnbench.snn.neuron import LIFNeuron, NeuronSpec
from snnbench.snn.surrogate import ASSGMoments, atan, pdsg, pdsg_sigma


def test_assg_moments_follow_the_official_update_and_persist_across_iterations():
    m = ASSGMoments(a=0.425)
    assert m.k == pytest.approx(2 * math.tan(math.pi * 0.425) / math.pi)
    u1, u2 = torch.tensor([0.2, -3.0]), torch.tensor([0.1, 3.0])
    a1 = m.sharpness(0, u1, update=True)
    M = 0.9 * 1.0 + 0.1 * u1.abs()
    D = 0.1 * (u1.abs() - M).abs()
    assert torch.allclose(a1, m.k / (M + 1.5 * D + 1e-4))
    a2 = m.sharpness(0, u2, update=True)  # the second iteration starts from the first one's moments
    M2 = 0.9 * M + 0.1 * u2.abs()
    D2 = 0.9 * D + 0.1 * (u2.abs() - M2).abs()
    assert torch.allclose(a2, m.k / (M2 + 1.5 * D2 + 1e-4))
    assert a2[1] < a2[0]  # a neuron far from threshold gets a wider (flatter) surrogate
    assert torch.equal(m.sharpness(0, u2, update=False), a2)  # a pass without a graph leaves them alone
    assert m.sharpness(1, u2, update=False).allclose(torch.full((2,), m.k / 1.0001))  # per step, fresh: M=1, D=0


def test_assg_state_lives_across_forwards_and_a_new_attacker_view_resets_it(trained_vanilla):
    from snnbench.snn.classifier import AttackerView

    _, prep, _ = trained_vanilla
    model = prep.model
    x = to_float(prep.data.test.x[:8]).requires_grad_(True)
    view = AttackerView(model, surrogate="assg")
    for _ in range(3):
        view(x).sum().backward()
    n = model.neurons()[0]
    assert n.assg is not None and len(n.assg.M) == model.T and not torch.all(n.assg.M[0] == 1)
    AttackerView(model, surrogate="assg")
    assert all(k.assg is None for k in model.neurons())


def test_sapgd_halves_on_the_official_fixed_schedule():
    # the ASSG paper's code, 100 steps: halvings after iterations 22, 41, 57, 70, 80, 87, 93, 99 (1-based)
    assert [i + 1 for i in schedule(100)] == [22, 41, 57, 70, 80, 87, 93, 99]
    assert schedule(1) == [0]


def test_hart_gives_every_time_step_the_time_averaged_gradient():
    torch.manual_seed(0)
    n = LIFNeuron(NeuronSpec(tau=0.5))
    n.T = 4
    x = (torch.rand(4 * 3, 5) * 2).requires_grad_(True)
    w = torch.randn(4 * 3, 5)
    n.grad_mode = "hart"
    (g,) = torch.autograd.grad((n(x) * w).sum(), x)
    g = g.view(4, 3, 5)
    assert torch.allclose(g, g[:1].expand_as(g))  # the same gradient at every step
    n.grad_mode = "bptt"
    (gb,) = torch.autograd.grad((n(x) * w).sum(), x)
    assert not torch.allclose(gb.view(4, 3, 5), gb.view(4, 3, 5)[:1].expand(4, 3, 5))


def test_pdsg_width_is_the_per_channel_std_over_time_batch_and_space():
    torch.manual_seed(0)
    v0 = torch.randn(2, 3, 4, 4) * torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1)
    v1 = torch.randn(2, 3, 4, 4)
    s = pdsg_sigma([v0, v1])
    ref = torch.stack([v0, v1]).permute(2, 0, 1, 3, 4).reshape(3, -1).std(1)
    assert s.shape == (1, 3, 1, 1) and torch.allclose(s.flatten(), ref)
    z = torch.linspace(-3, 3, 601)
    g = pdsg(z, torch.tensor(1.0))
    assert z[g.argmax()].item() == pytest.approx(0.5, abs=0.01)  # peak sigma / 2 above threshold
    assert g.sum() * 0.01 == pytest.approx(1.0, abs=0.01)  # a density
    assert torch.allclose(atan(z, 2.0).max(), torch.tensor(1.0))


class _Linear2(nn.Module):
    """Two classes, score difference w.x + b: the L-inf distance to the boundary is |w.x + b| / ||w||_1.
    ``hard``: only the label comes out (flat one-hot scores: nothing for a score- or gradient-based attack)."""

    def __init__(self, w: torch.Tensor, b: float, hard: bool = False) -> None:
        super().__init__()
        self.w, self.b, self.hard = w, b, hard

    def forward(self, x):
        d = x.flatten(1) @ self.w + self.b
        z = torch.stack([d, -d], 1)
        return nn.functional.one_hot(z.argmax(1), 2).float() if self.hard else z


@pytest.mark.parametrize("hard", [False, True])
def test_rays_finds_the_exact_linf_boundary_of_a_linear_model_from_labels_alone(hard):
    torch.manual_seed(0)
    w = torch.randn(16)
    model = _Linear2(w, -0.5 * float(w.sum()), hard)  # the boundary passes through the gray image
    x = 0.5 + 0.02 * torch.randn(40, 1, 4, 4)  # no clipping at [0, 1] within the budget
    y = model(x).argmax(1)
    dist = ((x - 0.5).flatten(1) @ w).abs() / w.abs().sum()
    eps = float(dist.median())
    rays = ATTACKS.get("rays")(ATTACKS.get("rays").Params(queries=2000, tol=0.001), eps, 0.0)
    adv = rays.generate(model, x, y)
    assert (adv - x).abs().max() <= eps + 1e-6
    fooled = model(adv).argmax(1) != y
    # every sample whose boundary is inside the ball is found (margin: the search tolerance), no other
    assert torch.equal(fooled[dist < 0.99 * eps], torch.ones_like(fooled[dist < 0.99 * eps]))
    assert not fooled[dist > eps].any()
    off = (adv - x).abs()[fooled]
    assert (off < eps - 1e-6).float().mean() > 0.5  # not on the eps-ball's corners



def test_rays_searches_each_sample_on_its_own_with_one_forward_per_query():
    """Each sample's RayS search is its own (batched: the same examples as alone), and every forward
    carries the next query of every sample still working: at most the per-sample budget plus one
    binary search of forwards, however many samples are searching at a time (issue 25)."""
    import math

    torch.manual_seed(0)
    w = torch.randn(16)
    model = _Linear2(w, -0.5 * float(w.sum()))
    x = 0.5 + 0.02 * torch.randn(12, 1, 4, 4)
    y = model(x).argmax(1)
    R = ATTACKS.get("rays")
    params = R.Params(queries=300, tol=0.01, jitter=0.0)
    eps = float((((x - 0.5).flatten(1) @ w).abs() / w.abs().sum()).median())
    calls = []

    class Counted(nn.Module):
        def forward(self, xx):
            calls.append(len(xx))
            return model(xx)

    adv = R(params, eps, 0.0).generate(Counted(), x, y)
    alone = torch.cat([R(params, eps, 0.0).perturb(model, x[i : i + 1], y[i : i + 1]) for i in range(len(x))])
    assert torch.equal(adv, alone)
    fooled = model(adv).argmax(1) != y
    assert 0 < fooled.sum() < len(y)
    assert len(calls) <= params.queries + math.ceil(math.log2(1 / (params.tol * eps))) + 2
    assert max(calls) == len(x) and sum(calls) > 3 * len(calls)

def test_width_search_keeps_every_candidates_breaks_and_runs_the_best_in_full():
    x, y = torch.zeros(6, 1), torch.zeros(6, dtype=torch.long)
    calls = []

    def run(w, xx, yy, steps):
        calls.append((w, len(xx), steps))
        fooled = torch.zeros(len(xx), dtype=torch.bool)
        if w == 2.0 and steps == 3:
            fooled[:2] = True  # the short run at width 2 breaks two samples
        if steps == 30:
            fooled[:] = True
        return xx + w, fooled

    adv = search_width(run, x, y, (1.0, 2.0, 3.0), 3, 30)
    assert calls == [(1.0, 6, 3), (2.0, 6, 3), (3.0, 6, 3), (2.0, 4, 30)]
    assert torch.equal(adv[:2].flatten(), torch.full((2,), 2.0)) and torch.equal(adv[2:].flatten(), torch.full((4,), 2.0))


def test_sapgd_with_assg_is_at_least_as_strong_as_pgd(registry, trained_vanilla):
    _, prep, _ = trained_vanilla
    ds = registry.datasets["digits"]

    def robust(attack):
        return evaluate_attack(prep.model, attack, prep.data.test, 80, 80, torch.device("cpu")).adv_correct.mean()

    sapgd = SAPGD(SAPGD.Params(steps=30, surrogate="assg", search=True), ds.eps, ds.alpha)
    pgd = make_attack(registry, "pgd", ds, {})[1]
    assert robust(sapgd) <= robust(pgd) + 0.02


def test_transfer_ensemble_needs_both_substitutes_and_names_them(registry, trained_vanilla):
    _, prep, _ = trained_vanilla
    ds = registry.datasets["digits"]
    t = Transfer(Transfer.Params(source="apgd", steps=5, substitutes=("standard", "at")), ds.eps, ds.alpha)
    assert t.substitute_trainings == ("standard", "at") and t.substitute is None
    t.set_substitute(prep.model, "h-std", "standard")
    assert t.substitute is None and t.substitute_id == ""
    t.set_substitute(prep.model, "h-at", "at")
    assert isinstance(t.substitute, Ensemble) and t.config()["substitute"] == "h-std+h-at"
    x, y = to_float(prep.data.test.x[:16]), prep.data.test.y[:16]
    assert torch.allclose(t.substitute(x), prep.model(x))  # the mean of two copies is the model
    assert (t.generate(prep.model, x, y) - x).abs().max() <= ds.eps + 1e-6
    one = Transfer(Transfer.Params(), ds.eps, ds.alpha)
    assert "substitutes" not in one.config()  # the default stays out: stored configs hash as before
