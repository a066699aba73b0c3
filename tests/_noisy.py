"""The randomized test model shared by the EOT, check and contract tests: snnbench's LIF with Gaussian
membrane noise at inference (one definition; tests import it)."""

from __future__ import annotations

import copy

import torch

from snnbench.snn.neuron import LIFNeuron


class NoisyLIF(LIFNeuron):
    """LIF with Gaussian membrane noise of std ``sigma`` at inference: declares ``randomized``."""

    randomized = True
    sigma = 0.5

    def membrane_noise(self, v, t):
        return self.sigma * torch.randn_like(v)


def make_noisy(model, sigma: float = 0.5):
    """Turn every LIF neuron of ``model`` (in place) into a :class:`NoisyLIF` of std ``sigma``."""
    for n in model.neurons():
        n.__class__ = NoisyLIF
        n.sigma = sigma
    return model


def noisy_copy(model, sigma: float = 0.5):
    """A deep copy of ``model`` with noisy neurons (the original stays deterministic)."""
    return make_noisy(copy.deepcopy(model), sigma)
