"""FEEL-SNN: frequency encoding + evolutionary leak (Xu et al., NeurIPS 2024; docs/defenses.md 2.4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snnbench.defenses.base import DEFENSES, Defense
from snnbench.errors import BenchError
from snnbench.snn.models import MakeNeuron
from snnbench.snn.neuron import LIFNeuron, NeuronSpec


def default_radii(T: int, height: int, width: int) -> tuple[int, ...]:
    """r_t = max(1, min(H, W)/2 - t s): s = 2 for >= 32 px (FEEL's [16, 14, 12, 10] on CIFAR [P]), else 1.

    On 8x8 digits with T = 4 this gives [4, 3, 2, 1]: r_1 covers the whole spectrum (x_1 = x, as FEEL's
    r_1 = 16 on 32x32) and each later step drops one ring of frequencies [I]. The FEEL step of 2/32 of the
    image side is below one frequency bin on 8x8, hence the step of 1.
    """
    half, step = min(height, width) // 2, 2 if min(height, width) >= 32 else 1
    return tuple(max(1, half - t * step) for t in range(T))


def box_masks(radii: tuple[int, ...], height: int, width: int) -> Tensor:
    """Centred square masks M_t (FEEL Eq. 9-10): 1 on rows/cols [c - r, c + r), as ``make_filter_0``."""
    masks = torch.zeros(len(radii), height, width)
    ch, cw = height // 2, width // 2
    for t, r in enumerate(radii):
        masks[t, max(0, ch - r) : ch + r, max(0, cw - r) : cw + r] = 1.0
    return masks  # [T, H, W]


class FrequencyEncoder(nn.Module):
    """FE (FEEL Eq. 7-11): x_t = |F^-1(ifftshift(M_t * fftshift(F(x))))|, later steps low-passed harder.

    Differentiable (attacks back-propagate through it); perturbations live in image space before FE.
    """

    randomized = False

    def __init__(self, radii: tuple[int, ...], height: int, width: int, normalize: bool = False) -> None:
        super().__init__()
        self.radii = tuple(radii)
        self.uses_normalization = normalize
        self.register_buffer("masks", box_masks(self.radii, height, width), persistent=False)

    def forward(self, x: Tensor, T: int) -> Tensor:
        if T != len(self.radii):
            raise BenchError(
                f"feel.radii has {len(self.radii)} entries but T = {T}; give one radius per time step"
            )
        spec = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))  # [B, C, H, W] complex, centred
        filtered = spec.unsqueeze(0) * self.masks[:, None, None]  # [T, B, C, H, W]
        out = torch.fft.ifft2(torch.fft.ifftshift(filtered, dim=(-2, -1))).abs()
        return out.flatten(0, 1)  # [T*B, C, H, W]


class EvolutionaryLeakNeuron(LIFNeuron):
    """LIF with a learnable leak per time step and per neuron (FEEL Eq. 12-14, ``LIFSpikeTau``):
    u^t = lambda^t * u^{t-1} (1 - O^{t-1}) + m^t, lambda of shape (T, *shape), initialised to the neuron's
    tau (1.0 in FEEL's scripts), unconstrained, trained by the shared SGD (weight decay applies) [C]."""

    def __init__(self, spec: NeuronSpec, shape: tuple[int, ...], T: int) -> None:
        super().__init__(spec, shape)
        self.taus = nn.Parameter(torch.full((T, *shape), float(spec.tau)))

    def leak(self, t: int) -> Tensor:
        if self.T != self.taus.shape[0]:
            raise BenchError(
                f"FEEL leak was built for T = {self.taus.shape[0]}, model runs with T = {self.T}"
            )
        return self.taus[t]


@DEFENSES.register("feel")
class FEEL(Defense):
    """FEEL-SNN (Xu et al., NeurIPS 2024): frequency encoding (FE) + evolutionary leak (EL).

    FE replaces direct coding: at step t the first conv sees |iFFT(M_t FFT(x))| with a centred box of
    radius r_t, radii strictly decreasing (Eq. 7-11; absolute value and the [c-r, c+r) window follow
    ``models/layers.py ft`` / ``make_filter_0`` [C]). Like FEEL's VGG (normaliser built but never called
    [C:VGG_TAU.py]), FE runs on raw [0, 1] pixels unless ``normalize`` is set.
    EL replaces the scalar leak of every spiking layer by a (T, *shape) trainable tensor, init 1.0 (Eq. 12-14).
    No extra loss. Radii: ``radii`` param, else :func:`default_radii` (CIFAR T=4 -> [16, 14, 12, 10] as the
    paper; 8x8 digits T=4 -> [4, 3, 2, 1], a choice [I]). ``frequency_encoding``/``evolutionary_leak`` switch
    the parts off (config ``fe`` = FE only, FEEL Table 1 "+FE"). AT: PGD eps 2/255, 2 steps, alpha 1/255
    (FEEL ``at_train``), the base recipe. Deterministic at inference (no EOT needed).
    """

    perf_workload = ("vanilla", "torch")  # a learnable per-step leak: the reference (unfused) loop

    paper = "Xu et al., NeurIPS 2024 (FEEL-SNN)"
    description = (
        "frequency encoding (low-pass radius shrinking over t) + learnable per-neuron, per-step leak"
    )

    @dataclass(frozen=True)
    class Params:
        frequency_encoding: bool = True
        evolutionary_leak: bool = True
        radii: tuple[int, ...] = ()
        normalize: bool = False

        def __post_init__(self) -> None:
            if any(r < 1 for r in self.radii):
                raise BenchError(f"feel.radii must be >= 1, got {list(self.radii)}")

    mechanism_sense = {"leak_change": "higher"}

    def mechanism(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        """FEEL's evolutionary leak: how far the learned per-step leaks moved from their initial tau (mean
        |lambda - tau|); empty for the frequency-encoding-only ablation."""
        cells = [m for m in model.modules() if isinstance(m, EvolutionaryLeakNeuron)]
        if not cells:
            return {}
        with torch.no_grad():
            return {"leak_change": float(torch.cat([(m.taus - m.spec.tau).abs().flatten() for m in cells]).mean())}

    def make_neuron(self, spec: NeuronSpec, T: int) -> MakeNeuron:
        if not self.params.evolutionary_leak:
            return super().make_neuron(spec, T)
        return lambda shape: EvolutionaryLeakNeuron(spec, shape, T)

    def make_encoder(self, name: str, T: int, shape: tuple[int, ...]) -> nn.Module:
        if not self.params.frequency_encoding:
            return super().make_encoder(name, T, shape)
        if name != "direct":
            raise BenchError(
                f"feel: frequency encoding replaces direct coding, but the model uses encoder {name!r}; valid: direct"
            )
        _, h, w = shape
        radii = self.params.radii or default_radii(T, h, w)
        if len(radii) != T:
            raise BenchError(f"feel.radii: {list(radii)} has {len(radii)} entries, need T = {T}")
        return FrequencyEncoder(radii, h, w, self.params.normalize)
