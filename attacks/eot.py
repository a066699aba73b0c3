"""Losses and batched Expectation over Transformation (EOT) for gradient attacks.

EOT (Athalye et al. 2018; docs/defenses.md 4.3): for a model that samples at inference (Poisson coding, noisy neurons,
stochastic gates) the attacker follows the gradient of the *expected* loss,
``grad_x E_r[L(f_r(x), y)] ~ (1/N) sum_n grad_x L(f_{r_n}(x), y)``. The N draws are taken in one forward
pass on the batch repeated N times (``[N*B, ...]``), not in a Python loop; the model's randomness must be
independent per element (it is for every module here: BatchNorm runs on eval statistics during attacks).
StoG's code averages the same way over 10 passes (``EOTPGD``, ``repeat=10``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]  # (logits [B, K], labels [B]) -> per-sample loss [B]


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy on the mean-over-T logits (RAT Eq. 5)."""
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin ``max_{i != y} Z_i - Z_y`` (> 0 iff misclassified).

    The true class is masked with -inf, not multiplied by a one-hot mask: torchattacks' ``CW.f`` takes
    ``max((1 - onehot) * Z)``, which returns 0 instead of the runner-up when every logit is negative
    (docs/ecosystem.md 2.2), and SNN logits (mean membrane/spike counts) can be negative.
    """
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


def loss_grad(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn = ce_loss, samples: int = 1) -> Tensor:
    """Input gradient of the per-sample loss averaged over ``samples`` stochastic forward passes.

    Args:
        model: the attacker's view of the classifier (logits ``[B, K]``).
        x: inputs ``[B, ...]`` in [0, 1].
        y: labels ``[B]``.
        loss_fn: per-sample loss to *increase*.
        samples: EOT draws (1 = plain gradient).

    Returns:
        ``d/dx sum_b mean_n loss_fn(f_n(x_b), y_b)``, shape of ``x``.
    """
    x = x.detach().requires_grad_(True)
    reps = (samples,) + (1,) * (x.dim() - 1)
    logits = model(x.repeat(reps))  # [N*B, K]
    loss = loss_fn(logits, y.repeat(samples)).sum() / samples
    (g,) = torch.autograd.grad(loss, x)
    return g.detach()


@torch.no_grad()
def mean_logits(model: nn.Module, x: Tensor, samples: int = 1) -> Tensor:
    """Logits averaged over ``samples`` draws, in one batched forward: ``[B, K]``."""
    reps = (samples,) + (1,) * (x.dim() - 1)
    return model(x.repeat(reps)).view(samples, x.shape[0], -1).mean(0)
