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

from snnbench.paths import PERF_DIR

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


#: input-gradient steps of a kind whose config leaves ``steps`` unset (its Params default)
DEFAULT_STEPS = {"apgd": 100, "apgd_t": 900, "square": 5000 // 2, "fgsm": 1, "rfgsm": 1, "cw_l2": 10,
                 "gaussian": 0, "uniform": 0, "worst": 0, "standard": 100 * 18 + 5000 // 2 + 10}


def _steps_of(kind: str, cfg: dict[str, Any]) -> int:
    """Input-gradient steps (forward passes count half) of one attack config, from registry data only."""
    if kind == "autoattack":
        steps = AUTOATTACK_STEPS
    else:
        steps = int(cfg.get("steps") or DEFAULT_STEPS.get(kind, 7))
    return steps * int(cfg.get("restarts", 1) or 1) * max(1, int(cfg.get("eot", 1) or 1))


def project(reg: Any, suite: Any, measured: list[Any], perf_dir: Path = PERF_DIR) -> Projection:
    """GPU-hours for the suite's ``not run`` cells (models to train and cells to evaluate)."""
    from snnbench.specs import ATSpec, TrainSpec, from_mapping

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
        n_train, n_test = SIZES[m.cell.dataset]
        n_test = min(n_test, m.cell.n_eval) if m.cell.n_eval else n_test
        wl, path = WORKLOAD.get(reg.defenses[m.cell.defense].kind, ("vanilla", "fused"))
        r = rates.get((wl, path)) or rates.get(("vanilla", "fused"))
        if r is None:
            return Projection(None, 0, len(todo), source, f"{source} has no fp32 rate for {wl}/{path}")
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
            e = reg.attacks[c.attack]
            cfg = {**e.params, **{k: v for k, v in c.attack_overrides.items() if k != "attack_params"}}
            seconds += n_test * _steps_of(e.kind, cfg) * step
    return Projection(seconds / 3600, len(models), len(todo), source)
