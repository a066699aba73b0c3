"""The model contract (bench/contract.py, README "Model contract"): hostile outputs get a one-line error
and nothing is stored; the common SNN output forms are reduced by the ``output=`` rule; models the
gradient stages cannot attack (non-differentiable, zero gradient, batch-dependent) are evaluated by the
stages that can, flagged, and never crash; the test data cannot be changed by a model."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import snnbench
from snnbench.contract import ModelContractError, data_fingerprint, probe_model, to_logits
from snnbench.errors import BenchError
from snnbench.store import Store


class Net(nn.Module):
    """A linear digits classifier whose ``forward`` returns ``wrap(logits, x)``."""

    def __init__(self, wrap) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 10)
        self.wrap = wrap

    def forward(self, x):
        return self.wrap(self.fc(x.flatten(1)), x)


@pytest.fixture(scope="module")
def trained_fc():
    """A digits linear classifier trained for 150 Adam steps (clean ~0.9)."""
    x, y = snnbench.load_dataset("digits", "train")
    torch.manual_seed(0)
    fc = nn.Linear(64, 10)
    opt = torch.optim.Adam(fc.parameters(), 1e-2)
    for _ in range(150):
        i = torch.randint(0, len(y), (128,))
        loss = F.cross_entropy(fc(x[i].flatten(1)), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return fc


def _stored_runs(db) -> int:
    return len(Store(f"sqlite:///{db}").runs()) if db.exists() else 0


HOSTILE = {
    "a [B] vector": (lambda z, x: z[:, 0], "logits must be \\[B, K\\]"),
    "3 of 10 classes": (lambda z, x: z[:, :3], "3 scores per sample; the dataset has 10 classes"),
    "11 logits for 10 classes": (lambda z, x: torch.cat([z, z[:, :1]], 1), "11 scores per sample"),
    "a dict": (lambda z, x: {"logits": z}, "a dict with keys \\['logits'\\]"),
    "a tuple with a non-tensor": (lambda z, x: (z, "aux"), "cannot make logits"),
    "integer logits": (lambda z, x: z.long(), "must be floating point"),
    "inf everywhere": (lambda z, x: z * 1e38, "must be <= 1e\\+15|non-finite"),
    "inf at the argmax": (lambda z, x: z.masked_fill(z == z.amax(1, keepdim=True), float("inf")), "non-finite"),
    "nan in one sample": (lambda z, x: torch.cat([z[:1] * float("nan"), z[1:]]), "non-finite"),
    "1e20 logits": (lambda z, x: z * 1e20, "must be <= 1e\\+15"),
    "a raising forward": (lambda z, x: z.view(3, -1, 7), "forward raised RuntimeError"),
    "[T, B] without classes": (lambda z, x: torch.stack([z[:, 0]] * 4), "logits must be \\[B, K\\]"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_outputs_get_one_line_errors_and_nothing_is_stored(case, tmp_path):
    wrap, match = HOSTILE[case]
    db = tmp_path / "h.sqlite"
    with pytest.raises(ModelContractError, match=match) as err:
        snnbench.evaluate(Net(wrap), attacks=["fgsm"], n=20, db=db, randomized=False, checks=False)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    assert _stored_runs(db) == 0


def test_broken_weights_and_meta_models_are_refused_before_anything_is_stored(tmp_path):
    db = tmp_path / "w.sqlite"
    for fill in (float("inf"), float("nan"), 3e38):
        net = Net(lambda z, x: z)
        with torch.no_grad():
            net.fc.weight.fill_(fill)
        with pytest.raises(ModelContractError, match="weight 'fc.weight'"):
            snnbench.evaluate(net, attacks=["fgsm"], n=20, db=db, randomized=False, checks=False)
    with torch.device("meta"):
        meta = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ModelContractError, match="meta device"):
        snnbench.evaluate(meta, attacks=["fgsm"], n=20, db=db, randomized=False, checks=False)
    assert _stored_runs(db) == 0


def test_output_rules_reduce_the_common_snn_forms():
    z = torch.randn(4, 6, 10)  # [T, B, K]
    assert torch.equal(to_logits(z, "auto", 6), z.mean(0))
    spk, mem = (torch.rand(4, 6, 10) > 0.5).float(), torch.randn(4, 6, 10)
    assert torch.equal(to_logits((spk, mem), "auto", 6), spk.mean(0))  # snntorch: spike count / T
    assert torch.equal(to_logits((spk, mem), "rate", 6), spk.mean(0))
    assert torch.equal(to_logits((spk, mem), "membrane", 6), mem.mean(0))
    assert torch.equal(to_logits([spk, mem], lambda r: r[1][-1], 6), mem[-1])
    with pytest.raises(ModelContractError, match="output rule 'logits'"):
        to_logits((spk, mem), "logits", 6)
    with pytest.raises(BenchError, match="valid: auto, logits, rate, membrane"):
        snnbench.evaluate(Net(lambda z, x: z), output="spikes", n=10)


def test_tuple_and_multistep_outputs_are_evaluated_as_their_time_mean(trained_fc, tmp_path):
    """(spk, mem) over time and [T, B, K] give the same numbers as the [B, K] mean they reduce to."""
    def steps(z: torch.Tensor) -> torch.Tensor:
        return torch.stack([z * (t + 1) / 2.5 for t in range(4)])  # mean over t = z

    ref, tup, multi = (Net(lambda z, x: z), Net(lambda z, x: (steps(z), steps(z))), Net(lambda z, x: steps(z)))
    for m in (ref, tup, multi):
        m.fc.load_state_dict(trained_fc.state_dict())
    kw = dict(attacks=["fgsm"], n=60, randomized=False, checks=False)
    a = snnbench.evaluate(ref, db=tmp_path / "a.sqlite", **kw).table.iloc[0]
    b = snnbench.evaluate(tup, db=tmp_path / "b.sqlite", **kw).table.iloc[0]
    c = snnbench.evaluate(multi, db=tmp_path / "c.sqlite", **kw).table.iloc[0]
    assert a.clean_acc > 0.8
    assert (a.clean_acc, a.robust_acc) == (b.clean_acc, b.robust_acc) == (c.clean_acc, c.robust_acc)


def _hard_label(z, x):
    return F.one_hot(z.argmax(1), 10).float()  # no grad_fn


def _heaviside(z, x):
    return (z > z.mean(1, keepdim=True)).float() * z.detach()  # a step without surrogate


def _detached(z, x):
    return z.detach()


@pytest.mark.parametrize("wrap", [_hard_label, _heaviside, _detached], ids=["hard-label", "heaviside", "detached"])
def test_non_differentiable_models_get_the_gradient_free_stages_and_a_failed_flag(wrap, trained_fc, tmp_path):
    net = Net(wrap)
    net.fc.load_state_dict(trained_fc.state_dict())
    db = tmp_path / "n.sqlite"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = snnbench.evaluate(net, protocol="standard_smoke", n=40, db=db, randomized=False, checks=False,
                                substitute=False)
    assert "non_differentiable (model)" in rep.failed_checks and "non_differentiable (model)" in rep.blocking_checks
    stages = rep.extra["cascades"]["standard_smoke"]["stages"]
    grad = [s for s in stages if s["kind"] in ("apgd", "apgd_t")]
    assert grad and all("non-differentiable" in s["skipped"] for s in grad)
    square = [s for s in stages if s["kind"] == "square"]
    assert square and not square[0]["skipped"]
    # the clean row is the model's real accuracy (not "every sample correct" because stage 1 was skipped)
    x, y = snnbench.load_dataset("digits", "test")
    with torch.no_grad():
        want = float((trained_fc(x[:40].flatten(1)).argmax(1) == y[:40]).float().mean())
    assert rep.clean == pytest.approx(want)
    assert rep.table.iloc[-1]["robust_acc"] <= rep.clean
    assert "UNRELIABLE, NOT RANKED" in repr(rep)
    with pytest.raises(BenchError, match="non-differentiable"):  # a lone gradient attack: refused, not crashed
        snnbench.evaluate(net, attacks=["pgd"], n=20, db=tmp_path / "p.sqlite", randomized=False, checks=False)
    assert not (tmp_path / "p.sqlite").exists() or _stored_runs(tmp_path / "p.sqlite") == 0


ZERO = {"0 * logits": lambda z: 0 * z, "logits - logits": lambda z: z - z,
        "saturated clamp": lambda z: torch.clamp(z, 50.0, 60.0)}


@pytest.mark.parametrize("case", sorted(ZERO))
def test_zero_gradient_models_are_flagged(case, trained_fc, tmp_path):
    """hard one-hot output + a term with a gradient that is exactly zero."""
    net = Net(lambda z, x: F.one_hot(z.argmax(1), 10).float() + ZERO[case](z))
    net.fc.load_state_dict(trained_fc.state_dict())
    x, y = snnbench.load_dataset("digits", "test")
    from snnbench.adapters import ForeignModel

    report = probe_model(ForeignModel(net, randomized=False), x[:32], y[:32], 10, False)
    assert report.differentiable and report.zero_grad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = snnbench.evaluate(net, attacks=["apgd"], n=20, db=tmp_path / "z.sqlite", randomized=False, checks=False)
        assert "zero_grad (model)" in rep.blocking_checks
        # FGSM would return the inputs unchanged (a no-op, issue 24): refused before anything is stored
        with pytest.raises(BenchError, match="input gradient is zero"):
            snnbench.evaluate(net, attacks=["fgsm"], n=20, db=tmp_path / "f.sqlite", randomized=False, checks=False)
    assert not (tmp_path / "f.sqlite").exists() or _stored_runs(tmp_path / "f.sqlite") == 0


class BatchStatsNet(nn.Module):
    """BatchNorm without running statistics: in eval mode it normalises by the batch's own statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.bn, self.out = nn.Linear(64, 32), nn.BatchNorm1d(32, track_running_stats=False), nn.Linear(32, 10)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.fc(x.flatten(1)))))


