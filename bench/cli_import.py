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
    help="Dataset the model was trained on (shape, classes).",
)
@click.option(
    "--norm",
    type=click.Choice(["reference", "dataset"]),
    default="reference",
    show_default=True,
    help="In-model normalisation: the reference code's CIFAR mean/std, or the registry dataset's.",
)
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
    checkpoint: str, fmt: str, model: str, dataset: str, norm: str, output: str, registry: str | None
) -> None:
    """Map a reference checkpoint's tensor names onto a snnbench model and save it for --checkpoint.

    Every reference tensor must find its place and every model tensor must be filled (else one line lists
    the unmatched keys). The checkpoint is read with torch.load(weights_only=True).
    """
    from snnbench.importers import import_snnrat, load_reference
    from snnbench.kinds import python_kinds
    from snnbench.plan import make_defense
    from snnbench.registry import load_registry
    from snnbench.train import CHECKPOINT_FORMAT, atomic_save, build_model, sha256_file

    reg = load_registry(registry, kinds=python_kinds())
    ds = reg.get("datasets", dataset, "--dataset")
    spec = reg.get("models", model, "--model")
    _, vanilla = make_defense(reg, "vanilla")
    target = build_model(ds, spec, vanilla, 1)
    state = import_snnrat(load_reference(checkpoint), target, spec.arch, norm)
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
    click.echo(
        f"evaluate: bench run --checkpoint {out} --model {model} --dataset {ds.name} --defense DEFENSE --T T --attack pgd"
    )
