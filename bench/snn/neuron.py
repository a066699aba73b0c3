"""Multi-step LIF/IF neurons, plain torch: the reference path.

Dynamics (docs/defenses.md 1.1; TGO Eq. 1-3 with a general reset), per layer and time step t = 1..T:

    V[t] = tau * U[t-1] + I[t]                  # charge; tau = 1 is the IF neuron of the Ding et al. code
    S[t] = H(V[t] - V_th)                       # fire; surrogate gradient in backward
    U[t] = V[t] (1 - S[t]) + V_reset S[t]       # hard reset (gradient kept through the reset)
    U[t] = V[t] - V_th S[t]                     # soft reset (reset by subtraction)

``V[t]`` (the pre-spike, pre-reset potential) is what MPD-SGR and TGO regularise; set ``record = True`` to
keep it (with its graph) in ``self.v_pre`` as a ``[T, B, ...]`` tensor.

Gradient modes (docs/defenses.md 4.1), chosen by the attacker's view of the model:
- ``bptt``: surrogate gradient through time (spikes, membrane carry-over and reset).
- ``bptr``: backward through firing rate as in the SNN-RAT/StoG ``RateBp``: forward spikes unchanged,
  ``dL/dI[t] = dL/dS[t] * 1[mean_t S > 0]``.
- ``bptr_rga``: the rate-gradient approximation of Bu et al. (SR/FEEL ``RateBp(x, tau)``), from the mean
  input current x = mean_t I[t]: g = 1[1-tau <= x <= 2] (1 - 0.2 + 0.2 tau)/(tau + 1) + 1[0 <= x <= 1-tau] 0.2.
- ``cba``: the conversion-based approximation (Sharmin et al. 2019; SNN-RAT section 3.2): the attacker sees the
  ANN that shares the SNN's weights, every spiking layer replaced by ReLU in forward AND backward (SNN-RAT code:
  ``LIFSpike`` with T = 0 -> ``nn.ReLU``). With direct (static) encoding the T identical time copies average
  to that ANN's logits; with a randomized encoder it is the mean ANN output over the encoder's samples [I].
- ``hart``: HART (Hao et al., ICLR 2024, official ``LIFSpike`` mode ``avg``): the membrane carry-over is
  detached (``V[t] = tau U[t-1].detach() + I[t]``) and the input current's gradient is averaged over time
  and given to every step (``GradAvg``), so ``dL/dI[t] = (1/T) sum_t' dL/dS[t'] h(V[t'] - V_th)`` for every
  t: the rate-based part of the gradient, shaped by each step's potential through the triangle surrogate
  of width gamma (HART searches gamma per model; the protocol does, see attacks/sapgd.py ``WidthSearch``).

Stateful attacker surrogates (bench/snn/surrogate.py): ``assg`` keeps per-step moments of ``|V - V_th|``
across the attack's iterations (:class:`~bench.snn.surrogate.ASSGMoments`, on the neuron as ``self.assg``;
the attack resets it per batch); ``pdsg`` takes its width from this forward's potentials of steps ``0..t``.
Both run on the reference loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snnbench.snn.surrogate import (
    ADAPTIVE,
    PDSG,
    POTENTIAL_SURROGATES,
    SURROGATES,
    ASSGMoments,
    pdsg_sigma,
    spike,
    stateful_spike,
)

GRAD_MODES = ("bptt", "bptr", "bptr_rga", "cba", "hart")
RESETS = ("hard", "soft")


@dataclass(frozen=True)
class NeuronSpec:
    """Neuron hyper-parameters; defaults are the Ding et al. code (docs/defenses.md 1.5 / section 5)."""

    tau: float = 1.0
    v_th: float = 1.0
    reset: str = "hard"
    v_reset: float = 0.0
    surrogate: str = "triangle"
    gamma: float = 1.0
    detach_reset: bool = False

    def __post_init__(self) -> None:
        from snnbench.errors import BenchError, did_you_mean

        if self.reset not in RESETS:
            raise BenchError(f"neuron.reset: {self.reset!r} is not a reset; {did_you_mean(self.reset, RESETS)}")
        if self.surrogate not in SURROGATES:
            raise BenchError(
                f"neuron.surrogate: {self.surrogate!r} is not a surrogate; {did_you_mean(self.surrogate, SURROGATES)}"
            )
        if not self.gamma > 0:
            raise BenchError(f"neuron.gamma must be > 0, got {self.gamma}")
        if not self.v_th > 0:
            raise BenchError(f"neuron.v_th must be > 0, got {self.v_th}")


class RateMask(torch.autograd.Function):
    """BPTR (SNN-RAT ``RateBp``): pass spikes forward, gate the gradient by 1[rate > 0] per neuron."""

    @staticmethod
    def forward(ctx, x_seq: Tensor, s_seq: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward((s_seq.mean(0, keepdim=True) > 0).to(x_seq.dtype))
        return s_seq

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        return grad_out * mask, None


class RateRGA(torch.autograd.Function):
    """BPTR as the rate-gradient approximation (SR/FEEL ``RateBp(x, tau)``, Bu et al. CVPR 2023)."""

    @staticmethod
    def forward(ctx, x_seq: Tensor, s_seq: Tensor, tau: float) -> Tensor:  # type: ignore[override]
        xm = x_seq.mean(0, keepdim=True)
        g = ((xm >= 1 - tau) & (xm <= 2)).to(x_seq.dtype) * ((1 - 0.2 + 0.2 * tau) / (tau + 1))
        g = g + ((xm >= 0) & (xm <= 1 - tau)).to(x_seq.dtype) * 0.2
        ctx.save_for_backward(g)
        return s_seq

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (g,) = ctx.saved_tensors
        return grad_out * g, None, None


class GradAvg(torch.autograd.Function):
    """HART's ``GradAvg``: identity forward; backward gives every time step the mean over T of the gradient."""

    @staticmethod
    def forward(ctx, x_seq: Tensor) -> Tensor:  # type: ignore[override]
        return x_seq.view_as(x_seq)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        return grad_out.mean(0, keepdim=True).expand_as(grad_out)