def test_batch_dependent_models_are_evaluated_and_flagged_not_crashed(tmp_path):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = snnbench.evaluate(BatchStatsNet(), protocol="standard_smoke", n=24, db=tmp_path / "b.sqlite",
                                randomized=False, checks=False, substitute=False)
    assert "batch_dependent (model)" in rep.blocking_checks
    stages = rep.extra["cascades"]["standard_smoke"]["stages"]
    assert any(s["kind"] == "apgd_t" and not s["skipped"] for s in stages)  # APGD-T ran (no batch of one)


def test_an_in_place_edit_of_the_input_cannot_change_the_test_data(trained_fc, tmp_path):
    def edit(z, x):
        x.data.mul_(0.5)  # hostile: edits its input in place
        return z

    net = Net(edit)
    net.fc.load_state_dict(trained_fc.state_dict())
    x, _ = snnbench.load_dataset("digits", "test")
    before = data_fingerprint(x)
    rep = snnbench.evaluate(net, attacks=["fgsm", "pgd"], n=40, db=tmp_path / "i.sqlite", randomized=False)
    assert data_fingerprint(snnbench.load_dataset("digits", "test")[0]) == before

    honest = Net(lambda z, x: z)  # the same logits (the edit comes after them), without the edit
    honest.fc.load_state_dict(trained_fc.state_dict())
    ref = snnbench.evaluate(honest, attacks=["fgsm", "pgd"], n=40, db=tmp_path / "r.sqlite", randomized=False)
    cols = ["attack", "clean_acc", "robust_acc"]
    assert rep.table[cols].values.tolist() == ref.table[cols].values.tolist()  # every attack saw the originals


