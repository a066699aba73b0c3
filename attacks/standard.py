"""The standard SNN evaluation protocol (``snn-standard-v1`` and ``-v2``) as an attack kind: ``standard``.

A composite attack: it declares its stages (each an ordinary attack instance of this package) and the
pipeline (:func:`snnbench.strategies.run_cascade`) runs them as a cascade over the samples still robust, storing
each stage's per-sample outcome, so a stage already stored is never rerun (an interrupted protocol resumes
at the next stage). The definition and its rationale are in :mod:`bench.protocol` (torch-free).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snnbench.attacks.autoattack import APGD, APGDTargeted
from snnbench.attacks.base import ATTACKS, Attack, Cost
from snnbench.attacks.interior import APGDInterior
from snnbench.attacks.rays import RayS, RaySParams
from snnbench.attacks.sapgd import SAPGD
from snnbench.attacks.square import Square, SquareParams
from snnbench.attacks.transfer import Transfer
from snnbench.errors import BenchError, did_you_mean
from snnbench.protocol import (
    BUDGETS,
    INTERIOR_RADIUS,
    PROTOCOL_KIND,
    PROTOCOL_VERSIONS,
    SQUARE_P_INIT_V2,
    SURROGATE_ENSEMBLE,
    V2_SUBSTITUTES,
    V2_SURROGATES,
    budget_of,
    describe,
    stage_names,
)


@dataclass(frozen=True)
class ProtocolParams:
    """``budget``: ``full`` (the protocol as defined) or ``smoke`` (the CI budget); the other fields
    override the budget's numbers (None = the budget's). ``eot`` None = automatic (EOT on for randomized
    models); ``seed`` seeds every stage."""

    eps: float | None = None
    budget: str = "full"
    steps: int | None = None
    target_classes: int | None = None
    queries: int | None = None
    transfer_steps: int | None = None
    eot: int | None = None
    seed: int = 0
    version: str = "v1"  # v1 stays readable (and hashes as before); registry.yaml's standard configs use v2


@ATTACKS.register(PROTOCOL_KIND)
class StandardProtocol(Attack):
    """The standard protocol: APGD-CE -> APGD-T -> APGD-CE under a surrogate ensemble and RGA ->
    Square -> transfer, cascaded over still-robust samples (bench/protocol.py)."""

    kind = PROTOCOL_KIND
    description = describe("full", "v2")
    composite = True
    Params = ProtocolParams
    contract_opt_out = {
        "bounds": "composite: the runner runs its stages, each a registered kind with its own contracts",
        "deterministic": "composite: the runner runs its stages, each a registered kind with its own contracts",
        "eot": "composite: the runner runs its stages, each a registered kind with its own contracts",
    }

    def __init__(self, params: ProtocolParams, eps: float, alpha: float) -> None:
        super().__init__(params, eps, alpha)
        if params.version not in PROTOCOL_VERSIONS:
            raise BenchError(f"standard version: {params.version!r} is unknown; {did_you_mean(params.version, PROTOCOL_VERSIONS)}")
        if params.budget not in BUDGETS:
            raise BenchError(f"standard budget: {params.budget!r} is unknown; {did_you_mean(params.budget, BUDGETS)}")
        b = budget_of(params.budget, params.version)
        for k in BUDGETS[params.budget]:
            v = getattr(params, k)
            if v is not None:
                if v < 1:
                    raise BenchError(f"standard {k} must be >= 1, got {v}")
                b[k] = int(v)
        self.budget = b
        self.transfer_stage = self._transfer()

    @property
    def substitute_trainings(self) -> tuple[str, ...]:
        return self.transfer_stage.substitute_trainings

    def set_substitute(self, model, identity: str, training: str = "standard") -> None:  # type: ignore[no-untyped-def]
        """A substitute of the transfer stage (attached by the runner)."""
        self.transfer_stage.set_substitute(model, identity, training)

    @property
    def substitute_id(self) -> str:
        return self.transfer_stage.substitute_id

    def _transfer(self) -> Transfer:
        p, b, eps = self.params, self.budget, self.eps
        if p.version == "v1":  # PGD on the vanilla substitute
            return Transfer(Transfer.Params(source="pgd", steps=b["transfer_steps"], eps=eps, seed=p.seed), eps, self.alpha)
        return Transfer(Transfer.Params(source="apgd", steps=b["steps"], eps=eps, seed=p.seed, substitutes=V2_SUBSTITUTES),
                        eps, self.alpha)

    def stages(self) -> list[tuple[str, Attack]]:
        """The cascade's stages, in order, as (stage name, attack instance)."""
        build = self._stages_v2 if self.params.version == "v2" else self._stages_v1
        return list(zip(stage_names(version=self.params.version), build(), strict=True))

    def _apgd(self, **kw) -> APGD:  # type: ignore[no-untyped-def]
        p = self.params
        return APGD(APGD.Params(steps=self.budget["steps"], loss="ce", eps=self.eps, eot=p.eot, seed=p.seed, **kw),
                    self.eps, self.alpha)

    def _first(self) -> list[Attack]:
        p, b = self.params, self.budget
        return [self._apgd(), APGDTargeted(APGDTargeted.Params(
            steps=b["steps"], target_classes=b["target_classes"], eps=self.eps, eot=p.eot, seed=p.seed), self.eps, self.alpha)]

    def _stages_v1(self) -> list[Attack]:
        p, b, eps = self.params, self.budget, self.eps
        out = self._first()
        # v1's "assg" stage was the quantile-width rule (bench/snn/surrogate.py quantile_width): it still is
        out += [self._apgd(surrogate="quantile" if s == "assg" else s, gamma=w) for s, w in SURROGATE_ENSEMBLE]
        out.append(self._apgd(grad_mode="bptr_rga"))
        out.append(Square(SquareParams(eps=eps, queries=b["queries"], eot=p.eot, seed=p.seed), eps, self.alpha))
        return out + [self.transfer_stage]

    def _stages_v2(self) -> list[Attack]:
        p, b, eps = self.params, self.budget, self.eps
        out = self._first()
        out += [self._apgd(surrogate=s, gamma=w) for s, w in V2_SURROGATES]
        common = {"steps": b["steps"], "eps": eps, "eot": p.eot, "seed": p.seed, "search": True}
        out.append(SAPGD(SAPGD.Params(surrogate="assg", **common), eps, self.alpha))
        out.append(SAPGD(SAPGD.Params(grad_mode="hart", surrogate="triangle", **common), eps, self.alpha))
        out.append(self._apgd(grad_mode="bptr_rga"))
        out.append(APGDInterior(APGDInterior.Params(steps=b["steps"], loss="ce", radius=INTERIOR_RADIUS, eps=eps,
                                                    eot=p.eot, seed=p.seed), eps, self.alpha))
        r = b["square_restarts"]
        out.append(Square(SquareParams(eps=eps, queries=max(1, b["queries"] // r), restarts=r, p_init=SQUARE_P_INIT_V2,
                                       eot=p.eot, seed=p.seed), eps, self.alpha))
        out.append(RayS(RaySParams(eps=eps, queries=b["rays_queries"], seed=p.seed), eps, self.alpha))
        return out + [self.transfer_stage]

    def cost(self, randomized: bool = False) -> Cost:
        """The sum of its stages' costs (each stage sees only the samples still robust: an upper bound)."""
        return sum((st.cost(randomized) for _, st in self.stages()), Cost())

    def perturb(self, model, x, y):  # type: ignore[no-untyped-def]
        raise AssertionError("the standard protocol is run stage by stage by snnbench.strategies.run_cascade")

    @property
    def protocol_version(self) -> str:
        return PROTOCOL_VERSIONS[self.params.version]

    def config(self) -> dict[str, Any]:
        base = super().config()
        if self.params.version == "v1":  # v1's stored config hashes stay what they were
            base.pop("version", None)
        return {
            **base,
            "protocol": self.protocol_version,
            **{f"budget_{k}": v for k, v in self.budget.items()},
            "surrogates": [list(s) for s in (SURROGATE_ENSEMBLE if self.params.version == "v1" else V2_SURROGATES)],
            "substitute": self.substitute_id,
        }

