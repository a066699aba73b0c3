"""Importers: checkpoints written by reference code, renamed onto snnbench's architectures.

``snnrat``: the SNN-RAT reference code (Ding et al., NeurIPS 2022; github.com/putshua/SNN-RAT,
``models/WideResNet.py`` and ``models/VGG.py``), whose ``main_train.py`` saves ``model.state_dict()``
(optionally with DataParallel's ``module.`` prefix). Its names map onto ours as follows.

WideResNet-16-k (our ``wrn16``: ``net`` is one ``nn.Sequential``)::

    conv1.*                        -> net.0.*                     stem conv
    block{g}.{i}.bn1|conv1|bn2|conv2.*  -> net.{1 + 2(g-1) + i}.<same>.*   pre-activation blocks
    block{g}.{i}.convShortcut.weight  -> net.{...}.shortcut.weight
    block{g}.{i}.convex.comb       -> net.{...}.convex            ConvexCombination(2) weights
    bn1.*                          -> net.7.*                     final BN (then LIF, avg-pool, fc)
    fc.*                           -> net.11.*

VGG-11 (``cfg['vgg11']`` in five ``layer1..layer5`` sequentials, then ``classifier``): every Conv2d and
BatchNorm2d of ``layer{L}.{j}`` in order onto ours in order, and ``classifier.1|3|5`` (the three Linear
layers) onto our three Linear layers. The reference's ``TensorNormalization`` keeps mean/std as plain
attributes, not in the state dict: the imported checkpoint carries the reference's CIFAR normalisation
(``data_loaders.py``: mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010)) in our in-model
``mean``/``std`` buffers, unless ``norm="dataset"`` keeps the registry dataset's. Neurons carry no tensors in
either code (IF neuron, threshold 1, hard reset, triangle surrogate width 1: our defaults).

Any reference key without a counterpart, or any model tensor left unfilled, is a one-line error that lists
them; shapes are checked one by one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from snnbench.errors import BenchError
from snnbench.specs import regular_file

SNNRAT_NORM = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
SNNRAT_VGG_CFG = {"vgg11": [[64, "A"], [128, 256, "A"], [512, 512, 512, "A"], [512, 512], []]}
_SUFFIX = re.compile(r"\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def _param_modules(net: nn.Module, kinds: tuple[type, ...]) -> list[str]:
    """Names (relative to ``net``) of the modules of the given kinds, in registration order."""
    return [name for name, m in net.named_modules() if isinstance(m, kinds)]


def snnrat_wrn_prefixes(net: nn.Module) -> dict[str, str]:
    """Reference module prefix -> our prefix (inside ``net``), read off our WRN-16 structure."""
    from snnbench.snn.models import PreActBlock

    seq = list(net.children())
    blocks = [i for i, m in enumerate(seq) if isinstance(m, PreActBlock)]
    bns = [i for i, m in enumerate(seq) if isinstance(m, nn.BatchNorm2d)]
    fcs = [i for i, m in enumerate(seq) if isinstance(m, nn.Linear)]
    if len(blocks) != 6 or not bns or not fcs or not isinstance(seq[0], nn.Conv2d):
        raise BenchError("snnrat wrn: the target model is not snnbench's WRN-16 (6 pre-activation blocks)")
    out = {"conv1": "net.0", "bn1": f"net.{bns[-1]}", "fc": f"net.{fcs[-1]}"}
    for k, idx in enumerate(blocks):
        ref, ours = f"block{k // 2 + 1}.{k % 2}", f"net.{idx}"
        for part in ("bn1", "conv1", "bn2", "conv2"):
            out[f"{ref}.{part}"] = f"{ours}.{part}"
        out[f"{ref}.convShortcut"] = f"{ours}.shortcut"
        out[f"{ref}.convex.comb"] = f"{ours}.convex"  # a parameter, not a module prefix
    return out


def snnrat_vgg_prefixes(net: nn.Module, cfg: list[list] | None = None) -> dict[str, str]:
    """Reference prefixes ``layer{L}.{j}`` / ``classifier.{j}`` -> ours, matched in order of appearance."""
    cfg = cfg or SNNRAT_VGG_CFG["vgg11"]
    ref: list[str] = []
    for L, layer in enumerate(cfg, 1):
        j = 0
        for v in layer:
            if v == "A":
                j += 1
            else:  # Conv2d, BatchNorm2d, LIFSpike
                ref += [f"layer{L}.{j}", f"layer{L}.{j + 1}"]
                j += 3
    ref += ["classifier.1", "classifier.3", "classifier.5"]
    ours = [f"net.{n}" for n in _param_modules(net, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    if len(ours) != len(ref):
        raise BenchError(
            f"snnrat vgg: the target model has {len(ours)} conv/BN/linear layers, the reference VGG-11 {len(ref)}"
        )
    return dict(zip(ref, ours, strict=True))


def rename(
    state: dict[str, torch.Tensor], prefixes: dict[str, str]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename reference keys by their module prefix; returns (renamed, unmatched reference keys)."""
    out, unmatched = {}, []
    for key, value in state.items():
        if key in prefixes:  # a bare parameter (convex.comb)
            out[prefixes[key]] = value
            continue
        m = _SUFFIX.search(key)
        prefix = key[: m.start()] if m else None
        if prefix is not None and prefix in prefixes:
            out[prefixes[prefix] + key[m.start() :]] = value
        else:
            unmatched.append(key)
    return out, unmatched


