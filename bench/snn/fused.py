"""Fused multi-step LIF/IF neuron: the whole T-loop in one autograd node, with a hand-written backward.

The plain-torch loop of :mod:`bench.snn.neuron` records ~8 autograd nodes per time step and layer and keeps
3 tensors per step for backward; this path records one node per layer and keeps only the pre-spike
potentials ``V[1..T]`` (everything else is recomputed from them). On CUDA the loop runs in one Triton
kernel per direction (:mod:`bench.snn.triton_lif`, membrane in registers); elsewhere it is a torch loop
under ``no_grad`` (fewer, larger ops and no autograd bookkeeping).

Forward (spec/defenses.md 1.1, TGO Eq. 1-3), with optional pre-sampled additive noise ``N[t]`` (TGO NLIF):

    V[t] = tau U[t-1] + I[t] (+ N[t]);   S[t] = H(V[t] - V_th)
    U[t] = V[t] (1 - S[t]) + V_reset S[t]   (hard)   |   U[t] = V[t] - V_th S[t]   (soft)

Backward (BPTT with surrogate h, upstream grads gS[t] and gV[t] when ``V`` feeds a regulariser), with
dU[T] = 0 and the reset term dropped when ``detach_reset``:

    hard: dV[t] = gV[t] + h(V[t] - V_th) (gS[t] + dU[t] (V_reset - V[t])) + dU[t] (1 - S[t])
    soft: dV[t] = gV[t] + h(V[t] - V_th) (gS[t] - V_th dU[t]) + dU[t]
    dI[t] = dN[t] = dV[t];   dU[t-1] = tau dV[t]

Choices: spikes and ``V`` equal the reference bit for bit (same fp32/bf16 operations in the same order; the
Triton kernels are compiled with ``enable_fp_fusion=False`` so no multiply-add is contracted; the torch loop
writes the hard reset as ``where(S, V_reset, V)``, which equals ``V (1 - S) + V_reset S`` for every finite
``V``). Gradients are computed in fp32 and agree with autograd through the reference to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.snn.surrogate import SURROGATES

BACKENDS = ("torch", "fused")


@dataclass(frozen=True)
class FusedSpec:
    """Everything the fused kernels need besides tensors (hashable, passed through autograd)."""

    tau: float
    v_th: float
    hard: bool
    v_reset: float
    detach_reset: bool
    surrogate: str
    gamma: float


def triton_available(device: torch.device) -> bool:
    """True when the Triton kernels can run on ``device`` (CUDA with an importable triton)."""
    if device.type != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def dense_steps(x_seq: Tensor) -> Tensor:
    """``x_seq`` itself when every step ``x_seq[t]`` is one dense block of memory at offset t*N (standard
    or channels_last layout), else a contiguous copy: the kernels index [T, N] and keep the layout."""
    n = x_seq[0].numel()
    if x_seq.is_contiguous():
        return x_seq
    if (
        x_seq.dim() == 5
        and x_seq.stride(0) == n
        and x_seq[0].is_contiguous(memory_format=torch.channels_last)
    ):
        return x_seq
    return x_seq.contiguous()


def same_layout(t: Tensor, ref: Tensor) -> Tensor:
    """``t`` with exactly ``ref``'s strides (a copy only when they differ)."""
    return t if t.stride() == ref.stride() else torch.empty_like(ref, dtype=t.dtype).copy_(t)


def _forward_torch(x_seq: Tensor, noise: Tensor | None, fs: FusedSpec) -> tuple[Tensor, Tensor]:
    """Reference-identical forward without autograd, writing into preallocated outputs; returns (spikes,
    V) as [T, B, ...]. ``V - V_th >= 0`` is evaluated as ``V >= V_th`` (the rounded difference of two
    floats is zero or has their difference's sign, so both are the same predicate); with tau = 1 the
    product ``tau U`` is exact and skipped."""
    s_seq, v_seq = torch.empty_like(x_seq), torch.empty_like(x_seq)
    u = torch.zeros_like(x_seq[0])
    fire = torch.empty(x_seq.shape[1:], dtype=torch.bool, device=x_seq.device)
    v_reset = torch.full((), fs.v_reset, dtype=x_seq.dtype, device=x_seq.device)
    for t in range(x_seq.shape[0]):
        v = v_seq[t]
        if fs.tau == 1.0:
            torch.add(u, x_seq[t], out=v)  # charge
        else:
            torch.add(fs.tau * u, x_seq[t], out=v)  # same two roundings as the reference: mul, then add
        if noise is not None:
            v.add_(noise[t])
        torch.ge(v, fs.v_th, out=fire)  # fire
        s_seq[t].copy_(fire)
        if fs.hard:  # reset
            torch.where(fire, v_reset, v, out=u)
        else:
            torch.sub(v, s_seq[t], alpha=fs.v_th, out=u) if fs.v_th == 1.0 else torch.sub(
                v, fs.v_th * s_seq[t], out=u
            )
    return s_seq, v_seq


