"""Architectures build on their input sizes and produce [B, K] logits; layouts follow docs/defenses.md 1.4."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snnbench.snn.classifier import SNNClassifier
from snnbench.snn.encoders import DirectEncoder, PoissonEncoder
from snnbench.snn.models import ARCHITECTURES
from snnbench.snn.neuron import LIFNeuron, NeuronSpec


def _model(arch: str, shape, T=2, **params) -> SNNClassifier:
    net = ARCHITECTURES[arch](shape, 10, lambda s: LIFNeuron(NeuronSpec(), s), **params)
    return SNNClassifier(net, DirectEncoder(), T, [0.5] * shape[0], [0.25] * shape[0])


@pytest.mark.parametrize(
    "arch,shape,params",
    [
        ("small_conv", (1, 8, 8), {}),
        ("small_conv", (1, 28, 28), {}),
        ("vgg11", (3, 32, 32), {"width": 0.0625, "fc": 32}),
        ("wrn16", (3, 32, 32), {"widen": 1, "base": 4}),
    ],
)
def test_architectures_give_logits(arch, shape, params):
    m = _model(arch, shape, **params)
    assert m(torch.rand(3, *shape)).shape == (3, 10)


def test_vgg11_paper_layout():
    net = ARCHITECTURES["vgg11"]((3, 32, 32), 10, lambda s: LIFNeuron(NeuronSpec(), s))
    convs = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [64, 128, 256, 512, 512, 512, 512, 512]
    linears = [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]
    assert linears == [(512 * 4 * 4, 4096), (4096, 4096), (4096, 10)]
    assert sum(isinstance(m, LIFNeuron) for m in net.modules()) == 10


def test_wrn16_4_widths_and_convex_sums():
    net = ARCHITECTURES["wrn16"]((3, 32, 32), 10, lambda s: LIFNeuron(NeuronSpec(), s), widen=4)
    convs = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs == [16] + [64] * 4 + [128] * 4 + [256] * 4
    convex = [p for n, p in net.named_parameters() if n.endswith("convex")]
    assert len(convex) == 6 and all(torch.equal(c, torch.tensor([0.5, 0.5])) for c in convex)


def test_poisson_encoder_is_randomized_and_direct_is_not():
    shape = (1, 8, 8)
    net = ARCHITECTURES["small_conv"](shape, 10, lambda s: LIFNeuron(NeuronSpec(), s))
    m = SNNClassifier(net, PoissonEncoder(), 4, [0.5], [0.25]).eval()
    x = torch.rand(16, *shape)
    assert m.randomized
    assert not torch.equal(m.encoder(x, 4), m.encoder(x, 4))
    assert not _model("small_conv", shape).randomized


def test_T_below_one_is_rejected():
    from snnbench.errors import BenchError

    with pytest.raises(BenchError, match="T must be >= 1"):
        _model("small_conv", (1, 8, 8), T=0)
