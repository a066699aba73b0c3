"""Triton kernels for the fused multi-step LIF neuron (math in :mod:`bench.snn.fused`).

One program owns ``BLOCK`` flattened neurons and walks the T steps with the membrane in registers, so the
forward reads I[t] (and N[t]) once and writes S[t] and V[t] once; the backward reads V[t], gS[t] (and
gV[t]) once and writes dI[t] once: the minimum traffic for the recurrence. Arithmetic that produces S and V
rounds to the input dtype after each operation, in the reference's order, and the kernels are compiled with
``enable_fp_fusion=False`` (no contracted multiply-add), so S and V equal the plain-torch reference bit for
bit in fp32 and bf16. Gradients are accumulated in fp32.

V-penalties (bench/snn/fused.py ``VPenalty``): the forward kernel sums the TGO hinge max(0, delta - |V - V_th|)
of its block over all T into one fp32 partial per program (``HINGE``); the backward kernel adds the penalty's
V-gradient to dV[t] while V[t] is in registers: ``PEN`` = 1 hinge (-coef sign(z) 1[|z| < delta], coef read
from device memory so nothing syncs), 2 moments (alpha[t, c] + beta[t, c] z, the channel c of a flattened
neuron being (n // HW) % C in the standard layout and n % C in channels_last).

Choice: BLOCK = 1024 neurons and 4 warps per program (memory-bound elementwise loop; 8 steps x 3 streams
keep enough loads in flight). Tune on the device if a layer is small.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from snnbench.snn.fused_spec import FusedSpec, PenaltyGrad, same_layout

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
    part_ptr,
    N,
    T,
    tau,
    v_th,
    v_reset,
    delta,
    HARD: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    HINGE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    dt = x_ptr.dtype.element_ty
    u = tl.zeros([BLOCK], dtype=dt)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for _t in range(T):
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        v = (u.to(tl.float32) * tau).to(dt)  # tau * U[t-1], rounded as torch rounds it
        v = (v.to(tl.float32) + x.to(tl.float32)).to(dt)  # + I[t]
        if HAS_NOISE:
            nz = tl.load(n_ptr + offs, mask=mask, other=0.0)
            v = (v.to(tl.float32) + nz.to(tl.float32)).to(dt)
            n_ptr += N
        z = (v.to(tl.float32) - v_th).to(dt)  # V - V_th, rounded as the reference rounds it
        fire = z >= 0
        if HINGE:
            hv = (delta - tl.abs(z.to(tl.float32))).to(dt).to(tl.float32)
            acc += tl.where(mask & (hv > 0), hv, 0.0)
        if HARD:
            u = tl.where(fire, v_reset, v.to(tl.float32)).to(dt)
        else:
            u = (v.to(tl.float32) - tl.where(fire, v_th, 0.0).to(dt).to(tl.float32)).to(dt)
        tl.store(s_ptr + offs, tl.where(fire, 1.0, 0.0).to(dt), mask=mask)
        tl.store(v_ptr + offs, v, mask=mask)
        x_ptr += N
        s_ptr += N
        v_ptr += N
    if HINGE:
        tl.store(part_ptr + pid, tl.sum(acc, axis=0))


@triton.jit
def _lif_bwd_kernel(
    v_ptr,
    gs_ptr,
    gv_ptr,
    dx_ptr,
    coef_ptr,
    alpha_ptr,
    beta_ptr,
    N,
    T,
    last,
    tau,
    v_th,
    v_reset,
    gamma,
    delta,
    C,
    HW,
    HARD: tl.constexpr,
    DETACH: tl.constexpr,
    HAS_GS: tl.constexpr,
    HAS_GV: tl.constexpr,
    SURR: tl.constexpr,
    PEN: tl.constexpr,
    CL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v_ptr += last
    gs_ptr += last
    gv_ptr += last
    dx_ptr += last
    dt = v_ptr.dtype.element_ty
    du = tl.zeros([BLOCK], dtype=tl.float32)
    if PEN == 1:
        coef = tl.load(coef_ptr)
    if PEN == 2:
        if CL:
            chan = offs % C
        else:
            chan = (offs // HW) % C
    for _i in range(T):
        vr = tl.load(v_ptr + offs, mask=mask, other=0.0)
        v = vr.to(tl.float32)
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
        if PEN == 1:
            zr = (v - v_th).to(dt).to(tl.float32)
            sg = tl.where(zr > 0, 1.0, tl.where(zr < 0, -1.0, 0.0))
            dv = dv - tl.where(tl.abs(zr) < delta, coef * sg, 0.0)
        if PEN == 2:
            zr = (v - v_th).to(dt).to(tl.float32)
            t_off = (T - 1 - _i) * C
            a = tl.load(alpha_ptr + t_off + chan, mask=mask, other=0.0)
            b = tl.load(beta_ptr + t_off + chan, mask=mask, other=0.0)
            dv = dv + (b * zr + a)
        tl.store(dx_ptr + offs, dv.to(dx_ptr.dtype.element_ty), mask=mask)
        du = tau * dv
        v_ptr -= N
        gs_ptr -= N
        gv_ptr -= N
        dx_ptr -= N


def lif_forward(
    x_seq: Tensor, noise: Tensor | None, fs: FusedSpec, hinge_delta: float | None = None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Spikes and V, both [T, B, ...] in x's dtype and layout, and with ``hinge_delta`` the per-program
    fp32 partial sums of max(0, delta - |V - V_th|) (their sum is the hinge); ``x_seq`` dense per step,
    ``noise`` in the same layout (bench.snn.fused.dense_steps / same_layout)."""
    T, N = x_seq.shape[0], x_seq[0].numel()
    s_seq, v_seq = torch.empty_like(x_seq), torch.empty_like(x_seq)
    grid = (triton.cdiv(N, BLOCK),)
    part = torch.empty(grid[0], dtype=torch.float32, device=x_seq.device) if hinge_delta is not None else None
    _lif_fwd_kernel[grid](
        x_seq,
        noise if noise is not None else x_seq,
        s_seq,
        v_seq,
        part if part is not None else v_seq,
        N,
        T,
        fs.tau,
        fs.v_th,
        fs.v_reset,
        float(hinge_delta or 0.0),
        HARD=fs.hard,
        HAS_NOISE=noise is not None,
        HINGE=part is not None,
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
        enable_fp_fusion=False,
    )
    return s_seq, v_seq, part


