"""SNN-RAT: regularized adversarial training (Ding et al., NeurIPS 2022; docs/defenses.md 2.2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnbench.defenses.base import DEFENSES, Defense, TrainContext
from snnbench.errors import BenchError, did_you_mean
from snnbench.snn.classifier import SNNClassifier
from snnbench.specs import TrainSpec

MIX_ATTACKS = ("fgsm_bptt", "rfgsm_bptt", "fgsm_bptr", "rfgsm_bptr")


def single_step_examples(
    model: SNNClassifier,
    x: Tensor,
    y: Tensor,
    eps: float,
    grad_mode: str = "bptt",
    random_step: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """FGSM (RAT Eq. 5) or RFGSM (Tramer et al. 2018, as SNN-RAT ``attack/rfgsm.py``) for training.

    FGSM: x' = clip(x + eps sign(grad L(x))). RFGSM: x0 = clip(x + a sign(N(0, I))), a = eps/2, then
    x' = clip(x0 + (eps - a) sign(grad L(x0))). Generated in eval mode (BN running statistics) with the
    given gradient mode (``bptt`` or ``bptr``), as the reference code's training attacks.
    """
    was_training = model.training
    model.eval()
    try:
        x0, step = x.detach(), eps
        if random_step:
            a = eps / 2
            noise = torch.randn(x.shape, generator=generator, device="cpu").to(x)
            x0, step = (x0 + a * noise.sign()).clamp(0, 1), eps - a
        x0 = x0.clone().requires_grad_(True)
        with model.gradient_mode(grad_mode):
            loss = F.cross_entropy(model(x0), y)
            (g,) = torch.autograd.grad(loss, x0)
        x_adv = (x0.detach() + step * g.sign()).clamp(0, 1)
        return torch.min(torch.max(x_adv, x - eps), x + eps).detach()
    finally:
        model.train(was_training)


def orthogonal_retraction(
    model: nn.Module,
    beta: float,
    row_fraction: float = 0.3,
    row_threshold: int = 200,
    generator: torch.Generator | None = None,
) -> None:
    """RAT Eq. 20 on every Conv2d/Linear weight (conv reshaped to C_out x C_in k k): W <- (1+b) W - b W W^T W.

    Linear layers with >= ``row_threshold`` rows retract a random ``row_fraction`` of their rows per call
    (SNN-RAT ``orthogonal_retraction`` speed trick). Call under ``torch.no_grad()``.
    """
    for m in model.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        w = m.weight.data
        w2 = w.reshape(w.shape[0], -1)  # [C_out, fan_in] (a view)
        if isinstance(m, nn.Linear) and w.shape[0] >= row_threshold:
            rows = torch.randperm(w.shape[0], generator=generator)[: int(w.shape[0] * row_fraction)].to(
                w.device
            )
            sub = w2[rows]
            w2[rows] = (1 + beta) * sub - beta * sub @ sub.t() @ sub
        else:
            w2.copy_((1 + beta) * w2 - beta * w2 @ w2.t() @ w2)


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of a 1-D tensor onto the probability simplex (sum 1, entries >= 0)."""
    u, _ = torch.sort(v, descending=True)
    css = u.cumsum(0) - 1
    k = torch.arange(1, v.numel() + 1, device=v.device, dtype=v.dtype)
    rho = int((u - css / k > 0).nonzero().max())
    theta = css[rho] / (rho + 1)
    return (v - theta).clamp(min=0)


def convex_constraint(model: nn.Module) -> None:
    """Project WRN residual mixing weights (parameters named ``convex``) onto the simplex (SNN-RAT utils.py)."""
    for name, p in model.named_parameters():
        if name.endswith("convex"):
            p.data.copy_(project_simplex(p.data))


