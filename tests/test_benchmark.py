"""``bench bench``: every (workload, path) is measured in one run, ratios are consistent, JSON is written,
bad options are one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from bench.benchmark import BenchSpec, Measurement, ratios, regularizer, resolve
from bench.errors import BenchError
from bench.snn.neuron import LIFNeuron, NeuronSpec

TINY = ["--dataset", "digits", "--T", "2", "-b", "4", "--iters", "1", "--warmup", "0", "--pgd-steps", "1"]


def test_bench_cli_measures_all_paths_and_writes_json(tmp_path):
    from bench.cli import main

    out = tmp_path / "b.json"
    res = CliRunner().invoke(main, ["bench", *TINY, "--workload", "vanilla,tgo,mpd", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    got = {(r["workload"], r["path"]) for r in data["rows"]}
    assert got == {("-", "ann")} | {(w, p) for w in ("vanilla", "tgo", "mpd") for p in ("torch", "fused")}
    assert all(r["train_img_s"] > 0 and r["pgd_img_s"] > 0 for r in data["rows"])
    assert (
        data["spec"]["arch"] == "small_conv" and data["spec"]["T"] == 2 and data["setup"]["device"] == "cpu"
    )
    fused = next(q for q in data["ratios"] if q["workload"] == "vanilla" and q["path"] == "fused")
    row = {(r["workload"], r["path"]): r for r in data["rows"]}
    assert fused["train_vs_ann"] == pytest.approx(
        row["vanilla", "fused"]["train_img_s"] / row["-", "ann"]["train_img_s"], rel=1e-2
    )
    assert "vanilla  fused" in res.output  # the printed table


def test_ratios_relate_rows_to_ann_and_plain():
    rows = [
        Measurement("-", "ann", "fp32", 100.0, 10.0, 1.0, 1.0),
        Measurement("vanilla", "torch", "fp32", 50.0, 5.0, 4.0, 4.0),
        Measurement("vanilla", "fused", "fp32", 95.0, 9.0, 2.0, 2.0),
        Measurement("-", "ann", "bf16", 150.0, 15.0, 1.0, 1.0),
        Measurement("vanilla", "fused", "bf16", 120.0, 12.0, 1.0, 1.0),
    ]
    q = {(r["workload"], r["path"], r["precision"]): r for r in ratios(rows)}
    assert q["vanilla", "fused", "fp32"]["train_vs_ann"] == 0.95
    assert q["vanilla", "fused", "fp32"]["train_vs_plain"] == 1.9
    assert q["vanilla", "fused", "fp32"]["train_mem_vs_plain"] == 0.5
    assert q["vanilla", "fused", "bf16"]["train_vs_ann"] == 0.8
    assert q["vanilla", "fused", "bf16"]["train_vs_ann_fp32"] == 1.2


@pytest.mark.parametrize("workload", ["tgo", "mpd"])
def test_regularizers_reach_recorded_potentials(workload):
    n = LIFNeuron(NeuronSpec(), (3, 2, 2))
    n.T, n.record, n.backend = 2, True, "fused"
    x = (torch.rand(2 * 5, 3, 2, 2) * 2).requires_grad_(True)
    n(x)
    reg = regularizer(workload, [n])
    (g,) = torch.autograd.grad(reg, x)
    assert torch.isfinite(reg) and reg > 0 and g.abs().sum() > 0
    assert regularizer("vanilla", [n]) is None


@pytest.mark.parametrize(
    "spec, match",
    [
        (BenchSpec(workloads=("rat",)), "--workload"),
        (BenchSpec(paths=("cuda",)), "--path"),
        (BenchSpec(precisions=("fp16",)), "--precision"),
        (BenchSpec(dataset="imagenet"), "--dataset"),
        (BenchSpec(model="resnet50"), "--model"),
        (BenchSpec(T=0), "T, batch size"),
    ],
)
def test_bad_options_are_bench_errors(spec, match):
    with pytest.raises(BenchError, match=match):
        resolve(spec)


def test_bench_cli_bad_option_exits_2():
    from bench.cli import main

    res = CliRunner().invoke(main, ["bench", *TINY, "--workload", "vanila"])
    assert res.exit_code == 2 and "did you mean 'vanilla'" in res.output
