"""APGD with batched EOT (attacks/autoattack.py ``BatchedEOTAPGD``) against fra31's ``APGDAttack``:
same adversarial examples with EOT 1 on deterministic models, the mean of the draws' gradients with EOT N,
one forward per iteration instead of N."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("pyautoattack")

from snnbench.attacks.autoattack import APGD, AutoAttack, batched_apgd_class, eot_logits_grad  # noqa: E402


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).eval()


def _data(n: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


class Counting(nn.Module):
    """Counts forward calls and the rows they carry."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.net(x)


class BankNoise(nn.Module):
    """Randomized model with its noise read from a fixed bank by row: row r of a call gets bank[r], so a
    batched call on N stacked copies sees the same draws as N calls with the bank's slices."""

    def __init__(self, net: nn.Module, bank: torch.Tensor) -> None:
        super().__init__()
        self.net, self.bank = net, bank

    def forward(self, x):
        return self.net(x + self.bank[: x.shape[0]].view_as(x))


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_eot1_matches_fra31_apgd_exactly(loss):
    from pyautoattack.autopgd_base import APGDAttack

    net = _net()
    x, _ = _data()
    y = net(x).argmax(1)  # every point starts correctly classified
    kw = dict(
        n_iter=30,
        norm="Linf",
        n_restarts=2,
        eps=0.05,
        seed=3,
        loss=loss,
        eot_iter=1,
        rho=0.75,
        device=x.device,
    )
    ref = APGDAttack(net, **kw).perturb(x, y)
    ours = batched_apgd_class()(net, **kw).perturb(x, y)
    robust = net(ref).argmax(1) == y
    assert 0 < robust.sum() < len(y)  # a non-trivial attack: some points fooled, some not
    assert torch.equal(ours, ref)


def test_apgd_kind_on_snn_matches_fra31(trained_vanilla):
    """The registered ``apgd`` kind on a deterministic SNN fools exactly the samples fra31's APGD fools (same
    seed; it stops on a sample once fooled, so the example kept is the first fooling iterate)."""
    from pyautoattack.autopgd_base import APGDAttack

    _, prep, _ = trained_vanilla
    model = prep.model.eval()
    x, y = prep.data.test.x[:16].float(), prep.data.test.y[:16]
    atk = APGD(APGD.Params(steps=10, seed=0), eps=0.1, alpha=0.025)
    ours = atk.perturb(model, x, y)
    ref = APGDAttack(
        atk.view(model),
        n_iter=10,
        norm="Linf",
        n_restarts=1,
        eps=0.1,
        seed=0,
        loss="ce",
        eot_iter=1,
        rho=0.75,
        device=x.device,
    ).perturb(x, y)
    assert (ref != x).any()
    with torch.no_grad():
        assert torch.equal(model(ours).argmax(1) != y, model(ref).argmax(1) != y)


