"""Resolve a request into a plan, train or load the model, run attacks, store everything.

Config precedence, implemented only in :func:`resolve`: CLI flag > suite entry > dataset defaults
(``datasets.<name>.train`` in registry.yaml) > ``TrainSpec`` defaults. The resolved config is hashed
(canonical JSON) to address the checkpoint and the database row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnbench import checks
from snnbench.attacks import ATTACKS
from snnbench.attacks.base import Attack, GradientParams
from snnbench.data import Data, infer_custom_spec, load_data
from snnbench.defenses import DEFENSES
from snnbench.defenses.base import Defense
from snnbench.errors import BenchError
from snnbench.scoring import eval_size, evaluate_attack
from snnbench.registry import BenchRegistry
from snnbench.snn.classifier import SNNClassifier
from snnbench.specs import (
    ATSpec,
    DatasetSpec,
    Entry,
    ModelSpec,
    TrainSpec,
    check_attack_params,  # issue 16: attack bounds
    from_mapping,
    json_ready,
    to_dict,
)
from snnbench.store import EvalRecord, FlagRecord, RunInfo, Store
from snnbench.train import (
    apply_state_dict,
    build_model,
    checkpoint_dir,
    checkpoint_lock,
    failed_run_guard,
    load_checkpoint,
    load_verified,
    save_final,
    sha256_file,
    train,
)

TRAIN_OVERRIDE_KEYS = ("epochs", "batch_size", "T", "seed", "lr", "training")
ATTACK_OVERRIDE_KEYS = ("eps", "alpha", "steps", "grad_mode", "surrogate", "gamma", "eot", "seed")


@dataclass(frozen=True)
class RunRequest:
    """What the user asked for (CLI flags or one suite cell); None = use the default."""

    defense: str
    attacks: tuple[str, ...] = ()
    dataset: str = "digits"
    model: str | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    attack_overrides: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_dir: str | None = None  # shared checkpoint directory (default $BENCH_CHECKPOINTS, results/checkpoints)
    data_root: str | None = None
    n_eval: int | None = None
    eval_batch_size: int = 256
    device: str | None = None


@dataclass
class Plan:
    dataset: DatasetSpec
    model: ModelSpec
    defense_entry: Entry
    defense: Defense
    train: TrainSpec
    attacks: list[tuple[Entry, Attack]]
    config: dict[str, Any]
    config_hash: str
    device: torch.device
    n_eval: int
    request: RunRequest
    substitute: Plan | None = None  # vanilla, seed + 1: for attacks that need_substitute (transfer)


def canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(json_ready(obj), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def resolve_dataset(reg: BenchRegistry, name: str) -> DatasetSpec:
    """A registry name, or a path to the user's .npz file / ImageFolder directory."""
    if name in reg.datasets:
        return reg.datasets[name]
    p = Path(name)
    if p.suffix == ".npz" or p.is_dir():
        if not p.exists():
            raise BenchError(f"--dataset {name}: no such file or directory")
        return infer_custom_spec(p, reg.datasets["digits"])
    raise _unknown_dataset(reg, name)


def _unknown_dataset(reg: BenchRegistry, name: str) -> BenchError:
    from snnbench.errors import did_you_mean

    return BenchError(f"--dataset: unknown dataset {name!r}; {did_you_mean(name, reg.datasets)} (or a path to .npz / ImageFolder)")


def make_defense(reg: BenchRegistry, name: str, where: str = "--defense") -> tuple[Entry, Defense]:
    entry: Entry = reg.get("defenses", name, where)
    cls = DEFENSES.get(entry.kind, f"defenses.{name}.kind")
    return entry, cls(from_mapping(cls.Params, entry.params, f"defenses.{name}.params"))


