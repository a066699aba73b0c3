"""The model contract: what a submitted model's ``forward`` may return, checked before anything is stored.

A model maps a batch of images in [0, 1] (``[B, C, H, W]``, the dataset's shape) to class scores. Its raw
output is turned into logits ``[B, K]`` by an **output rule** (``output=`` of :func:`snnbench.evaluate`):

- ``"auto"`` (default): a tensor ``[B, K]`` is used as it is; a tensor ``[T, B, K]`` (spikingjelly's
  multi-step output) is averaged over time (the firing rate, spikingjelly's ``out.mean(0)``); a tuple or
  list of tensors (snntorch's ``(spk_rec, mem_rec)``, each ``[T, B, K]``) takes its first element, averaged
  over time (the spike count divided by T: snntorch's tutorials classify by spike count, so the argmax is
  theirs).
- ``"logits"``: the output must already be a ``[B, K]`` tensor.
- ``"rate"``: the first tensor (of a tuple/list), averaged over a leading time axis.
- ``"membrane"``: the last tensor of a tuple/list (snntorch's ``mem_rec``), averaged over a leading time
  axis (the mean output membrane potential, a smoother score than spike counts).
- a callable ``raw -> logits``: any other form (a dict, a custom record).

Then the logits must be floating point, ``[B, K]`` with ``B`` the batch and ``K`` the dataset's classes, and
finite with ``|logit| <= MAX_ABS_LOGIT`` (beyond that softmax arithmetic in float32 overflows; a model
returning ``logits * 1e38`` would rank first on ``inf``). The weights must be finite and materialised (not
on the ``meta`` device). A violation raises :class:`ModelContractError`, one line saying how to fix the
model, before the results database is opened.

Not violations, but facts the evaluation must know (:class:`ContractReport`; stored as failed flags so
the row is not ranked, docs/design.md "Ranking"):

- ``non_differentiable``: the logits carry no gradient to the input (detached output, hard labels,
  a Heaviside without surrogate). Gradient stages are skipped with this reason; the gradient-free and
  transfer stages still run.
- ``zero_grad``: the gradient exists but is zero on (almost) every sample (``0 * logits`` tricks, saturated
  outputs): gradient stages run, but the row cannot rank on them.
- ``batch_dependent``: a sample's logits change with the other samples of its batch (BatchNorm with
  ``track_running_stats=False``, batch-level tricks): its robustness depends on how it is batched.

The model always gets a copy of its input (:class:`~bench.adapters.ForeignModel`), and the evaluation
verifies after each attack that the test data is unchanged (:func:`data_fingerprint`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnbench.errors import BenchError
from snnbench.store import FlagRecord

OUTPUT_RULES = ("auto", "logits", "rate", "membrane")
#: Largest |logit| accepted: far above any honest score, far below float32's 3.4e38 (a cross-entropy or
#: softmax on it would overflow or saturate to a zero gradient) [I].
MAX_ABS_LOGIT = 1e15
ZERO_GRAD_SHARE = 0.9  # above this share of samples with an exactly zero input gradient: zero_grad [I]
BATCH_TOL = 1e-4  # relative logit change allowed between a batch and its halves (float reordering) [I]
README = "README 'Model contract'"


class ModelContractError(BenchError):
    """The model does not satisfy the contract; the message says how to fix it."""


OutputRule = str | Callable[[Any], Tensor]


def check_output_rule(rule: Any) -> OutputRule:
    if callable(rule):
        return rule
    if not isinstance(rule, str) or rule not in OUTPUT_RULES:
        raise ModelContractError(
            f"output: {rule!r} is not an output rule; valid: {', '.join(OUTPUT_RULES)} or a callable raw -> logits"
        )
    return rule


def _describe(raw: Any) -> str:
    if isinstance(raw, Tensor):
        return f"a {raw.dtype} tensor of shape {list(raw.shape)}"
    if isinstance(raw, (tuple, list)):
        return f"a {type(raw).__name__} of {len(raw)} ({', '.join(_describe(r) for r in raw[:3])})"
    if isinstance(raw, dict):
        return f"a dict with keys {sorted(map(str, raw))[:5]}"
    return f"a {type(raw).__name__}"


def _time_mean(t: Tensor, batch: int) -> Tensor:
    """``[T, B, K] -> [B, K]`` (mean over time); ``[B, K]`` unchanged."""
    if t.dim() == 3 and t.shape[1] == batch:
        return t.float().mean(0) if not t.is_floating_point() else t.mean(0)
    return t


def to_logits(raw: Any, rule: OutputRule, batch: int) -> Tensor:
    """The logits ``[B, K]`` of a model's raw output under ``rule`` (see the module docstring)."""
    if callable(rule):
        return rule(raw)
    if isinstance(raw, Tensor):
        if rule == "logits":
            return raw
        return _time_mean(raw, batch)
    if isinstance(raw, (tuple, list)) and raw and all(isinstance(r, Tensor) for r in raw) and rule != "logits":
        picked = raw[-1] if rule == "membrane" else raw[0]
        return _time_mean(picked, batch)
    hint = {
        "logits": "return a [B, K] tensor, or pass output='auto'",
    }.get(rule, "pass output=a function mapping the raw output to [B, K] logits")
    raise ModelContractError(f"the model returned {_describe(raw)}; output rule {rule!r} cannot make logits "
                             f"of it: {hint} ({README})")


