"""``bench import``: rename a reference-code checkpoint onto a snnbench model (bench/importers.py)."""

from __future__ import annotations

from pathlib import Path

import click

from snnbench.cli_common import registry_option, user_errors

EPILOG = """\b
Examples:
  bench import --format snnrat wrn16_rat.pth --model wrn16_4 -o wrn16_rat.pt
  bench run --checkpoint wrn16_rat.pt --model wrn16_4 --dataset cifar10 --defense rat_wrn --T 4 --attack pgd
"""


@click.command(name="import", epilog=EPILOG)
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["snnrat"]),
    required=True,
    help="Reference code that wrote CHECKPOINT (snnrat: SNN-RAT's WideResNet / VGG).",
)
@click.option(
    "--model", required=True, help="Target registry model: wrn16_4 or vgg11 (or their _tiny test variants)."
)
@click.option(
    "--dataset",
    default="cifar10",
    show_default=True,
    help="Dataset the model was trained on (shape, classes): a registry name or an .npz / ImageFolder path "
    "(anything bench run --dataset takes).",
)
@click.option(
    "--norm",
    type=click.Choice(["reference", "dataset"]),
    default=None,
    help="In-model normalisation the checkpoint was trained with: the reference code's CIFAR mean/std "
    "(default when --mean/--std are not given), or the dataset's. Printed after import.",
)
@click.option("--mean", "mean", default=None, metavar="M1,M2,..",
              help="The checkpoint's input mean, one value per channel (with --std; overrides --norm).")
@click.option("--std", "std", default=None, metavar="S1,S2,..",
              help="The checkpoint's input std, one value per channel (with --mean).")
@click.option("--T", "T", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Time steps for the clean-accuracy check (the weights carry no T; bench run --T sets it).")
@click.option("--check-n", type=click.IntRange(0, 10000), default=200, show_default=True,
              help="Test samples for the clean-accuracy check printed after import (0 = skip).")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the snnbench checkpoint.",
)
@registry_option
@user_errors
def import_cmd(
    checkpoint: str, fmt: str, model: str, dataset: str, norm: str | None, mean: str | None, std: str | None,
    T: int, check_n: int, output: str, registry: str | None,
) -> None:
    """Map a reference checkpoint's tensor names onto a snnbench model and save it for --checkpoint.

    Every reference tensor must find its place and every model tensor must be filled (else one line lists
    the unmatched keys). The checkpoint is read with torch.load(weights_only=True).
    """
    from snnbench.importers import import_snnrat, load_reference
    from snnbench.kinds import python_kinds
    from snnbench.plan import make_defense, resolve_dataset
    from snnbench.registry import load_registry
    from snnbench.train import CHECKPOINT_FORMAT, atomic_save, build_model, sha256_file

    reg = load_registry(registry, kinds=python_kinds())
    ds = resolve_dataset(reg, dataset)
    spec = reg.get("models", model, "--model")
    mean_std = _mean_std(mean, std)
    if mean_std is not None and norm is not None:
        raise click.UsageError("give --norm or --mean/--std, not both")
    norm = "custom" if mean_std is not None else (norm or "reference")
    _, vanilla = make_defense(reg, "vanilla")
    target = build_model(ds, spec, vanilla, 1)
    state = import_snnrat(load_reference(checkpoint), target, spec.arch, norm, mean_std)
    target.load_state_dict(state)  # strict: the importer filled every key
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = {
        "format": fmt,
        "path": str(checkpoint),
        "sha256": sha256_file(checkpoint),
        "model": model,
        "norm": norm,
    }
    atomic_save({"format": CHECKPOINT_FORMAT, "state_dict": state, "imported": source}, out)
    n = sum(1 for k in state if k.startswith("net."))
    click.echo(
        f"imported {n} tensors from {checkpoint} ({fmt}) onto {model} ({spec.arch}, {ds.name}) -> {out}"
    )
    m, sd = state["mean"].flatten().tolist(), state["std"].flatten().tolist()
    click.echo(f"normalisation ({norm}): mean {_fmt(m)} std {_fmt(sd)}"
               + ("  (SNN-RAT's CIFAR statistics; if the checkpoint was trained with others, give --mean/--std)"
                  if norm == "reference" else ""))
    if check_n:
        click.echo(_clean_check(build_model(ds, spec, vanilla, T), state, ds, check_n, T))
    click.echo(
        f"evaluate: bench run --checkpoint {out} --model {model} --dataset {ds.name} --defense DEFENSE --T T --attack pgd"
    )


def _mean_std(mean: str | None, std: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``--mean``/``--std`` as float tuples (both or neither)."""
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise click.UsageError("give both --mean and --std (one value per input channel)")
    from snnbench.specs import parse_number

    def parse(text: str, flag: str) -> tuple[float, ...]:
        vals = tuple(float(parse_number(v.strip(), flag)) for v in text.split(",") if v.strip())
        if not vals:
            raise click.BadParameter(f"{flag}: give comma-separated numbers, e.g. 0.1307")
        return vals

    return parse(mean, "--mean"), parse(std, "--std")


def _fmt(vals: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in vals) + ")"


def _clean_check(model, state: dict, ds, n: int, T: int) -> str:
    """Clean accuracy of the imported weights on the first ``n`` test samples (a wrong normalisation or
    input layout shows here, before any attack), or why it could not be measured."""
    import torch

    from snnbench.data import load_data, to_float
    from snnbench.errors import BenchError

    try:
        data = load_data(ds, None, download=False)
    except BenchError as e:
        return f"clean check skipped: {e}"
    model.load_state_dict(state)
    model.eval()
    n = min(n, len(data.test))
    correct = 0
    with torch.no_grad():
        for i in range(0, n, 100):
            x = to_float(data.test.x[i:min(n, i + 100)])
            correct += int((model(x).argmax(1) == data.test.y[i:min(n, i + 100)]).sum())
    return f"clean check: {100 * correct / max(n, 1):.1f}% on the first {n} test samples of {ds.name} (T={T})"