def conversion_relu(x: Tensor) -> Tensor:
    """CBA (Sharmin et al. 2019; SNN-RAT 3.2): the spiking layer acts as the ReLU of the ANN that shares the
    SNN's weights, in forward and backward."""
    return torch.relu(x)


class LIFNeuron(nn.Module):
    """Multi-step LIF neuron on time-merged input ``[T*B, *shape]`` (T is set by the classifier).

    Subclasses (defenses) override :meth:`leak` (FEEL's per-step, per-neuron leak) or
    :meth:`membrane_noise` (TGO's noisy LIF). ``randomized`` subclasses keep their randomness in eval mode
    when ``stochastic_at_inference`` is set: attack libraries call ``model.eval()``, which must not silently
    switch a defense off (docs/ecosystem.md 2.3).
    """

    randomized = False
    #: "auto" (= "fused" wherever the neuron's hooks allow it: Triton kernels on CUDA, the fused torch loop on
    #: CPU, where it is parity-tested and not slower, README "Performance"), "torch" (reference loop) or
    #: "fused" (bench/snn/fused.py)
    backend = "auto"
    #: set by subclasses whose ``membrane_noise(v, t)`` uses ``v`` only for its shape/dtype/device, so the
    #: fused path may sample the noise up front (same global-RNG draws in the same order)
    noise_independent_of_v = False

    def __init__(self, spec: NeuronSpec, shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.spec = spec
        self.shape = tuple(shape)
        self.T = 1
        self.grad_mode = "bptt"
        self.attack_surrogate: tuple[str, float] | None = None
        #: ASSG moments (attacker surrogate ``assg``), created on first use, reset by the attack per batch
        self.assg: ASSGMoments | None = None
        self.record = False
        self.v_pre: Tensor | None = None
        self.spikes: Tensor | None = None
        #: a V-penalty (bench.snn.fused.VPenalty) the fused path computes while recording with gradients;
        #: armed by bench.snn.fused.fused_penalty, read back there as ``penalty = (spec, value)``
        self.v_penalty = None
        self.penalty: tuple | None = None

    # --- hooks for defenses -------------------------------------------------------------------------
    def leak(self, t: int) -> Tensor | float:
        """Leak factor tau applied to U[t-1] at step t (scalar by default)."""
        return self.spec.tau

    def membrane_noise(self, v: Tensor, t: int) -> Tensor | None:
        """Additive noise on V[t] before thresholding; None for a deterministic neuron."""
        return None

    # --- dynamics -----------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if self.grad_mode == "cba":
            return conversion_relu(x)
        x_seq = x.view(self.T, -1, *x.shape[1:])  # [T, B, ...]
        if self.grad_mode == "bptt":
            s_seq = self._run(x_seq)
        elif self.grad_mode == "hart":
            s_seq = self._run(GradAvg.apply(x_seq), detach_membrane=True)
        else:
            with torch.no_grad():
                s_seq = self._run(x_seq)
            if self.grad_mode == "bptr":
                s_seq = RateMask.apply(x_seq, s_seq)
            elif self.grad_mode == "bptr_rga":
                s_seq = RateRGA.apply(x_seq, s_seq, float(self.spec.tau))
            else:  # pragma: no cover - guarded by the classifier
                raise AssertionError(self.grad_mode)
        return s_seq.flatten(0, 1)

    def _run(self, x_seq: Tensor, detach_membrane: bool = False) -> Tensor:
        """Unroll charge -> fire -> reset over T; returns spikes [T, B, ...]. ``detach_membrane``: HART's
        carry-over without gradient."""
        self.penalty = None
        if not detach_membrane and self._fused_ok(x_seq):
            return self._run_fused(x_seq)
        sp = self.spec
        surrogate, gamma = self.attack_surrogate or (sp.surrogate, sp.gamma)
        if surrogate == ADAPTIVE and (self.assg is None or self.assg.a != float(gamma)):
            self.assg = ASSGMoments(a=float(gamma))
        u = torch.zeros_like(x_seq[0])
        spikes, v_pres, history = [], [], []
        for t in range(x_seq.shape[0]):
            v = self.leak(t) * (u.detach() if detach_membrane else u) + x_seq[t]  # charge
            noise = self.membrane_noise(v, t)
            if noise is not None:
                v = v + noise
            s = self._fire(v - sp.v_th, t, surrogate, gamma, history)  # fire
            s_r = s.detach() if sp.detach_reset else s
            if sp.reset == "hard":  # reset
                u = v * (1 - s_r) + sp.v_reset * s_r
            else:
                u = v - sp.v_th * s_r
            spikes.append(s)
            if self.record:
                v_pres.append(v)
        s_seq = torch.stack(spikes)
        if self.record:
            self.v_pre = torch.stack(v_pres)
            self.spikes = s_seq
        return s_seq

    def _fire(self, z: Tensor, t: int, surrogate: str, gamma: float, history: list[Tensor]) -> Tensor:
        """H(z) with the surrogate's backward; the stateful attacker surrogates take their width from the
        neuron's state (``assg``: moments across iterations) or this forward's potentials (``pdsg``)."""
        if surrogate == ADAPTIVE:
            assert self.assg is not None
            return stateful_spike(z, surrogate, self.assg.sharpness(t, z, update=torch.is_grad_enabled()))
        if surrogate == PDSG:
            history.append(z)  # the std of V - V_th is that of V
            return stateful_spike(z, surrogate, pdsg_sigma(history))
        return spike(z, surrogate, gamma)

    def _fused_ok(self, x_seq: Tensor) -> bool:
        """Use the fused path unless the reference is asked for or an unsupported hook is overridden."""
        if self.backend == "torch":
            return False
        if self.attack_surrogate is not None and self.attack_surrogate[0] in POTENTIAL_SURROGATES:
            return False  # widths from the potentials: the reference loop
        cls = type(self)
        if cls.leak is not LIFNeuron.leak:  # per-step leak tensors (FEEL): reference path
            return False
        return cls.membrane_noise is LIFNeuron.membrane_noise or self.noise_independent_of_v

    def _run_fused(self, x_seq: Tensor) -> Tensor:
        from snnbench.snn.fused import FusedSpec, fused_lif

        sp = self.spec
        surrogate, gamma = self.attack_surrogate or (sp.surrogate, sp.gamma)
        fs = FusedSpec(float(sp.tau), float(sp.v_th), sp.reset == "hard", float(sp.v_reset), sp.detach_reset,
                       surrogate, float(gamma))
        noise = None
        if type(self).membrane_noise is not LIFNeuron.membrane_noise:
            draws = [self.membrane_noise(x_seq[t], t) for t in range(x_seq.shape[0])]  # same RNG order
            if any(d is not None for d in draws):
                noise = torch.stack([torch.zeros_like(x_seq[0]) if d is None else d.expand_as(x_seq[0]) for d in draws])
        pen = self.v_penalty if self.record and torch.is_grad_enabled() else None
        s_seq, v_seq, value = fused_lif(x_seq, fs, noise, pen)
        if self.record:
            self.v_pre, self.spikes = v_seq, s_seq
            self.penalty = None if pen is None else (pen, value)
        return s_seq

    def extra_repr(self) -> str:
        sp = self.spec
        return f"tau={sp.tau}, v_th={sp.v_th}, reset={sp.reset}, surrogate={sp.surrogate}({sp.gamma}), shape={self.shape}"


def set_backend(model: torch.nn.Module, backend: str) -> int:
    """Set the neuron backend ("auto", "torch" or "fused") on every LIF neuron of ``model``; returns the
    number of neurons changed."""
    from snnbench.errors import BenchError, did_you_mean
    from snnbench.snn.fused import BACKENDS

    valid = ("auto", *BACKENDS)
    if backend not in valid:
        raise BenchError(f"neuron backend: {backend!r} is not a backend; {did_you_mean(backend, valid)}")
    neurons = [m for m in model.modules() if isinstance(m, LIFNeuron)]
    for n in neurons:
        n.backend = backend
    return len(neurons)
