"""Planted models that fool a gradient evaluation, each wrapping an honest digits network whose decision it
keeps near the data (so its true robustness is the inner network's under an adaptive attack), for the
masking tests (tests/test_masking.py) and scripts/masking_planted.py. Classes (issue 20):

- ``decoy``: keeps the inner decision but reverses the confidence ordering of the other classes, so the
  loss an attacker follows points away from the real boundary; inputs far from the data go to a wrong
  class (so a large-eps check passes);
- ``corner``: recognises perturbations lying exactly on the corners of the eps-ball around the data's
  pixel grid (digits: 16 gray levels) and maps them back onto the grid;
- ``zero``: a gradient that exists but is zero; ``noisy_grad``: a gradient of random sign or negated;
- ``hard``: non-differentiable outputs (hard labels, a step without surrogate);
- ``batch``: a prediction that depends on the rest of the batch;
- ``saturate``: the inner logits times 10^4, so the softmax saturates and CE gradients underflow to zero on
  every correctly classified sample (gradient masking by confidence);
- ``binarize``: pixels thresholded at 1/2 before the inner network (a step: zero gradient almost everywhere,
  a decision that only moves where a pixel crosses 1/2);
- ``decoy-shift``: a decoy whose wrong-class scores are a fixed permutation of the inner ones pushed down,
  so every gradient points at a class the model never switches to.

:func:`true_robust` is the adaptive attack: PGD (20 steps, random start) on the inner network at radius
``0.98 * eps`` (inside the ball, off its corners), where the wrapper's decision is the inner one's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import snnbench

EPS = 0.1
LEVELS = 16  # digits pixels are k / 16


def inner_mlp(seed: int = 0, steps: int = 200) -> nn.Module:
    """An honest digits MLP 64-128-10 (clean ~0.95, PGD eps 0.1 robust ~0.1-0.3)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    x, y = snnbench.load_dataset("digits", "train")
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, len(y), (128,), generator=g)
        loss = F.cross_entropy(net(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def _far(x: Tensor) -> Tensor:
    """Far from the data: the digits' left and right border columns are nearly blank; a budget of
    eps = 0.1 adds at most 1.6 to their 16 pixels, a large budget (0.5) up to 8."""
    return x[:, 0, :, [0, 7]].sum((1, 2)) > 3.0


class Decoy(nn.Module):
    """Inner decision kept; the other classes' scores reversed (``-z``), the winner lifted by ``margin``
    (variant ``const``: a constant score, no gradient through the winner); far inputs -> a wrong class."""

    def __init__(self, inner: nn.Module, variant: str = "reverse", margin: float = 5.0) -> None:
        super().__init__()
        self.inner, self.variant, self.margin = inner, variant, margin

    def forward(self, x: Tensor) -> Tensor:
        z = self.inner(x)
        top = z.argmax(1)
        onehot = F.one_hot(top, z.shape[1]).bool()
        rev = -z
        win = (rev.amax(1, keepdim=True) + self.margin) if self.variant == "reverse" else torch.full_like(z[:, :1], 50.0)
        out = torch.where(onehot, win.expand_as(z), rev)
        wrong = F.one_hot((top + 1) % z.shape[1], z.shape[1]).float() * 100.0
        return torch.where(_far(x)[:, None], wrong, out)


class Corner(nn.Module):
    """Pixels lying exactly ``eps`` from a grid level (or clipped at 0/1 from one) are moved back onto that
    level; when most perturbed pixels are such corners the inner network sees the clean image."""

    def __init__(self, inner: nn.Module, eps: float = EPS, variant: str = "grid") -> None:
        super().__init__()
        self.inner, self.eps, self.variant = inner, eps, variant

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            back = x.clone()
            for sign in (1.0, -1.0):
                g = x - sign * self.eps  # the level it would have come from
                on = ((g * LEVELS - (g * LEVELS).round()).abs() < 1e-3) & (g >= -1e-6) & (g <= 1 + 1e-6)
                back = torch.where(on, (g * LEVELS).round() / LEVELS, back)
            if self.variant == "grid":
                out = back
            else:  # "all": any off-grid image is rounded to the grid (a quantisation defense)
                out = (x * LEVELS).round() / LEVELS
        return self.inner(x + (out - x).detach())  # straight-through: a gradient exists, it is the inner one


class _RandSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, neg):  # type: ignore[override]
        ctx.neg = neg
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        if ctx.neg:
            return -g, None
        return g * (torch.randint(0, 2, g.shape, device=g.device) * 2 - 1).to(g.dtype), None


class NoisyGrad(nn.Module):
    """Identity forward; backward of random sign per pixel (``random``) or negated (``negate``)."""

    def __init__(self, inner: nn.Module, variant: str = "random") -> None:
        super().__init__()
        self.inner, self.variant = inner, variant

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(_RandSign.apply(x, self.variant == "negate"))


class Zero(nn.Module):
    """Hard one-hot scores plus a term whose gradient is exactly zero."""

    def __init__(self, inner: nn.Module, variant: str = "times0") -> None:
        super().__init__()
        self.inner, self.variant = inner, variant

    def forward(self, x: Tensor) -> Tensor:
        z = self.inner(x)
        hard = F.one_hot(z.argmax(1), z.shape[1]).float()
        return hard + (0 * z if self.variant == "times0" else (z - z))


class Hard(nn.Module):
    """Non-differentiable scores: hard labels (``label``) or a step of the inner scores (``step``)."""

    def __init__(self, inner: nn.Module, variant: str = "label") -> None:
        super().__init__()
        self.inner, self.variant = inner, variant

    def forward(self, x: Tensor) -> Tensor:
        z = self.inner(x)
        if self.variant == "label":
            return F.one_hot(z.argmax(1), z.shape[1]).float()
        return (z >= z.amax(1, keepdim=True)).float() * 3.0 + (z > 0).float()


class BatchStats(nn.Module):
    """Inner scores standardised by the batch's own statistics (a batch-dependent prediction)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        z = self.inner(x)
        return (z - z.mean(0, keepdim=True)) / (z.std(0, keepdim=True) + 1e-3)


class Saturate(nn.Module):
    """Inner logits times ``scale``: the same decision, a softmax saturated to one-hot."""

    def __init__(self, inner: nn.Module, scale: float = 1e4) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x) * self.scale


class Binarize(nn.Module):
    """Pixels thresholded at 1/2 (``(x > 0.5).float()``, no gradient through the step) before the inner
    network, trained on binarized digits so its clean accuracy stays high."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner((x > 0.5).float())


class DecoyShift(nn.Module):
    """Inner decision kept; the other classes get the inner scores of a shifted class (``z[(k + 3) % K]``)
    minus a margin, so an attacker following them pushes towards classes that never win."""

    def __init__(self, inner: nn.Module, margin: float = 8.0) -> None:
        super().__init__()
        self.inner, self.margin = inner, margin

    def forward(self, x: Tensor) -> Tensor:
        z = self.inner(x)
        top = z.argmax(1, keepdim=True)
        shifted = z.roll(3, dims=1) - self.margin
        return torch.where(torch.arange(z.shape[1])[None] == top, z.amax(1, keepdim=True), shifted)


def binarized_mlp(seed: int = 0, steps: int = 200) -> nn.Module:
    """The inner MLP trained on binarized digits (for :class:`Binarize`)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    x, y = snnbench.load_dataset("digits", "train")
    xb = (x > 0.5).float()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, len(y), (128,), generator=g)
        loss = F.cross_entropy(net(xb[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def planted(inner: nn.Module) -> dict[str, nn.Module]:
    """Every planted model of this module around ``inner``, by name."""
    return {
        "decoy-reverse": Decoy(inner, "reverse"), "decoy-const": Decoy(inner, "const"),
        "corner-grid": Corner(inner, variant="grid"), "corner-round": Corner(inner, variant="all"),
        "grad-random": NoisyGrad(inner, "random"), "grad-negate": NoisyGrad(inner, "negate"),
        "zero-times0": Zero(inner, "times0"), "zero-minus": Zero(inner, "minus"),
        "hard-label": Hard(inner, "label"), "hard-step": Hard(inner, "step"),
        "batch-stats": BatchStats(inner),
        "saturate": Saturate(inner), "decoy-shift": DecoyShift(inner),
    }


def true_robust(inner: nn.Module, n: int, eps: float = EPS, steps: int = 20, restarts: int = 2,
                decide: nn.Module | None = None) -> float:
    """Robust accuracy of ``inner`` (first ``n`` digits test samples) under PGD at ``0.98 eps`` with random
    starts, a sample robust only if no restart fooled it: the adaptive attack on every planted wrapper.
    ``decide``: the model whose decision counts, when it is not ``inner`` (BPDA: ``inner`` is then the
    differentiable stand-in the gradient is taken through)."""
    x, y = snnbench.load_dataset("digits", "test")
    x, y = x[:n], y[:n]
    r = 0.98 * eps
    decide = decide or inner
    robust = torch.ones(n, dtype=torch.bool)
    for k in range(restarts):
        g = torch.Generator().manual_seed(k)
        adv = (x + r * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(inner(adv), y), adv)
            adv = (x + (adv.detach() + r / 4 * grad.sign() - x).clamp(-r, r)).clamp(0, 1)
            with torch.no_grad():
                robust &= decide(adv).argmax(1) == y  # every iterate counts (a step model flips in between)
    return float(robust.float().mean())


class StraightThrough(nn.Module):
    """BPDA for :class:`Binarize`: the binarized forward, the identity's gradient through the step."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x + ((x > 0.5).float() - x).detach())
