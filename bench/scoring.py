"""Clean and adversarial evaluation of one model against one attack, batched, per-sample outcomes kept.

Every adversarial batch is checked to lie inside [0, 1] and, for L-inf attacks, inside the eps-ball around
the clean input (an attack that leaves either is a bug, so this raises instead of storing a number);
labels are passed by copy so an attack cannot change them.

Randomized models (docs/defenses.md 4.3) are scored over ``draws`` independent inference passes (5 by default):
the stored per-sample boolean means *correct in every draw* (worst case over draws, the conservative
choice), and the expected accuracy (mean over draws) is returned beside it. Scoring draws are seeded, so
a rerun gives the same numbers. Deterministic models are scored once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from snnbench.attacks.base import Attack, seeded
from snnbench.data import Split, to_float
from snnbench.eot_defaults import RANDOMIZED_DRAWS
from snnbench.errors import BenchError
from snnbench.snn.classifier import SNNClassifier

BALL_TOL = 1e-5
_SCORE_SEED = 7_919  # scoring draws use their own seeded stream, separate from the attack's


class AttackBoundsError(RuntimeError):
    """An attack returned images outside its eps-ball or outside [0, 1]."""


@dataclass(frozen=True)
class EvalOutcome:
    clean_correct: np.ndarray  # bool [n], correct in every draw
    adv_correct: np.ndarray  # bool [n], correct in every draw
    seconds: float
    max_linf: float
    draws: int = 1
    clean_expected: float = 0.0  # accuracy averaged over draws
    adv_expected: float = 0.0


def predict(model: SNNClassifier, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def correct_counts(model: SNNClassifier, x: Tensor, y: Tensor, draws: int, seed: int) -> Tensor:
    """How many of ``draws`` seeded inference passes classify each sample correctly: ``[B]`` int."""
    with seeded(seed, x.device), torch.no_grad():
        reps = (draws,) + (1,) * (x.dim() - 1)
        pred = model(x.repeat(reps)).argmax(1).view(draws, -1)  # [draws, B]
    return (pred == y).sum(0)


def check_bounds(x: Tensor, x_adv: Tensor, eps: float | None, attack: str) -> float:
    """Raise AttackBoundsError unless x_adv is in [0, 1] and (eps given) in the L-inf eps-ball of x;
    return the largest L-inf perturbation."""
    if x_adv.shape != x.shape:
        raise AttackBoundsError(f"{attack}: returned shape {tuple(x_adv.shape)} for input {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all():
        raise AttackBoundsError(f"{attack}: returned non-finite images")
    linf = float((x_adv - x).abs().max()) if x.numel() else 0.0
    if eps is not None and linf > eps + BALL_TOL:
        raise AttackBoundsError(f"{attack}: perturbation {linf:.6f} exceeds eps {eps:.6f}")
    if x.numel() and (float(x_adv.min()) < -BALL_TOL or float(x_adv.max()) > 1 + BALL_TOL):
        raise AttackBoundsError(f"{attack}: images leave [0, 1] ({float(x_adv.min())}..{float(x_adv.max())})")
    return linf


def clean_correct(model: nn.Module, split: Split, n: int, batch_size: int, device: torch.device,
                  seed: int) -> np.ndarray:
    """Per-sample clean correctness on the first ``n`` test samples (one seeded draw for randomized models)."""
    n = eval_size(split, n)
    out = []
    with seeded(seed, device):  # randomized models: a reproducible draw
        for start in range(0, n, batch_size):
            x = to_float(split.x[start : min(n, start + batch_size)]).to(device).clone()  # [B, C, H, W]
            y = split.y[start : min(n, start + batch_size)].to(device)
            out.append((predict(model, x) == y).cpu())
    return torch.cat(out).numpy().astype(bool) if out else np.zeros(0, bool)


def eval_size(split: Split, n: int) -> int:
    """The number of test samples an evaluation uses (``n`` <= 0 means all)."""
    return min(n, len(split)) if n > 0 else len(split)


def evaluate_attack(
    model: SNNClassifier,
    attack: Attack,
    split: Split,
    n: int,
    batch_size: int,
    device: torch.device,
    progress: Callable | None = None,
    draws: int | None = None,
    indices: np.ndarray | None = None,
    desc: str | None = None,
    batches: set[int] | None = None,
) -> EvalOutcome:
    """Attack the first ``n`` test samples in order (a fixed, reproducible subset), or only the samples
    ``indices`` among them (the protocol's cascade attacks the samples still robust); the outcome arrays
    follow the order of ``indices``. ``batches``: run only these batch numbers (same composition, seeds
    and batch index as in the full evaluation; the outcomes then cover those batches' samples, in order):
    how a submission is re-checked on a sample (snnbench.submission)."""
    model.eval()
    n = eval_size(split, n)
    idx = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
    if batches is not None:
        starts = range(0, len(idx), batch_size)
        idx_run = np.concatenate([idx[s : s + batch_size] for b, s in enumerate(starts) if b in batches] or
                                 [np.zeros(0, np.int64)])
    else:
        idx_run = idx
    draws = draws or (RANDOMIZED_DRAWS if model.randomized else 1)
    clean, adv = [], []
    max_linf = 0.0
    t0 = time.perf_counter()
    bar = progress(total=len(idx_run), desc=desc or attack.kind) if progress else None
    for b, start in enumerate(range(0, len(idx), batch_size)):
        if batches is not None and b not in batches:
            continue
        sel = torch.from_numpy(idx[start : start + batch_size])
        x = to_float(split.x[sel]).to(device)  # [B, C, H, W]
        y = split.y[sel].to(device)
        clean.append(correct_counts(model, x, y, draws, _SCORE_SEED + b).cpu())
        x_adv = attack.generate(model, x.clone(), y.clone(), batch_index=b)
        model.eval()  # an attack library may have restored another mode
        eps = attack.eps if attack.bounded and attack.norm == "linf" else None
        max_linf = max(max_linf, check_bounds(x, x_adv, eps, attack.kind))
        adv.append(correct_counts(model, x_adv, y, draws, _SCORE_SEED + 104_729 + b).cpu())
        if bar:
            bar.update(len(y))
    if bar:
        bar.close()
    if attack.always_moves and attack.eps > 0 and len(idx_run) and max_linf == 0.0:
        raise BenchError(
            f"attack {attack.kind}: not one pixel of the {len(idx_run)} inputs moved (eps {attack.eps:g}, alpha "
            f"{attack.alpha:g}): a no-op is not a result; check the step size, and whether the model's input "
            "gradient is zero (bench's zero_grad check)"
        )
    c = torch.cat(clean).numpy() if clean else np.zeros(0, int)
    a = torch.cat(adv).numpy() if adv else np.zeros(0, int)
    n = len(idx_run)
    return EvalOutcome(
        c == draws,
        a == draws,
        time.perf_counter() - t0,
        max_linf,
        draws,
        float(c.mean() / draws) if n else 0.0,
        float(a.mean() / draws) if n else 0.0,
    )
