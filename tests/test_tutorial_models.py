"""SNNs built the way each library's own tutorials build them go through ``evaluate`` (issue 22): snntorch
``snn.Leaky`` in the explicit-state style (tutorial 5: ``init_leaky()``, returns ``(spk_rec, mem_rec)``)
and the ``init_hidden=True`` style (tutorial 7: ``nn.Sequential``, ``utils.reset``, returns the spike
record ``[T, B, K]``); spikingjelly's ``activation_based`` CSNN (conv + ``layer.BatchNorm2d`` + IF nodes,
multi-step, ``functional.reset_net``, returns ``[T, B, K]``); a plain-torch LIF conv net with BatchNorm.

Each is trained briefly on digits, then evaluated with ``protocol="standard_smoke"``. The checked number:
the protocol's robust accuracy is below clean accuracy and at most the robust accuracy of an independent
PGD written in this file (the protocol must be at least as strong as a plain attack on the same samples),
within the binomial tolerance; the BatchNorm models in eval mode are not batch-dependent.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import snnbench
from snnbench.protocol import binomial_tolerance

T, N = 4, 60
EPS = 0.1


def _digits():
    x, y = snnbench.load_dataset("digits", "train")
    return x, y


def _train(model: nn.Module, logits_of, steps: int = 120, lr: float = 5e-3, after_step=None) -> nn.Module:
    """Adam on digits batches of 128 with cross-entropy on ``logits_of(model(x))``."""
    x, y = _digits()
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr)
    model.train()
    for _ in range(steps):
        i = torch.randint(0, len(y), (128,))
        loss = F.cross_entropy(logits_of(model(x[i])), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if after_step:
            after_step(model)
    return model.eval()


def _independent_pgd(model: nn.Module, logits_of, steps: int = 20) -> float:
    """Robust accuracy under a plain L-inf PGD (random start, step eps/4) written here, first N test samples."""
    x, y = snnbench.load_dataset("digits", "test")
    x, y = x[:N], y[:N]
    g = torch.Generator().manual_seed(0)
    adv = (x + EPS * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(logits_of(model(adv)), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = (x + (adv.detach() + EPS / 4 * grad.sign() - x).clamp(-EPS, EPS)).clamp(0, 1)
    with torch.no_grad():
        return float((logits_of(model(adv)).argmax(1) == y).float().mean())


def _check(model: nn.Module, logits_of, tmp_path, reset=None, **kw) -> snnbench.Report:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = snnbench.evaluate(model, protocol="standard_smoke", n=N, db=tmp_path / "t.sqlite", randomized=False,
                                checks=False, substitute=False, **kw)
    row = rep.table.iloc[-1]
    assert row["attack"] == "standard_smoke" and rep.clean > 0.6, rep
    if reset:
        reset(model)
    pgd = _independent_pgd(model, logits_of)
    tol = binomial_tolerance(pgd, N)
    assert row["robust_acc"] < rep.clean
    assert row["robust_acc"] <= pgd + tol, (row["robust_acc"], pgd)
    assert "batch_dependent (model)" not in rep.failed_checks
    assert "non_differentiable (model)" not in rep.failed_checks
    assert rep.blocking_checks == [], rep.failed_checks  # an honest tutorial model is ranked
    print(f"\n{tmp_path.name}: independent PGD-20 {100 * pgd:.1f}%\n{rep!r}")  # the numbers (pytest -s)
    return rep


# --- snntorch --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def snn():
    return pytest.importorskip("snntorch")


def test_snntorch_tutorial5_explicit_state(snn, tmp_path):
    """snntorch tutorial 5: Leaky neurons with explicit membrane state, returns (spk_rec, mem_rec)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(64, 100), snn.Leaky(beta=0.9)
            self.fc2, self.lif2 = nn.Linear(100, 10), snn.Leaky(beta=0.9)

        def forward(self, x):
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            spk_rec, mem_rec = [], []
            cur1 = self.fc1(x.flatten(1) * 4)
            for _ in range(T):
                spk1, mem1 = self.lif1(cur1, mem1)
                spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
                spk_rec.append(spk2)
                mem_rec.append(mem2)
            return torch.stack(spk_rec, dim=0), torch.stack(mem_rec, dim=0)

    torch.manual_seed(0)
    net = _train(Net(), lambda out: out[1].mean(0))  # the tutorial trains on the membrane record
    # default output rule: the spike count (the tutorial's accuracy); "membrane": the mean membrane
    rep = _check(net, lambda out: out[0].mean(0), tmp_path)
    assert rep.card.libraries == ("snntorch",)
    (tmp_path / "m").mkdir()
    mem = _check(net, lambda out: out[1].mean(0), tmp_path / "m", output="membrane")
    assert mem.clean >= rep.clean - 0.1


