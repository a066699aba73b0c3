"""Square Attack (Andriushchenko et al., ECCV 2020), L-inf, from fra31's code (PyPI ``pyautoattack``).

Gradient-free: random square-shaped updates at the vertices of the eps-ball, accepted when they lower the
margin loss; it only queries the model's logits, so a surrogate gradient that hides the true decision
surface (gradient masking) cannot stop it. It is AutoAttack's last stage and the standard protocol's
gradient-free stage (``bench/protocol.py``).

Randomized models: every query is answered by the logits averaged over ``eot`` inference draws, batched in
one forward (:func:`attacks.eot.mean_logits`); fra31's Square has no EOT of its own. Like the APGD wrapper it
runs inside the attack's seeded, forked RNG (fra31 reseeds the global RNG in ``perturb``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snnbench.attacks.autoattack import _pyautoattack
from snnbench.attacks.base import ATTACKS, Attack, Cost
from snnbench.attacks.eot import mean_logits
from snnbench.eot_defaults import AUTO_EOT
from snnbench.errors import BenchError
from snnbench.snn.classifier import SNNClassifier


@dataclass(frozen=True)
class SquareParams:
    """``queries``: the query budget (5000 in AutoAttack); ``p_init``: initial fraction of pixels per
    square (0.8, fra31); ``eot``: draws averaged per query for randomized models (None = automatic)."""

    eps: float | None = None
    queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    eot: int | None = None
    seed: int = 0


class _ExpectedLogits(nn.Module):
    """Logits averaged over ``draws`` inference draws of a randomized model (one batched forward)."""

    def __init__(self, model: nn.Module, draws: int) -> None:
        super().__init__()
        self.model, self.draws = model, draws

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return mean_logits(self.model, x, self.draws)


@ATTACKS.register("square")
class Square(Attack):
    """Square Attack, L-inf, margin loss, ``queries`` queries (fra31 ``SquareAttack``)."""

    kind = "square"
    description = "Square Attack: gradient-free random search, 5000 queries (fra31 code)"
    uses_gradient = False
    gradient_free = True
    Params = SquareParams
    contract_opt_out = {"eot": "gradient-free: EOT averages each query's logits over draws (tests/test_protocol.py)"}

    def __init__(self, params: SquareParams, eps: float, alpha: float) -> None:
        super().__init__(params, eps, alpha)
        if params.queries < 1 or params.restarts < 1:
            raise BenchError(f"square queries and restarts must be >= 1, got {params.queries}, {params.restarts}")
        if not 0 < params.p_init <= 1:
            raise BenchError(f"square p_init must be in (0, 1], got {params.p_init}")

    def eot_samples(self, model: SNNClassifier) -> int:
        if self.params.eot is not None:
            return int(self.params.eot)
        return AUTO_EOT if model.randomized else 1

    def cost(self, randomized: bool = False) -> Cost:
        """``queries`` per restart, each answered over the EOT draws."""
        p = self.params
        eot = int(p.eot) if p.eot is not None else (AUTO_EOT if randomized else 1)
        return Cost(forwards=p.queries * p.restarts * eot)

    def perturb(self, model: SNNClassifier, x: Tensor, y: Tensor) -> Tensor:
        n = self.eot_samples(model)
        target = _ExpectedLogits(model, n) if n > 1 else model
        p = self.params
        atk = _pyautoattack().square.SquareAttack(
            target, norm="Linf", n_queries=p.queries, eps=self.eps, p_init=p.p_init, n_restarts=p.restarts,
            seed=p.seed, verbose=False, device=x.device,
        )
        return atk.perturb(x.float(), y).to(x.dtype)
