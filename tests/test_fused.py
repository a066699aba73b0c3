"""The fused neuron path against the plain-torch reference: spikes and V bit for bit, gradients to 1e-5.

CPU tests exercise the torch implementation of the fused recurrence; ``gpu`` tests exercise the Triton
kernels (also in bf16 under autocast); the interpreter test runs the kernels' logic on CPU. The V-penalties
folded into the fused backward (TGO's hinge, MPD-SGR's overlap) are checked against autograd through the
defenses' own reference code: values and input gradients, fp32 and bf16."""

from __future__ import annotations

import itertools

import pytest
import torch

from snnbench.snn.neuron import LIFNeuron, NeuronSpec
from snnbench.snn.surrogate import SURROGATES


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
    assert _pair(LIFNeuron, NeuronSpec(), 4, False, "auto")._fused_ok(x)  # the default, on CPU too
    assert not _pair(LIFNeuron, NeuronSpec(), 4, False, "torch")._fused_ok(x)
    assert not _pair(LeakyNeuron, NeuronSpec(), 4, False, "auto")._fused_ok(x)
    s_ref, v_ref, _ = _run(LeakyNeuron, NeuronSpec(), x, 4, "torch")
    s_f, v_f, _ = _run(LeakyNeuron, NeuronSpec(), x, 4, "fused")
    assert torch.equal(s_f, s_ref) and torch.equal(v_f, v_ref)


def test_fused_bptr_modes_keep_forward_and_rate_gradient(trained_vanilla):
    from snnbench.snn.classifier import AttackerView
    from snnbench.snn.neuron import set_backend

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


# --- V-penalties folded into the fused backward (TGO hinge, MPD-SGR overlap) ---------------------------------
def _tgo_hinge(n):
    from snnbench.defenses.tgo import near_threshold_hinge

    return near_threshold_hinge(n, 0.5, 1)


def _mpd_overlap(n):
    from snnbench.defenses.mpd_sgr import layer_overlap

    return layer_overlap(n)


PENALTIES = {"tgo_hinge": _tgo_hinge, "mpd_overlap": _mpd_overlap}


def _penalty_run(cls, spec, x, T, backend, reg, seed=0):
    """Two recorded forward passes (the first arms the fused penalty), then loss = spikes . w + 3 reg;
    returns (reg value, dL/dx, whether the neuron computed the penalty itself)."""
    n = _pair(cls, spec, T, True, backend)
    xi = x.clone().requires_grad_(True)
    for _ in range(2):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            s = n(xi)
        val = reg(n)
    w = torch.linspace(-1, 1, s.numel(), device=s.device).view_as(s).to(s.dtype)
    (g,) = torch.autograd.grad((s * w).float().sum() + 3.0 * val.float(), xi)
    return val.detach().float(), g.float(), n.penalty is not None