def make_attack(reg: BenchRegistry, name: str, dataset: DatasetSpec, overrides: dict[str, Any]) -> tuple[Entry, Attack]:
    entry: Entry = reg.get("attacks", name, "--attack")
    cls = ATTACKS.get(entry.kind, f"attacks.{name}.kind")
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    params = {**entry.params, **{k: v for k, v in overrides.items() if k in fields and v is not None}}
    p = from_mapping(cls.Params, params, f"attacks.{name}.params")
    check_attack_params(p, f"attacks.{name}.params")  # steps >= 1, alpha > 0, bounded eot/seed (bench/specs.py)
    eps = getattr(p, "eps", None)
    if eps is not None and not 0 <= eps <= 1:
        raise BenchError(f"eps {eps} is outside [0, 1]; eps is in pixel units (e.g. 8/255 for CIFAR, 0.1 for digits)")
    atk = cls(p, dataset.eps, dataset.alpha)
    return entry, atk


def resolve(reg: BenchRegistry, req: RunRequest, suite_train: dict[str, Any] | None = None) -> Plan:
    """Merge defaults, suite and CLI into a plan; every user error surfaces here, before torch work."""
    dataset = resolve_dataset(reg, req.dataset)
    model: ModelSpec = reg.get("models", req.model or dataset.default_model, "--model")
    entry, defense = make_defense(reg, req.defense)
    merged = {**dataset.train, **(suite_train or {}), **{k: v for k, v in req.train_overrides.items() if v is not None}}
    if isinstance(merged.get("at"), dict):
        merged["at"] = from_mapping(ATSpec, merged["at"], "train.at")
    train_spec: TrainSpec = from_mapping(TrainSpec, {k: v for k, v in merged.items() if k != "at"}, "train")
    if "at" in merged:
        train_spec = dataclasses.replace(train_spec, at=merged["at"])
    attacks = [make_attack(reg, a, dataset, req.attack_overrides) for a in req.attacks]
    attacks.sort(key=lambda ea: ea[1].from_store)  # `worst` reads the others' stored outcomes: last
    device = torch.device(req.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is available here; use --device cpu")
    config = {
        "dataset": {k: v for k, v in to_dict(dataset).items() if k not in ("eps", "alpha", "description", "eval_samples")},
        "model": to_dict(model),
        "defense": {"kind": entry.kind, "params": to_dict(defense.params)},
        "train": to_dict(train_spec),
        "format": 1,
    }
    if req.checkpoint:
        config["checkpoint_sha256"] = sha256_file(req.checkpoint) if Path(req.checkpoint).is_file() else "missing"
    n_eval = req.n_eval if req.n_eval is not None else dataset.eval_samples
    plan = Plan(dataset, model, entry, defense, train_spec, attacks, config, canonical_hash(config), device, n_eval, req)
    if any(a.needs_substitute for _, a in attacks):
        plan.substitute = resolve(reg, substitute_request(req, train_spec), suite_train)
    return plan


def substitute_request(req: RunRequest, train: TrainSpec) -> RunRequest:
    """The black-box substitute (RAT/FEEL/MPD-SGR): same data, model and T, vanilla standard training,
    seed + 1; trained or loaded through the same checkpoint cache."""
    overrides = {**req.train_overrides, "seed": train.seed + 1, "training": "standard"}
    return dataclasses.replace(req, defense="vanilla", attacks=(), train_overrides=overrides, checkpoint=None)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("torchattacks", "pyautoattack", "numpy", "bench"):
        m = sys.modules.get(mod)
        if m is None:
            try:
                m = __import__(mod)
            except ImportError:
                continue
        out[mod] = str(getattr(m, "__version__", "?"))
    return out


def git_sha() -> str:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def ensure_writable(results_dir: Path) -> None:
    try:
        (results_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = results_dir / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise BenchError(f"results directory {results_dir} is not writable ({e.strerror}); pass --results-dir DIR") from None


@dataclass
class Prepared:
    model: SNNClassifier
    data: Data
    run_id: int
    trained: bool
    train_seconds: float
    checkpoint: Path


def prepare(plan: Plan, store: Store, results_dir: Path, progress: Callable | None = None) -> Prepared:
    """Load data; load the foreign/cached checkpoint or train (resuming a partial run); register the run."""
    data = load_data(plan.dataset, plan.request.data_root)
    if plan.n_eval > len(data.test):  # n_eval 0 = all; above the test set would store a duplicate "all"
        raise BenchError(f"--n-eval {plan.n_eval} exceeds the test set of {plan.dataset.name} ({len(data.test)} samples)")
    with torch.random.fork_rng(devices=[plan.device] if plan.device.type == "cuda" else []):
        torch.manual_seed(plan.train.seed)
        model = build_model(plan.dataset, plan.model, plan.defense, plan.train.T)
        ck_dir = checkpoint_dir(results_dir, plan.request.checkpoint_dir)
        final = ck_dir / f"{plan.config_hash[:32]}.pt"
        trained, seconds, resumed = False, 0.0, None
        known = store.run_by_hash(plan.config_hash)
        if plan.request.checkpoint:
            ck = load_checkpoint(plan.request.checkpoint)
            apply_state_dict(model, ck["state_dict"], plan.request.checkpoint)
            final = Path(plan.request.checkpoint)
        else:
            with checkpoint_lock(final):  # a worker sharing the directory may be training this config
                if final.exists():
                    ck = load_verified(final, plan.config_hash, known.checkpoint_sha256 if known else "")
                    apply_state_dict(model, ck["state_dict"], str(final))
                else:
                    store.upsert_run(_run_info(plan))  # status "running" until the checkpoint exists
                    partial = ck_dir / f"{plan.config_hash[:32]}.partial.pt"
                    with failed_run_guard(store, plan.config_hash):  # an error marks the run "failed"
                        out = train(model, plan.defense, data, plan.train, partial, plan.device, progress)
                        save_final(model.state_dict(), plan.config_hash, final)
                    partial.unlink(missing_ok=True)
                    trained, seconds, resumed = True, out.seconds, out.resumed_from
    model.to(plan.device).eval()
    run_id = store.upsert_run(_run_info(plan))
    if trained or plan.request.checkpoint or not store.run_by_hash(plan.config_hash).checkpoint_sha256:
        store.finish_run(run_id, status="trained", train_seconds=seconds if trained else None,
                         checkpoint_path=str(final), checkpoint_sha256=sha256_file(final), resumed_from=resumed)
    return Prepared(model, data, run_id, trained, seconds, final)


def _run_info(plan: Plan) -> RunInfo:
    return RunInfo(
        config_hash=plan.config_hash,
        config=plan.config,
        dataset=plan.dataset.name,
        model=plan.model.name,
        defense=plan.defense_entry.name,
        training=plan.train.training,
        T=plan.train.T,
        seed=plan.train.seed,
        git_sha=git_sha(),
        versions=versions(),
        device=device_name(plan.device),
        host=platform.node(),
    )


def attach_substitutes(plan: Plan, store: Store, results_dir: Path, progress: Callable | None = None) -> Prepared | None:
    """Train or load the substitute model and hand it to every attack that needs one."""
    if plan.substitute is None:
        return None
    sub = prepare(plan.substitute, store, results_dir, progress)
    for _, attack in plan.attacks:
        if attack.needs_substitute:
            attack.set_substitute(sub.model, plan.substitute.config_hash)
    return sub


def attack_hash(plan: Plan, entry: Entry, attack: Attack) -> str:
    """The stored evaluation's key: the attack's resolved config, the sample count and the config name."""
    return attack_config_hash(plan, entry, attack.config())


def attack_config_hash(plan: Plan, entry: Entry, config: dict[str, Any]) -> str:
    return canonical_hash({"attack": config, "n_eval": plan.n_eval, "name": entry.name})


def run_attack(
    plan: Plan, prep: Prepared, entry: Entry, attack: Attack, store: Store, force: bool = False,
    progress: Callable | None = None,
) -> bool:
    """Evaluate one attack unless an identical evaluation is stored; returns True when it ran."""
    if attack.from_store:
        return run_worst(plan, prep, entry, attack, store)
    if attack.composite:
        return run_protocol(plan, prep, entry, attack, store, force, progress)
    h = attack_hash(plan, entry, attack)
    if not force and store.has_evaluation(prep.run_id, h):
        return False
    with checks.library_messages() as messages:
        out = evaluate_attack(prep.model, attack, prep.data.test, plan.n_eval, plan.request.eval_batch_size,
                              plan.device, progress, desc=entry.name)
    rec = EvalRecord(entry.name, h, attack.config(), attack.eps, out.clean_correct, out.adv_correct, out.seconds,
                     attack.eot_samples(prep.model))
    flags = [checks.ball_flag(entry.name, out.max_linf, attack.eps, attack.bounded and attack.norm == "linf"),
             checks.library_flag(entry.name, messages)]
    if attack.uses_gradient:
        x, y = _check_batch(plan, prep)
        flags.append(checks.zero_grad_flag(entry.name, checks.zero_grad_fraction(attack.view(prep.model), x, y)))
    if out.draws > 1:
        flags.append(checks.expected_flag(entry.name, out.draws, out.clean_expected, out.adv_expected))
    store.record_evaluation(prep.run_id, rec, flags)
    return True


def run_protocol(
    plan: Plan, prep: Prepared, entry: Entry, attack: Attack, store: Store, force: bool = False,
    progress: Callable | None = None,
) -> bool:
    """The standard protocol (bench/protocol.py) as a cascade: each stage attacks only the samples that
    every earlier stage left robust; a sample's outcome is the per-sample worst case over the stages.

    Each stage is stored as its own evaluation (named ``<name>/<stage>``; its adversarial outcome is the
    cumulative one: robust after this and every earlier stage), so a stored stage is read back, not rerun:
    an interrupted protocol resumes at the next stage. The final evaluation ``<name>`` carries the
    protocol's config; the artifact ``protocol`` keeps each stage's robust accuracy and, per sample, the
    stage that broke it (-1: robust; -2: misclassified without attack).
    """
    from snnbench.protocol import PROTOCOL_VERSION

    base = attack_hash(plan, entry, attack)
    if not force and store.has_evaluation(prep.run_id, base):
        return False
    n = eval_size(prep.data.test, plan.n_eval)
    stored = {e.attack_hash: e for e in store.evaluations(prep.run_id)}
    clean: np.ndarray | None = None
    robust = np.ones(n, dtype=bool)
    broken_by = np.full(n, -1, dtype=np.int64)
    stages, seconds, messages = [], 0.0, []
    plan_stages = attack.stages()
    for i, (sname, st) in enumerate(plan_stages):
        name = f"{entry.name}/{sname}"
        cfg = {**st.config(), "protocol": PROTOCOL_VERSION, "stage": sname, "stage_index": i, "parent": entry.name}
        h = canonical_hash({"protocol": base, "stage": i, "attack": cfg})
        skipped = _stage_unsupported(st, prep.model)
        ev = stored.get(h) if not force else None
        if ev is not None:
            c_full, adv_full = store.sample_outcomes(ev.id)
            secs = ev.seconds
        elif skipped:
            c_full, adv_full, secs = (clean if clean is not None else robust.copy()), robust.copy(), 0.0
        else:
            idx = np.arange(n) if clean is None else np.flatnonzero(robust)
            with checks.library_messages() as stage_messages:
                out = evaluate_attack(prep.model, st, prep.data.test, plan.n_eval, plan.request.eval_batch_size,
                                      plan.device, progress, indices=idx, desc=f"{entry.name} {i + 1}/{len(plan_stages)} {sname}")
            messages += [f"{sname}: {m}" for m in stage_messages]
            if clean is None:
                c_full = out.clean_correct.copy()
                adv_full = out.adv_correct & c_full
            else:
                c_full, adv_full = clean, robust.copy()
                adv_full[idx] = out.adv_correct
            secs = out.seconds
            store.record_evaluation(prep.run_id, EvalRecord(name, h, cfg, st.eps, c_full, adv_full, secs,
                                                            st.eot_samples(prep.model)))
        if clean is None:
            clean = c_full
            robust &= clean
            broken_by[~clean] = -2
        newly = robust & ~adv_full
        broken_by[newly] = i
        robust &= adv_full
        seconds += secs
        stages.append({"name": sname, "kind": st.kind, "robust": float(robust.mean()) if n else 0.0,
                       "n_broken": int(newly.sum()), "seconds": secs, "skipped": skipped})
    assert clean is not None
    rec = EvalRecord(entry.name, base, attack.config(), attack.eps, clean, robust, seconds,
                     attack.eot_samples(prep.model))
    flags = [checks.library_flag(entry.name, messages), *checks.protocol_flags(entry.name, stages, n)]
    store.record_evaluation(prep.run_id, rec, flags)
    store.put_artifact(prep.run_id, "protocol", entry.name, {
        "version": PROTOCOL_VERSION, "budget": attack.params.budget, "n": n, "clean": float(clean.mean()) if n else 0.0,
        "stages": stages, "broken_by": broken_by.tolist(),
    })
    return True


def _stage_unsupported(stage: Attack, model: Any) -> str:
    """Why a protocol stage cannot run on this model ("" when it can): the transfer stage needs a
    substitute; surrogate and gradient-mode stages need a model that lets the attacker set them (every
    SNNClassifier does; a foreign model declares ``attacker_controls``)."""
    if stage.transfer and getattr(stage, "substitute", None) is None:
        return "no substitute model attached"
    controls = getattr(model, "attacker_controls", frozenset({"surrogate", "grad_mode"}))
    p = stage.params
    for knob, wanted in (("surrogate", getattr(p, "surrogate", None) is not None),
                         ("grad_mode", getattr(p, "grad_mode", "bptt") != "bptt")):
        if wanted and knob not in controls:
            why = getattr(model, "controls_reason", None)
            return why() if callable(why) else f"the model exposes no {knob} control"
    return ""


def _check_batch(plan: Plan, prep: Prepared, n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    from snnbench.data import to_float

    n = min(n, eval_size(prep.data.test, plan.n_eval))
    return to_float(prep.data.test.x[:n]).to(plan.device), prep.data.test.y[:n].to(plan.device)


def run_worst(plan: Plan, prep: Prepared, entry: Entry, attack: Attack, store: Store) -> bool:
    """Per-sample worst case over the other evaluations stored for this model that count toward an L-inf
    worst case (bench.protocol.counts_toward_worst: bounded L-inf attacks, same samples, eps not above
    this one's): robust only if no attack fooled the sample. Recomputed on every call, no rerun."""
    from snnbench.protocol import counts_toward_worst

    n = eval_size(prep.data.test, plan.n_eval)
    rows = [e for e in store.evaluations(prep.run_id)
            if e.n == n and counts_toward_worst(json.loads(e.attack_config_json), attack.eps)]
    if not rows:
        raise BenchError(
            f"--attack {entry.name}: no L-inf evaluation with n={n} and eps <= {attack.eps:.4g} is stored for this "
            "model; run other attacks first (e.g. --attack pgd --attack apgd --attack worst)"
        )
    outcomes = [store.sample_outcomes(e.id) for e in rows]
    clean = np.logical_and.reduce([c for c, _ in outcomes])
    adv = np.logical_and.reduce([a for _, a in outcomes])
    sources = sorted({e.attack for e in rows})
    rec = EvalRecord(entry.name, attack_hash(plan, entry, attack), {**attack.config(), "sources": sources}, attack.eps,
                     clean, adv, float(sum(e.seconds for e in rows)), max(e.eot for e in rows))
    msg = f"worst case over {len(rows)} evaluations: {', '.join(sources)}"
    store.record_evaluation(prep.run_id, rec, [FlagRecord(entry.name, "worst_sources", True, float(len(rows)), msg)])
    return True


def run_checks(plan: Plan, prep: Prepared, store: Store, sweep: bool = True, progress: Callable | None = None) -> list[FlagRecord]:
    """Run-level reliability checks (bench/checks.py), stored as flags with scope "run" or an attack name.

    Each measured check is stored as an artifact (``eps_sweep``, ``masking``) and reused by a later call
    with the same settings, so a resumed or repeated run does not pay for it twice.
    """
    model = prep.model
    x, y = _check_batch(plan, prep)
    flags = [checks.randomized_flag(checks.logit_spread(model, x), model.randomized)]
    tol = 0.02 if model.randomized else 0.0  # randomized: allow draw-to-draw noise [I]
    if sweep:
        flags.append(_eps_sweep_flag(plan, prep, store, x, y, tol, progress))
    if any(a.composite for _, a in plan.attacks):  # the standard protocol brings its masking diagnostics
        flags += _masking_flags(plan, prep, store, len(y), progress)
    rows = [checks.EvalSummary.of(e) for e in store.evaluations(prep.run_id)]
    flags += checks.comparison_flags(rows, tol)
    store.record_flags(prep.run_id, flags)
    return flags


def _attacked_eps(plan: Plan) -> float:
    """The largest L-inf budget this plan attacks with (the dataset's when none)."""
    eps = [a.eps for _, a in plan.attacks if a.bounded and a.norm == "linf" and not a.from_store]
    return max(eps, default=plan.dataset.eps)


def _pgd(eps: float, steps: int, alpha: float | None = None) -> Attack:
    a = alpha if alpha is not None else (2.5 * eps / steps if eps > 0 else 0.0)
    return ATTACKS.get("pgd")(GradientParams(eps=eps, alpha=a, steps=steps), eps, a)


def _eps_sweep_flag(plan: Plan, prep: Prepared, store: Store, x: torch.Tensor, y: torch.Tensor, tol: float,
                    progress: Callable | None) -> FlagRecord:
    """``eps_monotone`` along a PGD-7 sweep from 0 up to the largest eps actually attacked."""
    model, top = prep.model, _attacked_eps(plan)
    eps = [f * top for f in (0.0, 0.25, 0.5, 1.0)]
    prev = store.artifacts(prep.run_id, "eps_sweep").get("pgd7")
    if prev and prev["n"] == len(y) and [round(e, 9) for e in prev["eps"]] == [round(e, 9) for e in eps]:
        return checks.monotone_flag(prev["eps"], prev["expected" if model.randomized else "robust"], tol)
    accs, expected = [], []
    for e in eps:
        alpha = plan.dataset.alpha * e / plan.dataset.eps if plan.dataset.eps else 2.5 * e / 7
        out = evaluate_attack(model, _pgd(e, 7, alpha), prep.data.test, len(y), plan.request.eval_batch_size,
                              plan.device, progress, desc=f"check eps sweep {e:.3g}")
        accs.append(float(out.adv_correct.mean()))
        expected.append(out.adv_expected)
    store.put_artifact(prep.run_id, "eps_sweep", "pgd7", {"eps": eps, "robust": accs, "expected": expected, "n": len(y)})
    return checks.monotone_flag(eps, expected if model.randomized else accs, tol)


def _masking_flags(plan: Plan, prep: Prepared, store: Store, n: int, progress: Callable | None) -> list[FlagRecord]:
    """``large_eps`` (PGD-20 at eps 0.5 must bring accuracy near 0) and ``more_iters`` (APGD-CE with twice
    the protocol's iterations and a second restart must not be much stronger than APGD-CE at the protocol's
    budget: the evaluation had converged), on the check batch."""
    model, eps = prep.model, _attacked_eps(plan)
    short = next((a.budget["steps"] for _, a in plan.attacks if a.composite), 100)
    steps = 2 * short
    spec = {"n": n, "large_eps": checks.LARGE_EPS, "eps": round(eps, 9), "short": short, "long": steps}
    prev = store.artifacts(prep.run_id, "masking").get("v1")
    if prev and prev.get("spec") == spec:
        m = prev
    else:
        def robust(attack: Attack, desc: str) -> float:
            out = evaluate_attack(model, attack, prep.data.test, n, plan.request.eval_batch_size, plan.device,
                                  progress, desc=desc)
            return float(out.adv_correct.mean())

        apgd = ATTACKS.get("apgd")
        m = {
            "spec": spec,
            "large_eps": robust(_pgd(checks.LARGE_EPS, 20), f"check PGD-20 at eps {checks.LARGE_EPS}"),
            "short": robust(apgd(apgd.Params(eps=eps, steps=short, loss="ce"), eps, 0.0), f"check APGD-{short}"),
            "long": robust(apgd(apgd.Params(eps=eps, steps=steps, loss="ce", restarts=2), eps, 0.0),
                           f"check APGD-{steps} x2"),
        }
        store.put_artifact(prep.run_id, "masking", "v1", m)
    return [checks.large_eps_flag(m["large_eps"], checks.LARGE_EPS, n),
            checks.more_iters_flag(m["short"], m["long"], n, f"APGD-CE {short} -> {steps} iterations")]
