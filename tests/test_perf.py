"""``bench perf``: every (workload, path) is measured in one run, ratios are consistent, JSON is written
(its path checked before measuring), the defenses' own regularisers run, the APGD workloads run, bad
options are one-line errors, and the old ``bench bench`` name is gone."""
from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner

from snnbench.errors import BenchError
from snnbench.perf import BenchSpec, EvalMeasurement, Measurement, eval_ratios, ratios, resolve

TINY = ["--dataset", "digits", "--T", "2", "-b", "4", "--iters", "1", "--warmup", "0", "--pgd-steps", "1"]


def test_perf_cli_measures_all_paths_and_writes_json(tmp_path):
    from snnbench.cli import main

    out = tmp_path / "b.json"
    res = CliRunner().invoke(main, ["perf", *TINY, "--workload", "vanilla,tgo,mpd", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    got = {(r["workload"], r["path"]) for r in data["rows"]}
    assert got == {("-", "ann")} | {(w, p) for w in ("vanilla", "tgo", "mpd") for p in ("torch", "fused")}
    assert all(r["train_img_s"] > 0 and r["pgd_img_s"] > 0 for r in data["rows"])
    assert (
        data["spec"]["arch"] == "small_conv" and data["spec"]["T"] == 2 and data["setup"]["device"] == "cpu"
    )
    assert data["spec"]["dataset"] == "digits"
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
@pytest.mark.parametrize("path", ["torch", "fused"])
def test_workloads_use_the_defenses_regularizers(workload, path, registry, monkeypatch):
    """The tgo/mpd workloads build the defenses' SNNs and call their own regulariser (a positive penalty
    every step; with the fused backend it is the neuron-computed one after the first step)."""
    from snnbench import perf

    calls = []
    orig = perf._regularizer

    def spy(defense, neurons, *a):
        reg = orig(defense, neurons, *a)
        calls.append(
            (type(defense).__name__, float(reg.detach()), all(n.penalty is not None for n in neurons))
        )
        return reg

    monkeypatch.setattr(perf, "_regularizer", spy)
    spec = BenchSpec(
        dataset="digits", T=2, batch_size=4, iters=2, warmup=1, pgd_steps=1, workloads=(workload,)
    )
    model, ds, T, B = resolve(spec, registry)
    perf.measure(
        spec, perf.Case(registry, model, ds, T, B, workload, path, "fp32", torch.device("cpu"))
    )
    assert {c[0] for c in calls} == {"TGO" if workload == "tgo" else "MPDSGR"}
    assert len(calls) == 3 and all(c[1] > 0 for c in calls)
    assert [c[2] for c in calls] == ([False, True, True] if path == "fused" else [False] * 3)


def test_perf_eval_workloads_run_apgd_with_and_without_eot(tmp_path):
    from snnbench.cli import main

    out = tmp_path / "e.json"
    res = CliRunner().invoke(
        main,
        [
            "perf",
            *TINY,
            "--workload",
            "",
            "--eval",
            "apgd,apgd_eot",
            "--apgd-steps",
            "2",
            "--eot",
            "3",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    got = {(r["eval"], r["path"], r["eot"]) for r in data["evals"]}
    assert got == {(e, p, n) for e, n in (("apgd", 1), ("apgd_eot", 3)) for p in ("torch", "fused", "ann")}
    assert all(r["img_s"] > 0 for r in data["evals"]) and data["rows"] == []
    assert all("vs_ann" in q for q in data["eval_ratios"])
    assert re.search(r"^apgd_eot +fused ", res.output, re.M)


def test_eval_ratios():
    rows = [
        EvalMeasurement("apgd", "ann", "fp32", 100, 1, 10.0, 1.0, 1.0),
        EvalMeasurement("apgd", "torch", "fp32", 100, 1, 4.0, 1.0, 1.0),
        EvalMeasurement("apgd", "fused", "fp32", 9.0, 1, 9.0, 1.0, 1.0),
    ]
    q = {r["path"]: r for r in eval_ratios(rows)}
    assert q["fused"]["vs_ann"] == 0.9 and q["fused"]["vs_plain"] == 2.25 and "vs_plain" not in q["ann"]


def test_json_path_checked_before_measuring(tmp_path, monkeypatch):
    from snnbench import perf
    from snnbench.cli import main

    monkeypatch.setattr(perf, "run_benchmark", lambda *a, **k: pytest.fail("measured before the check"))
    for bad, match in ((tmp_path / "missing" / "x.json", "does not exist"), (tmp_path, "is a directory")):
        res = CliRunner().invoke(main, ["perf", *TINY, "--json", str(bad)])
        assert res.exit_code == 2 and match in res.output, res.output


def test_perf_is_listed_and_the_old_bench_name_is_gone():
    from snnbench.cli import main

    res = CliRunner().invoke(main, ["bench", *TINY])
    assert res.exit_code == 2 and "No such command" in res.output, res.output
    helptext = CliRunner().invoke(main, ["--help"]).output
    section = helptext.split("Commands:")[1].strip("\n").split("\n\n")[0]  # up to the epilog
    listed = [ln.split()[0] for ln in section.splitlines() if ln.strip()]
    assert "perf" in listed and "bench" not in listed


def test_cpu_default_is_digits_with_a_note(monkeypatch):
    from snnbench import perf
    from snnbench.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert perf.default_dataset(None) == "digits" and perf.default_dataset("cuda") == "cifar10"
    res = CliRunner().invoke(
        main,
        [
            "perf",
            "--T",
            "2",
            "-b",
            "4",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--pgd-steps",
            "1",
            "--path",
            "fused",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "note: no CUDA device" in res.output and "on digits" in res.output


def test_registry_option_is_honoured(tmp_path):
    from snnbench.cli import main

    res = CliRunner().invoke(main, ["perf", *TINY, "--registry", str(tmp_path / "none.yaml")])
    assert res.exit_code == 2 and "none.yaml" in res.output


@pytest.mark.parametrize(
    "spec, match",
    [
        (BenchSpec(workloads=("rat",)), "--workload"),
        (BenchSpec(paths=("cuda",)), "--path"),
        (BenchSpec(precisions=("fp16",)), "--precision"),
        (BenchSpec(dataset="imagenet"), "--dataset"),
        (BenchSpec(model="resnet50"), "--model"),
        (BenchSpec(T=0), "T, batch size"),
        (BenchSpec(evals=("deepfool",)), "--eval"),
        (BenchSpec(eot=0), "--eot"),
        (BenchSpec(eps=2.0), "--eps"),
    ],
)
def test_bad_options_are_bench_errors(spec, match, registry):
    with pytest.raises(BenchError, match=match):
        resolve(spec, registry)


def test_perf_cli_bad_option_exits_2():
    from snnbench.cli import main

    res = CliRunner().invoke(main, ["perf", *TINY, "--workload", "vanila"])
    assert res.exit_code == 2 and "did you mean 'vanilla'" in res.output



def test_random_network_is_calibrated_before_a_whole_evaluation(registry):
    """Uncalibrated, the random VGG-11 SNN fires nothing in its classifier layers and every logit is 0 on
    every image: an evaluation of it would time a constant function. ``calibrate`` standardises every
    neuron layer's input on the batch, so each layer fires and the logits depend on the image and class."""
    from snnbench.perf import _build, calibrate

    model, ds, _, _ = resolve(BenchSpec(dataset="cifar10", workloads=()), registry)
    torch.manual_seed(0)
    net, _ = _build(registry, model, ds, 2, "fused", "vanilla")
    x = torch.rand(2, *ds.shape)
    net.eval()
    with torch.no_grad():
        dead = net(x)
    calibrate(net, x)
    assert not net.training
    with torch.no_grad():
        live = net(x)
    rates = []
    hooks = [n.register_forward_hook(lambda _m, _i, out: rates.append(float(out.float().mean())))
             for n in net.neurons()]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    assert dead.abs().max() == 0
    assert live.std(1).min() > 0 and (live[0] - live[1]).abs().max() > 0
    assert len(rates) == len(net.neurons()) and min(rates) > 0.05  # every layer fires


def test_eval_eps_is_the_datasets_unless_given(registry):
    from snnbench.perf import eval_eps

    _, digits, _, _ = resolve(BenchSpec(dataset="digits", workloads=()), registry)
    _, cifar, _, _ = resolve(BenchSpec(dataset="cifar10", workloads=()), registry)
    assert eval_eps(BenchSpec(), digits) == 0.1 and eval_eps(BenchSpec(), cifar) == pytest.approx(8 / 255)
    assert eval_eps(BenchSpec(eps=0.02), digits) == 0.02


def test_perf_cli_eps_is_checked():
    from snnbench.cli import main

    res = CliRunner().invoke(main, ["perf", *TINY, "--eval", "apgd", "--eps", "8/0"])
    assert res.exit_code == 2 and "--eps" in res.output, res.output


def test_perf_protocol_beside_autoattack_reports_its_stages(tmp_path):
    """Issue 25: ``--eval standard,autoattack`` times the whole cascade beside AutoAttack on the same SNN
    and images, with the ratio, the samples each left robust, and the protocol's stages (seconds, samples
    attacked and broken: they account for every sample)."""
    from snnbench.cli import main

    out = tmp_path / "p.json"
    res = CliRunner().invoke(main, ["perf", *TINY, "--workload", "", "--eval", "standard,autoattack", "--path",
                                    "fused", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    rows = {r["eval"]: r for r in data["evals"]}
    std, aa = rows["standard"], rows["autoattack"]
    assert data["spec"]["eps"] == 0.1  # digits' budget
    assert std["stages"][0]["stage"] == "apgd-ce" and std["stages"][0]["samples"] == 4
    assert sum(s["broken"] for s in std["stages"]) + std["robust"] == 4
    assert sum(s["seconds"] for s in std["stages"]) <= std["seconds"] + 1e-3
    assert aa["stages"] is None and aa["robust"] is not None
    q = next(q for q in data["eval_ratios"] if q["eval"] == "standard")
    assert q["vs_autoattack"] == pytest.approx(std["img_s"] / aa["img_s"], rel=1e-2)
    assert re.search(r"^standard fused fp32 stages .*apgd-ce", res.output, re.M)
