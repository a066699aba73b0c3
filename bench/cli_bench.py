"""``bench bench``: speed of the spiking layers against the ANN limit (registered in bench/cli.py).

A CLI module: it parses flags, calls :func:`bench.benchmark.run_benchmark`, prints a table and writes JSON.
Runnable alone too (``python -m bench.cli_bench``), which needs no store or attack dependencies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bench.cli_common import check_output_path, user_errors
from bench.errors import BenchError

EPILOG = """\b
Examples:
  bench bench                                   # VGG-11, T=8, CIFAR-sized random data, B from the registry
  bench bench --batch-size 256 --workload vanilla,tgo,mpd --precision fp32,bf16 --json bench.json
  bench bench --dataset digits --iters 20       # small_conv on 8x8 inputs, T=4, B=64 (CPU-sized)
"""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@click.command(name="bench", epilog=EPILOG)
@click.option("--model", default=None, help="Registry model (default: the dataset's default_model).")
@click.option(
    "--dataset", default="cifar10", show_default=True, help="Registry dataset: shape, classes, T, batch."
)
@click.option("--T", "T", type=int, default=None, help="Time steps (default: the dataset's).")
@click.option("--batch-size", "-b", type=int, default=None, help="Batch size B (default: the dataset's).")
@click.option("--workload", default="vanilla", show_default=True, help="Comma list of vanilla, tgo, mpd.")
@click.option(
    "--path", "paths", default="torch,fused,ann", show_default=True, help="Comma list of torch, fused, ann."
)
@click.option("--precision", default="fp32", show_default=True, help="Comma list of fp32, bf16 (autocast).")
@click.option("--channels-last", is_flag=True, help="channels_last memory format for model and inputs.")
@click.option("--iters", type=int, default=10, show_default=True, help="Timed iterations per measurement.")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed warm-up iterations.")
@click.option("--pgd-steps", type=int, default=7, show_default=True, help="PGD iterations per attack call.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write all numbers here."
)
@user_errors
def bench_cmd(**o) -> None:
    """Time a training step and PGD-7 for the plain-torch neurons, the fused neurons and the same
    architecture as an ANN at batch T*B; print images/s, peak memory and the ratios."""
    import torch

    if o["json_path"]:
        check_output_path(o["json_path"], "--json")  # before measuring: never lose the numbers at the end

    from bench.benchmark import BenchSpec, run_benchmark, to_json

    try:
        if o["threads"]:
            torch.set_num_threads(o["threads"])
        spec = BenchSpec(
            model=o["model"],
            dataset=o["dataset"],
            T=o["T"],
            batch_size=o["batch_size"],
            workloads=_csv(o["workload"]),
            paths=_csv(o["paths"]),
            precisions=_csv(o["precision"]),
            channels_last=o["channels_last"],
            iters=o["iters"],
            warmup=o["warmup"],
            pgd_steps=o["pgd_steps"],
            device=o["device"],
        )
        res = run_benchmark(spec, progress=lambda m: click.echo(f"measuring {m}", err=True))
    except BenchError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    s = res.spec
    click.echo(
        f"{s['model']} ({s['arch']}) T={s['T']} B={s['batch_size']} channels_last={s['channels_last']} "
        f"device={res.setup['device']} {res.setup.get('gpu', res.setup.get('cpu', ''))} torch {res.setup['torch']}"
    )
    click.echo(
        f"{'workload':<8} {'path':<6} {'prec':<5} {'train img/s':>11} {'PGD img/s':>10} {'train MiB':>10} "
        f"{'PGD MiB':>9} {'train/ann':>9} {'pgd/ann':>8} {'train/fp32ann':>13} {'vs plain':>8}"
    )
    for r, q in zip(res.rows, res.ratios, strict=True):
        click.echo(
            f"{r.workload:<8} {r.path:<6} {r.precision:<5} {r.train_img_s:>11.1f} {r.pgd_img_s:>10.1f} "
            f"{r.train_peak_mib:>10.0f} {r.pgd_peak_mib:>9.0f} {q.get('train_vs_ann', float('nan')):>9.3f} "
            f"{q.get('pgd_vs_ann', float('nan')):>8.3f} {q.get('train_vs_ann_fp32', float('nan')):>13.3f} "
            f"{q.get('train_vs_plain', float('nan')):>8.3f}"
        )
    for q in res.ratios:
        if "train_vs_plain_best" in q and q["path"] != "torch":
            click.echo(
                f"{q['workload']} {q['path']}/torch, fastest call of each: train {q['train_vs_plain_best']:.3f}x, "
                f"PGD {q['pgd_vs_plain_best']:.3f}x"
            )
    if o["json_path"]:
        Path(o["json_path"]).write_text(json.dumps(to_json(res), indent=2, sort_keys=True) + "\n")
        click.echo(f"wrote {o['json_path']}", err=True)


if __name__ == "__main__":  # pragma: no cover
    bench_cmd()
