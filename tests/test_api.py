"""Python API (bench/api.py, ``import snnbench``): a plain-torch SNN written here (no snnbench classes) is
evaluated, stored, listed by ``bench report``, read back as DataFrames; the README block runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import snnbench
from snnbench.errors import BenchError
from snnbench.store import Store

ROOT = Path(__file__).resolve().parent.parent


class Spike(torch.autograd.Function):
    """Heaviside forward, triangle pseudo-derivative max(0, 1 - |v|) backward."""

    @staticmethod
    def forward(ctx, v):
        ctx.save_for_backward(v)
        return (v >= 0).float()

    @staticmethod
    def backward(ctx, g):
        (v,) = ctx.saved_tensors
        return g * (1 - v.abs()).clamp(min=0)


class PlainSNN(nn.Module):
    """64 -> 64 LIF (leak 0.5, threshold 1, hard reset) -> 10, T = 4, mean of the output layer over T."""

    def __init__(self, noise: float = 0.0) -> None:
        super().__init__()
        self.fc1, self.fc2, self.noise = nn.Linear(64, 64), nn.Linear(64, 10), noise

    def forward(self, x):
        h, v, out = self.fc1(x.flatten(1)), 0.0, 0.0
        for _ in range(4):
            v = 0.5 * v + h
            if self.noise:
                v = v + self.noise * torch.randn_like(h)  # a randomized model (membrane noise)
            s = Spike.apply(v - 1.0)
            v = v * (1 - s)
            out = out + self.fc2(s)
        return out / 4


@pytest.fixture(scope="module")
def plain_model():
    torch.manual_seed(0)
    x, y = snnbench.load_dataset("digits", "train")
    model = PlainSNN()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(80):
        i = torch.randint(0, len(y), (128,), generator=g)
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def evaluated(plain_model, tmp_path_factory):
    db = tmp_path_factory.mktemp("api") / "bench.sqlite"
    report = snnbench.evaluate(
        plain_model,
        dataset="digits",
        attacks=["fgsm", "pgd"],
        n=100,
        db=db,
        name="plain-snn",
        description="plain torch, written in the test",
        paper="https://example.org/paper",
        randomized=False,
        T=4,
    )
    return db, report


def test_evaluate_records_a_run_with_card_and_checks(evaluated):
    db, report = evaluated
    t = report.table.set_index("attack")
    assert list(t.index) == ["fgsm", "pgd"] and (t["n"] == 100).all()
    assert t.loc["pgd", "robust_acc"] <= t.loc["fgsm", "robust_acc"] < t.loc["pgd", "clean_acc"]
    assert report.clean > 0.8
    assert report.worst <= t["robust_acc"].min()
    flags = report.flags.set_index(["scope", "kind"])
    assert bool(flags.loc[("run", "randomized_logits"), "ok"])  # declared deterministic, and it is
    assert {("fgsm", "in_eps_ball"), ("pgd", "zero_grad"), ("run", "eps_monotone")} <= set(flags.index)
    assert report.card.module.endswith("test_api.PlainSNN") and report.card.attacker_controls == ()
    from snnbench.store import Store

    store = Store(f"sqlite:///{db}")
    (run,) = store.runs()
    assert (run.defense, run.model, run.training, run.T) == ("plain-snn", "PlainSNN", "external", 4)
    card = store.artifacts(run.id, "model_card")[""]
    assert card["paper"] == "https://example.org/paper" and card["description"].startswith("plain torch")


def test_evaluate_again_reuses_stored_evaluations(evaluated, plain_model):
    db, first = evaluated
    again = snnbench.evaluate(
        plain_model, attacks=["fgsm", "pgd"], n=100, db=db, name="plain-snn", randomized=False, checks=False
    )
    assert again.run_id == first.run_id
    assert list(again.table["evaluation_id"]) == list(first.table["evaluation_id"])  # not re-run


def test_bench_report_lists_the_model(evaluated, tmp_path):
    db, _ = evaluated
    out = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "snnbench", "report", "--db", f"sqlite:///{db}", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    index = (out / "index.html").read_text()
    assert "plain-snn" in index and "external" in index
    board = snnbench.leaderboard(db)
    row = board.set_index("defense").loc["plain-snn"]
    # evaluated with fgsm and pgd only: listed, but not ranked (only the standard protocol ranks)
    assert row["training"] == "external" and row["n_attacks"] == 2 and not row["ranked"]


def test_results_frame_runs_by_evaluations(evaluated):
    db, report = evaluated
    df = snnbench.results(db)
    assert isinstance(df, pd.DataFrame) and len(df) == 2
    assert df["name"].eq("plain-snn").all() and df["external"].all()
    assert df["paper"].eq("https://example.org/paper").all()
    table = df.pivot_table(index="name", columns="attack", values="robust_acc")
    assert table.loc["plain-snn", "pgd"] == pytest.approx(
        report.table.set_index("attack").loc["pgd", "robust_acc"]
    )


def test_results_per_sample_outcomes(evaluated):
    db, report = evaluated
    s = snnbench.results(db, samples=True)
    assert len(s) == 200 and set(s["attack"]) == {"fgsm", "pgd"}
    per_attack = s.groupby("attack")["adv"].mean()
    assert per_attack["pgd"] == pytest.approx(report.table.set_index("attack").loc["pgd", "robust_acc"])
    worst = s.groupby("sample")["adv"].all().mean()
    assert worst == pytest.approx(report.worst)
    assert s.dtypes["adv"] == np.dtype(bool)


def test_inline_torchattacks_config_and_undeclared_randomness(plain_model, tmp_path):
    """A noisy copy declared deterministic fails the randomized check; undeclared, it is detected and EOT on."""
    noisy = PlainSNN(noise=0.3)
    noisy.load_state_dict(plain_model.state_dict())
    db = tmp_path / "b.sqlite"
    with pytest.warns(UserWarning, match="randomized_logits"):
        wrong = snnbench.evaluate(noisy, attacks=["fgsm"], n=40, db=db, randomized=False, checks=True)
    assert not bool(wrong.flags.set_index(["scope", "kind"]).loc[("run", "randomized_logits"), "ok"])
    inline = {"kind": "torchattacks", "params": {"name": "MIFGSM", "steps": 3}, "name": "mi3"}
    found = snnbench.evaluate(noisy, attacks=[inline], n=40, db=db, name="noisy", checks=False)
    assert found.card.randomized and found.card.randomized_source == "detected"
    assert found.table["eot"].tolist() == [10]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attacks": ["pgdd"]}, "did you mean 'pgd'"),
        ({"attacks": ["pgd"], "eps": 2.0}, "eps 2 must be in"),
        ({"attacks": ["pgd"], "protocol": "standard"}, "not both"),
        ({"attacks": [{"params": {}}]}, "mapping with 'kind'"),
        ({"attacks": ["pgd"], "dataset": "digitz"}, "unknown dataset 'digitz'"),
        ({"attacks": ["pgd_bptr"]}, "grad_mode 'bptr' does not reach this model"),
        ({"attacks": ["pgd"], "n": -1}, "n must be in \\[0, "),
        ({"attacks": ["transfer"], "substitute": False}, "substitute=False"),
    ],
)
def test_bad_input_is_one_line(plain_model, tmp_path, kwargs, match):
    with pytest.raises(BenchError, match=match):
        snnbench.evaluate(
            plain_model, db=tmp_path / "x.sqlite", randomized=False, checks=False, **{"n": 8, **kwargs}
        )
    assert (
        not (tmp_path / "x.sqlite").exists()
        or not snnbench.results(tmp_path / "x.sqlite")["run_id"].notna().any()
    )


def test_protocol_is_the_attack_config_of_that_name(plain_model, tmp_path):
    """protocol="X" runs the registry's attack config X (the standard protocol is the config `standard`)."""
    rep = snnbench.evaluate(plain_model, protocol="fgsm", n=20, db=tmp_path / "p.sqlite", randomized=False, checks=False)
    assert rep.table["attack"].tolist() == ["fgsm"]
    with pytest.raises(BenchError, match="unknown attack 'nope'"):
        snnbench.evaluate(plain_model, protocol="nope", db=tmp_path / "p.sqlite", randomized=False)


