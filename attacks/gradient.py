"""White-box gradient attacks (docs/defenses.md 4.2) on the attacker's view of the SNN.

All share one gradient seam, :func:`attacks.eot.loss_grad` (fixed gradient mode and surrogate, batched
EOT), so BPTT/BPTR, the attacker's surrogate and EOT are options of every attack here. The loops follow
torchattacks 3.5.1 step for step (``FGSM``, ``PGD``, ``BIM``); with EOT off, our FGSM and PGD give the
same images as torchattacks' on a deterministic model (tests/test_attacks.py), but torchattacks cannot
batch EOT or keep our gradient modes, hence our own loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from snnbench.attacks.base import ATTACKS, Attack, Cost, GradientParams, project
from snnbench.attacks.eot import LossFn, ce_loss, loss_grad, margin, mean_logits
from snnbench.errors import BenchError
from snnbench.snn.classifier import SNNClassifier


class _Iterative(Attack):
    """Shared L-inf sign-gradient loop: ``x <- Proj(x + alpha sign(grad L))``, ``steps`` times."""

    always_moves = True

    loss: LossFn = staticmethod(ce_loss)
    random_start: bool = True

    def start(self, x: Tensor) -> Tensor:
        if not self.random_start:
            return x.clone()
        return torch.clamp(x + torch.empty_like(x).uniform_(-self.eps, self.eps), min=0, max=1).detach()

    def iterate(self, model: SNNClassifier, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
        view, n = self.view(model), self.eot_samples(model)
        for _ in range(self.params.steps):
            g = loss_grad(view, x_adv, y, self.loss, n)
            x_adv = project(x_adv + self.alpha * g.sign(), x, self.eps)
        return x_adv

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        return self.iterate(model, x, y, self.start(x))


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """FGSM (RAT Eq. 5, FEEL Eq. 15, TGO Eq. 5): ``x' = clip_[0,1](x + eps sign(grad_x CE(f(x), y)))``,
    CE on the mean-over-T logits. Randomized models: the gradient is the EOT mean."""

    kind = "fgsm"
    description = "fast gradient sign method, one step of size eps"
    always_moves = True

    @dataclass(frozen=True)
    class Params(GradientParams):
        steps: int = 1

    def cost(self, randomized: bool = False) -> Cost:
        return Cost(gradients=self.eot_for(randomized))  # one step, whatever ``steps`` says

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        g = loss_grad(self.view(model), x, y, ce_loss, self.eot_samples(model))
        return torch.clamp(x + self.eps * g.sign(), min=0, max=1)


@ATTACKS.register("rfgsm")
class RFGSM(Attack):
    """R+FGSM, single step (Tramèr et al. 2018; RAT §2.2; SNN-RAT/FEEL ``attack/rfgsm.py``):
    ``x0 = clip(x + a sign(N(0, I)))``, ``x' = clip(x0 + (eps - a) sign(grad L(x0)))`` with ``a = eps/2``.

    Not torchattacks' ``RFGSM``, which is iterative in 3.5.1 (docs/defenses.md 4.2). ``alpha`` None means eps/2 (the
    paper), not the dataset's PGD step size.
    """

    kind = "rfgsm"
    description = "random step of eps/2 then one FGSM step of eps/2 (Tramer R+FGSM)"
    always_moves = True

    @dataclass(frozen=True)
    class Params(GradientParams):
        steps: int = 1

    def __init__(self, params: GradientParams, eps: float, alpha: float) -> None:
        super().__init__(params, eps, alpha)
        self.alpha = float(params.alpha) if params.alpha is not None else self.eps / 2
        if not 0 <= self.alpha <= self.eps:
            raise BenchError(f"rfgsm alpha {self.alpha} must be in [0, eps={self.eps}]")

    def cost(self, randomized: bool = False) -> Cost:
        return Cost(gradients=self.eot_for(randomized))  # one step

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        x0 = torch.clamp(x + self.alpha * torch.randn_like(x).sign(), min=0, max=1)
        g = loss_grad(self.view(model), x0, y, ce_loss, self.eot_samples(model))
        return project(x0 + (self.eps - self.alpha) * g.sign(), x, self.eps)


@ATTACKS.register("pgd")
class PGD(_Iterative):
    """PGD (RAT Eq. 6, FEEL Eq. 16-17, TGO Eq. 6): uniform random start in the eps-ball, ``steps`` signed
    steps of size alpha, projection onto the ball and [0, 1]; returns the last iterate (as the reference
    code and torchattacks ``PGD``). Paper setting: eps 8/255, alpha 0.01, 7 steps, one random start."""

    kind = "pgd"
    description = "projected gradient descent, random start (alpha, steps)"
    Params = GradientParams


@ATTACKS.register("bim")
class BIM(_Iterative):
    """BIM (Kurakin et al.; FEEL A.1, ``attack/bim.py``): PGD without the random start; each step clipped
    to ``[x - eps, x + eps] ∩ [0, 1]``. Paper setting: alpha 0.01, 7 steps."""

    kind = "bim"
    description = "basic iterative method: PGD from x itself (no random start)"
    Params = GradientParams
    random_start = False


@ATTACKS.register("cw")
class CWLinf(_Iterative):
    """C&W loss under an L-inf budget: PGD (random start, ``steps`` x alpha) that increases the margin
    ``max_{i != y} Z_i - Z_y`` on the mean-over-T logits (Madry et al.'s "CW-inf"; the issue's choice).

    Deviation from FEEL (docs/defenses.md 4.2), whose CW is the L2 tanh-space C&W with c = 0.5 and 10 Adam steps
    (unbounded, not comparable at a fixed eps); that variant is ``cw_l2``. ``kappa`` caps the
    margin as in C&W's ``max(., -kappa)``; None (default) keeps pushing after the label flips, which matters
    for randomized models where one draw's flip is not a success. Own margin, not torchattacks' ``CW.f``
    (wrong when all logits are negative).
    """

    kind = "cw"
    description = "L-inf PGD on the Carlini-Wagner margin loss (not FEEL's L2 C&W)"

    @dataclass(frozen=True)
    class Params(GradientParams):
        kappa: float | None = None

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        m = margin(logits, y)
        return m if self.params.kappa is None else m.clamp(max=self.params.kappa)


@ATTACKS.register("multi_pgd")
class MultiPGD(_Iterative):
    """Multi-PGD (TGO §3.2): PGD from ``restarts`` random starts, per-sample worst case.

    The restart kept for a sample is the one with the largest C&W margin on its final iterate (> 0 means
    misclassified), scored on logits averaged over the EOT draws for randomized models. The restart count
    is unknown in the paper [I: 5].
    """

    kind = "multi_pgd"
    description = "PGD from several random starts, per-sample worst case (restarts)"

    @dataclass(frozen=True)
    class Params(GradientParams):
        restarts: int = 5

    def __init__(self, params: Params, eps: float, alpha: float) -> None:
        super().__init__(params, eps, alpha)
        if params.restarts < 1:
            raise BenchError(f"multi_pgd restarts must be >= 1, got {params.restarts}")

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        view, n = self.view(model), self.eot_samples(model)
        best, best_m = x.clone(), torch.full((x.shape[0],), float("-inf"), device=x.device)
        for _ in range(self.params.restarts):
            x_adv = self.iterate(model, x, y, self.start(x))
            m = margin(mean_logits(view, x_adv, n), y)
            better = m > best_m
            best[better], best_m = x_adv[better], torch.where(better, m, best_m)
        return best


@ATTACKS.register("cw_l2")
class CWL2(Attack):
    """FEEL's C&W (FEEL Eq. 18-19, ``attack/cw.py``; Carlini & Wagner 2017), L2 in tanh space:
    ``min_w ||x'(w) - x||_2^2 + c max(Z_y - max_{i != y} Z_i, -kappa)``, ``x'(w) = (tanh w + 1)/2``,
    ``steps`` Adam steps (lr 0.01), c = 0.5, kappa = 0 (FEEL code); per sample the misclassified iterate
    with the smallest L2 distance is kept, else the clean input.

    Unbounded (``bounded`` False: only [0, 1] is checked), so not comparable with the L-inf attacks at a
    fixed eps and left out of ``worst``. Randomized models: the margin term is averaged over EOT draws.
    """

    kind = "cw_l2"
    description = "FEEL's L2 C&W (c 0.5, kappa 0, 10 Adam steps, lr 0.01), unbounded"
    norm = "l2"
    bounded = False

    @dataclass(frozen=True)
    class Params(GradientParams):
        steps: int = 10
        c: float = 0.5
        kappa: float = 0.0
        lr: float = 0.01

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        p, view, n = self.params, self.view(model), self.eot_samples(model)
        w = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6)).detach().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=p.lr)
        best, best_l2 = x.clone(), torch.full((x.shape[0],), float("inf"), device=x.device)
        reps = (n,) + (1,) * (x.dim() - 1)
        for _ in range(p.steps):
            x_adv = (torch.tanh(w) + 1) / 2
            logits = view(x_adv.repeat(reps)).view(n, x.shape[0], -1)  # [N, B, K]
            f = (-margin(logits.flatten(0, 1), y.repeat(n))).clamp(min=-p.kappa).view(n, -1).mean(0)
            l2 = (x_adv - x).pow(2).flatten(1).sum(1)
            (w.grad,) = torch.autograd.grad(l2.sum() + p.c * f.sum(), w)  # not .backward(): no weight grads
            with torch.no_grad():
                better = (margin(logits.mean(0), y) > 0) & (l2 < best_l2)
                best[better], best_l2 = x_adv[better], torch.where(better, l2, best_l2)
            opt.step()
        return best.detach()
