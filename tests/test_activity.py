"""Spiking activity (issue 23 item 5): firing rate per layer and SynOps per inference equal hand counts on
tiny models with known spikes and an independent count on a trained model; the pipeline stores the artifact
once per run; the leaderboard rows, the index and the run page show it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _plant import plant_eval, plant_run
from torch import nn

from snnbench.activity import measure_activity
from snnbench.adapters import ForeignModel
from snnbench.snn.classifier import SNNClassifier
from snnbench.snn.encoders import DirectEncoder
from snnbench.snn.neuron import LIFNeuron, NeuronSpec
from snnbench.store import Store


def _classifier(net: nn.Module, T: int) -> SNNClassifier:
    return SNNClassifier(net, DirectEncoder(), T, [0.0], [1.0])  # mean 0, std 1: the image is the current


def _linear(weights: list[list[float]]) -> nn.Linear:
    w = torch.tensor(weights)
    fc = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        fc.weight.copy_(w)
    return fc


def test_firing_rate_and_synops_equal_a_hand_count():
    """IF neurons (v_th 1, hard reset), T = 4, constant currents 0.5 / 1.0 / 0: neuron 0 fires at t = 2, 4
    (2 spikes), neuron 1 every step (4), neuron 2 never. Rate 6 / (3 x 4) = 0.5; each spike reaches the 2
    outputs of the next Linear: 12 SynOps per inference. The first Linear sees the image (not spikes):
    3 outputs x 4 inputs x 4 steps = 48 dense MACs."""
    net = nn.Sequential(nn.Flatten(), _linear([[0.5, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0]]),
                        LIFNeuron(NeuronSpec(), (3,)), nn.Linear(3, 2))
    a = measure_activity(_classifier(net, 4), torch.ones(5, 1, 2, 2))
    assert a["status"] == "measured" and a["n_samples"] == 5
    (layer,) = a["layers"]
    assert layer["name"] == "net.2" and layer["neurons"] == 3
    assert layer["firing_rate"] == pytest.approx(0.5) and layer["spikes"] == pytest.approx(6)
    assert layer["synops"] == pytest.approx(12) and layer["fan_out"] == pytest.approx(2)
    assert a["firing_rate"] == pytest.approx(0.5) and a["synops"] == pytest.approx(12)
    assert a["dense_macs"] == pytest.approx(48)


def test_an_average_pool_is_folded_into_the_next_conv_with_the_exact_border_fan_out():
    """A 4x4 map firing every step (T = 2) -> AvgPool 2 -> 2x2 map -> conv 3x3 (2 channels, padding 1).
    Each pooled element holds 4 spikes per step and reaches 2 channels x 4 output positions (all of the 2x2
    map: the 3x3 window is clipped by the border) = 8: 16 spikes x 2 steps x 8 = 256 SynOps, fan-out 8 per
    spike (not 2 x 9 = 18, which ignores the border). The conv's output is not spikes: the last Linear is
    dense, 8 inputs x 3 outputs x 2 steps = 48 MACs."""
    net = nn.Sequential(LIFNeuron(NeuronSpec(), (1, 4, 4)), nn.AvgPool2d(2), nn.Conv2d(1, 2, 3, padding=1),
                        nn.Flatten(), nn.Linear(8, 3))
    a = measure_activity(_classifier(net, 2), torch.ones(3, 1, 4, 4))
    (layer,) = a["layers"]
    assert layer["firing_rate"] == 1.0 and layer["spikes"] == 32
    assert layer["synops"] == pytest.approx(256) and layer["fan_out"] == pytest.approx(8)
    assert a["dense_macs"] == pytest.approx(48)


class _Gate(nn.Module):
    """Drops every spike of neuron 1 (a fixed stand-in for StoG's Bernoulli gate)."""

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s * torch.tensor([1.0, 0.0, 1.0])


def test_a_gate_after_the_neuron_removes_synops_but_not_the_neurons_firing_rate():
    """Currents 1 / 1 / 0, T = 2: 4 spikes per sample fired, 2 reach the 5-output Linear after the gate."""
    net = nn.Sequential(nn.Flatten(), _linear([[1.0, 0], [0, 1.0], [0, 0]]),
                        nn.Sequential(LIFNeuron(NeuronSpec(), (3,)), _Gate()), nn.Linear(3, 5))
    a = measure_activity(_classifier(net, 2), torch.ones(2, 1, 1, 2))
    (layer,) = a["layers"]
    assert layer["firing_rate"] == pytest.approx(4 / 6) and layer["spikes"] == 4
    assert layer["synops"] == pytest.approx(2 * 5)


def test_trained_model_matches_the_recorded_spikes_and_an_independent_fan_out_count(trained_vanilla):
    """small_conv on digits (conv16-BN-IF-AP2 conv32-BN-IF-AP2 FC10), T = 4: rates equal the spikes the
    neurons record; SynOps equal a count written out by hand: layer 1's spikes, summed per 2x2 pool window,
    times 32 channels x the 3x3 window's valid positions on the 4x4 map (2, 3, 3, 2 per row and column);
    layer 2's spikes times the 10 outputs of the final Linear."""
    from snnbench.data import to_float

    plan, prep, _ = trained_vanilla
    model, x = prep.model, to_float(prep.data.test.x[:64])
    a = measure_activity(model, x)
    with torch.no_grad(), model.recording() as neurons:
        model(x)
        s1, s2 = (n.spikes.flatten(0, 1) for n in neurons)  # [T*B, 16, 8, 8], [T*B, 32, 4, 4]
    assert [round(r["firing_rate"], 6) for r in a["layers"]] == [round(float(s.mean()), 6) for s in (s1, s2)]
    valid = torch.tensor([2.0, 3.0, 3.0, 2.0])
    fan = 32 * valid[:, None] * valid[None, :]  # per pooled position of the 4x4 map
    count = F.avg_pool2d(s1, 2) * 4  # spikes per pooled element
    hand = [float((count * fan).sum()) / 64, float(s2.sum()) * 10 / 64]
    assert [r["synops"] for r in a["layers"]] == pytest.approx(hand, rel=1e-9)
    assert 0 < a["firing_rate"] < 1 and a["synops"] == pytest.approx(sum(hand), rel=1e-9)
    assert a["T"] == 4 and [r["neurons"] for r in a["layers"]] == [16 * 8 * 8, 32 * 4 * 4]


def test_foreign_models_snnbench_neurons_are_measured_and_a_plain_model_says_why_not():
    """A user's module with snnbench neurons inside a ForeignModel is measured through its
    ``spiking_neurons()``; a model with no spiking neuron of a supported library is "not measured"."""

    class User(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.lif, self.fc2 = nn.Linear(4, 3), LIFNeuron(NeuronSpec(), (3,)), nn.Linear(3, 7)
            with torch.no_grad():
                self.fc1.weight.fill_(0.5)
                self.fc1.bias.zero_()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.lif.T = 1
            return self.fc2(self.lif(self.fc1(x.flatten(1))))

    a = measure_activity(ForeignModel(User(), randomized=False), torch.ones(2, 1, 2, 2))
    assert a["status"] == "measured" and a["layers"][0]["name"] == "model.lif"
    assert a["firing_rate"] == 1.0 and a["synops"] == pytest.approx(3 * 7)
    plain = ForeignModel(nn.Sequential(nn.Flatten(), nn.Linear(4, 10)), randomized=False)
    b = measure_activity(plain, torch.ones(2, 1, 2, 2))
    assert b["status"] == "not measured" and "no spiking neurons" in b["reason"] and b["synops"] is None


def test_the_pipeline_stores_the_activity_once_per_run(registry, trained_vanilla, monkeypatch):
    """evaluate_plans stores the ``activity`` artifact of its run; a second call reads it and measures
    nothing."""
    import dataclasses

    from snnbench import diagnostics
    from snnbench.pipeline import evaluate_plans

    plan, prep, store = trained_vanilla
    clean = dataclasses.replace(plan, attacks=[], substitutes={})
    results_dir = prep.checkpoint.parent.parent  # <results>/checkpoints/<hash>.pt
    got = evaluate_plans(registry, [clean], store, results_dir, checks=False)
    art = store.artifacts(got.run_id, "activity")
    assert list(art) == [""] and art[""]["status"] == "measured" and art[""]["n_samples"] == 256
    assert len(art[""]["layers"]) == 2 and art[""]["synops"] > 0

    def boom(*a, **k):
        raise AssertionError("measured twice")

    monkeypatch.setattr(diagnostics, "measure_activity", boom)
    evaluate_plans(registry, [clean], store, results_dir, checks=False)
    assert store.artifacts(got.run_id, "activity") == art


ACTIVITY = {"status": "measured", "reason": "", "n_samples": 256, "T": 4, "firing_rate": 0.125,
            "synops": 123456.0, "spikes": 900.0, "dense_macs": 36864.0, "formula": "f",
            "layers": [{"layer": 0, "name": "net.2", "neurons": 1024, "firing_rate": 0.1, "spikes": 400.0,
                        "synops": 100000.0, "fan_out": 250.0, "binary": True},
                       {"layer": 1, "name": "net.6", "neurons": 512, "firing_rate": 0.2, "spikes": 500.0,
                        "synops": 23456.0, "fan_out": 46.9, "binary": True}]}


def test_leaderboard_rows_the_index_and_the_run_page_show_the_activity(tmp_path):
    """The one leaderboard row type carries ``firing_rate`` and ``synops`` (None when not measured); the
    index shows the columns and a robustness-vs-activity plot per board; the run page a per-layer table."""
    from snnbench.dataframes import leaderboard as lb_frame
    from snnbench.registry import load_registry
    from snnbench.report import build_site
    from snnbench.report_data import leaderboard, leaderboard_records

    reg = load_registry(kinds=None)
    db = tmp_path / "a.sqlite"
    store = Store(f"sqlite:///{db}")
    a = plant_run(store, "vanilla")
    plant_eval(store, a, "standard", 120, 110, 50, kind="standard", budget="full")
    store.put_artifact(a, "activity", "", ACTIVITY)
    b = plant_run(store, "tgo")
    plant_eval(store, b, "standard", 120, 100, 40, kind="standard", budget="full")
    rows = {r["defense"]: r for r in leaderboard_records(*leaderboard(reg, store))}
    assert rows["vanilla"]["firing_rate"] == 0.125 and rows["vanilla"]["synops"] == 123456.0
    assert rows["tgo"]["firing_rate"] is None and rows["tgo"]["synops"] is None
    frame = lb_frame(db=f"sqlite:///{db}")
    assert {"firing_rate", "synops"} <= set(frame.columns)
    out = tmp_path / "site"
    build_site(reg, store, out)
    index = (out / "index.html").read_text()
    assert "firing rate" in index and "SynOps" in index
    assert "12.5%" in index and "123k" in index  # vanilla's cells
    assert "robust accuracy vs SynOps" in index and "<circle" not in index  # the scatter plot (SVG paths)
    run = (out / f"run-{a}.html").read_text()
    assert "Spiking activity" in run and "net.6" in run and "23.5k" in run
    assert "Not measured: the run predates" in (out / f"run-{b}.html").read_text()