def _strip(state: dict) -> dict[str, torch.Tensor]:
    """Plain tensors, without DataParallel's ``module.`` prefix; nested ``{"state_dict": ...}`` unwrapped."""
    for key in ("state_dict", "model", "net"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return {
        (k[7:] if k.startswith("module.") else k): v for k, v in state.items() if isinstance(v, torch.Tensor)
    }


NORMS = ("reference", "dataset", "custom")


def import_snnrat(
    state: dict, model: nn.Module, arch: str, norm: str = "reference",
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> dict[str, torch.Tensor]:
    """A complete state dict for ``model`` (an ``SNNClassifier`` of arch ``wrn16`` or ``vgg11``) from an
    SNN-RAT reference state dict; raises a one-line BenchError naming unmatched keys.

    ``norm``: the in-model normalisation the checkpoint was trained with: ``reference`` (SNN-RAT's CIFAR
    mean/std), ``dataset`` (the registry dataset's) or ``custom`` (``mean_std``, one value per channel)."""
    builders: dict[str, Callable[[nn.Module], dict[str, str]]] = {
        "wrn16": snnrat_wrn_prefixes,
        "vgg11": snnrat_vgg_prefixes,
    }
    if arch not in builders:
        raise BenchError(f"--model: snnrat checkpoints map onto wrn16 or vgg11 models, not arch {arch!r}")
    if norm not in NORMS:
        raise BenchError(f"--norm: {norm!r} is not one of {', '.join(NORMS)}")
    if (norm == "custom") != (mean_std is not None):
        raise BenchError("--mean/--std: give both (one value per input channel) to set the normalisation")
    renamed, unmatched = rename(_strip(state), builders[arch](model.net))
    own = model.state_dict()
    unmatched += [k for k in renamed if k not in own]
    skip = {"mean", "std"} | {k for k in own if not k.startswith("net.")}  # in-model normalisation, encoder
    missing = [k for k in own if k not in renamed and k not in skip]
    shapes = [
        f"{k} {tuple(renamed[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in renamed and renamed[k].shape != own[k].shape
    ]
    if unmatched or missing or shapes:
        parts = []
        if unmatched:
            parts.append(
                f"{len(unmatched)} reference keys unmatched: {', '.join(unmatched[:8])}{' ...' if len(unmatched) > 8 else ''}"
            )
        if missing:
            parts.append(
                f"{len(missing)} model keys not filled: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
            )
        if shapes:
            parts.append(f"shape mismatch: {'; '.join(shapes[:3])}")
        raise BenchError(f"snnrat checkpoint does not map onto {arch}: {' | '.join(parts)}")
    out = {k: (renamed[k].to(own[k].dtype) if k in renamed else own[k].clone()) for k in own}
    if norm == "reference":
        mean, std = SNNRAT_NORM
        if own["mean"].numel() != len(mean):
            raise BenchError(
                f"--norm reference: the SNN-RAT normalisation has {len(mean)} channels, the dataset {own['mean'].numel()}; use --norm dataset"
            )
        out["mean"] = torch.tensor(mean, dtype=own["mean"].dtype).view_as(own["mean"])
        out["std"] = torch.tensor(std, dtype=own["std"].dtype).view_as(own["std"])
    if norm == "custom":
        assert mean_std is not None
        mean, std = mean_std
        if len(mean) != own["mean"].numel() or len(std) != own["std"].numel():
            raise BenchError(f"--mean/--std: give {own['mean'].numel()} values each (the dataset's channels), "
                             f"got {len(mean)} and {len(std)}")
        if any(not (s_ > 0) for s_ in std):
            raise BenchError("--std: every value must be > 0")
        out["mean"] = torch.tensor(mean, dtype=own["mean"].dtype).view_as(own["mean"])
        out["std"] = torch.tensor(std, dtype=own["std"].dtype).view_as(own["std"])
    return out


def load_reference(path: str | Path) -> dict:
    """Read a reference checkpoint with ``torch.load(weights_only=True)``; one-line error when unreadable."""
    p = regular_file(path, "checkpoint")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zips, disallowed globals
        raise BenchError(
            f"checkpoint {p} is corrupt or not a plain state dict ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})"
        ) from None
    if not isinstance(obj, dict):
        raise BenchError(f"checkpoint {p} holds a {type(obj).__name__}, not a state dict")
    return obj
