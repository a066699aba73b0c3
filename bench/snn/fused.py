"""Fused multi-step LIF/IF neuron: the whole T-loop in one autograd node, with a hand-written backward.

The plain-torch loop of :mod:`bench.snn.neuron` records ~8 autograd nodes per time step and layer and keeps
3 tensors per step for backward; this path records one node per layer and keeps only the pre-spike
potentials ``V[1..T]`` (everything else is recomputed from them). On CUDA the loop runs in one Triton
kernel per direction (:mod:`bench.snn.triton_lif`, membrane in registers); elsewhere it is a torch loop
under ``no_grad`` (fewer, larger ops and no autograd bookkeeping).

Forward (docs/defenses.md 1.1, TGO Eq. 1-3), with optional pre-sampled additive noise ``N[t]`` (TGO NLIF):

    V[t] = tau U[t-1] + I[t] (+ N[t]);   S[t] = H(V[t] - V_th)
    U[t] = V[t] (1 - S[t]) + V_reset S[t]   (hard)   |   U[t] = V[t] - V_th S[t]   (soft)

Backward (BPTT with surrogate h, upstream grads gS[t] and gV[t] when ``V`` feeds a regulariser), with
dU[T] = 0 and the reset term dropped when ``detach_reset``:

    hard: dV[t] = gV[t] + h(V[t] - V_th) (gS[t] + dU[t] (V_reset - V[t])) + dU[t] (1 - S[t])
    soft: dV[t] = gV[t] + h(V[t] - V_th) (gS[t] - V_th dU[t]) + dU[t]
    dI[t] = dN[t] = dV[t];   dU[t-1] = tau dV[t]

V-penalties (:class:`VPenalty`): a regulariser on ``V`` that the fused node computes itself, returning its value
as a third output. Its V-gradient is added to ``gV[t]`` inside the backward above, so there is no autograd graph
and no extra pass over ``V`` (on CUDA the hinge's value is also summed inside the forward kernel). With
z = V - V_th (rounded to V's dtype, as the reference computes it) and an upstream scalar gradient g:

    hinge (TGO Eq. 12):    P = s sum max(0, delta - |z|);           dP/dV = -s sign(z) 1[|z| < delta]
    moments (MPD-SGR Eq. 13, 16): mu, sd = mean, unbiased std of z over batch and space per (t, c);
        P = s sum_{t,c} f(mu, sd + eps, *params);   dP/dV = a[t, c] + b[t, c] z   (affine in V per (t, c)),
        b = s f_sd / ((M - 1) sd),  a = s f_mu / M - b mu,  M = elements per (t, c)

``f`` is the defense's own function (its gradients f_mu, f_sd come from autograd on the small [T, C]
tensors), so the formula stays in the defense file. The 1[|z| < delta] and sign(0) = 0 conventions are
torch's for ``clamp(min=0)`` and ``abs``, so the gradient equals autograd through the reference.

Choices: spikes and ``V`` equal the reference bit for bit (same fp32/bf16 operations in the same order; the
Triton kernels are compiled with ``enable_fp_fusion=False`` so no multiply-add is contracted; the torch loop
writes the hard reset as ``where(S, V_reset, V)``, which equals ``V (1 - S) + V_reset S`` for every finite
``V``). Gradients are computed in fp32 and agree with autograd through the reference to rounding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from snnbench.snn.fused_spec import PENALTY_KINDS, FusedSpec, PenaltyGrad, VPenalty, same_layout  # noqa: F401  (re-exported)
from snnbench.snn.surrogate import SURROGATES

BACKENDS = ("torch", "fused")










def moment_dims(v_seq: Tensor) -> tuple[int, ...]:
    """Batch and spatial axes of [T, B, C, ...] (FC [T, B, F]: the batch axis)."""
    return (1, *range(3, v_seq.dim()))


def centred(v_seq: Tensor, v_th: float) -> Tensor:
    """z = V - V_th in V's dtype (the reference's rounding)."""
    return v_seq - v_th


def hinge_value(v_seq: Tensor, v_th: float, delta: float) -> Tensor:
    """sum max(0, delta - |V - V_th|) in fp32 (each term rounded in V's dtype, as the reference)."""
    return (delta - centred(v_seq, v_th).abs()).clamp_(min=0).sum(dtype=torch.float32)


def moments_of(v_seq: Tensor, v_th: float) -> tuple[Tensor, Tensor]:
    """(mean, unbiased std) of V - V_th per (t, c) in fp32: [T, C] each."""
    sd, mu = torch.std_mean(centred(v_seq, v_th).float(), moment_dims(v_seq))
    return mu, sd


def _moment_coefficients(mu: Tensor, sd: Tensor, pen: VPenalty, coef: Tensor, m: int) -> PenaltyGrad:
    """alpha, beta of dP/dV = alpha + beta z from autograd of ``pen.fn`` on the [T, C] moments."""
    with torch.enable_grad():
        mu_, sd_ = mu.detach().requires_grad_(True), sd.detach().requires_grad_(True)
        val = pen.fn(mu_, sd_ + pen.eps, *pen.params).sum()  # type: ignore[misc]
        f_mu, f_sd = torch.autograd.grad(val, (mu_, sd_))
    beta = coef * f_sd / ((m - 1) * sd)
    alpha = coef * f_mu / m - beta * mu
    return PenaltyGrad("moments", alpha=alpha.float().contiguous(), beta=beta.float().contiguous())


def _penalty_torch(
    v_seq: Tensor, fs: FusedSpec, pen: VPenalty
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(value, mu, sd) of ``pen`` on V without the kernels."""
    if pen.kind == "hinge":
        return pen.scale * hinge_value(v_seq, fs.v_th, pen.params[0]), None, None
    mu, sd = moments_of(v_seq, fs.v_th)
    val = pen.fn(mu, sd + pen.eps, *pen.params).sum()  # type: ignore[misc]
    return pen.scale * val.float(), mu, sd


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


def _backward_torch(
    v_seq: Tensor, g_s: Tensor | None, g_v: Tensor | None, fs: FusedSpec, pg: PenaltyGrad | None = None
) -> Tensor:
    """Reverse-time recurrence of the module docstring; the surrogate and the reset factors are computed
    for all T at once, leaving two fused multiply-adds per step. ``pg`` adds a V-penalty's gradient."""
    v32 = v_seq.float()
    z = v32 - fs.v_th  # [T, B, ...]
    g_pen = None if pg is None else _penalty_grad_torch(v_seq, z, fs, pg)
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
    if g_pen is not None:
        dx.add_(g_pen)
    for t in range(v_seq.shape[0] - 2, -1, -1):
        du = dx[t + 1] * fs.tau  # dU[t]
        if hr is not None:
            dx[t].addcmul_(du, hr[t])
        if carry is not None:
            dx[t].addcmul_(du, carry[t])
        else:
            dx[t].add_(du)
    return dx.to(v_seq.dtype)


def _penalty_grad_torch(v_seq: Tensor, z: Tensor, fs: FusedSpec, pg: PenaltyGrad) -> Tensor:
    """dP/dV [T, B, ...] in fp32 (module docstring); ``z`` = V - V_th in fp32."""
    zr = z if v_seq.dtype == torch.float32 else centred(v_seq, fs.v_th).float()  # the reference's rounding
    if pg.kind == "hinge":
        return torch.where(zr.abs() < pg.delta, -zr.sign(), 0.0).mul_(pg.coef)
    assert pg.alpha is not None and pg.beta is not None
    shape = (v_seq.shape[0], 1, v_seq.shape[2]) + (1,) * (v_seq.dim() - 3)  # [T, 1, C, 1, ...]
    return pg.beta.view(shape) * zr + pg.alpha.view(shape)


class FusedLIFFunction(torch.autograd.Function):
    """``(x_seq [T, B, ...], noise or None, spec, V-penalty or None) -> (spikes, V, penalty value)``; one
    node for the whole time loop. The value is a 0-dim fp32 tensor (0, not differentiable, without a
    penalty)."""

    @staticmethod
    def forward(ctx, x_seq: Tensor, noise: Tensor | None, fs: FusedSpec, pen: VPenalty | None):  # type: ignore[override]
        x_seq = dense_steps(x_seq)
        if noise is not None:
            noise = same_layout(noise.to(x_seq.dtype), x_seq)
        mu = sd = None
        hinge = pen is not None and pen.kind == "hinge"
        if triton_available(x_seq.device):
            from snnbench.snn.triton_lif import lif_forward

            s_seq, v_seq, part = lif_forward(x_seq, noise, fs, pen.params[0] if hinge else None)  # type: ignore[union-attr]
            if hinge:
                value = pen.scale * part.sum()  # type: ignore[union-attr]
            elif pen is not None:
                value, mu, sd = _penalty_torch(v_seq, fs, pen)
        else:
            s_seq, v_seq = _forward_torch(x_seq, noise, fs)
            if pen is not None:
                value, mu, sd = _penalty_torch(v_seq, fs, pen)
        if pen is None:
            value = torch.zeros((), dtype=torch.float32, device=x_seq.device)
            ctx.mark_non_differentiable(value)
        ctx.save_for_backward(v_seq, mu, sd)
        ctx.fs, ctx.pen, ctx.has_noise = fs, pen, noise is not None
        ctx.set_materialize_grads(False)
        return s_seq, v_seq, value

    @staticmethod
    def backward(ctx, g_s: Tensor | None, g_v: Tensor | None, g_p: Tensor | None):  # type: ignore[override]
        v_seq, mu, sd = ctx.saved_tensors
        fs, pen = ctx.fs, ctx.pen
        pg = None
        if g_p is not None and pen is not None:
            coef = g_p.detach().float() * pen.scale
            if pen.kind == "hinge":
                pg = PenaltyGrad("hinge", coef=coef.reshape(1), delta=pen.params[0])
            else:
                m = v_seq[0].numel() // v_seq.shape[2]  # elements per (t, c)
                pg = _moment_coefficients(mu, sd, pen, coef, m)
        if g_s is None and g_v is None and pg is None:
            return None, None, None, None
        if triton_available(v_seq.device):
            from snnbench.snn.triton_lif import lif_backward

            dx = lif_backward(v_seq, g_s, g_v, fs, pg)
        else:
            dx = _backward_torch(v_seq, g_s, g_v, fs, pg)
        return dx, (dx if ctx.has_noise else None), None, None


def fused_lif(
    x_seq: Tensor, fs: FusedSpec, noise: Tensor | None = None, penalty: VPenalty | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the fused neuron on ``x_seq`` [T, B, ...]; returns spikes and pre-spike potentials V, both
    [T, B, ...] and differentiable, and the value of ``penalty`` on V (0-dim fp32; its gradient reaches
    x through the fused backward, with no graph over V)."""
    return FusedLIFFunction.apply(x_seq, noise, fs, penalty)


def fused_penalty(neuron: Any, pen: VPenalty) -> Tensor | None:
    """``pen``'s value as the last fused forward of ``neuron`` computed it, or None when it did not (the
    reference backend, another spec, or not recording with gradients): then the caller computes the
    penalty from ``neuron.v_pre`` by autograd. The neuron is armed with ``pen``, so its next fused forward
    computes it: the first recorded step of a run takes the autograd route, later ones the fused one,
    with equal values and gradients (tests/test_fused.py)."""
    got = getattr(neuron, "penalty", None)
    if got is not None and got[0] == pen:
        return got[1]
    neuron.v_penalty = pen
    return None
