"""Spiking activity on clean inputs: firing rate per spiking layer and synaptic operations per inference.

SNN papers report robustness together with spiking activity, the energy proxy of neuromorphic hardware: a
spike costs one accumulate (AC) per synapse it reaches, a dense layer one multiply-accumulate (MAC) per
weight and output (Horowitz, ISSCC 2014: 0.9 pJ per 32-bit AC vs 4.6 pJ per MAC at 45 nm). Measured here,
per spiking layer ``l`` (a neuron module: snnbench's :class:`~bench.snn.neuron.LIFNeuron`, or a
spikingjelly / snntorch neuron found by :mod:`snnbench.adapters`), over ``N`` clean samples and all time
steps:

- **firing rate** ``r_l = S_l / (N T n_l)``: spikes per neuron per time step, where ``S_l`` counts the
  layer's spikes (non-zero outputs) and ``N T n_l`` its outputs (every call of the module summed, so it is
  exact for multi-step ``[T*B, ...]`` / ``[T, B, ...]`` modules and for single-step modules called T times).
- **SynOps** ``SynOps_l = (1/N) sum_t sum_i s_i[t] f_i``: every spike ``s_i[t]`` of neuron ``i`` costs
  ``f_i`` accumulates, ``f_i`` = its fan-out, the number of (output element, weight) pairs of the next
  synaptic layer(s) (``nn.Linear``, ``nn.Conv1d/2d/3d``) that its spike reaches. Counted exactly by a
  forward hook on each synaptic layer: with the spike counts ``e`` reaching its input,
  ``sum(layer_with_unit_weights_and_no_bias(e))`` = ``sum_i e_i f_i`` (padding, stride, groups and the
  image border included). ``SynOps = sum_l SynOps_l``. This is the synaptic-operation count of Rueckauer
  et al. (Front. Neurosci. 11:682, 2017, section 2.4: an SNN operation is a synaptic update, so a spike
  costs its neuron's fan-out) and of Merolla et al. (Science 345, 2014: SOPs). [I] choices:

  * an average pool between a spiking layer and the next synaptic layer (SNN-RAT VGG, ``small_conv``) is
    folded into that layer, as a neuromorphic deployment does: a spike counts with the fan-out of the
    pooled element it falls in (``e`` = spikes per pooled element = pooled value x window size). The rate
    formula ``SOPs_l = fr_{l-1} T FLOPs_l`` (Zhou et al., Spikformer, ICLR 2023, appendix) with the
    preceding spiking layer's rate gives 1/k^2 of this across a k x k average pool (it counts the pooled
    value, not the spikes); without a pool the two agree.
  * a max pool of spikes is an OR: each non-zero pooled element counts as one event.
  * a gate that removes spikes after the neuron (StoG's Bernoulli gates) removes their synaptic
    operations: SynOps counts what reaches the synapses; the firing rate is the neuron's own.
  * synaptic layers whose input is not spikes (the first layer on a directly encoded image) are dense
    MACs: ``dense_macs`` per inference, outputs x fan-in, reported beside SynOps, not in it.

Which tensors carry spikes is tracked by identity of their storage (``data_ptr`` and size), so views
(``flatten``, ``view``, spikingjelly's time-merging containers) and same-valued copies keep their layer; a
tensor computed from spikes in any other way (a residual sum, BatchNorm) is not spikes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from snnbench.snn.neuron import LIFNeuron

SYNAPTIC = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
ADAPTIVE_AVG_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
             nn.AdaptiveMaxPool3d)
#: test samples the pipeline measures activity on (the first ones, clean)
ACTIVITY_SAMPLES = 256
FORMULA = ("firing rate = spikes / (neurons x time steps x samples); SynOps per inference = sum over spikes of "
           "the spiking neuron's fan-out into the next synaptic layer, average pools folded in (Rueckauer et al. 2017)")


@dataclass
class _Mark:
    """A tensor that carries spikes of spiking layer ``layer``; ``scale`` spikes per unit of its value."""

    tensor: Tensor
    layer: int
    scale: float


@dataclass
class _Layer:
    name: str
    spikes: float = 0.0
    slots: int = 0
    synops: float = 0.0
    binary: bool = True


@dataclass
class _Counter:
    """Forward hooks' state for one measurement."""

    sources: dict[int, int]  # id(neuron module) -> layer index
    layers: list[_Layer]
    marks: dict[tuple[int, int], _Mark] = field(default_factory=dict)
    dense_macs: float = 0.0

    def find(self, x: Any) -> _Mark | None:
        if not isinstance(x, Tensor) or x.numel() == 0:
            return None
        return self.marks.get((x.data_ptr(), x.numel()))

    def mark(self, t: Tensor, layer: int, scale: float) -> None:
        if t.numel():  # the mark keeps ``t`` alive, so its storage cannot be reused by another tensor
            self.marks[(t.data_ptr(), t.numel())] = _Mark(t, layer, scale)

    def hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) and output else output
        if not isinstance(out, Tensor):
            return
        if id(module) in self.sources:
            self._spikes(self.sources[id(module)], out)
            return
        x = args[0] if args else None
        m = self.find(x)
        if isinstance(module, SYNAPTIC):
            if m is None:
                self.dense_macs += out.numel() * module.weight[0].numel()
            else:
                self.layers[m.layer].synops += _synops(module, x, m.scale)
            return
        if m is not None:
            self._pass(module, x, out, m)

    def _spikes(self, layer: int, out: Tensor) -> None:
        rec = self.layers[layer]
        nz = out != 0
        rec.spikes += float(nz.sum())
        rec.slots += out.numel()
        rec.binary = rec.binary and bool(((out == 0) | (out == 1)).all())
        self.mark(out, layer, 1.0)

    def _pass(self, module: nn.Module, x: Tensor, out: Tensor, m: _Mark) -> None:
        """Carry the mark through pools, reshapes and gates (module docstring); anything else drops it."""
        if self.find(out) is not None:  # a container whose last child marked it already
            return
        scale = _pool_scale(module, x, out)
        if scale is not None:
            self.mark(out, m.layer, m.scale * scale)
        elif isinstance(module, MAX_POOLS) and m.scale == 1.0:
            self.mark(out, m.layer, 1.0)
        elif out.numel() == x.numel():
            if torch.equal(out.reshape(-1), x.reshape(-1)):
                self.mark(out, m.layer, m.scale)
            elif m.scale == 1.0 and bool(((out == 0) | (x.reshape(out.shape) != 0)).all()):
                self.mark(out, m.layer, 1.0)  # a gate: spikes only where there were spikes


