"""Triton kernels for the fused multi-step LIF neuron (math in :mod:`bench.snn.fused`).

One program owns ``BLOCK`` flattened neurons and walks the T steps with the membrane in registers, so the
forward reads I[t] (and N[t]) once and writes S[t] and V[t] once; the backward reads V[t], gS[t] (and
gV[t]) once and writes dI[t] once: the minimum traffic for the recurrence. Arithmetic that produces S and V
rounds to the input dtype after each operation, in the reference's order, and the kernels are compiled with
``enable_fp_fusion=False`` (no contracted multiply-add), so S and V equal the plain-torch reference bit for
bit in fp32 and bf16. Gradients are accumulated in fp32.

Choice: BLOCK = 1024 neurons and 4 warps per program (memory-bound elementwise loop; 8 steps x 3 streams
keep enough loads in flight). Tune on the device if a layer is small.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from bench.snn.fused import FusedSpec, same_layout

SURROGATE_IDS = {"triangle": 0, "rectangle": 1, "sigmoid": 2, "superspike": 3, "atan": 4}
BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def _surrogate(z, gamma, SURR: tl.constexpr):
    """h(z) of bench/snn/surrogate.py, in fp32."""
    if SURR == 0:  # triangle
        h = tl.maximum(gamma - tl.abs(z), 0.0) / (gamma * gamma)
    elif SURR == 1:  # rectangle
        h = tl.where(tl.abs(z) < gamma / 2, 1.0, 0.0) / gamma
    elif SURR == 2:  # sigmoid
        sg = tl.sigmoid(gamma * z)
        h = gamma * sg * (1 - sg)
    elif SURR == 3:  # superspike
        d = 1.0 + gamma * tl.abs(z)
        h = 1.0 / (d * d)
    else:  # atan
        a = 1.5707963267948966 * gamma * z
        h = (gamma / 2) / (1 + a * a)
    return h


@triton.jit
def _lif_fwd_kernel(
    x_ptr,
    n_ptr,
    s_ptr,
    v_ptr,
    N,
    T,
    tau,
    v_th,
    v_reset,
    HARD: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    dt = x_ptr.dtype.element_ty
    u = tl.zeros([BLOCK], dtype=dt)
    for _t in range(T):
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        v = (u.to(tl.float32) * tau).to(dt)  # tau * U[t-1], rounded as torch rounds it
        v = (v.to(tl.float32) + x.to(tl.float32)).to(dt)  # + I[t]
        if HAS_NOISE:
            nz = tl.load(n_ptr + offs, mask=mask, other=0.0)
            v = (v.to(tl.float32) + nz.to(tl.float32)).to(dt)
            n_ptr += N
        fire = ((v.to(tl.float32) - v_th).to(dt)) >= 0
        if HARD:
            u = tl.where(fire, v_reset, v.to(tl.float32)).to(dt)
        else:
            u = (v.to(tl.float32) - tl.where(fire, v_th, 0.0).to(dt).to(tl.float32)).to(dt)
        tl.store(s_ptr + offs, tl.where(fire, 1.0, 0.0).to(dt), mask=mask)
        tl.store(v_ptr + offs, v, mask=mask)
        x_ptr += N
        s_ptr += N
        v_ptr += N


@triton.jit
def _lif_bwd_kernel(
    v_ptr,
    gs_ptr,
    gv_ptr,
    dx_ptr,
    N,
    T,
    last,
    tau,
    v_th,
    v_reset,
    gamma,
    HARD: tl.constexpr,
    DETACH: tl.constexpr,
    HAS_GS: tl.constexpr,
    HAS_GV: tl.constexpr,
    SURR: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v_ptr += last
    gs_ptr += last
    gv_ptr += last
    dx_ptr += last
    du = tl.zeros([BLOCK], dtype=tl.float32)
    for _i in range(T):
        v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        z = v - v_th
        h = _surrogate(z, gamma, SURR)
        g = tl.zeros([BLOCK], dtype=tl.float32)
        if HAS_GS:
            g = tl.load(gs_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HARD:
            if not DETACH:
                g = g + du * (v_reset - v)
            dv = h * g + tl.where(z >= 0, 0.0, du)
        else:
            if not DETACH:
                g = g - v_th * du
            dv = h * g + du
        if HAS_GV:
            dv = dv + tl.load(gv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(dx_ptr + offs, dv.to(dx_ptr.dtype.element_ty), mask=mask)
        du = tau * dv
        v_ptr -= N
        gs_ptr -= N
        gv_ptr -= N
        dx_ptr -= N


def lif_forward(x_seq: Tensor, noise: Tensor | None, fs: FusedSpec) -> tuple[Tensor, Tensor]:
    """Spikes and V, both [T, B, ...] in x's dtype and layout; ``x_seq`` dense per step, ``noise`` in
    the same layout (bench.snn.fused.dense_steps / same_layout)."""
    T, N = x_seq.shape[0], x_seq[0].numel()
    s_seq, v_seq = torch.empty_like(x_seq), torch.empty_like(x_seq)
    grid = (triton.cdiv(N, BLOCK),)
    _lif_fwd_kernel[grid](
        x_seq,
        noise if noise is not None else x_seq,
        s_seq,
        v_seq,
        N,
        T,
        fs.tau,
        fs.v_th,
        fs.v_reset,
        HARD=fs.hard,
        HAS_NOISE=noise is not None,
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
        enable_fp_fusion=False,
    )
    return s_seq, v_seq


def lif_backward(v_seq: Tensor, g_s: Tensor | None, g_v: Tensor | None, fs: FusedSpec) -> Tensor:
    """dL/dI [T, B, ...] in V's dtype from the saved V and the upstream gradients."""
    T, N = v_seq.shape[0], v_seq[0].numel()
    g_s = same_layout(g_s, v_seq) if g_s is not None else None
    g_v = same_layout(g_v, v_seq) if g_v is not None else None
    dx = torch.empty_like(v_seq)
    grid = (triton.cdiv(N, BLOCK),)
    _lif_bwd_kernel[grid](
        v_seq,
        g_s if g_s is not None else v_seq,
        g_v if g_v is not None else v_seq,
        dx,
        N,
        T,
        (T - 1) * N,
        fs.tau,
        fs.v_th,
        fs.v_reset,
        fs.gamma,
        HARD=fs.hard,
        DETACH=fs.detach_reset,
        HAS_GS=g_s is not None,
        HAS_GV=g_v is not None,
        SURR=SURROGATE_IDS[fs.surrogate],
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
        enable_fp_fusion=False,
    )
    return dx
