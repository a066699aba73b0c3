"""Spiking architectures (docs/defenses.md 1.4), registered by name.

Every architecture works on time-merged tensors ``[T*B, ...]``: convolutions, BatchNorm (statistics shared
over time and batch, as ``MergeTemporalDim`` in the SNN-RAT code) and pooling see T*B images; spiking layers
are built by ``make_neuron(shape)`` so that a defense can swap in its own neuron (per-neuron shapes let FEEL
and StoG create per-neuron parameters).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from snnbench.kind_table import Registry

MakeNeuron = Callable[[tuple[int, ...]], nn.Module]
ArchBuilder = Callable[..., nn.Module]

ARCHITECTURES: Registry[ArchBuilder] = Registry("architecture")


def register_arch(name: str) -> Callable[[ArchBuilder], ArchBuilder]:
    """Register an architecture builder ``f(in_shape, num_classes, make_neuron, **params)``."""
    return ARCHITECTURES.register(name)


def _init(module: nn.Module) -> None:
    """Ding et al. init: Kaiming-normal (fan_out) convs, BN gamma 1 beta 0, Linear bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def _conv_block(c_in: int, c_out: int, hw: tuple[int, int], make_neuron: MakeNeuron) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), make_neuron((c_out, *hw))]


VGG_CFG: dict[str, list[int | str]] = {
    # SNN-RAT models/VGG.py ``cfg`` ("A" = AvgPool2d(2)); the same code base as MPD-SGR/FEEL/SR
    "vgg11": [64, "A", 128, 256, "A", 512, 512, 512, "A", 512, 512],
    "vgg16": [64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512, "A"],
}


def _vgg(
    cfg: list[int | str], in_shape: tuple[int, int, int], num_classes: int, make_neuron: MakeNeuron,
    width: float, fc: int,
) -> nn.Module:
    """[conv3x3-BN-LIF | AvgPool2] per ``cfg`` entry, then FC``fc``-LIF FC``fc``-LIF FC(classes)."""
    c, h, w = in_shape
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "A":
            layers.append(nn.AvgPool2d(2))
            h, w = h // 2, w // 2
        else:
            out = max(1, int(round(int(v) * width)))
            layers += _conv_block(c, out, (h, w), make_neuron)
            c = out
    layers += [
        nn.Flatten(),
        nn.Linear(c * h * w, fc),
        make_neuron((fc,)),
        nn.Linear(fc, fc),
        make_neuron((fc,)),
        nn.Linear(fc, num_classes),
    ]
    net = nn.Sequential(*layers)
    _init(net)
    return net


@register_arch("vgg11")
def vgg11(
    in_shape: tuple[int, int, int], num_classes: int, make_neuron: MakeNeuron, width: float = 1.0, fc: int = 4096
) -> nn.Module:
    """VGG-11 of SNN-RAT ``cfg['vgg11']``: conv64-AP | conv128 conv256-AP | conv512 x3-AP | conv512 x2 |
    FC4096-LIF FC4096-LIF FC(classes). ``width``/``fc`` shrink it for tests (1.0/4096 is the paper model)."""
    return _vgg(VGG_CFG["vgg11"], in_shape, num_classes, make_neuron, width, fc)


@register_arch("vgg16")
def vgg16(
    in_shape: tuple[int, int, int], num_classes: int, make_neuron: MakeNeuron, width: float = 1.0, fc: int = 4096
) -> nn.Module:
    """VGG-16 of the SNN-RAT code base ``cfg['vgg16']`` (MPD-SGR Table 5, Tiny-ImageNet): conv64 x2-AP |
    conv128 x2-AP | conv256 x3-AP | conv512 x3-AP | conv512 x3-AP | FC4096-LIF FC4096-LIF FC(classes).
    13 conv + 3 FC layers; on 64x64 inputs the flatten is 512*2*2. MPD-SGR does not print its VGG-16, so the
    classifier head follows the code base's VGG (the VGG-11 head) [I]."""
    return _vgg(VGG_CFG["vgg16"], in_shape, num_classes, make_neuron, width, fc)


class PreActBlock(nn.Module):
    """WRN pre-activation block BN-LIF-conv-BN-LIF-conv with a learnable convex combination of the
    shortcut and residual branches, ``c0 * shortcut + c1 * residual``, c = (0.5, 0.5) (SNN-RAT WideResNet)."""

    def __init__(self, c_in: int, c_out: int, stride: int, hw: tuple[int, int], make_neuron: MakeNeuron) -> None:
        super().__init__()
        h2, w2 = (hw[0] - 1) // stride + 1, (hw[1] - 1) // stride + 1
        self.bn1, self.act1 = nn.BatchNorm2d(c_in), make_neuron((c_in, *hw))
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(c_out), make_neuron((c_out, h2, w2))
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        self.convex = nn.Parameter(torch.tensor([0.5, 0.5]))
        self.out_hw = (h2, w2)

    def forward(self, x: Tensor) -> Tensor:
        o = self.act1(self.bn1(x))
        res = self.conv2(self.act2(self.bn2(self.conv1(o))))
        short = x if self.shortcut is None else self.shortcut(o)
        return self.convex[0] * short + self.convex[1] * res


@register_arch("wrn16")
def wrn16(
    in_shape: tuple[int, int, int], num_classes: int, make_neuron: MakeNeuron, widen: int = 4, base: int = 16
) -> nn.Module:
    """WRN-16-k (k = ``widen``, 4 in the papers): conv3x3(16) -> 3 groups x 2 blocks (16k/32k/64k,
    strides 1/2/2) -> BN -> LIF -> global average pool (AvgPool8 on 32x32) -> FC."""
    c, h, w = in_shape
    layers: list[nn.Module] = [nn.Conv2d(c, base, 3, 1, 1, bias=False)]
    c_in, hw = base, (h, w)
    for group, stride in enumerate((1, 2, 2)):
        c_out = base * widen * 2**group
        for i in range(2):
            blk = PreActBlock(c_in, c_out, stride if i == 0 else 1, hw, make_neuron)
            layers.append(blk)
            c_in, hw = c_out, blk.out_hw
    layers += [
        nn.BatchNorm2d(c_in),
        make_neuron((c_in, *hw)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c_in, num_classes),
    ]
    net = nn.Sequential(*layers)
    _init(net)
    return net


@register_arch("small_conv")
def small_conv(
    in_shape: tuple[int, int, int],
    num_classes: int,
    make_neuron: MakeNeuron,
    channels: tuple[int, ...] = (16, 32),
) -> nn.Module:
    """Small conv SNN for 8x8 (digits) and 28x28 (MNIST) inputs: [conv3x3-BN-LIF-AP2] per entry of
    ``channels``, then FC(classes). With (16, 32) on digits: 2 conv layers, ~6k parameters."""
    c, h, w = in_shape
    layers: list[nn.Module] = []
    for out in channels:
        layers += _conv_block(c, out, (h, w), make_neuron)
        layers.append(nn.AvgPool2d(2))
        c, h, w = out, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, num_classes)]
    net = nn.Sequential(*layers)
    _init(net)
    return net
