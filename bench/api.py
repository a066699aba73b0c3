"""Python API: evaluate your own model, read the results as pandas DataFrames (also ``import snnbench``).

``evaluate(model, ...)`` takes any ``nn.Module`` that maps images in [0, 1] (``[B, C, H, W]``, the dataset's
shape) to logits ``[B, K]`` (normalisation, encoding and the time loop inside the model), runs the named
attacks on the first ``n`` test samples with the same evaluator, bounds check and reliability checks as
``bench run``, and records a run in the results database, so ``bench report`` lists the model on the
leaderboard beside the recipes (its ``training`` column reads ``external``; name, description and paper link
are stored in the run's config and as a ``model_card`` artifact). Calling it again with the same weights
and settings reuses the stored evaluations.

``results(db)`` returns every stored evaluation as a DataFrame (one row per run x evaluation; per-sample
outcomes with ``samples=True``), ``leaderboard(db)`` the ranking ``bench report`` draws, ``suite(name, db)`` a
suite's cells with reported beside measured (``pivot=True``: laid out as the paper's table).

Example::

    import snnbench
    report = snnbench.evaluate(my_snn, dataset="digits", attacks=["fgsm", "pgd"], n=200,
                               name="my-snn", paper="https://arxiv.org/abs/...", randomized=False,
                               db="sqlite:///results/bench.sqlite")
    print(report.table)                      # attack, eps, n, clean_acc, robust_acc, eot, seconds
    df = snnbench.results("sqlite:///results/bench.sqlite")
    df.pivot_table(index="name", columns="attack", values="robust_acc")

Read side: bench/dataframes.py. Write side: ``evaluate`` checks its arguments, wraps the module
(:func:`as_benchmark_model`), builds an external :class:`~snnbench.plan.Plan` (:func:`snnbench.plan.plan_external`)
and hands it to the same pipeline as ``bench run`` (:func:`snnbench.pipeline.evaluate_plans`): the same clean
row, histogram, strategies, checks and flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from snnbench.adapters import ForeignModel, attacker_controls
from snnbench.cli_common import progress as cli_progress
from snnbench.contract import OutputRule, check_output_rule, check_weights, probe_model
from snnbench.data import load_data, to_float
from snnbench.dataframes import evaluation_frame, leaderboard, results, suite
from snnbench.errors import BenchError
from snnbench.kinds import python_kinds
from snnbench.paths import database_url, make_sqlite_folder, persistent_url, results_dir_of
from snnbench.pipeline import evaluate_plans
from snnbench.plan import External, ModelCard, plan_external, resolve_dataset
from snnbench.protocol import cascade_lines, ranking_blockers, worst_case
from snnbench.registry import BenchRegistry, load_registry
from snnbench.snn.classifier import SNNClassifier
from snnbench.specs import Entry
from snnbench.store import Store

ATTACK_KEYS = ("kind", "params", "name", "description")







@dataclass
class Report:
    """What :func:`evaluate` measured: the run's evaluations and reliability flags as DataFrames."""

    run_id: int
    db: str
    card: ModelCard
    table: pd.DataFrame
    flags: pd.DataFrame
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def clean(self) -> float:
        return float(self.table["clean_acc"].iloc[0]) if len(self.table) else float("nan")

    @property
    def worst(self) -> float:
        """Per-sample worst case over this call's L-inf attacks (a sample is robust only if none fooled it)."""
        return float(self.extra.get("worst", float("nan")))

    @property
    def failed_checks(self) -> list[str]:
        return [f"{r.kind} ({r.scope})" for r in self.flags.itertuples() if not r.ok]

    @property
    def blocking_checks(self) -> list[str]:
        """Failed checks that keep the run off the leaderboard's ranking (bench.protocol.blocks_rank): its
        robust accuracy is then an upper bound, not a ranked number."""
        cascades = self.extra.get("cascades", {}) or {"": {"budget": "full"}}  # no protocol: every model check
        return sorted({b for name, art in cascades.items()
                       for b in ranking_blockers(self.failed_checks, name, str(art.get("budget", "full")))})

    def __repr__(self) -> str:
        cols = ["attack", "eps", "n", "eot", "clean_acc", "robust_acc", "seconds"]
        shown = self.table[cols].copy()
        for c in ("clean_acc", "robust_acc"):  # percentages, as bench run prints them (the table keeps fractions)
            shown[c] = [f"{100 * v:.2f}%" for v in shown[c]]
        shown = shown.rename(columns={"clean_acc": "clean", "robust_acc": "robust"})
        body = shown.to_string(index=False) if len(self.table) else "(no evaluations)"
        warn = f"\nfailed checks: {', '.join(self.failed_checks)}" if self.failed_checks else ""
        if self.blocking_checks:
            warn += ("\nUNRELIABLE, NOT RANKED: every robust accuracy above is an upper bound (failed: "
                     f"{', '.join(self.blocking_checks)})")
        cascade = "".join("\n" + "\n".join(cascade_lines(art)) for art in self.extra.get("cascades", {}).values())
        worst = f"{100 * self.worst:.2f}%" if self.worst == self.worst else "n/a"
        return f"Report(run {self.run_id}, {self.card.name}, worst {worst})\n{body}{cascade}{warn}"


