"""Projected GPU-hours of a suite's cells that are not run yet, from measured rates in ``perf/*.json``.

Same cost model as ``scripts/project_cost.py`` (which projects MPD-SGR Table 1), applied per cell:

- training one model: ``epochs x N_train / train_img_s``, plus ``epochs x N_train x at_steps`` input-gradient
  steps under adversarial training; one input-gradient step costs ``1 / (7 pgd_img_s)`` s per image (the
  rate is measured with PGD-7);
- evaluating one cell: ``N_test x steps x restarts x EOT`` input-gradient steps (AutoAttack counted as 400:
  APGD-CE, APGD-T, FAB-T and Square at 100 iterations each, a rough stand-in);
- the workload whose rates a defense uses: MPD-SGR -> ``mpd``, TGO and StoG (random draws per neuron and
  step) -> ``tgo``, FEEL (learnable per-step leak, not fused) -> the plain ``torch`` path, the rest
  ``vanilla``; rates are scaled linearly in T from the measured T=8 and by 1.1 for the recipes' B=64.

The rates were measured for VGG-11 on 32x32 inputs, so only CIFAR-sized datasets are projected; others
say so. A projection, not a promise: it is printed with the file it comes from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import NotImplementedYet

PERF_DIR = Path(__file__).resolve().parent.parent / "perf"
PREFERRED = ("gpu_h200_bench_b256.json", "gpu_h100_bench_b256.json")
# (train, test) images: the torchvision datasets of the papers
SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "tiny_imagenet": (100_000, 10_000)}
WORKLOAD = {
    "mpd_sgr": ("mpd", "fused"),
    "tgo": ("tgo", "fused"),
    "stog": ("tgo", "fused"),
    "feel": ("vanilla", "torch"),
}
AUTOATTACK_STEPS, B64, MEASURED_T = 400, 1.1, 8


@dataclass(frozen=True)
class Projection:
    hours: float | None  # None: not projectable (reason says why)
    models: int  # models still to train
    cells: int  # cells still to evaluate
    source: str  # perf file the rates come from
    reason: str = ""


def load_rates(perf_dir: Path = PERF_DIR) -> tuple[str, dict[tuple[str, str], dict[str, Any]]]:
    """(file name, {(workload, path): fp32 row}) from the first preferred perf file that exists."""
    for name in PREFERRED:
        p = perf_dir / name
        try:
            rows = json.loads(p.read_text())["rows"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return name, {(r["workload"], r["path"]): r for r in rows if r.get("precision") == "fp32"}
    return "", {}


def _steps(attack: Any) -> int:
    p = getattr(attack, "params", None)
    if getattr(attack, "kind", "") == "autoattack":
        steps = AUTOATTACK_STEPS
    else:
        steps = int(getattr(p, "steps", 1) or 1)
    return steps * int(getattr(p, "restarts", 1) or 1) * max(1, int(getattr(p, "eot", 1) or 1))


def project(reg: Any, suite: Any, measured: list[Any], perf_dir: Path = PERF_DIR) -> Projection:
    """GPU-hours for the suite's ``not run`` cells (models to train and cells to evaluate)."""
    from bench.suites import plan_cell

    source, rates = load_rates(perf_dir)
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
        try:
            plan = plan_cell(reg, suite, m.cell, device="cpu")
        except NotImplementedYet:
            continue
        n_train, n_test = SIZES[m.cell.dataset]
        n_test = min(n_test, plan.n_eval) if plan.n_eval else n_test
        wl, path = WORKLOAD.get(plan.defense_entry.kind, ("vanilla", "fused"))
        r = rates.get((wl, path)) or rates.get(("vanilla", "fused"))
        if r is None:
            return Projection(None, 0, len(todo), source, f"{source} has no fp32 rate for {wl}/{path}")
        scale = plan.train.T / MEASURED_T
        step = scale / (7 * r["pgd_img_s"])  # s per image per input-gradient step
        if m.run_id is None and plan.config_hash not in models:
            models.add(plan.config_hash)
            t = plan.train
            seconds += t.epochs * n_train * scale / r["train_img_s"] * B64
            if t.training == "at":
                seconds += t.epochs * n_train * t.at.steps * step * B64
        if plan.attacks:
            seconds += n_test * _steps(plan.attacks[0][1]) * step
    return Projection(seconds / 3600, len(models), len(todo), source)
