"""Projected GPU-hours of a suite's cells that are not run yet, from measured rates in ``perf/*.json``.

The cost model, applied per cell (``scripts/project_cost.py`` runs it on MPD-SGR Table 1):

- training one model: ``epochs x N_train / train_img_s``, plus ``epochs x N_train x at_steps`` input-gradient
  steps under adversarial training; one input-gradient step costs ``1 / (7 pgd_img_s)`` s per image (the
  rate is measured with PGD-7);
- evaluating one cell: ``N_test x`` the attack's own cost per sample (``Attack.cost``: input-gradient
  steps plus half a step per forward-only query, EOT included for randomized defenses; the standard
  protocol's is the sum of its stages', an upper bound since later stages see only still-robust samples);
- the workload whose rates a defense uses is the defense class's ``perf_workload`` (e.g. MPD-SGR ``mpd``,
  TGO and StoG ``tgo``, FEEL the plain ``torch`` path); rates are scaled linearly in T from the measured
  T=8 and by 1.1 for the recipes' B=64.

The rates were measured for VGG-11 on 32x32 inputs, so only CIFAR-sized datasets are projected; others
say so. A projection, not a promise: it is printed with the file it comes from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snnbench.paths import PERF_DIR

PREFERRED = ("gpu_h200_bench_b256.json", "gpu_h100_bench_b256.json")
# (train, test) images: the torchvision datasets of the papers
SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "tiny_imagenet": (100_000, 10_000)}
B64, MEASURED_T = 1.1, 8


@dataclass(frozen=True)
class Projection:
    hours: float | None  # None: not projectable (reason says why)
    models: int  # models still to train
    cells: int  # cells still to evaluate
    source: str  # perf file the rates come from
    reason: str = ""


def load_rates(perf_dir: Path = PERF_DIR, files: tuple[str, ...] = PREFERRED,
               precision: str = "fp32") -> tuple[str, dict[tuple[str, str], dict[str, Any]]]:
    """(file name, {(workload, path): row at ``precision``}) from the first of ``files`` that exists."""
    for name in files:
        p = perf_dir / name
        try:
            rows = json.loads(p.read_text())["rows"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return name, {(r["workload"], r["path"]): r for r in rows if r.get("precision") == precision}
    return "", {}


def defense_workload(reg: Any, defense: str) -> tuple[tuple[str, str], bool]:
    """((workload, path), randomized) of a registry defense config, from its class."""
    from snnbench.defenses import DEFENSES
    from snnbench.specs import from_mapping

    entry = reg.defenses[defense]
    cls = DEFENSES.get(entry.kind)
    d = cls(from_mapping(cls.Params, entry.params, f"defenses.{defense}.params"))
    return cls.perf_workload, bool(d.randomized)


def attack_steps(reg: Any, attack: str, overrides: dict[str, Any], dataset: Any, randomized: bool) -> float:
    """Input-gradient step equivalents per sample of a registry attack config (its class's ``cost``)."""
    from snnbench.attacks import ATTACKS
    from snnbench.specs import from_mapping

    entry = reg.attacks[attack]
    cls = ATTACKS.get(entry.kind)
    p = from_mapping(cls.Params, {**entry.params, **overrides}, f"attacks.{attack}.params")
    return cls(p, dataset.eps, dataset.alpha).cost(randomized).steps


def project(reg: Any, suite: Any, measured: list[Any], perf_dir: Path = PERF_DIR,
            rates: tuple[str, dict] | None = None, path: str | None = None) -> Projection:
    """GPU-hours for the suite's ``not run`` cells (models to train and cells to evaluate). ``rates``: a
    :func:`load_rates` result (default: the preferred file's fp32 rows); ``path``: force every defense onto
    one neuron path ("torch" = the reference loop), for a fused-vs-plain comparison."""
    from snnbench.specs import ATSpec, TrainSpec, from_mapping

    source, rates = rates or load_rates(perf_dir)
    todo = [m for m in measured if m.status == "not run" and m.cell.runnable]
    if not todo:
        return Projection(0.0, 0, 0, source)
    if not rates:
        return Projection(None, 0, len(todo), "", "no perf/gpu_*_bench_b256.json with measured rates")
    seconds, models = 0.0, set()
    for m in todo:
        if m.cell.dataset not in SIZES:
            return Projection(
                None, 0, len(todo), source, f"no GPU rate measured for {m.cell.dataset}-sized inputs"
            )
        n_train, n_test = SIZES[m.cell.dataset]
        n_test = min(n_test, m.cell.n_eval) if m.cell.n_eval else n_test
        (wl, own_path), randomized = defense_workload(reg, m.cell.defense)
        r = rates.get((wl, path or own_path)) or rates.get(("vanilla", path or "fused"))
        if r is None:
            return Projection(None, 0, len(todo), source, f"{source} has no rate for {wl}/{path or own_path}")
        c = m.cell
        merged = {**reg.datasets[c.dataset].train, **(suite.train or {}), "training": c.training}
        if c.T:
            merged["T"] = c.T
        at = merged.pop("at", None)
        t = from_mapping(TrainSpec, merged, "train")
        at_steps = from_mapping(ATSpec, at, "train.at").steps if isinstance(at, dict) else t.at.steps
        scale = t.T / MEASURED_T
        step = scale / (7 * r["pgd_img_s"])  # s per image per input-gradient step
        model_key = (c.dataset, c.model, c.defense, c.training, t.T)
        if m.run_id is None and model_key not in models:
            models.add(model_key)
            seconds += t.epochs * n_train * scale / r["train_img_s"] * B64
            if t.training == "at":
                seconds += t.epochs * n_train * at_steps * step * B64
        if c.attack != "clean" and c.attack in reg.attacks:
            steps = attack_steps(reg, c.attack, dict(c.attack_overrides), reg.datasets[c.dataset], randomized)
            seconds += n_test * steps * step
    return Projection(seconds / 3600, len(models), len(todo), source)