# --- pieces --------------------------------------------------------------------------------------------
def weights_sha256(model: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): the model's identity in the config hash."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if not isinstance(v, torch.Tensor):  # a module's get_extra_state() may return any picklable object
            h.update(f"{k}|extra|{v!r}|".encode())
            continue
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        # reshape(-1): 0-dim tensors (BatchNorm's num_batches_tracked, snntorch's beta/threshold buffers)
        # cannot be viewed as bytes directly; ints, bools and floats of any width can once flattened.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _device_of(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _attack_entries(
    reg: BenchRegistry, attacks: Sequence[str | dict] | None, protocol: str | None
) -> tuple[BenchRegistry, list[str]]:
    """Registry names for the attacks; inline ``{kind, params}`` dicts become temporary registry entries."""
    if attacks is not None and protocol is not None:
        raise BenchError("evaluate: give attacks=[...] or protocol=..., not both")
    if attacks is None:
        # protocol "standard" is the attack config named "standard" in registry.yaml (the standard protocol)
        return reg, [protocol or "standard"]
    if isinstance(attacks, (str, dict)):
        attacks = [attacks]
    if not attacks:
        raise BenchError(
            "evaluate: attacks is empty; name at least one attack (bench ls attacks) or use protocol='standard'"
        )
    extra: dict[str, Entry] = {}
    names = []
    for i, a in enumerate(attacks):
        if isinstance(a, str):
            names.append(a)
            continue
        if not isinstance(a, dict) or "kind" not in a:
            raise BenchError(
                f"evaluate: attacks[{i}] must be a registry name or a mapping with 'kind' (and 'params'), got {a!r}"
            )
        unknown = sorted(set(a) - set(ATTACK_KEYS))
        if unknown:
            raise BenchError(
                f"evaluate: attacks[{i}] has unknown key {unknown[0]!r}; valid: {', '.join(ATTACK_KEYS)}"
            )
        name = str(a.get("name") or f"{a['kind']}_{i}")
        extra[name] = Entry(name, str(a["kind"]), dict(a.get("params") or {}), str(a.get("description", "")))
        names.append(name)
    if extra:
        reg = dataclasses.replace(reg, attacks={**reg.attacks, **extra})
    return reg, names