def check_logits(logits: Any, batch: int, classes: int, raw: Any = None) -> Tensor:
    """``logits`` if they are a finite float ``[batch, classes]`` tensor, else a one-line error."""
    what = _describe(raw if raw is not None else logits)
    if not isinstance(logits, Tensor):
        raise ModelContractError(f"the model's output rule gave {_describe(logits)}, not a tensor ({README})")
    if logits.device.type == "meta":
        raise ModelContractError("the model returned a meta tensor: its weights were never loaded "
                                 "(materialise it, e.g. load_state_dict(..., assign=True), before evaluating)")
    if not logits.is_floating_point():
        raise ModelContractError(f"the model returned {what}: logits must be floating point "
                                 f"(return scores, e.g. .float(), not labels or counts as integers) ({README})")
    if logits.dim() != 2 or logits.shape[0] != batch:
        raise ModelContractError(f"the model returned {what}; logits must be [B, K] = [{batch}, {classes}] "
                                 f"for a batch of {batch} (multi-step [T, B, K] and snntorch (spk, mem) are "
                                 f"reduced by output='auto') ({README})")
    if logits.shape[1] != classes:
        raise ModelContractError(f"the model returned {logits.shape[1]} scores per sample; the dataset has "
                                 f"{classes} classes (one logit per class, in the dataset's label order)")
    bad = ~torch.isfinite(logits.detach())
    if bad.any():
        raise ModelContractError(f"the model returned non-finite logits (inf/nan in {int(bad.any(1).sum())} of "
                                 f"{batch} samples): scores must be finite ({README})")
    top = float(logits.detach().abs().max()) if logits.numel() else 0.0
    if top > MAX_ABS_LOGIT:
        raise ModelContractError(f"the model returned logits up to {top:.3g}: |logit| must be <= "
                                 f"{MAX_ABS_LOGIT:.0e} (scale them down; float32 softmax overflows) ({README})")
    return logits