def test_not_a_module_is_refused(tmp_path):
    with pytest.raises(BenchError, match="torch.nn.Module"):
        snnbench.evaluate(lambda x: x, attacks=["fgsm"], db=tmp_path / "x.sqlite")


def test_suite_pivot_is_the_papers_layout(tmp_path):
    long = snnbench.suite("rat_table2", db=tmp_path / "empty.sqlite")
    assert {"row_label", "col_label", "reported", "measured", "status"} <= set(long.columns)
    assert long["measured"].isna().all() and long["reported"].notna().any()
    table = snnbench.suite("rat_table2", db=tmp_path / "empty.sqlite", pivot=True)
    assert list(table.columns.get_level_values(0).unique()) == ["reported", "measured", "delta"]
    assert table.shape == (long["row"].nunique(), 3 * long["col"].nunique())
    first = long[(long.row == 0) & (long.col == 0)].iloc[0]
    reported = table["reported"].xs(first.row_label, level="row_label")
    assert reported.xs(first.col_label, level="col_label", axis=1).iloc[0, 0] == first.reported


def test_readme_block_runs(tmp_path, monkeypatch):
    """README "Evaluate your own model": the Python block, executed as written (database in tmp)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Evaluate your own model", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.setenv("BENCH_DB", f"sqlite:///{tmp_path / 'readme.sqlite'}")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    report = scope["report"]
    assert report.card.name == "my-snn" and report.clean > 0.8
    assert set(snnbench.results()["attack"]) == {"fgsm", "pgd"}


def test_help_teaches():
    doc = snnbench.__doc__ + snnbench.evaluate.__doc__ + snnbench.results.__doc__
    assert "snnbench.evaluate(" in doc and "Example" in doc and "pivot_table" in doc


def _one_epoch_registry(tmp_path):
    """registry.yaml with digits trained for one epoch: the substitute then trains in about a second."""
    text = (Path(__file__).resolve().parents[1] / "registry.yaml").read_text()
    old = "train: {epochs: 15, batch_size: 64, T: 4, lr: 0.1}"
    assert old in text
    path = tmp_path / "registry.yaml"
    path.write_text(text.replace(old, "train: {epochs: 1, batch_size: 64, T: 4, lr: 0.1}"))
    return str(path)


def test_foreign_model_gets_a_transfer_substitute(plain_model, tmp_path):
    """A foreign model is attacked by transfer from snnbench's vanilla model of the dataset (trained once,
    cached beside the db): the transfer attack runs instead of being refused, its stored config names the
    substitute, and the protocol's transfer stage runs instead of being skipped."""
    reg, db = _one_epoch_registry(tmp_path), tmp_path / "t.sqlite"
    rep = snnbench.evaluate(plain_model, attacks=["transfer"], n=60, db=db, randomized=False, checks=False,
                            registry=reg)
    row = rep.table.iloc[0]
    assert row["attack"] == "transfer" and 0.0 <= row["robust_acc"] < row["clean_acc"]
    ckpts = list((tmp_path / "checkpoints").glob("*.pt"))
    assert len(ckpts) == 1  # the substitute, cached
    store = Store(f"sqlite:///{db}")
    (ev,) = [e for e in store.evaluations(rep.run_id) if e.attack == "transfer"]
    sub_hash = json.loads(ev.attack_config_json)["substitute"]
    assert sub_hash and ckpts[0].name.startswith(sub_hash[:32])
    mtime = ckpts[0].stat().st_mtime
    proto = snnbench.evaluate(plain_model, protocol="standard_smoke", n=60, db=db, randomized=False,
                              checks=False, registry=reg)
    assert ckpts[0].stat().st_mtime == mtime  # loaded from the cache, not trained again
    stages = store.artifacts(proto.run_id, "protocol")["standard_smoke"]["stages"]
    transfer = [s for s in stages if s["kind"] == "transfer"]
    assert transfer and not transfer[0]["skipped"]