def as_benchmark_model(model: nn.Module, randomized: bool | None, x: torch.Tensor,
                       output: OutputRule = "auto") -> tuple[nn.Module, str]:
    """The model the harness attacks, and whether ``randomized`` was declared or detected.

    snnbench's own ``SNNClassifier`` is used as it is (its parts declare their randomness); anything else is
    wrapped in :class:`~bench.adapters.ForeignModel`. Undeclared randomness is detected from three identical
    calls on one batch (the same test as the ``randomized_logits`` check, which still runs afterwards).
    """
    from snnbench.checks import logit_spread

    if not isinstance(model, nn.Module):
        raise BenchError(f"evaluate: model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, SNNClassifier):
        if randomized is not None and bool(randomized) != model.randomized:
            raise BenchError(
                f"evaluate: randomized={randomized} contradicts the model's parts (randomized={model.randomized})"
            )
        return model, "declared"
    if randomized is None:
        probe = ForeignModel(model, randomized=False, output=output).eval()
        with torch.no_grad():
            probe(x)  # a contract violation says so before the spread is read
        return ForeignModel(model, randomized=logit_spread(probe, x) > 1e-6, output=output), "detected"
    return ForeignModel(model, randomized=bool(randomized), output=output), "declared"










def _int_arg(value: Any, field_name: str, lo: int, hi: int, hint: str = "") -> int:
    """An integer argument in [lo, hi]: bools, floats with a fraction and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise BenchError(f"evaluate: {field_name} must be an integer, got {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise BenchError(f"evaluate: {field_name} must be in [{lo}, {hi}]{hint}, got {value}")
    return int(value)


def _check_arguments(ds: Any, eps: Any, n: Any, T: Any, batch_size: Any, name: Any, description: Any, paper: Any,
                     randomized: Any) -> tuple[float | None, int | None, int, int]:
    """The numeric and text arguments of :func:`evaluate`, checked as the CLI checks its flags (one line
    naming the argument): eps a finite number in [0, 1]; n an integer in [0, test set] (0 = all);
    T in [0, 10000] (0 = not declared); batch_size in [1, 65536]; text without control characters."""
    from snnbench.specs import check_step, parse_number

    if eps is not None:
        eps = check_step(parse_number(eps, "evaluate: eps"), "evaluate: eps", zero_ok=True)
    if n is not None:
        n = _int_arg(n, "n", 0, 10**7, " (0 = the whole test set)")
    T = _int_arg(T, "T", 0, 10_000, " (0 = not declared)")
    batch_size = _int_arg(batch_size, "batch_size", 1, 65_536)
    for field_name, v in (("name", name), ("description", description), ("paper", paper)):
        if v is None and field_name == "name":
            continue
        if not isinstance(v, str):
            raise BenchError(f"evaluate: {field_name} must be a string, got {type(v).__name__} {v!r}")
        if any(ord(c) < 32 and c not in "\t" for c in v) or "\x7f" in v:
            raise BenchError(f"evaluate: {field_name} contains control characters (newline, NUL, ...): {v[:40]!r}")
    if name is not None and not name.strip():
        raise BenchError("evaluate: name must not be empty")
    if randomized is not None and not isinstance(randomized, bool):
        raise BenchError(f"evaluate: randomized must be True, False or None, got {randomized!r}")
    return eps, n, T, batch_size


# --- public --------------------------------------------------------------------------------------------
def evaluate(
    model: nn.Module,
    *,
    dataset: str = "digits",
    attacks: Sequence[str | dict] | None = None,
    protocol: str | None = None,
    eps: float | None = None,
    n: int | None = None,
    db: str | os.PathLike | None = None,
    name: str | None = None,
    description: str = "",
    paper: str = "",
    randomized: bool | None = None,
    T: int = 0,
    device: str | torch.device | None = None,
    batch_size: int = 256,
    checks: bool = True,
    force: bool = False,
    registry: str | None = None,
    data_root: str | None = None,
    substitute: bool = True,
    output: OutputRule = "auto",
    channels: str = "",
    time_limit: float | None = 6 * 3600.0,
    progress: bool = True,
) -> Report:
    """Attack ``model`` and record the run in the results database (it then appears in ``bench report``).

    Args:
        model: any ``nn.Module`` mapping images in [0, 1] shaped like the dataset (``[B, 1, 8, 8]`` for
            digits) to scores: logits ``[B, K]``, multi-step ``[T, B, K]`` or snntorch's ``(spk_rec,
            mem_rec)`` (see ``output``). Put normalisation, encoding and the time loop inside it; reset
            neuron state inside ``forward`` (spikingjelly/snntorch neurons are reset for you). The model
            contract (README "Model contract", :mod:`snnbench.contract`) is checked on a probe batch before
            anything is stored.
        dataset: a registry dataset (``bench ls datasets``) or a path to an .npz file / ImageFolder.
        attacks: registry attack names (``bench ls attacks``) and/or inline configs
            ``{"kind": "torchattacks", "params": {"name": "VMIFGSM"}, "name": "vmi"}``.
        protocol: instead of ``attacks``: the attack config of that name, e.g. ``"standard"`` (the standard
            protocol). Default when neither is given: ``"standard"``.
        eps: L-inf budget for every attack, pixel units (default: the dataset's, 0.1 for digits).
        n: evaluate the first ``n`` test samples (default: the dataset's ``eval_samples``, 0 = all).
        db: SQLAlchemy URL or path to a .sqlite file (default ``$BENCH_DB`` or ``results/bench.sqlite``).
        name: the leaderboard name (default: the model's class name).
        description: one line shown with the run.
        paper: link to the paper or code.
        randomized: ``True`` if the forward pass samples at inference (turns on EOT and multi-draw
            scoring). ``None`` detects it from identical calls; either way the ``randomized_logits``
            check compares the declaration with what the model does.
        T: time steps, recorded for the leaderboard's T column (informative only).
        device: where to attack (default: where the model's parameters are).
        batch_size: evaluation batch size.
        checks: run the run-level reliability checks (randomized flag, a short PGD eps sweep, APGD vs PGD).
        force: re-run evaluations already stored for the same weights and settings.
        registry: path to another registry.yaml.
        data_root: where torchvision datasets live.
        substitute: for the transfer attack and the protocol's transfer stage, train (once; the checkpoint is
            cached beside ``db``) snnbench's vanilla model of the dataset's default architecture as the
            black-box substitute. ``False`` skips the protocol's transfer stage (the reason is stored) and
            refuses ``attacks=["transfer"]``.
        output: how the raw output becomes logits: ``"auto"`` (default: ``[B, K]`` as is, ``[T, B, K]``
            averaged over time, a tuple's first tensor averaged over time = snntorch's spike count / T),
            ``"logits"``, ``"rate"``, ``"membrane"`` (a tuple's last tensor, e.g. snntorch's ``mem_rec``,
            averaged over time) or a callable ``raw -> logits``.
        channels: the channel axis of a 4-D ``.npz`` dataset whose shape does not tell it: ``"first"``
            (``[N, C, H, W]``) or ``"last"`` (``[N, H, W, C]``); ``bench run --channels``.
        time_limit: seconds the evaluation may be expected to take (default 6 hours; None: no bound). The
            probe batch is timed first and the cost of the attacks (their ``Attack.cost``) projected from
            it; an evaluation projected to take longer is refused before anything is stored, with the
            estimate. The estimate is printed on stderr either way.
        progress: progress bars on stderr while attacking (on a terminal).

    Returns:
        a :class:`Report` with the run id, a DataFrame of this call's evaluations and one of the run's flags.

    Raises:
        BenchError: bad input (unknown dataset or attack, eps outside [0, 1], a model that is not a Module,
            a knob the model does not expose), with a one-line message.

    Example::

        >>> report = evaluate(net, attacks=["fgsm", "pgd"], n=100, name="my-snn", randomized=False)
        >>> report.table[["attack", "clean_acc", "robust_acc"]]
    """
    if not isinstance(model, nn.Module):
        raise BenchError(f"evaluate: model must be a torch.nn.Module, got {type(model).__name__}")
    check_weights(model)  # materialised and finite, before anything reads them
    reg = load_registry(registry, kinds=python_kinds())
    ds = resolve_dataset(reg, dataset, channels)
    eps, n, T, batch_size = _check_arguments(ds, eps, n, T, batch_size, name, description, paper, randomized)
    reg, names = _attack_entries(reg, attacks, protocol)
    dev = _device_of(model, device)
    data = load_data(ds, data_root)
    if n and n > len(data.test):
        raise BenchError(f"evaluate: n {n} exceeds the test set of {ds.name} ({len(data.test)} samples; 0 = all)")
    bench_model, source, contract, t_probe, probe_n = _probed(model, randomized, output, data, ds, dev)
    card = ModelCard(
        name=(name or type(model).__name__)[:64],
        description=description,
        paper=paper,
        randomized=bool(bench_model.randomized),
        randomized_source=source,
        module=f"{type(model).__module__}.{type(model).__qualname__}",
        libraries=tuple(getattr(bench_model, "libraries", ("snnbench",))),
        attacker_controls=tuple(sorted(attacker_controls(bench_model))),
        weights_sha256=weights_sha256(model),
    )
    n_eval = n if n is not None else ds.eval_samples
    external = External(bench_model, card, T, data)
    plan = plan_external(reg, external, ds, names, {"eps": eps}, n_eval, dev, batch_size, substitute, dataset,
                         data_root)
    _check_attacks(plan, contract, bench_model)
    _check_time(plan, t_probe, probe_n, len(data.test) if not n_eval else min(n_eval, len(data.test)),
                bool(bench_model.randomized), time_limit)
    url = persistent_url(database_url(db))
    make_sqlite_folder(url)
    store = Store(url)
    bars = cli_progress(False) if progress else None
    prep = evaluate_plans(reg, [plan], store, results_dir_of(db), force=force, checks=checks, progress=bars)
    run_id = prep.run_id
    report = _report(store, run_id, card, [e.name for e, _ in plan.attacks])
    if report.failed_checks:
        warnings.warn(
            f"{card.name}: failed reliability checks: {', '.join(report.failed_checks)}", stacklevel=2
        )
    return report


def _probed(model: nn.Module, randomized: bool | None, output: OutputRule, data: Any, ds: Any, dev: torch.device):  # type: ignore[no-untyped-def]
    """The harness's view of the user's module, checked against the model contract on a probe batch
    (output form, classes, finite values; differentiability and batch dependence): (view, randomized
    source, contract report, probe seconds, probe size)."""
    probe = to_float(data.test.x[: min(64, len(data.test))]).to(dev).clone()
    probe_y = data.test.y[: len(probe)].to(dev)
    bench_model, source = as_benchmark_model(model, randomized, probe, check_output_rule(output))
    bench_model.eval()
    t = time.perf_counter()
    contract = probe_model(bench_model, probe, probe_y, ds.classes, bool(bench_model.randomized))
    bench_model.contract = contract
    return bench_model, source, contract, time.perf_counter() - t, len(probe)


def _check_attacks(plan: Any, contract: Any, bench_model: nn.Module) -> None:
    """Each requested attack can run on this model: a knob the model does not expose, a gradient attack on a
    non-differentiable model, or a no-op on a zero-gradient one fails here, before anything is stored."""
    for entry, atk in plan.attacks:
        if atk.uses_gradient and not atk.from_store and not atk.composite:
            if not contract.differentiable:
                raise BenchError(f"attack {entry.name}: the model is non-differentiable (its logits carry no "
                                 "gradient to the input); use protocol='standard' (its gradient-free and transfer "
                                 "stages still run) or a gradient-free attack (square, transfer, gaussian)")
            if contract.zero_grad and atk.always_moves:  # it would not move one pixel: a no-op, not a result
                raise BenchError(f"attack {entry.name}: the model's input gradient is zero, so {atk.kind} would "
                                 "return the inputs unchanged; use protocol='standard' (its gradient-free, "
                                 "decision-based and transfer stages still run) or rays, square or transfer")
            atk.view(bench_model)


#: forward-pass equivalents of the probe (one forward + backward, then the whole batch and its two halves)
_PROBE_FORWARDS = 5.0


def _check_time(plan: Any, probe_seconds: float, probe_n: int, n: int, randomized: bool, limit: float | None) -> None:
    """Project the evaluation's time from the timed probe and the attacks' costs (``Attack.cost``: an input
    gradient about 3 forwards, a query 1), print it, and refuse it above ``limit`` (issue 24: a model
    whose forward takes 30 s per batch must not start a week-long evaluation silently)."""
    per_sample = probe_seconds / max(1, probe_n) / _PROBE_FORWARDS
    costs = [a.cost(randomized) for _, a in plan.attacks]
    forwards = sum(c.gradients * 3 + c.forwards for c in costs) + 1
    est = per_sample * n * forwards
    sys.stderr.write(f"snnbench.evaluate: about {_duration(est)} projected ({1000 * per_sample:.2f} ms per sample "
                     f"and forward on the probe, {n} samples, at most {forwards:,.0f} forwards each)\n")
    if limit is not None and est > limit:
        raise BenchError(f"evaluate: projected to take about {_duration(est)} (the probe took {probe_seconds:.1f} s "
                         f"for {probe_n} samples), over time_limit={limit:g} s; evaluate fewer samples (n=...), "
                         "fewer attacks, or pass a larger time_limit (None: no bound)")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _report(store: Store, run_id: int, card: ModelCard, names: list[str]) -> Report:
    evals = [e for e in store.evaluations(run_id) if e.attack in names]
    table = evaluation_frame(next(r for r in store.runs() if r.id == run_id), evals)
    flags = pd.DataFrame(
        [
            {"scope": f.scope, "kind": f.kind, "ok": bool(f.ok), "value": f.value, "message": f.message}
            for f in store.flags(run_id)
        ],
        columns=["scope", "kind", "ok", "value", "message"],
    )
    linf = [e for e in evals if json.loads(e.attack_config_json).get("norm", "linf") == "linf"]
    extra = {}
    if linf and len({e.n for e in linf}) == 1:
        _, adv = worst_case([store.sample_outcomes(e.id) for e in linf])
        extra["worst"] = float(adv.mean()) if len(adv) else float("nan")
    cascades = {k: v for k, v in store.artifacts(run_id, "protocol").items() if k in names}
    if cascades:
        extra["cascades"] = cascades  # each stage's cumulative robust accuracy and samples broken
    return Report(run_id, store.display_url, card, table, flags, extra)


def load_dataset(
    name: str = "digits", split: str = "train", data_root: str | None = None, registry: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset split as float images in [0, 1] ``[N, C, H, W]`` and int64 labels ``[N]``: the same split
    :func:`evaluate` attacks (``split="test"``), so you can train on ``"train"`` without leaking test images.

    Example::

        x, y = load_dataset("digits", "train")     # [1437, 1, 8, 8], [1437]
    """
    if split not in ("train", "test"):
        raise BenchError(f"split: {split!r} is not train or test")
    data = load_data(resolve_dataset(load_registry(registry, kinds=python_kinds()), name), data_root)
    part = data.train if split == "train" else data.test
    return to_float(part.x), part.y


__all__ = ["ModelCard", "Report", "evaluate", "leaderboard", "load_dataset", "results", "suite"]
