"""The standard SNN evaluation protocol (``snn-standard-v1``) as an attack kind: ``standard``.

A composite attack: it declares its stages (each an ordinary attack instance of this package) and the
pipeline (:func:`snnbench.strategies.run_cascade`) runs them as a cascade over the samples still robust, storing
each stage's per-sample outcome, so a stage already stored is never rerun (an interrupted protocol resumes
at the next stage). The definition and its rationale are in :mod:`bench.protocol` (torch-free).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snnbench.attacks.autoattack import APGD, APGDTargeted
from snnbench.attacks.base import ATTACKS, Attack
from snnbench.attacks.interior import APGDInterior
from snnbench.attacks.square import Square, SquareParams
from snnbench.attacks.transfer import Transfer
from snnbench.errors import BenchError, did_you_mean
from snnbench.protocol import (
    BUDGETS,
    INTERIOR_RADIUS,
    PROTOCOL_KIND,
    PROTOCOL_VERSIONS,
    SURROGATE_ENSEMBLE,
    describe,
    stage_names,
)
from snnbench.snn.classifier import SNNClassifier


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
    description = describe("full")
    composite = True
    needs_substitute = True  # its transfer stage  # type: ignore[assignment]
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
        b = dict(BUDGETS[params.budget])
        for k in b:
            v = getattr(params, k)
            if v is not None:
                if v < 1:
                    raise BenchError(f"standard {k} must be >= 1, got {v}")
                b[k] = int(v)
        self.budget = b
        self.substitute: SNNClassifier | None = None
        self.substitute_id = ""

    def set_substitute(self, model: SNNClassifier, identity: str) -> None:
        """The vanilla substitute for the transfer stage (attached by the runner)."""
        self.substitute, self.substitute_id = model, identity

    def stages(self) -> list[tuple[str, Attack]]:
        """The cascade's stages, in order, as (stage name, attack instance)."""
        p, b, eps = self.params, self.budget, self.eps
        common = {"eps": eps, "eot": p.eot, "seed": p.seed}
        out: list[tuple[str, Attack]] = []
        v2 = p.version == "v2"
        names = iter(stage_names(version=p.version))
        out.append((next(names), APGD(APGD.Params(steps=b["steps"], loss="ce", **common), eps, self.alpha)))
        out.append((next(names), APGDTargeted(
            APGDTargeted.Params(steps=b["steps"], target_classes=b["target_classes"], **common), eps, self.alpha)))
        for surrogate, width in SURROGATE_ENSEMBLE:
            prm = APGD.Params(steps=b["steps"], loss="ce", surrogate=surrogate, gamma=width, **common)
            out.append((next(names), APGD(prm, eps, self.alpha)))
        out.append((next(names), APGD(APGD.Params(steps=b["steps"], loss="ce", grad_mode="bptr_rga", **common),
                                      eps, self.alpha)))
        if v2:  # off-corner: ends strictly inside the ball (attacks/interior.py)
            out.append((next(names), APGDInterior(APGDInterior.Params(
                steps=b["steps"], loss="ce", radius=INTERIOR_RADIUS, **common), eps, self.alpha)))
        out.append((next(names), Square(SquareParams(eps=eps, queries=b["queries"], eot=p.eot, seed=p.seed),
                                        eps, self.alpha)))
        if v2:
            r = eps * INTERIOR_RADIUS
            out.append((next(names), Square(SquareParams(eps=r, queries=max(1, b["queries"] // 5), eot=p.eot,
                                                         seed=p.seed + 1), r, self.alpha)))
        tr = Transfer(Transfer.Params(source="pgd", steps=b["transfer_steps"], eps=eps, seed=p.seed), eps, self.alpha)
        if self.substitute is not None:
            tr.set_substitute(self.substitute, self.substitute_id)
        out.append((next(names), tr))
        return out

    def perturb(self, model: SNNClassifier, x, y):  # type: ignore[no-untyped-def]
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
            "surrogates": [list(s) for s in SURROGATE_ENSEMBLE],
            "substitute": self.substitute_id,
        }

