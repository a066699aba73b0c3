"""``SNNClassifier``: image in [0, 1] -> logits averaged over T (the SNN contract of docs/design.md).

Normalisation happens inside the model, so attacks work in [0, 1] pixel space. Neuron state is local to
each call (membranes start at 0), so two calls on the same input give the same logits for deterministic
defenses, and attack libraries need no reset hook.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from snnbench.errors import BenchError, did_you_mean
from snnbench.snn.neuron import GRAD_MODES, LIFNeuron
from snnbench.snn.surrogate import ADAPTIVE, ASSG_A, ATTACK_SURROGATES


@contextmanager
def record_neurons(neurons: list[LIFNeuron]) -> Iterator[list[LIFNeuron]]:
    """Record ``v_pre`` and spikes of ``neurons`` during the block; clear them (and the flag) after."""
    for n in neurons:
        n.record = True
    try:
        yield neurons
    finally:
        for n in neurons:
            n.record, n.v_pre, n.spikes = False, None, None


class SNNClassifier(nn.Module):
    """Wrap a time-merged spiking network with an encoder, in-model normalisation and T-step decoding."""

    def __init__(
        self,
        net: nn.Module,
        encoder: nn.Module,
        T: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        if T < 1:
            raise BenchError(f"T must be >= 1, got {T}")
        self.net, self.encoder = net, encoder
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.set_T(T)

    def set_T(self, T: int) -> None:
        """Set the number of time steps on the classifier and every neuron."""
        self.T = int(T)
        for n in self.neurons():
            n.T = self.T

    def neurons(self) -> list[LIFNeuron]:
        return [m for m in self.modules() if isinstance(m, LIFNeuron)]

    @property
    def randomized(self) -> bool:
        """True when any part (encoder, neuron noise, gates) samples at inference."""
        return any(getattr(m, "randomized", False) for m in self.modules() if m is not self)

    def forward(self, x: Tensor) -> Tensor:
        if self.encoder.uses_normalization:
            x = (x - self.mean) / self.std
        h = self.encoder(x, self.T)  # [T*B, C, H, W]
        out = self.net(h)  # [T*B, K]
        return out.view(self.T, -1, out.shape[-1]).mean(0)  # [B, K]

    def reset_attack_state(self) -> None:
        """Forget the attacker surrogates' state (ASSG moments): an attack calls it at the start of a batch."""
        for n in self.neurons():
            n.assg = None

    def recording(self):
        """Record pre-spike potentials ``v_pre`` and spikes of every neuron during the block."""
        return record_neurons(self.neurons())

    @contextmanager
    def gradient_mode(self, mode: str = "bptt", surrogate: str | None = None, gamma: float | None = None):
        """Temporarily set the attacker's gradient mode and (optionally) surrogate on every neuron."""
        if mode not in GRAD_MODES:
            raise BenchError(f"grad_mode: {mode!r} is not a gradient mode; {did_you_mean(mode, GRAD_MODES)}")
        if surrogate is not None and surrogate not in ATTACK_SURROGATES:
            raise BenchError(f"surrogate: {surrogate!r} is unknown; {did_you_mean(surrogate, ATTACK_SURROGATES)}")
        if surrogate == ADAPTIVE and gamma is not None and not 0 < gamma < 0.5:
            raise BenchError(f"surrogate assg: gamma is ASSG's a and must be in (0, 0.5), got {gamma}")
        neurons = self.neurons()
        saved = [(n.grad_mode, n.attack_surrogate) for n in neurons]
        for n in neurons:
            n.grad_mode = mode
            if surrogate is not None:
                own = ASSG_A if surrogate == ADAPTIVE else n.spec.gamma
                n.attack_surrogate = (surrogate, gamma if gamma is not None else own)
        try:
            yield self
        finally:
            for n, (g, s) in zip(neurons, saved, strict=True):
                n.grad_mode, n.attack_surrogate = g, s


class AttackerView(nn.Module):
    """The model as an attacker sees it: a fixed gradient mode and surrogate, same forward spikes.

    Attack libraries get this module; it owns the classifier's parameters (for device detection).
    """

    def __init__(self, model: SNNClassifier, grad_mode: str = "bptt", surrogate: str | None = None,
                 gamma: float | None = None) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)  # libraries restore *this* module's mode afterwards
        self.grad_mode, self.surrogate, self.gamma = grad_mode, surrogate, gamma
        with model.gradient_mode(grad_mode, surrogate, gamma):  # validate names now
            pass
        self.reset_state()  # stateful attacker surrogates (ASSG) start afresh with every view

    def forward(self, x: Tensor) -> Tensor:
        with self.model.gradient_mode(self.grad_mode, self.surrogate, self.gamma):
            return self.model(x)

    def reset_state(self) -> None:
        """Reset stateful attacker surrogates (``assg``) of the model, when it has any."""
        reset = getattr(self.model, "reset_attack_state", None)
        if callable(reset):
            reset()