def _channels(v_seq: Tensor) -> tuple[int, int, bool]:
    """(C, H*W, channels_last) of one step [B, C, ...] as the kernel indexes it."""
    c = v_seq.shape[2]
    hw = v_seq[0, 0, 0].numel() if v_seq.dim() > 3 else 1
    step = v_seq[0]
    cl = (
        step.dim() == 4 and not step.is_contiguous() and step.is_contiguous(memory_format=torch.channels_last)
    )
    return c, hw, cl


def lif_backward(
    v_seq: Tensor, g_s: Tensor | None, g_v: Tensor | None, fs: FusedSpec, pg: PenaltyGrad | None = None
) -> Tensor:
    """dL/dI [T, B, ...] in V's dtype from the saved V, the upstream gradients and a V-penalty's gradient."""
    T, N = v_seq.shape[0], v_seq[0].numel()
    g_s = same_layout(g_s, v_seq) if g_s is not None else None
    g_v = same_layout(g_v, v_seq) if g_v is not None else None
    dx = torch.empty_like(v_seq)
    grid = (triton.cdiv(N, BLOCK),)
    pen = 0 if pg is None else (1 if pg.kind == "hinge" else 2)
    c, hw, cl = _channels(v_seq)
    _lif_bwd_kernel[grid](
        v_seq,
        g_s if g_s is not None else v_seq,
        g_v if g_v is not None else v_seq,
        dx,
        pg.coef if pen == 1 else dx,  # type: ignore[union-attr]
        pg.alpha if pen == 2 else dx,  # type: ignore[union-attr]
        pg.beta if pen == 2 else dx,  # type: ignore[union-attr]
        N,
        T,
        (T - 1) * N,
        fs.tau,
        fs.v_th,
        fs.v_reset,
        fs.gamma,
        float(pg.delta) if pen == 1 else 0.0,  # type: ignore[union-attr]
        c,
        hw,
        HARD=fs.hard,
        DETACH=fs.detach_reset,
        HAS_GS=g_s is not None,
        HAS_GV=g_v is not None,
        SURR=SURROGATE_IDS[fs.surrogate],
        PEN=pen,
        CL=cl,
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
        enable_fp_fusion=False,
    )
    return dx
