"""The plain-data types the fused neuron and its Triton kernels share (a leaf: torch only), kept apart so
that :mod:`snnbench.snn.triton_lif` and :mod:`snnbench.snn.fused` do not import each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


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


PENALTY_KINDS = ("hinge", "moments")


@dataclass(frozen=True)
class VPenalty:
    """A regulariser on the pre-spike potential V folded into the fused neuron (module docstring).

    ``kind`` "hinge": ``params = (delta,)``; "moments": ``fn(mu, sigma, *params) -> [T, C]`` with sigma =
    std + ``eps``. ``scale`` multiplies value and gradient. Build with :meth:`hinge` / :meth:`moments`.
    Equal specs compare equal (``fn`` by identity), so a caller can check what a forward computed.
    """

    kind: str
    params: tuple[Any, ...] = ()
    scale: float = 1.0
    fn: Callable[..., Tensor] | None = None
    eps: float = 0.0

    def __post_init__(self) -> None:
        assert self.kind in PENALTY_KINDS, self.kind
        assert self.kind != "moments" or self.fn is not None, "moments penalty needs fn"

    @staticmethod
    def hinge(delta: float, scale: float = 1.0) -> VPenalty:
        """``scale * sum max(0, delta - |V - V_th|)`` over every step, sample and neuron (TGO Eq. 12)."""
        return VPenalty("hinge", (float(delta),), float(scale))

    @staticmethod
    def moments(fn: Callable[..., Tensor], *params: Any, eps: float = 0.0, scale: float = 1.0) -> VPenalty:
        """``scale * sum_{t,c} fn(mu, std + eps, *params)`` of V - V_th per (t, c) (MPD-SGR Eq. 16)."""
        return VPenalty("moments", tuple(params), float(scale), fn, float(eps))


@dataclass
class PenaltyGrad:
    """The penalty's V-gradient as the backward consumes it: hinge ``coef`` (0-dim, fp32, upstream grad times
    scale) and ``delta``; moments ``alpha``/``beta`` [T, C] fp32 (dV = alpha + beta z)."""

    kind: str
    coef: Tensor | None = None
    delta: float = 0.0
    alpha: Tensor | None = None
    beta: Tensor | None = None


def same_layout(t: Tensor, ref: Tensor) -> Tensor:
    """``t`` with exactly ``ref``'s strides (a copy only when they differ)."""
    return t if t.stride() == ref.stride() else torch.empty_like(ref, dtype=t.dtype).copy_(t)