def test_snntorch_tutorial7_init_hidden(snn, tmp_path):
    """snntorch tutorial 7: nn.Sequential of init_hidden Leaky neurons, reset with utils.reset, time loop
    outside the layers; returns the spike record [T, B, K]."""
    from snntorch import surrogate, utils

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            sg = surrogate.fast_sigmoid(slope=25)
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 100), snn.Leaky(beta=0.5, spike_grad=sg, init_hidden=True),
                                     nn.Linear(100, 10), snn.Leaky(beta=0.5, spike_grad=sg, init_hidden=True, output=True))

        def forward(self, x):
            utils.reset(self.net)
            spk_rec = []
            for _ in range(T):
                spk, _mem = self.net(x * 4)
                spk_rec.append(spk)
            return torch.stack(spk_rec)

    torch.manual_seed(0)
    net = _train(Net(), lambda out: out.mean(0) * 4)
    _check(net, lambda out: out.mean(0), tmp_path)


# --- spikingjelly ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sj():
    return pytest.importorskip("spikingjelly.activation_based")


def test_spikingjelly_csnn_with_batchnorm_multistep(sj, tmp_path):
    """spikingjelly's conv tutorial CSNN (layer.Conv2d + layer.BatchNorm2d + IFNode(ATan), multi-step,
    functional.reset_net after each batch), returning the output spikes [T, B, K]."""
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    class CSNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_fc = nn.Sequential(
                layer.Conv2d(1, 8, kernel_size=3, padding=1, bias=False), layer.BatchNorm2d(8),
                neuron.IFNode(surrogate_function=surrogate.ATan()), layer.MaxPool2d(2, 2),
                layer.Flatten(), layer.Linear(8 * 4 * 4, 10, bias=False),
                neuron.IFNode(surrogate_function=surrogate.ATan()),
            )
            functional.set_step_mode(self, step_mode="m")

        def forward(self, x):
            x_seq = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)  # [T, B, C, H, W]
            return self.conv_fc(x_seq)  # [T, B, 10]

    torch.manual_seed(0)
    net = _train(CSNN(), lambda out: out.mean(0) * 4, after_step=functional.reset_net, lr=1e-2)
    functional.reset_net(net)
    # the independent PGD calls the net directly: reset its state after each forward, as training did
    rep = _check(net, lambda out: (functional.reset_net(net), out.mean(0))[1], tmp_path, reset=functional.reset_net)
    assert rep.card.libraries == ("spikingjelly",) and "grad_mode" in rep.card.attacker_controls
    assert any(k.endswith("num_batches_tracked") for k in net.state_dict())  # the 0-dim buffer hashed


# --- plain torch -----------------------------------------------------------------------------------------
class _Spike(torch.autograd.Function):
    """Heaviside forward, sigmoid'(4 v) backward."""

    @staticmethod
    def forward(ctx, v):  # type: ignore[override]
        ctx.save_for_backward(v)
        return (v >= 0).float()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (v,) = ctx.saved_tensors
        s = torch.sigmoid(4 * v)
        return g * 4 * s * (1 - s)


class LIFConvBN(nn.Module):
    """conv -> BatchNorm2d -> LIF (tau 2, v_th 1, hard reset) over T steps -> linear readout, mean over T."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8 * 64, 10)

    def forward(self, x):
        cur = self.bn(self.conv(x))
        v, out = torch.zeros_like(cur), 0.0
        for _ in range(T):
            v = v + (cur - v) / 2.0
            s = _Spike.apply(v - 1.0)
            v = v * (1 - s)
            out = out + self.fc(s.flatten(1))
        return out / T


def test_plain_torch_lif_conv_with_batchnorm(tmp_path):
    torch.manual_seed(0)
    net = _train(LIFConvBN(), lambda out: out, lr=1e-2)
    rep = _check(net, lambda out: out, tmp_path)
    assert rep.card.libraries == ()
