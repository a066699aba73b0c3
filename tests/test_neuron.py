"""Neuron dynamics against hand-computed examples, surrogates, and gradient modes."""

from __future__ import annotations

import pytest
import torch

from snnbench.snn.neuron import LIFNeuron, NeuronSpec
from snnbench.snn.surrogate import SURROGATES, spike


def _run(spec: NeuronSpec, xs: list[float]) -> tuple[list[float], list[float]]:
    n = LIFNeuron(spec)
    n.T = len(xs)
    n.record = True
    s = n(torch.tensor(xs).view(len(xs), 1))
    return s.view(-1).tolist(), n.v_pre.view(-1).tolist()


def test_hard_reset_three_steps_by_hand():
    # tau=0.5, V_th=1, hard reset to 0, inputs 0.8, 0.8, 0.8:
    # t1: V = 0.8 -> no spike, U = 0.8; t2: V = 0.4 + 0.8 = 1.2 -> spike, U = 0; t3: V = 0.8 -> no spike
    s, v = _run(NeuronSpec(tau=0.5, reset="hard"), [0.8, 0.8, 0.8])
    assert s == [0.0, 1.0, 0.0]
    assert v == pytest.approx([0.8, 1.2, 0.8])


def test_soft_reset_three_steps_by_hand():
    # soft reset subtracts V_th: t1 V=0.8; t2 V=1.2 spike -> U=0.2; t3 V=0.1+0.8=0.9 no spike
    s, v = _run(NeuronSpec(tau=0.5, reset="soft"), [0.8, 0.8, 0.8])
    assert s == [0.0, 1.0, 0.0]
    assert v == pytest.approx([0.8, 1.2, 0.9])


def test_if_neuron_accumulates_without_leak():
    # tau=1 (IF, the Ding et al. default): 0.4, 0.4, 0.4 -> V = 0.4, 0.8, 1.2 -> spike at t3
    s, v = _run(NeuronSpec(), [0.4, 0.4, 0.4])
    assert s == [0.0, 0.0, 1.0]
    assert v == pytest.approx([0.4, 0.8, 1.2])


def test_reset_to_nonzero_v_reset():
    s, v = _run(NeuronSpec(v_reset=-0.5), [1.5, 0.2, 0.0])
    assert s == [1.0, 0.0, 0.0]
    assert v == pytest.approx([1.5, -0.3, -0.3])


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_surrogate_gradient_peaks_at_threshold_and_forward_is_heaviside(name):
    z = torch.tensor([-3.0, -0.2, 0.0, 0.2, 3.0], requires_grad=True)
    s = spike(z, name, 1.0)
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0, 0.0 + 1.0]
    (g,) = torch.autograd.grad(s.sum(), z)
    assert g[2] == g.max() and g[2] > 0
    assert g[0] < g[2] and g[4] < g[2]


def test_triangle_width_matches_formula():
    z = torch.tensor([0.0, 0.25, 0.5, 0.75], requires_grad=True)
    (g,) = torch.autograd.grad(spike(z, "triangle", 0.5).sum(), z)
    assert g.tolist() == pytest.approx([2.0, 1.0, 0.0, 0.0])  # (1/g^2) max(g - |z|, 0), g = 0.5


def test_bptr_and_bptt_give_different_nonzero_input_gradients(trained_vanilla):
    from snnbench.snn.classifier import AttackerView

    plan, prep, _ = trained_vanilla
    x = torch.stack([prep.data.test.x[i] for i in range(16)]).float()
    y = prep.data.test.y[:16]
    grads = {}
    for mode in ("bptt", "bptr", "bptr_rga"):
        xi = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(AttackerView(prep.model, mode)(xi), y)
        (grads[mode],) = torch.autograd.grad(loss, xi)
        assert grads[mode].abs().sum() > 0, mode
    assert not torch.allclose(grads["bptt"], grads["bptr"])
    assert not torch.allclose(grads["bptt"], grads["bptr_rga"])


def test_forward_spikes_identical_across_gradient_modes(trained_vanilla):
    from snnbench.snn.classifier import AttackerView

    _, prep, _ = trained_vanilla
    x = prep.data.test.x[:32].float()
    outs = [AttackerView(prep.model, m)(x) for m in ("bptt", "bptr", "bptr_rga")]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_two_calls_same_input_identical_logits(trained_vanilla):
    _, prep, _ = trained_vanilla
    x = prep.data.test.x[:64].float()
    with torch.no_grad():
        assert torch.equal(prep.model(x), prep.model(x))
        # a different batch in between must not leak state into the next call
        prep.model(torch.rand(7, 1, 8, 8))
        assert torch.equal(prep.model(x[:5]), prep.model(x)[:5])