def test_substitute_false_skips_the_protocol_transfer_stage_with_its_reason(plain_model, tmp_path):
    db = tmp_path / "s.sqlite"
    rep = snnbench.evaluate(plain_model, protocol="standard_smoke", n=30, db=db, randomized=False, checks=False,
                            substitute=False)
    stages = Store(f"sqlite:///{db}").artifacts(rep.run_id, "protocol")["standard_smoke"]["stages"]
    transfer = [s for s in stages if s["kind"] == "transfer"]
    assert transfer and "substitute" in transfer[0]["skipped"]
    assert not (tmp_path / "checkpoints").exists()
    # the cascade is shown: every stage with its cumulative robust accuracy and samples broken, and the
    # skipped stage with its reason instead of "broke 0" (print(report); bench run prints the same lines)
    text = repr(rep)
    assert "robust is cumulative" in text
    lines = text.splitlines()
    assert sum(" broke " in ln for ln in lines) == sum(not s["skipped"] for s in stages)
    assert sum("skipped:" in ln and " broke " not in ln for ln in lines) == sum(bool(s["skipped"]) for s in stages)
    assert any("transfer" in ln and "skipped:" in ln for ln in lines)
    broken = sum(int(s["n_broken"]) for s in stages)
    assert broken == round(30 * (rep.clean - float(rep.table.iloc[-1]["robust_acc"])))


def test_the_site_shows_an_external_model_truthfully(plain_model, tmp_path):
    """Issue 22 item 5: weights sha256 (not empty), T "not declared", no seed, no `bench run --checkpoint`
    hint for a class snnbench cannot rebuild, the declared paper on the index and in leaderboard.csv, and
    skipped stages shown as skipped (not "0 broken")."""
    import csv

    from snnbench.registry import load_registry
    from snnbench.report import build_site

    db = tmp_path / "s.sqlite"
    rep = snnbench.evaluate(plain_model, protocol="standard_smoke", n=30, db=db, randomized=False, checks=False,
                            substitute=False, name="plain-if", paper="https://example.org/plain")
    out = tmp_path / "site"
    build_site(load_registry(None, kinds=None), Store(f"sqlite:///{db}"), out)
    run = (out / f"run-{rep.run_id}.html").read_text()
    assert f"<code>{rep.card.weights_sha256[:16]}</code>" in run and "not recorded" not in run
    assert "T=not declared" in run and "seed 0" not in run
    assert "bench run --checkpoint" not in run and "snnbench.evaluate(model)" in run
    assert "transfer: skipped (no substitute model attached)" in run and "robust accuracy is cumulative" in run
    index = (out / "index.html").read_text()
    assert 'href="https://example.org/plain"' in index and "plain-if" in index
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert [r["paper"] for r in rows if r["defense"] == "plain-if"] == ["https://example.org/plain"]
    # print(report) uses the CLI's units: percentages
    assert f"{100 * rep.clean:.2f}%" in repr(rep)