def test_prepared_data_is_verified_after_each_attack(trained_fc):
    from snnbench.data import load_data
    from snnbench.plan import resolve_dataset
    from snnbench.prepare import Prepared
    from snnbench.registry import load_registry

    data = load_data(resolve_dataset(load_registry(None, kinds=None), "digits"))
    prep = Prepared(trained_fc, data, 1, False, 0.0, None)
    prep.verify_data("nothing")
    data.test.x.view(-1)[0] += 1  # what an in-place edit of a view of the test set would do
    with pytest.raises(BenchError, match="test data changed during the attack pgd"):
        prep.verify_data("the attack pgd")


BAD_ARGS = {
    "name=12345": ({"name": 12345}, "name must be a string"),
    "name with a newline": ({"name": "a\nb"}, "control characters"),
    "name with NUL": ({"name": "a\x00b"}, "control characters"),
    "n=59.5": ({"n": 59.5}, "n must be an integer"),
    "n=True": ({"n": True}, "n must be an integer"),
    "n=10**9": ({"n": 10**9}, "n must be in \\[0, 10000000\\]"),
    "n=1000 > test set": ({"n": 1000}, "exceeds the test set of digits \\(360"),
    "n=-1": ({"n": -1}, "n must be in"),
    "T=-5": ({"T": -5}, "T must be in \\[0, 10000\\]"),
    "eps=nan": ({"eps": float("nan")}, "not a finite number"),
    "eps=2": ({"eps": 2}, "eps 2 must be in 0 or \\[1e-06, 1\\]"),
    "eps=True": ({"eps": True}, "expected a number"),
    "batch_size=0": ({"batch_size": 0}, "batch_size must be in"),
    "randomized='no'": ({"randomized": "no"}, "randomized must be True, False or None"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_arguments_are_one_line_errors_naming_the_argument_and_store_nothing(case, tmp_path):
    kw, match = BAD_ARGS[case]
    db = tmp_path / "a.sqlite"
    args = {"attacks": ["fgsm"], "db": db, "checks": False, **({"randomized": False} if "randomized" not in kw else {})}
    with pytest.raises(BenchError, match=match) as err:
        snnbench.evaluate(Net(lambda z, x: z), **{**args, **kw})
    assert "\n" not in str(err.value) and str(err.value).startswith("evaluate: ")
    assert _stored_runs(db) == 0


def test_the_protocol_checks_each_gradient_stage_for_zero_gradients(trained_fc, tmp_path):
    """Issue 20 item 4: zero/absent gradients are measured per protocol stage (scope parent/stage);
    an honest model passes them, a 0 * logits model fails them stage by stage."""
    honest, masked = Net(lambda z, x: z), Net(lambda z, x: F.one_hot(z.argmax(1), 10).float() + 0 * z)
    for m in (honest, masked):
        m.fc.load_state_dict(trained_fc.state_dict())
    out = {}
    for name, m in (("honest", honest), ("masked", masked)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = snnbench.evaluate(m, protocol="standard_smoke", n=30, db=tmp_path / f"{name}.sqlite",
                                    randomized=False, checks=False, substitute=False)
        out[name] = {(r.scope, r.kind): r.ok for r in rep.flags.itertuples()}
    stage_zero = {k: v for k, v in out["honest"].items() if k[1] == "zero_grad" and k[0].startswith("standard_smoke/")}
    assert {"standard_smoke/apgd-ce", "standard_smoke/apgd-t"} <= {k[0] for k in stage_zero}
    assert all(stage_zero.values()) and out["honest"][("standard_smoke", "gradfree_gap")]
    assert not out["masked"][("standard_smoke/apgd-ce", "zero_grad")]
    assert not out["masked"][("standard_smoke/apgd-t", "zero_grad")]


class Slow(nn.Module):
    """A model whose every forward sleeps (a user's slow network)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.fc, self.seconds = nn.Linear(64, 10), seconds

    def forward(self, x):
        import time

        time.sleep(self.seconds)
        return self.fc(x.flatten(1))


def test_a_slow_model_gets_an_estimate_and_is_refused_above_the_time_limit(tmp_path, capsys):
    """Issue 24: the probe is timed, the attacks' cost projected from it and printed; above time_limit the
    evaluation is refused in one line before anything is stored."""
    with pytest.raises(BenchError, match="projected to take about .* over time_limit=60"):
        snnbench.evaluate(Slow(0.2), protocol="standard", n=100, db=tmp_path / "s.sqlite", randomized=False,
                          time_limit=60)
    assert "projected" in capsys.readouterr().err
    assert not (tmp_path / "s.sqlite").exists()