@DEFENSES.register("rat")
class RAT(Defense):
    """SNN-RAT (Ding et al., NeurIPS 2022): orthogonal retraction + adversarial training.

    Implements RAT Eq. 20, W <- W - beta (W W^T W - W), after every optimiser step on every Conv2d and
    Linear weight, classifier included (conv reshaped to C_out x fan_in), pushing sigma_max(W) -- the bound
    on the spiking Lipschitz constant of Prop. 1 -- towards 1; WRN convex residual weights are projected onto
    the simplex (``convex_constraint``). Linear layers with >= 200 rows retract a random 30 % of rows per
    step (reference code).

    Training (``--training at``):
    - ``mix=True`` (config ``rat``, the paper, RAT 4.3/5.1): each mini-batch is perturbed by one attack drawn
      uniformly from {FGSM, RFGSM} x {BPTT, BPTR} at the training eps (dataset ``train_eps``; 2/255 on CIFAR);
      plain CE on the adversarial batch, no clean term [P:RAT-paper; C:SNN-RAT ``train_mix``]. The first
      commit of the code trains on the two BPTR attacks only; the paper's four are the faithful spec.
    - ``mix=False`` (config ``rat_pgd``): the later papers' "RAT" = PGD-2 AT (alpha eps/2) + retraction, with
      weight decay 5e-4 kept [C:FEEL ``rat_train``].
    Under ``--training standard`` only the retraction is applied (RAT Table 3, row "REG, no MIX").

    Defaults: beta = 0.001 (VGG-11 [P]; use 0.004 for WRN-16 [P]; small_conv on digits uses 0.001 [I]);
    weight decay 0 when the regulariser is on [C:SNN-RAT main_train.py ``--special reg``].
    Deterministic at inference (no EOT needed).
    """

    paper = "Ding et al., NeurIPS 2022 (SNN-RAT)"
    description = "orthogonal weight retraction (sigma_max -> 1) + mixed FGSM/RFGSM x BPTT/BPTR AT"

    @dataclass(frozen=True)
    class Params:
        beta: float = 0.001
        mix: bool = True
        mix_attacks: tuple[str, ...] = MIX_ATTACKS
        weight_decay: float = 0.0
        row_fraction: float = 0.3

        def __post_init__(self) -> None:
            if not self.beta >= 0:
                raise BenchError(f"rat.beta must be >= 0, got {self.beta}")
            if not self.mix_attacks:
                raise BenchError(f"rat.mix_attacks is empty; valid: {', '.join(MIX_ATTACKS)}")
            for a in self.mix_attacks:
                if a not in MIX_ATTACKS:
                    raise BenchError(
                        f"rat.mix_attacks: {a!r} is not a training attack; {did_you_mean(a, MIX_ATTACKS)}"
                    )

    def weight_decay(self, train: TrainSpec) -> float:
        return self.params.weight_decay

    def perturb(self, ctx: TrainContext, x: Tensor, y: Tensor) -> Tensor:
        if ctx.train.training != "at" or not self.params.mix:
            return super().perturb(ctx, x, y)
        eps = ctx.train.at.eps if ctx.train.at.eps is not None else ctx.dataset.train_eps
        names = self.params.mix_attacks
        pick = names[int(torch.randint(len(names), (1,), generator=ctx.generator))]
        kind, mode = pick.split("_")
        return single_step_examples(ctx.model, x, y, eps, mode, kind == "rfgsm", ctx.generator)

    mechanism_sense = {"orthogonality_error": "lower"}

    def mechanism(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        """RAT's retraction (Eq. 20) pulls every weight's singular values towards 1: the mean |sigma - 1| over
        the Conv2d/Linear weights (conv reshaped to C_out x C_in k k)."""
        errs = []
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    sv = torch.linalg.svdvals(m.weight.reshape(m.weight.shape[0], -1).float())
                    errs.append((sv - 1).abs().mean())
        return {"orthogonality_error": float(torch.stack(errs).mean())} if errs else {}

    def after_step(self, model: nn.Module, ctx: TrainContext) -> None:
        orthogonal_retraction(model, self.params.beta, self.params.row_fraction, generator=ctx.generator)
        convex_constraint(model)
