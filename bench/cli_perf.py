"""``bench perf``: speed of the spiking layers and of the attack schedule against the ANN limit (registered in
bench/cli.py; ``bench bench`` is a hidden, deprecated alias).

A CLI module: it parses flags, calls :func:`snnbench.perf.run_benchmark`, prints tables and writes JSON.
Runnable alone too (``python -m snnbench.cli_perf``).
"""

from __future__ import annotations

import json

import click

from snnbench.cli_common import Number, registry_option, user_errors
from snnbench.errors import BenchError
from snnbench.specs import MAX_T, MIN_STEP

EPILOG = """\b
Examples:
  bench perf                                    # CUDA: VGG-11, T=8, CIFAR-sized; CPU: small_conv on digits
  bench perf --dataset cifar10 -b 256 --workload vanilla,tgo,mpd --precision fp32,bf16 --json perf.json
  bench perf --eval apgd,apgd_eot --workload vanilla   # + APGD-100, with and without EOT 10, vs the ANN
  bench perf --eval standard,autoattack --workload ""  # the protocol beside AutoAttack, same SNN, and the ANN
  bench perf --dataset digits --iters 20 --threads 1
"""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _options(fn):
    opts = [
        click.option("--model", default=None, help="Registry model (default: the dataset's default_model)."),
        click.option(
            "--dataset",
            default=None,
            help="Registry dataset: shape, classes, T, batch [default: cifar10 with CUDA, digits without].",
        ),
        click.option("--T", "T", type=Number(1, MAX_T, integer=True), default=None, help="Time steps (default: the dataset's)."),
        click.option(
            "--batch-size", "-b", type=Number(1, 1 << 16, integer=True), default=None, help="Batch size B (default: the dataset's)."
        ),
        click.option(
            "--workload",
            default="vanilla",
            show_default=True,
            help="Training workloads: comma list of vanilla, tgo, mpd.",
        ),
        click.option(
            "--eval",
            "evals",
            default="",
            help="Evaluation workloads: comma list of apgd (APGD-CE), apgd_eot (APGD-CE with --eot draws, TGO SNN), "
            "standard (the protocol's whole cascade) and autoattack (AutoAttack standard, same SNN and images).",
        ),
        click.option(
            "--path",
            "paths",
            default="torch,fused,ann",
            show_default=True,
            help="Comma list of torch, fused, ann.",
        ),
        click.option(
            "--precision", default="fp32", show_default=True, help="Comma list of fp32, bf16 (autocast)."
        ),
        click.option(
            "--channels-last", is_flag=True, help="channels_last memory format for model and inputs."
        ),
        click.option(
            "--iters", type=Number(1, 100_000, integer=True), default=10, show_default=True, help="Timed iterations per measurement."
        ),
        click.option("--warmup", type=Number(0, 100_000, integer=True), default=3, show_default=True, help="Untimed warm-up iterations."),
        click.option(
            "--pgd-steps", type=Number(1, 100_000, integer=True), default=7, show_default=True, help="PGD iterations per attack call."
        ),
        click.option(
            "--apgd-steps", type=Number(1, 100_000, integer=True), default=100, show_default=True, help="APGD iterations (--eval)."
        ),
        click.option("--eot", type=Number(1, 1000, integer=True), default=10, show_default=True, help="EOT draws of apgd_eot."),
        click.option(
            "--eval-iters", type=Number(1, 10_000, integer=True), default=1, show_default=True, help="Timed APGD runs per measurement."
        ),
        click.option("--protocol-budget", type=click.Choice(["smoke", "full"]), default=None,
                     help="Budget of --eval standard (default: smoke on CPU, full on CUDA)."),
        click.option("--protocol-version", type=click.Choice(["v1", "v2"]), default="v2", show_default=True,
                     help="Version of --eval standard."),
        click.option("--eps", type=Number(MIN_STEP, 1), default=None,
                     help="L-inf budget of --eval, e.g. 8/255 or 0.1 (default: the dataset's). A whole evaluation's "
                          "cost depends on how many points survive each stage: pick one where some do."),
        click.option("--device", default=None, help="cpu or cuda (default: cuda when available)."),
        click.option("--threads", type=Number(1, 1024, integer=True), default=None, help="torch CPU threads (default: torch's)."),
        click.option(
            "--json",
            "json_path",
            type=click.Path(dir_okay=False),
            default=None,
            help="Write all numbers here.",
        ),
        registry_option,
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _ratio(q: dict, key: str, width: int) -> str:
    """One ratio cell: ``-`` where the ratio does not apply to the row (no baseline row to divide by)."""
    v = q.get(key)
    return f"{'-':>{width}}" if v is None or v != v else f"{v:>{width}.3f}"


def _print(res) -> None:
    s = res.spec
    click.echo(
        f"{s['model']} ({s['arch']}) on {s['dataset']} T={s['T']} B={s['batch_size']} channels_last={s['channels_last']} "
        f"device={res.setup['device']} {res.setup.get('gpu', res.setup.get('cpu', ''))} torch {res.setup['torch']}"
    )
    if res.rows:
        click.echo(
            f"{'workload':<8} {'path':<6} {'prec':<5} {'train img/s':>11} {'PGD img/s':>10} {'train MiB':>10} "
            f"{'PGD MiB':>9} {'train/ann':>9} {'pgd/ann':>8} {'train/fp32ann':>13} {'vs plain':>8}"
        )
    for r, q in zip(res.rows, res.ratios, strict=True):
        click.echo(
            f"{r.workload:<8} {r.path:<6} {r.precision:<5} {r.train_img_s:>11.1f} {r.pgd_img_s:>10.1f} "
            f"{r.train_peak_mib:>10.0f} {r.pgd_peak_mib:>9.0f} {_ratio(q, 'train_vs_ann', 9)} "
            f"{_ratio(q, 'pgd_vs_ann', 8)} {_ratio(q, 'train_vs_ann_fp32', 13)} {_ratio(q, 'train_vs_plain', 8)}"
        )
    for q in res.ratios:
        if "train_vs_plain_best" in q and q["path"] != "torch":
            click.echo(
                f"{q['workload']} {q['path']}/torch, fastest call of each: train {q['train_vs_plain_best']:.3f}x, "
                f"PGD {q['pgd_vs_plain_best']:.3f}x"
            )
    if res.evals:
        click.echo(
            f"{'eval':<10} {'path':<6} {'prec':<5} {'steps':>6} {'eot':>4} {'img/s':>9} {'s/call':>9} {'MiB':>8} "
            f"{'vs ann':>7} {'vs plain':>8} {'vs AA':>7} {'left':>5}"
        )
    for r, q in zip(res.evals, res.eval_ratios, strict=True):
        click.echo(
            f"{r.eval:<10} {r.path:<6} {r.precision:<5} {r.steps:>6} {r.eot:>4} {r.img_s:>9.2f} {r.seconds:>9.3f} "
            f"{r.peak_mib:>8.0f} {_ratio(q, 'vs_ann', 7)} {_ratio(q, 'vs_plain', 8)} {_ratio(q, 'vs_autoattack', 7)}"
            f"{'' if r.robust is None else f' {r.robust:>5}':}"
        )
    for r in res.evals:
        if r.stages:
            click.echo(f"{r.eval} {r.path} {r.precision} stages (seconds, -broken of attacked): " + "  ".join(
                f"{s['stage']} {s['seconds']:.2f}s (-{s['broken']}/{s['samples']})" for s in r.stages))
    if any(r.eval in ("standard", "autoattack") for r in res.evals):
        click.echo("standard/autoattack: whole evaluations (a point leaves once broken); steps = the attack's cost in "
                   "input-gradient steps per sample (Attack.cost); vs AA > 1: the protocol is faster; left: samples "
                   "still classified as labelled (the model's own clean predictions) after the evaluation")


def _perf(**o) -> None:
    import torch

    from snnbench.perf import BenchSpec, check_writable, default_dataset, run_benchmark, to_json

    out = check_writable(o["json_path"]) if o["json_path"] else None  # before minutes of measuring
    if o["threads"] is not None:
        if o["threads"] < 1:
            raise BenchError(f"--threads must be >= 1, got {o['threads']}")
        torch.set_num_threads(o["threads"])
    if o["dataset"] is None and default_dataset(o["device"]) != "cifar10":
        click.echo(
            "note: no CUDA device: measuring the CPU-sized digits workload (small_conv, 8x8, T=4, B=64); "
            "pass --dataset cifar10 for the CIFAR-sized VGG-11",
            err=True,
        )
    spec = BenchSpec(
        model=o["model"],
        dataset=o["dataset"],
        T=o["T"],
        batch_size=o["batch_size"],
        workloads=_csv(o["workload"]),
        evals=_csv(o["evals"]),
        paths=_csv(o["paths"]),
        precisions=_csv(o["precision"]),
        channels_last=o["channels_last"],
        iters=o["iters"],
        warmup=o["warmup"],
        pgd_steps=o["pgd_steps"],
        apgd_steps=o["apgd_steps"],
        eot=o["eot"],
        eval_iters=o["eval_iters"],
        protocol_budget=o["protocol_budget"],
        protocol_version=o["protocol_version"],
        eps=o["eps"],
        device=o["device"],
        registry=o["registry"],
    )
    res = run_benchmark(spec, progress=lambda m: click.echo(f"measuring {m}", err=True))
    _print(res)
    if out is not None:
        out.write_text(json.dumps(to_json(res), indent=2, sort_keys=True) + "\n")
        click.echo(f"wrote {out}", err=True)


@click.command(name="perf", epilog=EPILOG)
@_options
@user_errors
def perf_cmd(**o) -> None:
    """Time a training step and PGD-7 for the plain-torch neurons, the fused neurons and the same
    architecture as an ANN at batch T*B, and (--eval) APGD with and without EOT; print images/s, peak
    memory and the ratios."""
    _perf(**o)


if __name__ == "__main__":  # pragma: no cover
    perf_cmd()