def _conv_input(T, B=5, C=3, H=4, W=3, seed=2, channels_last=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(T * B, C, H, W, generator=gen) * 1.8 - 0.3
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("penalty", sorted(PENALTIES))
@pytest.mark.parametrize("layout", ["conv", "conv_cl", "fc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fused_penalty_matches_autograd_reference(penalty, layout, dtype):
    T = 4
    x = _input(T=T, B=7, F=30) if layout == "fc" else _conv_input(T, channels_last=layout == "conv_cl")
    x = x.to(dtype)
    spec = NeuronSpec(tau=0.8)
    v_ref, g_ref, used_ref = _penalty_run(LIFNeuron, spec, x, T, "torch", PENALTIES[penalty])
    v_f, g_f, used_f = _penalty_run(LIFNeuron, spec, x, T, "fused", PENALTIES[penalty])
    assert not used_ref and used_f  # the fused neuron computed the penalty: no autograd over V
    assert v_ref > 0 and g_ref.abs().sum() > 0
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(v_f, v_ref, **tol)
    torch.testing.assert_close(g_f, g_ref, **tol)


@pytest.mark.parametrize("penalty", sorted(PENALTIES))
def test_fused_penalty_gradient_is_the_penalty_s(penalty):
    """The folded V-gradient alone (no spike loss) equals autograd's, and it is not zero: a backward that
    dropped the penalty's gradient would fail here."""
    x = _conv_input(4, seed=5)
    grads = {}
    for backend in ("torch", "fused"):
        n = _pair(LIFNeuron, NeuronSpec(), 4, True, backend)
        xi = x.clone().requires_grad_(True)
        n(xi)
        PENALTIES[penalty](n)  # arms
        n(xi)
        (grads[backend],) = torch.autograd.grad(PENALTIES[penalty](n), xi)
    assert grads["torch"].abs().sum() > 0
    torch.testing.assert_close(grads["fused"], grads["torch"], atol=1e-6, rtol=1e-5)


def test_fused_penalty_with_tgo_noise_and_defense_regularizers():
    """TGO (noisy LIF, hinge) and MPD-SGR regularizers of the defenses, on a small_conv SNN, reference vs
    fused backend: same loss and same parameter gradients."""
    from types import SimpleNamespace

    from snnbench.defenses.base import StepState, TrainContext
    from snnbench.defenses.mpd_sgr import MPDSGR
    from snnbench.defenses.tgo import TGO
    from snnbench.snn.classifier import SNNClassifier
    from snnbench.snn.encoders import DirectEncoder
    from snnbench.snn.models import ARCHITECTURES
    from snnbench.snn.neuron import set_backend

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (6,), generator=gen)
    for defense in (TGO(), MPDSGR()):
        res = {}
        for backend in ("torch", "fused"):
            torch.manual_seed(0)
            net = ARCHITECTURES["small_conv"]((1, 8, 8), 10, defense.make_neuron(NeuronSpec(), 4))
            model = SNNClassifier(net, DirectEncoder(), 4, [0.5], [0.25])
            set_backend(model, backend)
            ctx = TrainContext(model, None, SimpleNamespace(epochs=4), epoch=2)  # type: ignore[arg-type]
            for _ in range(2):  # the first recorded step arms the fused penalty
                with torch.random.fork_rng(), model.recording() as neurons:
                    torch.manual_seed(1)
                    logits = model(x)
                    reg = defense.regularizer(StepState(ctx, x, y, logits, neurons))
                    used = [n.penalty is not None for n in neurons]
                    loss = torch.nn.functional.cross_entropy(logits, y) + reg
            grads = torch.autograd.grad(loss, list(model.parameters()))
            res[backend] = (loss.detach(), reg.detach(), grads, used)
        assert not any(res["torch"][3]) and all(res["fused"][3])
        assert res["torch"][1] > 0
        torch.testing.assert_close(res["fused"][0], res["torch"][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(res["fused"][1], res["torch"][1], atol=1e-6, rtol=1e-5)
        for gf, gr in zip(res["fused"][2], res["torch"][2], strict=True):
            torch.testing.assert_close(gf, gr, atol=1e-5, rtol=1e-4)


def test_fused_penalty_not_computed_without_recording_gradients():
    from snnbench.snn.fused import VPenalty

    n = _pair(LIFNeuron, NeuronSpec(), 4, True, "fused")
    n.v_penalty = VPenalty.hinge(0.5)
    with torch.no_grad():
        n(_input(T=4))
    assert n.penalty is None  # histograms and attacks record without gradients: no penalty work


def test_set_backend_rejects_unknown_name():
    from snnbench.errors import BenchError
    from snnbench.snn.neuron import set_backend

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


@pytest.mark.gpu
@pytest.mark.parametrize("penalty", sorted(PENALTIES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_triton_penalty_matches_reference_gpu(penalty, dtype):
    x = _conv_input(8, B=16, C=8, H=9, W=9).cuda().to(dtype)
    v_ref, g_ref, _ = _penalty_run(LIFNeuron, NeuronSpec(tau=0.8), x, 8, "torch", PENALTIES[penalty])
    v_f, g_f, used = _penalty_run(LIFNeuron, NeuronSpec(tau=0.8), x, 8, "fused", PENALTIES[penalty])
    assert used
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(v_f, v_ref, **tol)
    torch.testing.assert_close(g_f, g_ref, **tol)


_INTERPRET_SCRIPT = """
import torch
from snnbench.snn.fused import (FusedSpec, PenaltyGrad, VPenalty, _backward_torch, _forward_torch,
                             _moment_coefficients, hinge_value, moments_of)
from snnbench.snn.triton_lif import lif_backward, lif_forward
from snnbench.defenses.mpd_sgr import overlap
torch.manual_seed(0)
for hard, det, sg, tau in [(True, False, "triangle", 1.0), (False, True, "atan", 0.7), (True, False, "sigmoid", 0.9)]:
    fs = FusedSpec(tau, 1.0, hard, -0.25, det, sg, 0.8)
    x = torch.rand(5, 3, 700) * 1.6 - 0.2
    nz = 0.2 * torch.randn_like(x)
    s1, v1 = _forward_torch(x, nz, fs)
    s2, v2, part = lif_forward(x, nz, fs)
    assert part is None and torch.equal(s1, s2) and torch.equal(v1, v2), fs
    gs, gv = torch.randn_like(x), torch.randn_like(x)
    torch.testing.assert_close(lif_backward(v1, gs, gv, fs), _backward_torch(v1, gs, gv, fs), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lif_backward(v1, gs, None, fs), _backward_torch(v1, gs, None, fs), atol=1e-5, rtol=1e-5)
# V-penalties: hinge value in the forward kernel, hinge and moments gradients in the backward kernel, for
# the standard and channels_last layouts (the moments' channel index) and an FC layer
fs = FusedSpec(0.9, 1.0, True, 0.0, False, "triangle", 1.0)
for shape, cl in [((4, 3, 5, 6, 7), False), ((4, 3, 5, 6, 7), True), ((4, 3, 50), False)]:
    x = torch.rand(shape) * 1.6 - 0.2
    if cl:
        x = torch.stack([xi.contiguous(memory_format=torch.channels_last) for xi in x])
    s1, v1 = _forward_torch(x, None, fs)
    s2, v2, part = lif_forward(x, None, fs, 0.5)
    assert torch.equal(s1, s2) and torch.equal(v1, v2)
    torch.testing.assert_close(part.sum(), hinge_value(v1, 1.0, 0.5))
    gs = torch.randn_like(x)
    pg = PenaltyGrad("hinge", coef=torch.tensor([0.7]), delta=0.5)
    torch.testing.assert_close(lif_backward(v1, gs, None, fs, pg), _backward_torch(v1, gs, None, fs, pg))
    mu, sd = moments_of(v1, 1.0)
    m = v1[0].numel() // v1.shape[2]
    pg = _moment_coefficients(mu, sd, VPenalty.moments(overlap, 1.0, eps=1e-5), torch.tensor(0.3), m)
    torch.testing.assert_close(lif_backward(v1, gs, None, fs, pg), _backward_torch(v1, gs, None, fs, pg))
    torch.testing.assert_close(lif_backward(v1, None, None, fs, pg), _backward_torch(v1, None, None, fs, pg))
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
