"""Foreign SNNs (bench/adapters.py): spikingjelly and snntorch neurons are found, reset, and take the
attacker's surrogate (forward spikes unchanged, gradient = our formula); spikingjelly multi-step nodes take
BPTR; a plain model exposes no knob and says why. Optional extras: skipped cleanly without them."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from snnbench.adapters import ForeignModel
from snnbench.errors import BenchError

T = 4


def _grad(model: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (model(x) * w).sum().backward()
    return x.grad.detach()


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(16, 1, 8, 8, generator=g), torch.randn(16, 10, generator=g)


# --- spikingjelly ----------------------------------------------------------------------------------------
class SJNet(nn.Module):
    """Flatten -> Linear(64, 48) -> LIFNode (multi-step) -> Linear(48, 10), mean over T; no reset_net."""

    def __init__(self, surrogate_function: nn.Module, step_mode: str = "m") -> None:
        super().__init__()
        from spikingjelly.activation_based import neuron

        self.fc1, self.fc2 = nn.Linear(64, 48), nn.Linear(48, 10)
        self.lif = neuron.LIFNode(tau=2.0, surrogate_function=surrogate_function, step_mode=step_mode)

    def forward(self, x):
        h = self.fc1(x.flatten(1)).mul(3.0).unsqueeze(0).repeat(T, 1, 1)  # [T, B, 48]
        return self.fc2(self.lif(h)).mean(0)


@pytest.fixture(scope="module")
def sj():
    return pytest.importorskip("spikingjelly.activation_based.surrogate")


def _sj_pair(sj, own: nn.Module) -> tuple[ForeignModel, ForeignModel]:
    """The same weights with spikingjelly's Sigmoid (default) and with ``own`` as the model's surrogate."""
    torch.manual_seed(0)
    a = SJNet(sj.Sigmoid(alpha=4.0))
    b = SJNet(own)
    b.load_state_dict(a.state_dict())
    return ForeignModel(a, randomized=False), ForeignModel(b, randomized=False)


def test_spikingjelly_neurons_found_with_both_knobs(sj):
    model, _ = _sj_pair(sj, sj.ATan(alpha=2.0))
    assert model.libraries == ("spikingjelly",)
    assert model.attacker_controls == frozenset({"surrogate", "grad_mode"})
    single = ForeignModel(SJNet(sj.Sigmoid(), step_mode="s"), randomized=False)
    assert single.attacker_controls == frozenset({"surrogate"})


def test_spikingjelly_surrogate_swap_equals_the_librarys_own(sj):
    """Swapping our atan (gamma 2) into a Sigmoid model gives the gradient of the same model built with
    spikingjelly's ATan(alpha=2): the swap reaches the neuron with the same formula; spikes unchanged."""
    sig_model, atan_model = _sj_pair(sj, sj.ATan(alpha=2.0))
    x, w = _inputs()
    own = _grad(sig_model, x, w)
    ref = _grad(atan_model, x, w)
    assert not torch.allclose(own, ref, atol=1e-4)  # the two surrogates differ on this model
    with torch.no_grad():
        plain = sig_model(x)
    with sig_model.gradient_mode("bptt", "atan", 2.0):
        swapped = _grad(sig_model, x, w)
        with torch.no_grad():
            assert torch.equal(sig_model(x), plain)  # forward spikes unchanged
    assert torch.allclose(swapped, ref, atol=1e-5)
    assert torch.allclose(_grad(sig_model, x, w), own, atol=1e-6)  # restored afterwards
    with sig_model.gradient_mode("bptt", "sigmoid", 4.0):  # ours at spikingjelly's width: its own gradient
        assert torch.allclose(_grad(sig_model, x, w), own, atol=1e-5)


def test_spikingjelly_bptr_gates_by_firing_rate(sj):
    from spikingjelly.activation_based import neuron

    node = neuron.LIFNode(tau=2.0, surrogate_function=sj.Sigmoid(), step_mode="m")
    model = ForeignModel(nn.Sequential(node), randomized=False)
    g = torch.Generator().manual_seed(1)
    x = (2 * torch.rand(T, 8, 12, generator=g)).requires_grad_(True)  # [T, N, C]
    w = torch.randn(T, 8, 12, generator=g)
    with model.gradient_mode("bptr"):
        s = model(x)
        (s * w).sum().backward()
    rate = s.detach().mean(0, keepdim=True)
    assert torch.equal(x.grad, w * (rate > 0).float())  # SNN-RAT RateBp: dL/dX[t] = dL/dS[t] 1[rate > 0]
    assert 0 < float((rate > 0).float().mean()) < 1  # the gate matters on this input
    with torch.no_grad():
        assert torch.equal(model(x), s.detach())  # forward unchanged once the mode is restored


