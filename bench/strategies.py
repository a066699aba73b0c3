"""Evaluation strategies: how a plan's attack entry becomes stored evaluations.

Three strategies, chosen by :func:`run_strategy` from the attack's class flags, read by the pipeline, the
report, the gate and the API alike:

- **single**: one attack on the evaluated samples (:func:`run_single`); an attack stays "batch in,
  adversarial batch out";
- **cascade**: the standard protocol (bench/protocol.py), each stage on the samples every earlier stage
  left robust (:func:`run_cascade`);
- **worst case**: the per-sample worst case over the evaluations already stored for the model
  (:func:`run_worst`; the rule of which evaluations count is :func:`snnbench.protocol.counts_toward_worst`
  and the reduction :func:`snnbench.protocol.worst_case`, the one place each is written).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from snnbench import checks
from snnbench.attacks.base import Attack
from snnbench.errors import BenchError
from snnbench.plan import Plan, canonical_hash
from snnbench.prepare import Prepared
from snnbench.protocol import counts_toward_worst, worst_case
from snnbench.scoring import clean_correct, eval_size, evaluate_attack
from snnbench.specs import Entry
from snnbench.store import EvalRecord, FlagRecord, Store

#: one INFO line per protocol stage; ``bench run`` shows them on stderr when it is not a terminal (logs, CI)
LOG = logging.getLogger("snnbench.protocol")


def run_strategy(
    plan: Plan, prep: Prepared, entry: Entry, attack: Attack, store: Store, force: bool = False,
    progress: Callable | None = None,
) -> bool:
    """Evaluate one attack entry with its strategy unless an identical evaluation is stored; True if it ran."""
    if attack.from_store:
        return run_worst(plan, prep, entry, attack, store)
    if attack.composite:
        return run_cascade(plan, prep, entry, attack, store, force, progress)
    return run_single(plan, prep, entry, attack, store, force, progress)


def attack_hash(plan: Plan, entry: Entry, attack: Attack) -> str:
    """The stored evaluation's key: the attack's resolved config, the sample count and the config name."""
    return attack_config_hash(plan, entry, attack.config())


def attack_config_hash(plan: Plan, entry: Entry, config: dict[str, Any]) -> str:
    return canonical_hash({"attack": config, "n_eval": plan.n_eval, "name": entry.name})


def run_single(
    plan: Plan, prep: Prepared, entry: Entry, attack: Attack, store: Store, force: bool = False,
    progress: Callable | None = None,
) -> bool:
    """One attack on the evaluated samples, unless an identical evaluation is stored; True when it ran."""
    h = attack_hash(plan, entry, attack)
    if not force and store.has_evaluation(prep.run_id, h):
        return False
    why = _needs_gradient(attack, prep.model)
    if why:
        raise BenchError(f"--attack {entry.name}: {why}; use the standard protocol (its gradient-free and transfer "
                         "stages still run) or a gradient-free attack (square, transfer, gaussian)")
    with checks.library_messages() as messages:
        out = evaluate_attack(prep.model, attack, prep.data.test, plan.n_eval, plan.request.eval_batch_size,
                              plan.device, progress, desc=entry.name)
    prep.verify_data(f"the attack {entry.name}")
    rec = EvalRecord(entry.name, h, attack.config(), attack.eps, out.clean_correct, out.adv_correct, out.seconds,
                     attack.eot_samples(prep.model))
    flags = [checks.ball_flag(entry.name, out.max_linf, attack.eps, attack.bounded and attack.norm == "linf"),
             checks.library_flag(entry.name, messages)]
    if attack.uses_gradient:
        x, y = prep.check_batch(plan)
        flags.append(checks.zero_grad_flag(entry.name, checks.zero_grad_fraction(attack.view(prep.model), x, y)))
    if out.draws > 1:
        flags.append(checks.expected_flag(entry.name, out.draws, out.clean_expected, out.adv_expected))
    store.record_evaluation(prep.run_id, rec, flags)
    return True


def run_cascade(
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
    base = attack_hash(plan, entry, attack)
    if not force and store.has_evaluation(prep.run_id, base):
        return False
    n = eval_size(prep.data.test, plan.n_eval)
    stored = {e.attack_hash: e for e in store.evaluations(prep.run_id)}
    clean: np.ndarray | None = None
    robust = np.ones(n, dtype=bool)
    broken_by = np.full(n, -1, dtype=np.int64)
    stages, seconds, messages = [], 0.0, []
    stage_flags: list[FlagRecord] = []
    plan_stages = attack.stages()
    for i, (sname, st) in enumerate(plan_stages):
        name = f"{entry.name}/{sname}"
        cfg = {**st.config(), "protocol": attack.protocol_version, "stage": sname, "stage_index": i, "parent": entry.name}
        h = canonical_hash({"protocol": base, "stage": i, "attack": cfg})
        skipped = _stage_unsupported(st, prep.model)
        ev = stored.get(h) if not force else None
        if clean is None and (skipped and ev is None):  # the first stage cannot run: clean from a plain pass
            clean = clean_correct(prep.model, prep.data.test, n, plan.request.eval_batch_size, plan.device, plan.seed)
            robust &= clean
            broken_by[~clean] = -2
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
            prep.verify_data(f"the protocol stage {sname}")
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
        LOG.info("%s %d/%d %s: %s", entry.name, i + 1, len(plan_stages), sname,
                 f"skipped ({skipped})" if skipped else
                 f"robust {100 * float(robust.mean()) if n else 0.0:.2f}% (cumulative), broke {int(newly.sum())}, {secs:.1f}s"
                 + (" (stored)" if ev is not None else ""))
        stages.append({"name": sname, "kind": st.kind, "robust": float(robust.mean()) if n else 0.0,
                       "n_broken": int(newly.sum()), "seconds": secs, "skipped": skipped,
                       "gradient_free": bool(st.gradient_free or st.transfer or not st.uses_gradient),
                       "broken": np.flatnonzero(newly).tolist()[:20]})
        if st.uses_gradient and not skipped:  # the gradient this stage followed: absent or zero?
            xb, yb = prep.check_batch(plan)
            stage_flags.append(checks.zero_grad_flag(name, checks.zero_grad_fraction(st.view(prep.model), xb, yb),
                                                     attacker_gradient=bool(_attacker_knobs(st))))
    assert clean is not None
    rec = EvalRecord(entry.name, base, attack.config(), attack.eps, clean, robust, seconds,
                     attack.eot_samples(prep.model))
    flags = [checks.library_flag(entry.name, messages), *checks.protocol_flags(entry.name, stages, n), *stage_flags]
    store.record_evaluation(prep.run_id, rec, flags)
    store.put_artifact(prep.run_id, "protocol", entry.name, {
        "version": attack.protocol_version, "budget": attack.params.budget, "n": n, "clean": float(clean.mean()) if n else 0.0,
        "stages": stages, "broken_by": broken_by.tolist(),
    })
    return True


def _needs_gradient(attack: Attack, model: Any) -> str:
    """Why ``attack`` cannot run on ``model`` for want of gradients ("" when it can): the model contract
    (snnbench.contract) found logits that carry no gradient to the input."""
    report = getattr(model, "contract", None)
    if attack.uses_gradient and not attack.from_store and report is not None and not report.differentiable:
        return "the model is non-differentiable (its logits carry no gradient to the input)"
    return ""


def _stage_unsupported(stage: Attack, model: Any) -> str:
    """Why a protocol stage cannot run on this model ("" when it can): gradient stages need a
    differentiable model; the transfer stage needs a substitute; surrogate and gradient-mode stages need a
    model that lets the attacker set them (every SNNClassifier does; a foreign model declares
    ``attacker_controls``)."""
    why = _needs_gradient(stage, model)
    if why:
        return why
    if stage.transfer and getattr(stage, "substitute", None) is None:
        return "no substitute model attached"
    controls = getattr(model, "attacker_controls", frozenset({"surrogate", "grad_mode"}))
    p = stage.params
    unsupported = getattr(model, "unsupported", None)  # a foreign model says what it cannot take, and why
    if callable(unsupported):
        why = unsupported(getattr(p, "grad_mode", "bptt"), getattr(p, "surrogate", None))
        if why:
            return why
    for knob in _attacker_knobs(stage):
        if knob not in controls:
            why = getattr(model, "controls_reason", None)
            return why() if callable(why) else f"the model exposes no {knob} control"
    return ""


def _attacker_knobs(stage: Attack) -> list[str]:
    """The gradient knobs a stage sets on the model instead of its own gradient: ``surrogate`` and/or
    ``grad_mode`` (none: the stage follows the model's own gradient)."""
    p = stage.params
    return [knob for knob, chosen in (("surrogate", getattr(p, "surrogate", None) is not None),
                                      ("grad_mode", getattr(p, "grad_mode", "bptt") != "bptt")) if chosen]


def run_worst(plan: Plan, prep: Prepared, entry: Entry, attack: Attack, store: Store) -> bool:
    """Per-sample worst case over the other evaluations stored for this model that count toward an L-inf
    worst case (bench.protocol.counts_toward_worst: bounded L-inf attacks, same samples, eps not above
    this one's): robust only if no attack fooled the sample. Recomputed on every call, no rerun."""
    n = eval_size(prep.data.test, plan.n_eval)
    rows = [e for e in store.evaluations(prep.run_id)
            if e.n == n and counts_toward_worst(json.loads(e.attack_config_json), attack.eps)]
    if not rows:
        raise BenchError(
            f"--attack {entry.name}: no L-inf evaluation with n={n} and eps <= {attack.eps:.4g} is stored for this "
            "model; run other attacks first (e.g. --attack pgd --attack apgd --attack worst)"
        )
    clean, adv = worst_case([store.sample_outcomes(e.id) for e in rows])
    sources = sorted({e.attack for e in rows})
    rec = EvalRecord(entry.name, attack_hash(plan, entry, attack), {**attack.config(), "sources": sources}, attack.eps,
                     clean, adv, float(sum(e.seconds for e in rows)), max(e.eot for e in rows))
    msg = f"worst case over {len(rows)} evaluations: {', '.join(sources)}"
    store.record_evaluation(prep.run_id, rec, [FlagRecord(entry.name, "worst_sources", True, float(len(rows)), msg)])
    return True
