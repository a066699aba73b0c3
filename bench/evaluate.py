"""Clean and adversarial evaluation of one model against one attack, batched, per-sample outcomes kept.

Every adversarial batch is checked to lie inside the eps-ball around the clean input and inside [0, 1]
(an attack that leaves either is a bug, so this raises instead of storing a number), and labels are
passed by copy so an attack cannot change them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from attacks.base import Attack
from bench.data import Split, to_float
from bench.snn.classifier import SNNClassifier

BALL_TOL = 1e-5


class AttackBoundsError(RuntimeError):
    """An attack returned images outside its eps-ball or outside [0, 1]."""


@dataclass(frozen=True)
class EvalOutcome:
    clean_correct: np.ndarray  # bool [n]
    adv_correct: np.ndarray  # bool [n]
    seconds: float
    max_linf: float


def predict(model: SNNClassifier, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def check_bounds(x: Tensor, x_adv: Tensor, eps: float, attack: str) -> float:
    """Raise AttackBoundsError unless x_adv is in the L-inf eps-ball of x and in [0, 1]; return the L-inf."""
    if x_adv.shape != x.shape:
        raise AttackBoundsError(f"{attack}: returned shape {tuple(x_adv.shape)} for input {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all():
        raise AttackBoundsError(f"{attack}: returned non-finite images")
    linf = float((x_adv - x).abs().max()) if x.numel() else 0.0
    if linf > eps + BALL_TOL:
        raise AttackBoundsError(f"{attack}: perturbation {linf:.6f} exceeds eps {eps:.6f}")
    if float(x_adv.min()) < -BALL_TOL or float(x_adv.max()) > 1 + BALL_TOL:
        raise AttackBoundsError(f"{attack}: images leave [0, 1] ({float(x_adv.min())}..{float(x_adv.max())})")
    return linf


def evaluate_attack(
    model: SNNClassifier,
    attack: Attack,
    split: Split,
    n: int,
    batch_size: int,
    device: torch.device,
    progress: Callable | None = None,
) -> EvalOutcome:
    """Attack the first ``n`` test samples in order (a fixed, reproducible subset)."""
    model.eval()
    n = min(n, len(split)) if n > 0 else len(split)
    clean, adv = [], []
    max_linf = 0.0
    t0 = time.perf_counter()
    bar = progress(total=n, desc=attack.kind) if progress else None
    for b, start in enumerate(range(0, n, batch_size)):
        x = to_float(split.x[start : min(n, start + batch_size)]).to(device)  # [B, C, H, W]
        y = split.y[start : min(n, start + batch_size)].to(device)
        clean.append((predict(model, x) == y).cpu())
        x_adv = attack.generate(model, x.clone(), y.clone(), batch_index=b)
        model.eval()  # an attack library may have restored another mode
        max_linf = max(max_linf, check_bounds(x, x_adv, attack.eps, attack.kind))
        adv.append((predict(model, x_adv) == y).cpu())
        if bar:
            bar.update(len(y))
    if bar:
        bar.close()
    return EvalOutcome(
        torch.cat(clean).numpy().astype(bool) if clean else np.zeros(0, bool),
        torch.cat(adv).numpy().astype(bool) if adv else np.zeros(0, bool),
        time.perf_counter() - t0,
        max_linf,
    )