def test_spikingjelly_state_reset_between_calls(sj):
    model, _ = _sj_pair(sj, sj.Sigmoid())
    x, _ = _inputs()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # ForeignModel resets the nodes' membranes
        raw = model.model
        assert not torch.equal(raw(x), raw(x))  # without the reset, state leaks between calls


def test_spikingjelly_model_through_the_api(sj, tmp_path):
    """evaluate() on a spikingjelly model: both attacks run, the attacker's surrogate is stored with its row."""
    import snnbench

    torch.manual_seed(0)
    net = SJNet(sj.Sigmoid(alpha=4.0))
    atan = {"kind": "pgd", "params": {"steps": 3, "surrogate": "atan", "gamma": 2.0}, "name": "pgd3_atan"}
    own = {"kind": "pgd", "params": {"steps": 3}, "name": "pgd3"}
    rep = snnbench.evaluate(
        net,
        attacks=[own, atan],
        n=48,
        db=tmp_path / "b.sqlite",
        name="sj-net",
        randomized=False,
        checks=False,
    )
    t = rep.table.set_index("attack")
    assert t.loc["pgd3_atan", "surrogate"] == "atan" and pd.isna(t.loc["pgd3", "surrogate"])
    assert rep.card.libraries == ("spikingjelly",)
    assert rep.card.attacker_controls == ("grad_mode", "surrogate")


# --- snntorch --------------------------------------------------------------------------------------------
class SnnTorchNet(nn.Module):
    """Linear(64, 48) -> snn.Leaky (init_hidden, beta 0.5) stepped T times -> Linear(48, 10), mean over T."""

    def __init__(self, spike_grad) -> None:
        super().__init__()
        import snntorch as snn

        self.fc1, self.fc2 = nn.Linear(64, 48), nn.Linear(48, 10)
        self.lif = snn.Leaky(beta=0.5, spike_grad=spike_grad, init_hidden=True)

    def forward(self, x):
        h = self.fc1(x.flatten(1)) * 3.0
        return torch.stack([self.fc2(self.lif(h)) for _ in range(T)]).mean(0)


@pytest.fixture(scope="module")
def snt():
    return pytest.importorskip("snntorch.surrogate")


def test_snntorch_surrogate_swap_equals_the_librarys_own(snt):
    torch.manual_seed(0)
    tri = ForeignModel(SnnTorchNet(snt.fast_sigmoid(slope=25)), randomized=False)
    ref_net = SnnTorchNet(snt.atan(alpha=2.0))
    ref_net.load_state_dict(tri.model.state_dict())
    ref = ForeignModel(ref_net, randomized=False)
    assert tri.libraries == ("snntorch",) and tri.attacker_controls == frozenset({"surrogate"})
    x, w = _inputs(2)
    own, want = _grad(tri, x, w), _grad(ref, x, w)
    assert not torch.allclose(own, want, atol=1e-4)
    with torch.no_grad():
        plain = tri(x)
    with tri.gradient_mode("bptt", "atan", 2.0):
        assert torch.allclose(_grad(tri, x, w), want, atol=1e-5)  # snntorch ATan(alpha 2) = our atan(2)
        with torch.no_grad():
            assert torch.equal(tri(x), plain)
    assert torch.allclose(_grad(tri, x, w), own, atol=1e-6)


def test_snntorch_has_no_rate_gradient_and_resets(snt):
    model = ForeignModel(SnnTorchNet(snt.atan()), randomized=False)
    with pytest.raises(BenchError, match="grad_mode 'bptr' does not reach this model: snntorch"):
        with model.gradient_mode("bptr"):
            pass
    x, _ = _inputs(3)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        assert not torch.equal(model.model(x), model.model(x))  # init_hidden state leaks without reset


# --- plain torch -----------------------------------------------------------------------------------------
def test_plain_model_exposes_no_knob():
    model = ForeignModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), randomized=False)
    assert model.attacker_controls == frozenset() and model.libraries == ()
    with model.gradient_mode("bptt"):  # the model's own gradient: always allowed
        pass
    with pytest.raises(BenchError, match="surrogate 'atan' does not reach this model: no spiking neurons"):
        with model.gradient_mode("bptt", "atan"):
            pass
    with pytest.raises(BenchError, match="did you mean 'bptt'"):
        with model.gradient_mode("bptx"):
            pass
    with pytest.raises(BenchError, match="torch.nn.Module"):
        ForeignModel(lambda x: x, randomized=False)  # type: ignore[arg-type]