def test_eot_gradient_is_the_mean_of_the_draws_gradients():
    n, b = 5, 6
    x, y = _data(b)
    bank = torch.randn(n * b, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 0.3
    net = _net()
    ce = lambda z, yy: torch.nn.functional.cross_entropy(z, yy, reduction="none")  # noqa: E731
    g, logits, loss = eot_logits_grad(BankNoise(net, bank), x, y, ce, n)
    grads, losses = [], []
    for i in range(n):
        xi = x.clone().requires_grad_(True)
        li = ce(BankNoise(net, bank[i * b : (i + 1) * b])(xi), y)
        grads.append(torch.autograd.grad(li.sum(), xi)[0])
        losses.append(li.detach())
    torch.testing.assert_close(g, torch.stack(grads).mean(0), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loss, torch.stack(losses).mean(0))
    torch.testing.assert_close(logits, BankNoise(net, bank[:b])(x))
    assert not torch.allclose(grads[0], grads[1])  # the draws differ


def test_eot_runs_one_batched_forward_per_iteration():
    x, _ = _data(8)
    model = Counting(_net())
    y = model.net(x).argmax(1)
    atk = batched_apgd_class()(
        model,
        n_iter=10,
        norm="Linf",
        n_restarts=1,
        eps=0.1,
        seed=0,
        loss="ce",
        eot_iter=4,
        rho=0.75,
        device=x.device,
    )
    atk.perturb(x, y)
    # perturb's clean prediction, then 1 + n_iter gradient calls on the robust points, each 4 copies
    assert len(model.calls) == 1 + 1 + 10
    assert model.calls[0] == 8 and all(c % 4 == 0 and c > 0 for c in model.calls[1:])


def test_autoattack_rand_uses_batched_apgd(monkeypatch):
    """AutoAttack's APGD-CE/-DLR stages run the batched class with the kind's EOT count."""
    import pyautoattack

    seen = []
    orig = pyautoattack.AutoAttack.run_standard_evaluation

    def spy(self, *a, **k):
        seen.append((type(self.apgd), self.apgd.eot_iter))
        self.apgd.n_iter = 3  # keep the test fast; the cascade's logic is fra31's
        return orig(self, *a, **k)

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", spy)
    x, y = _data(6)
    atk = AutoAttack(AutoAttack.Params(version="rand", eot=3), eps=0.1, alpha=0.025)
    monkeypatch.setattr(AutoAttack, "view", lambda self, model: model)
    out = atk.perturb(Counting(_net()), x, y)
    assert seen == [(batched_apgd_class(), 3)]
    assert out.shape == x.shape and (out - x).abs().max() <= 0.1 + 1e-6


def test_apgd_t_eot1_matches_fra31_targeted_exactly():
    """The ``apgd_t`` kind's class (fra31's targeted loop over batched single runs) gives fra31's
    ``APGDAttack_targeted`` examples with EOT 1."""
    from pyautoattack.autopgd_base import APGDAttack_targeted

    from snnbench.attacks.autoattack import batched_apgd_t_class

    net = _net()
    x, _ = _data()
    y = net(x).argmax(1)
    kw = dict(n_iter=20, norm="Linf", n_restarts=1, eps=0.05, seed=3, eot_iter=1, rho=0.75,
              n_target_classes=3, device=x.device)
    ref = APGDAttack_targeted(net, **kw).perturb(x, y)
    ours = batched_apgd_t_class()(net, **kw).perturb(x, y)
    robust = net(ref).argmax(1) == y
    assert 0 < robust.sum() < len(y)
    assert torch.equal(ours, ref)


def test_apgd_t_eot_runs_one_batched_forward_per_iteration():
    """With EOT 4, each target class costs one target-selection forward plus 1 + n_iter batched gradient
    forwards of 4 stacked copies (fra31's loop would make 4 per gradient)."""
    from snnbench.attacks.autoattack import batched_apgd_t_class

    x, _ = _data(8)
    model = Counting(_net())
    y = model.net(x).argmax(1)
    n_iter, targets = 6, 2
    atk = batched_apgd_t_class()(model, n_iter=n_iter, norm="Linf", n_restarts=1, eps=0.02, seed=0,
                                 eot_iter=4, rho=0.75, n_target_classes=targets, device=x.device)
    atk.perturb(x, y)
    rest = model.calls[1:]  # after perturb's clean prediction
    per_target = 2 + n_iter
    assert len(rest) % per_target == 0 and 1 <= len(rest) // per_target <= targets
    for k in range(0, len(rest), per_target):
        selection, grads = rest[k], rest[k + 1 : k + per_target]
        assert all(g == 4 * selection for g in grads)


@pytest.mark.parametrize("targeted", [False, True])
def test_early_stop_fools_the_same_samples_with_fewer_sample_passes(targeted):
    """Issue 25: with ``early_stop`` a fooled sample leaves the batch; each sample's trajectory is its own,
    so the samples fooled are those of fra31's full loop, at a fraction of the per-sample passes."""
    from snnbench.attacks.autoattack import batched_apgd_t_class

    x, _ = _data()
    model = Counting(_net())
    y = model.net(x).argmax(1)
    cls = batched_apgd_t_class() if targeted else batched_apgd_class()
    kw = dict(n_iter=30, norm="Linf", n_restarts=1, eps=0.05, seed=3, eot_iter=1, rho=0.75, device=x.device,
              **({"n_target_classes": 3} if targeted else {}))
    full = cls(model, **kw)
    ref = full.perturb(x, y)
    full_passes = sum(model.calls)
    model.calls.clear()
    fast = cls(model, **kw)
    fast.early_stop = True
    ours = fast.perturb(x, y)
    with torch.no_grad():
        fooled_ref, fooled = model.net(ref).argmax(1) != y, model.net(ours).argmax(1) != y
    assert 0 < fooled.sum() < len(y) and torch.equal(fooled, fooled_ref)
    assert (ours - x).abs().max() <= 0.05 + 1e-6
    assert sum(model.calls) < 0.8 * full_passes, (sum(model.calls), full_passes)


def _identity_start(self, x):
    """A start that depends only on the row's image and target class (not on which rows share the call),
    so a stacked run and one target at a time begin every (sample, target) trajectory at the same point."""
    t = torch.sin(1000 * x + 7 * self.y_target.view(-1, *([1] * (x.dim() - 1))).to(x.dtype))
    return x + self.eps * self.normalize(t)


@pytest.mark.parametrize("restarts", [1, 2])
def test_stacked_apgd_t_fools_the_samples_of_one_target_at_a_time(monkeypatch, restarts):
    """Issue 25: the (target class, restart) runs of APGD-T stacked in one batch fool exactly the samples
    that running them one after another fools, with one forward per iteration for all targets; a sample
    keeps the example of the first target that fooled it (in-ball, misclassified)."""
    from snnbench.attacks.autoattack import batched_apgd_t_class

    cls = batched_apgd_t_class()
    monkeypatch.setattr(cls, "random_start", _identity_start)
    net = _net()
    x, _ = _data(20)
    y = net(x).argmax(1)
    kw = dict(n_iter=25, norm="Linf", n_restarts=restarts, eps=0.05, seed=3, eot_iter=1, rho=0.75,
              n_target_classes=4, device=x.device)
    out, calls = {}, {}
    for rows in (0, 10_000):
        model = Counting(net)
        atk = cls(model, **kw)
        atk.early_stop, atk.stack_rows = True, rows
        out[rows] = atk.perturb(x, y)
        calls[rows] = model.calls
    with torch.no_grad():
        fooled = {k: net(v).argmax(1) != y for k, v in out.items()}
    assert 0 < fooled[0].sum() < len(y)
    assert torch.equal(fooled[0], fooled[10_000])
    assert (out[10_000] - x).abs().max() <= 0.05 + 1e-6
    assert max(calls[10_000]) == 4 * restarts * len(y)  # all runs in one stacked forward
    assert max(calls[0]) == len(y) and len(calls[10_000]) < len(calls[0]) / 2


def test_stacked_apgd_t_stops_every_row_of_a_fooled_sample():
    """Once one target fools a sample, the rows of its other targets leave the stacked batch."""
    from snnbench.attacks.autoattack import batched_apgd_t_class

    net = _net()
    x, _ = _data(20)
    y = net(x).argmax(1)
    model = Counting(net)
    atk = batched_apgd_t_class()(model, n_iter=25, norm="Linf", n_restarts=1, eps=0.05, seed=3, eot_iter=1,
                                 rho=0.75, n_target_classes=4, device=x.device)
    atk.early_stop, atk.stack_rows = True, 10_000
    adv = atk.perturb(x, y)
    with torch.no_grad():
        fooled = int((net(adv).argmax(1) != y).sum())
    assert 0 < fooled < len(y)
    assert model.calls[-1] % 4 == 0 and model.calls[-1] <= 4 * (len(y) - fooled) < 4 * len(y)


def test_stack_rows_only_on_cuda():
    """One target at a time on the CPU (stacking buys nothing there, attacks/autoattack.py
    CUDA_STACK_ROWS); on CUDA at least the whole batch per stacked run."""
    from snnbench.attacks.autoattack import CUDA_STACK_ROWS, stack_rows_for

    assert stack_rows_for(torch.device("cpu"), 64) == 0
    assert stack_rows_for(torch.device("cuda"), 64) == CUDA_STACK_ROWS
    assert stack_rows_for(torch.device("cuda"), 4 * CUDA_STACK_ROWS) == 4 * CUDA_STACK_ROWS
