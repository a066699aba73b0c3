"""The fused neuron path against the plain-torch reference: spikes and V bit for bit, gradients to 1e-5.

CPU tests exercise the torch implementation of the fused recurrence; ``gpu`` tests exercise the Triton
kernels (also in bf16 under autocast)."""

from __future__ import annotations

import itertools

import pytest
import torch

from bench.snn.neuron import LIFNeuron, NeuronSpec
from bench.snn.surrogate import SURROGATES


class NoisyNeuron(LIFNeuron):
    """TGO-like NLIF: Gaussian noise on V[t], sampled from the global RNG as the reference would."""

    randomized = True
    noise_independent_of_v = True

    def membrane_noise(self, v, t):
        return 0.3 * torch.randn_like(v)


class LeakyNeuron(LIFNeuron):
    """FEEL-like per-step leak: not supported by the fused path, must fall back to the reference."""

    def leak(self, t):
        return 0.5 + 0.1 * t


def _pair(cls, spec, T, record, backend):
    n = cls(spec)
    n.T, n.record, n.backend = T, record, backend
    return n


def _run(cls, spec, x, T, backend, record=True, seed=0):
    """Forward + backward through spikes (and V when recording); returns spikes, V, dL/dx."""
    n = _pair(cls, spec, T, record, backend)
    xi = x.clone().requires_grad_(True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        s = n(xi)
    w = torch.linspace(-1, 1, s.numel(), device=s.device).view_as(s)
    loss = (s * w).sum()
    if record:
        loss = loss + (n.v_pre - 1).pow(2).mean()  # a regulariser through V, as MPD-SGR/TGO do
    (g,) = torch.autograd.grad(loss, xi)
    return s.detach(), (n.v_pre.detach() if record else None), g


def _input(T, B=6, F=40, seed=1, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(T * B, F, generator=gen) * 1.6 - 0.2).to(device)  # straddles V_th = 1


SPECS = [
    NeuronSpec(tau=tau, reset=reset, detach_reset=det, surrogate=sg, gamma=gam, v_reset=vr)
    for (tau, reset, det), sg, (gam, vr) in itertools.product(
        [(1.0, "hard", False), (0.5, "soft", False), (0.75, "hard", True), (0.9, "soft", True)],
        sorted(SURROGATES),
        [(1.0, 0.0), (0.5, -0.25)],
    )
]


@pytest.mark.parametrize(
    "spec", SPECS, ids=lambda s: f"{s.tau}-{s.reset}-{s.detach_reset}-{s.surrogate}-{s.gamma}"
)
def test_fused_matches_reference_cpu(spec):
    x = _input(T=5)
    s_ref, v_ref, g_ref = _run(LIFNeuron, spec, x, 5, "torch")
    s_f, v_f, g_f = _run(LIFNeuron, spec, x, 5, "fused")
    assert s_ref.sum() > 0 and s_ref.sum() < s_ref.numel()  # the test input makes some neurons fire
    assert torch.equal(s_f, s_ref)
    assert torch.equal(v_f, v_ref)
    torch.testing.assert_close(g_f, g_ref, atol=1e-5, rtol=1e-5)


def test_fused_gradient_without_recording_and_with_attack_surrogate():
    x = _input(T=4, seed=3)
    outs = {}
    for backend in ("torch", "fused"):
        n = _pair(LIFNeuron, NeuronSpec(), 4, False, backend)
        n.attack_surrogate = ("atan", 2.0)
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(
            (n(xi) * torch.arange(xi.numel(), device=xi.device).view_as(xi).sin()).sum(), xi
        )
        outs[backend] = g
    assert outs["torch"].abs().sum() > 0
    torch.testing.assert_close(outs["fused"], outs["torch"], atol=1e-5, rtol=1e-5)


def test_fused_noise_hook_draws_same_noise_as_reference():
    x = _input(T=6, seed=4)
    s_ref, v_ref, g_ref = _run(NoisyNeuron, NeuronSpec(tau=0.8), x, 6, "torch", seed=7)
    s_f, v_f, g_f = _run(NoisyNeuron, NeuronSpec(tau=0.8), x, 6, "fused", seed=7)
    s_other, _, _ = _run(NoisyNeuron, NeuronSpec(tau=0.8), x, 6, "fused", seed=8)
    assert not torch.equal(s_other, s_ref)  # the noise matters
    assert torch.equal(s_f, s_ref) and torch.equal(v_f, v_ref)
    torch.testing.assert_close(g_f, g_ref, atol=1e-5, rtol=1e-5)


def test_unsupported_hooks_fall_back_to_reference():
    x = _input(T=4)
    assert not _pair(LeakyNeuron, NeuronSpec(), 4, False, "fused")._fused_ok(x)

    class OpaqueNoise(LIFNeuron):  # noise that may depend on v: not declared independent
        def membrane_noise(self, v, t):
            return 0.1 * v

    assert not _pair(OpaqueNoise, NeuronSpec(), 4, False, "fused")._fused_ok(x)
    assert _pair(NoisyNeuron, NeuronSpec(), 4, False, "fused")._fused_ok(x)
    assert not _pair(LIFNeuron, NeuronSpec(), 4, False, "auto")._fused_ok(x)  # CPU default = reference
    s_ref, v_ref, _ = _run(LeakyNeuron, NeuronSpec(), x, 4, "torch")
    s_f, v_f, _ = _run(LeakyNeuron, NeuronSpec(), x, 4, "fused")
    assert torch.equal(s_f, s_ref) and torch.equal(v_f, v_ref)


def test_fused_bptr_modes_keep_forward_and_rate_gradient(trained_vanilla):
    from bench.snn.classifier import AttackerView
    from bench.snn.fused import set_backend

    _, prep, _ = trained_vanilla
    x = prep.data.test.x[:32].float()
    y = prep.data.test.y[:32]
    res = {}
    for backend in ("torch", "fused"):
        set_backend(prep.model, backend)
        for mode in ("bptt", "bptr"):
            xi = x.clone().requires_grad_(True)
            out = AttackerView(prep.model, mode)(xi)
            (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(out, y), xi)
            res[backend, mode] = (out.detach(), g)
    set_backend(prep.model, "auto")
    for mode in ("bptt", "bptr"):
        assert torch.equal(res["fused", mode][0], res["torch", mode][0])
        torch.testing.assert_close(res["fused", mode][1], res["torch", mode][1], atol=1e-5, rtol=1e-4)


def test_set_backend_rejects_unknown_name():
    from bench.errors import BenchError
    from bench.snn.fused import set_backend

    with pytest.raises(BenchError, match="backend"):
        set_backend(torch.nn.Sequential(LIFNeuron(NeuronSpec())), "cuda")


# --- Triton kernels (GPU) ---------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize(
    "spec", SPECS[::3], ids=lambda s: f"{s.tau}-{s.reset}-{s.detach_reset}-{s.surrogate}"
)
def test_triton_matches_reference_gpu(spec):
    x = _input(T=8, B=64, F=1000, device="cuda")
    s_ref, v_ref, g_ref = _run(LIFNeuron, spec, x, 8, "torch")
    s_f, v_f, g_f = _run(LIFNeuron, spec, x, 8, "fused")
    assert torch.equal(s_f, s_ref) and torch.equal(v_f, v_ref)
    torch.testing.assert_close(g_f, g_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
def test_triton_noise_and_bf16_gpu():
    x = _input(T=8, B=32, F=999, device="cuda")  # odd size: masked tail of the last block
    s_ref, v_ref, g_ref = _run(NoisyNeuron, NeuronSpec(tau=0.8), x, 8, "torch", seed=3)
    s_f, v_f, g_f = _run(NoisyNeuron, NeuronSpec(tau=0.8), x, 8, "fused", seed=3)
    assert torch.equal(s_f, s_ref) and torch.equal(v_f, v_ref)
    torch.testing.assert_close(g_f, g_ref, atol=1e-5, rtol=1e-5)
    xb = x.bfloat16()
    s_ref, v_ref, g_ref = _run(LIFNeuron, NeuronSpec(tau=0.5), xb, 8, "torch")
    s_f, v_f, g_f = _run(LIFNeuron, NeuronSpec(tau=0.5), xb, 8, "fused")
    assert torch.equal(s_f, s_ref) and torch.equal(v_f, v_ref)
    torch.testing.assert_close(g_f.float(), g_ref.float(), atol=2e-2, rtol=2e-2)


_INTERPRET_SCRIPT = """
import torch
from bench.snn.fused import FusedSpec, _backward_torch, _forward_torch
from bench.snn.triton_lif import lif_backward, lif_forward
torch.manual_seed(0)
for hard, det, sg, tau in [(True, False, "triangle", 1.0), (False, True, "atan", 0.7), (True, False, "sigmoid", 0.9)]:
    fs = FusedSpec(tau, 1.0, hard, -0.25, det, sg, 0.8)
    x = torch.rand(5, 3, 700) * 1.6 - 0.2
    nz = 0.2 * torch.randn_like(x)
    s1, v1 = _forward_torch(x, nz, fs)
    s2, v2 = lif_forward(x, nz, fs)
    assert torch.equal(s1, s2) and torch.equal(v1, v2), fs
    gs, gv = torch.randn_like(x), torch.randn_like(x)
    torch.testing.assert_close(lif_backward(v1, gs, gv, fs), _backward_torch(v1, gs, gv, fs), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lif_backward(v1, gs, None, fs), _backward_torch(v1, gs, None, fs), atol=1e-5, rtol=1e-5)
print("ok")
"""


def test_triton_kernels_under_interpreter_cpu():
    """The Triton kernels' logic on CPU via TRITON_INTERPRET=1 (fp32 only: the interpreter truncates
    bf16 casts instead of rounding to nearest, so bf16 parity is a GPU test)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _INTERPRET_SCRIPT],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