def _backward_torch(v_seq: Tensor, g_s: Tensor | None, g_v: Tensor | None, fs: FusedSpec) -> Tensor:
    """Reverse-time recurrence of the module docstring; the surrogate and the reset factors are computed
    for all T at once, leaving two fused multiply-adds per step."""
    v32 = v_seq.float()
    z = v32 - fs.v_th  # [T, B, ...]
    h = SURROGATES[fs.surrogate](z, fs.gamma)
    fire = z >= 0
    # dU/dS (applied whether or not the neuron fired, as autograd through the reference does), times h
    if fs.detach_reset:
        hr = None
    else:
        hr = h * (fs.v_reset - v32) if fs.hard else h * -fs.v_th
    carry = (~fire).float() if fs.hard else None  # dU/dV: 1 - S (hard), 1 (soft)
    dx = torch.zeros_like(h) if g_s is None else h.mul_(g_s)  # h gS[t]; carried terms added per step
    if g_v is not None:
        dx.add_(g_v)
    for t in range(v_seq.shape[0] - 2, -1, -1):
        du = dx[t + 1] * fs.tau  # dU[t]
        if hr is not None:
            dx[t].addcmul_(du, hr[t])
        if carry is not None:
            dx[t].addcmul_(du, carry[t])
        else:
            dx[t].add_(du)
    return dx.to(v_seq.dtype)


class FusedLIFFunction(torch.autograd.Function):
    """``(x_seq [T, B, ...], noise or None, spec) -> (spikes, V)``; one node for the whole time loop."""

    @staticmethod
    def forward(ctx, x_seq: Tensor, noise: Tensor | None, fs: FusedSpec):  # type: ignore[override]
        x_seq = dense_steps(x_seq)
        if noise is not None:
            noise = same_layout(noise.to(x_seq.dtype), x_seq)
        if triton_available(x_seq.device):
            from bench.snn.triton_lif import lif_forward

            s_seq, v_seq = lif_forward(x_seq, noise, fs)
        else:
            s_seq, v_seq = _forward_torch(x_seq, noise, fs)
        ctx.save_for_backward(v_seq)
        ctx.fs, ctx.has_noise = fs, noise is not None
        ctx.set_materialize_grads(False)
        return s_seq, v_seq

    @staticmethod
    def backward(ctx, g_s: Tensor | None, g_v: Tensor | None):  # type: ignore[override]
        (v_seq,) = ctx.saved_tensors
        if g_s is None and g_v is None:
            return None, None, None
        fs = ctx.fs
        if triton_available(v_seq.device):
            from bench.snn.triton_lif import lif_backward

            dx = lif_backward(v_seq, g_s, g_v, fs)
        else:
            dx = _backward_torch(v_seq, g_s, g_v, fs)
        return dx, (dx if ctx.has_noise else None), None


def fused_lif(x_seq: Tensor, fs: FusedSpec, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Run the fused neuron on ``x_seq`` [T, B, ...]; returns spikes and pre-spike potentials V, both
    [T, B, ...] and both differentiable (V for the MPD-SGR/TGO regularisers)."""
    return FusedLIFFunction.apply(x_seq, noise, fs)


def set_backend(model: torch.nn.Module, backend: str) -> int:
    """Set the neuron backend ("auto", "torch" or "fused") on every LIF neuron of ``model``; returns the
    number of neurons changed."""
    from bench.errors import BenchError, did_you_mean
    from bench.snn.neuron import LIFNeuron

    valid = ("auto", *BACKENDS)
    if backend not in valid:
        raise BenchError(f"neuron backend: {backend!r} is not a backend; {did_you_mean(backend, valid)}")
    neurons = [m for m in model.modules() if isinstance(m, LIFNeuron)]
    for n in neurons:
        n.backend = backend
    return len(neurons)