def check_weights(model: nn.Module) -> None:
    """Materialised, finite parameters and float buffers (a checkpoint of inf/nan or 3e38 weights is refused)."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.device.type == "meta":
            raise ModelContractError(f"weight {name!r} is on the meta device (never loaded): materialise the "
                                     f"model (e.g. load_state_dict(..., assign=True)) before evaluating")
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t.detach()).all()):
            raise ModelContractError(f"weight {name!r} holds inf or nan values: the model cannot be evaluated")
        if t.is_floating_point() and t.numel() and float(t.detach().abs().max()) > MAX_ABS_LOGIT:
            raise ModelContractError(f"weight {name!r} reaches {float(t.detach().abs().max()):.3g} "
                                     f"(> {MAX_ABS_LOGIT:.0e}): outputs would overflow float32")


@dataclass(frozen=True)
class ContractReport:
    """What the contract probe found that the evaluation must respect (module docstring)."""

    differentiable: bool = True
    zero_grad_share: float = 0.0
    batch_dependent: bool = False
    reason: str = ""  # one line per finding, "; "-joined

    @property
    def zero_grad(self) -> bool:
        return self.differentiable and self.zero_grad_share > ZERO_GRAD_SHARE


def _forward(model: nn.Module, x: Tensor, classes: int) -> Tensor:
    try:
        return check_logits(model(x), len(x), classes)
    except ModelContractError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's forward: say what it raised, in one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelContractError(f"the model's forward raised {type(e).__name__} on a batch of {len(x)} "
                                 f"images {list(x.shape[1:])}: {msg[:200]}") from None


def probe_model(model: nn.Module, x: Tensor, y: Tensor, classes: int, randomized: bool) -> ContractReport:
    """Check the contract on one batch ``x`` (labels ``y``) and report differentiability, zero gradients
    and batch dependence. ``model`` is the harness's view (output rule applied). Raises
    :class:`ModelContractError` on a violation."""
    check_weights(model)
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = _forward(model, xg, classes)
        reasons = []
        grad = None
        if logits.requires_grad:
            (grad,) = torch.autograd.grad(F.cross_entropy(logits.float(), y, reduction="sum"), xg, allow_unused=True)
    differentiable = grad is not None
    if not differentiable:
        reasons.append("non_differentiable: the logits carry no gradient to the input (detached output, hard "
                       "labels or a step function without surrogate): gradient stages cannot run")
    share = float((grad.flatten(1).abs().amax(1) == 0).float().mean()) if grad is not None else 1.0
    if differentiable and share > ZERO_GRAD_SHARE:
        reasons.append(f"zero_grad: the input gradient is exactly zero on {100 * share:.0f}% of samples")
    dependent = False
    if not randomized and len(x) >= 4:
        with torch.no_grad():
            whole = _forward(model, x, classes)
            h = len(x) // 2
            halves = torch.cat([_forward(model, x[:h], classes), _forward(model, x[h:], classes)])
        scale = whole.abs().max().clamp_min(1e-6)
        dependent = bool(((whole - halves).abs().max() / scale) > BATCH_TOL)
        if dependent:
            reasons.append("batch_dependent: a sample's logits change with the other samples in its batch "
                           "(e.g. BatchNorm with track_running_stats=False): its robustness depends on batching")
    return ContractReport(differentiable, share, dependent, "; ".join(reasons))


def contract_flags(report: ContractReport) -> list[FlagRecord]:
    """The probe's findings as run flags (scope ``model``); a failed one keeps the row off the ranking."""
    parts = {p.split(":", 1)[0]: p for p in report.reason.split("; ") if p}
    ok = "the model contract's probe batch"
    return [
        FlagRecord("model", "non_differentiable", report.differentiable, 0.0 if report.differentiable else 1.0,
                   parts.get("non_differentiable", f"{ok}: the logits carry a gradient to the input")),
        FlagRecord("model", "zero_grad", not report.zero_grad, report.zero_grad_share,
                   parts.get("zero_grad", f"{ok}: input gradient exactly zero on "
                                          f"{100 * report.zero_grad_share:.0f}% of samples")),
        FlagRecord("model", "batch_dependent", not report.batch_dependent, float(report.batch_dependent),
                   parts.get("batch_dependent", f"{ok}: logits do not depend on the rest of the batch")),
    ]


def data_fingerprint(t: Tensor) -> str:
    """sha256 of a tensor's bytes: the test data before and after each attack must match."""
    c = t.detach().cpu().contiguous()
    return hashlib.sha256(c.reshape(-1).view(torch.uint8).numpy().tobytes() if c.numel() else b"").hexdigest()