def _pool_dims(module: nn.Module) -> int:
    if isinstance(module, (nn.AvgPool1d, nn.AdaptiveAvgPool1d)):
        return 1
    return 2 if isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)) else 3


def _pool_scale(module: nn.Module, x: Tensor, out: Tensor) -> float | None:
    """Spikes per unit of an average pool's output value: its divisor, when every window has the same one
    (None otherwise, and for any other module)."""
    if isinstance(module, AVG_POOLS):
        k = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * _pool_dims(module)
        pad = module.padding if isinstance(module.padding, tuple) else (module.padding,)
        if module.ceil_mode or (any(pad) and not module.count_include_pad):
            return None  # border windows have their own divisor
        return float(getattr(module, "divisor_override", None) or math.prod(k))
    if isinstance(module, ADAPTIVE_AVG_POOLS):
        d = _pool_dims(module)
        if x.dim() < d or out.dim() < d:
            return None
        ins, outs = x.shape[-d:], out.shape[-d:]
        if any(o == 0 or i % o for i, o in zip(ins, outs, strict=True)):
            return None  # windows of different sizes
        return float(math.prod(i // o for i, o in zip(ins, outs, strict=True)))
    return None


def _synops(module: nn.Module, x: Tensor, scale: float) -> float:
    """``sum_i e_i f_i`` for spike counts ``e`` at the input of a synaptic layer: the layer with unit
    weights and no bias applied to ``e``, summed (float64 sum of exact small integers)."""
    e = (x != 0).to(torch.float32) if scale == 1.0 else x.to(torch.float32) * scale
    ones = torch.ones_like(module.weight, dtype=torch.float32)
    if isinstance(module, nn.Linear):
        return float(e.sum(dtype=torch.float64)) * module.out_features
    if e.dim() == module.weight.dim() + 1:  # multi-step [T, B, C, ...] (spikingjelly layer.Conv2d)
        e = e.flatten(0, 1)
    return float(module._conv_forward(e, ones, None).sum(dtype=torch.float64))


def spike_sources(model: nn.Module) -> list[nn.Module]:
    """The spiking neuron modules of ``model``: a :class:`~snnbench.adapters.ForeignModel`'s
    ``spiking_neurons()`` (spikingjelly, snntorch, snnbench), else every snnbench ``LIFNeuron``."""
    found = getattr(model, "spiking_neurons", None)
    if callable(found):
        return list(found())
    return [m for m in model.modules() if isinstance(m, LIFNeuron)]


def not_measured(reason: str, n: int = 0) -> dict[str, Any]:
    return {"status": "not measured", "reason": reason, "n_samples": n, "firing_rate": None, "synops": None,
            "spikes": None, "dense_macs": None, "T": None, "layers": [], "formula": FORMULA}


def measure_activity(model: nn.Module, x: Tensor, T: int | None = None, batch: int = 16) -> dict[str, Any]:
    """Firing rate per spiking layer and SynOps per inference of ``model`` on the clean images ``x``
    (``[N, C, H, W]`` in [0, 1], on the model's device), in chunks of ``batch``; definitions in the module
    docstring. ``T``: time steps, only to report neurons per layer (the rates need none).

    Returns a JSON-able dict: ``status`` ("measured" or "not measured" with ``reason``), ``n_samples``,
    ``firing_rate`` (all layers' spikes / all their outputs), ``synops``, ``spikes`` and ``dense_macs``
    per inference, and ``layers``: ``[{layer, name, neurons, firing_rate, spikes, synops, fan_out}]``
    (``fan_out`` = SynOps per spike).
    """
    n = int(x.shape[0])
    T = T if T is not None else (model.T if isinstance(getattr(model, "T", None), int) else None)
    sources = spike_sources(model)
    if not sources:
        return not_measured("no spiking neurons of a supported library (snnbench, spikingjelly, snntorch) "
                            "were found in the model", n)
    names = {id(m): name for name, m in model.named_modules()}
    counter = _Counter({id(m): i for i, m in enumerate(sources)}, [_Layer(names.get(id(m), "?")) for m in sources])
    handles = [m.register_forward_hook(counter.hook) for m in model.modules()]
    try:
        with torch.no_grad():
            for i in range(0, n, batch):
                model(x[i : i + batch])
                counter.marks.clear()
    finally:
        for h in handles:
            h.remove()
    return _payload(counter, n, T)


def _payload(c: _Counter, n: int, T: int | None) -> dict[str, Any]:
    layers = []
    for i, rec in enumerate(c.layers):
        layers.append({
            "layer": i,
            "name": rec.name,
            "neurons": int(round(rec.slots / (n * T))) if T and n else None,
            "firing_rate": rec.spikes / rec.slots if rec.slots else None,
            "spikes": rec.spikes / n if n else None,
            "synops": rec.synops / n if n else None,
            "fan_out": rec.synops / rec.spikes if rec.spikes else None,
            "binary": rec.binary,
        })
    spikes, slots = sum(r.spikes for r in c.layers), sum(r.slots for r in c.layers)
    if not slots:
        return not_measured("the spiking neurons found were never called by the model's forward", n)
    return {
        "status": "measured",
        "reason": "",
        "n_samples": n,
        "T": T,
        "firing_rate": spikes / slots,
        "synops": sum(r.synops for r in c.layers) / n,
        "spikes": spikes / n,
        "dense_macs": c.dense_macs / n,
        "layers": layers,
        "formula": FORMULA,
    }
