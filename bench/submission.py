"""Submission bundles (issue 23 item 4): a run's results carried offline from one results store to another,
re-checked on the checkpoint before they are imported.

``bench export --submission OUT.zip --run ID`` writes a **bundle** (:func:`write_bundle`), a zip of

- ``submission.json``: ``format`` / ``format_version``, the snnbench version and git commit that wrote it,
  the time; the run row (config and its hash, dataset, model, defense, training, T, seed, provenance, the
  checkpoint's sha256); every exported evaluation (attack name, hash and config, n, counts, accuracies, EOT,
  seconds) with its per-sample outcomes (clean and adversarial correctness, bit-packed as in the store,
  base64); the flags of those evaluations and of the model; the run's artifacts (the protocol cascade, the
  model card of an external model, histograms, sweeps); the evaluation batch size the outcomes were made with;
- ``checkpoint.pt`` (``--with-checkpoint``): the weights themselves.

``bench submit --verify BUNDLE`` reads it (:func:`read_bundle`), checks it is consistent in itself
(:func:`check_bundle`: counts against the outcome bits, every protocol stage chained by hash to its final
row and cumulative, the final row equal to the last stage, a worst case equal to the worst case of its
sources), then **re-runs a seeded random sample** of every evaluation on the checkpoint (:func:`verify`) and
imports the bundle (:func:`import_bundle`) only when the re-run reproduces the stored per-sample outcomes.

What the re-run is. An attack is seeded per batch (``Attack.generate``: ``seed * 1_000_003 + batch index``;
scoring draws ``_SCORE_SEED + batch index``), and a batch's samples share random starts, so a sample's
outcome depends on the batch it was attacked in. The re-run therefore repeats whole batches exactly as they
were: for each evaluation, batches of the samples it attacked are drawn (seeded, in random order) until they
hold at least ``sample`` samples (or all of them), and each is attacked again with the same composition, seed
and batch index (:func:`snnbench.scoring.evaluate_attack` with ``batches=``); every outcome of those batches
is compared. Whole random batches rather than scattered samples: the batch is the unit of cost, and every
outcome compared is a chance to catch an edited one (a batch of 256 catches an edit of 1% of the samples with
probability 1 - 0.99**256 = 92%). A protocol stage attacked only the samples every earlier stage left robust:
that set is read from the bundle's previous stage (the cascade is cumulative), so each stage is re-checked on
its own samples, not only the last one. The clean row is re-scored on the batches up to the last drawn one (its
draws are seeded once for all batches); a worst case is recomputed from its sources in the bundle; the final
protocol row is the last stage's outcome.

Tolerance. A deterministic model verified on the kind of device the bundle was made on (CPU or GPU) must
reproduce every compared outcome exactly: the same code, seeds and batches give the same outcome. A
randomized model (StoG, TGO noise, Poisson coding), or any model verified on the other kind of device (float
differences between CPU and GPU kernels can flip a sample that sits on a decision boundary or a spike
threshold, either way), is refused only when the bundle's outcomes are better than the re-run's beyond
chance: a one-sided exact sign test on the discordant outcomes (correct in the bundle and wrong re-run vs the
reverse), ``p < SIGN_TEST_ALPHA`` (it needs at least 7 such outcomes and none the other way). Measured: a
randomized model (StoG, 5 seeded scoring draws, EOT 10) also reproduced exactly on one CPU (0 of 160 outcomes
differed), so the sign test is a margin for other hardware, not for the model's randomness. A GPU whose
kernels are not deterministic run to run may flip a rare outcome of a deterministic model: verify such a
bundle with ``--device cpu`` (then the sign test applies). Transfer attacks (the protocol's last stage) run on
the verifier's own substitute models (trained or loaded here, never taken from the bundle: a weak substitute
would weaken the stage); the bundle records the sha256 of the submitter's, and when they differ (retrained by
other code or hardware) those evaluations are compared within the sign test too, and the summary says so.

External models (``snnbench.evaluate``: any ``nn.Module``) cannot be rebuilt from a checkpoint by snnbench,
so their outcomes cannot be re-run offline: ``--verify`` refuses them, and ``--unverified`` imports them
marked by a failed ``unverified_submission`` flag (scope ``run``), which keeps the row off the ranking
(:func:`snnbench.protocol.ranking_blockers`) and says why on the site.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snnbench.errors import BenchError
from snnbench.protocol import binomial_tail, counts_toward_worst, is_protocol, worst_case
from snnbench.specs import canonical_hash, json_ready
from snnbench.store import EXTERNAL, EvalRecord, FlagRecord, RunInfo, Store, check_row, pack, unpack

FORMAT = "snnbench-submission"
FORMAT_VERSION = 1
MANIFEST = "submission.json"
CHECKPOINT = "checkpoint.pt"
DEFAULT_SAMPLE = 32  # samples re-run per evaluation at least (rounded up to whole batches: one batch of 256)
SIGN_TEST_ALPHA = 0.01  # randomized models / other device: refuse when the bundle beats the re-run at p below this
#: the evaluation batch size of ``bench run``, suites and sweeps (``plan.RunRequest.eval_batch_size``;
#: tests/test_submission.py checks they agree): a batch is the unit of seeding, so the re-run needs it
EVAL_BATCH_SIZE = 256
#: the run's artifacts that travel in a bundle (suite cell indexes and failure notes are the source store's
#: bookkeeping); a new artifact kind that belongs to a run's results is added here
ARTIFACT_KINDS = ("protocol", "model_card", "vpre_hist", "eps_sweep", "masking", "sweep", "mechanism", "activity")
RUN_COLUMNS = ("config_hash", "config_json", "dataset", "model", "defense", "training", "T", "seed", "git_sha",
               "versions_json", "device", "status", "train_seconds", "checkpoint_sha256", "host", "resumed_from",
               "created_at", "updated_at")
EVAL_COLUMNS = ("attack", "attack_hash", "attack_config_json", "eps", "n", "n_clean_correct", "n_robust_correct",
                "clean_acc", "robust_acc", "eot", "seconds", "created_at")
STAGE_KEYS = ("protocol", "stage", "stage_index", "parent")  # what run_cascade adds to a stage's attack config
MAX_MANIFEST = 512 << 20  # bytes of submission.json read at most (a zip bomb is refused, not inflated)


@dataclass
class BundleEval:
    """One evaluation of a bundle: its stored row (``row``, the store's columns), config and outcomes."""

    row: dict[str, Any]
    config: dict[str, Any]
    clean: np.ndarray  # bool [n]
    adv: np.ndarray  # bool [n]

    @property
    def name(self) -> str:
        return str(self.row["attack"])

    @property
    def hash(self) -> str:
        return str(self.row["attack_hash"])

    @property
    def n(self) -> int:
        return int(self.row["n"])


@dataclass
class Bundle:
    """A submission bundle as read from its zip (:func:`read_bundle`)."""

    path: Path
    manifest: dict[str, Any]
    run: dict[str, Any]
    evaluations: list[BundleEval]
    flags: list[dict[str, Any]]
    artifacts: list[dict[str, Any]]  # {"kind", "key", "payload"}
    checkpoint_sha256: str
    has_checkpoint: bool
    #: the submitter's transfer substitutes: config hash -> sha256 of the checkpoint its outcomes were made with
    substitutes: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.run["config_json"])

    @property
    def external(self) -> bool:
        return self.run["training"] == EXTERNAL or self.run["status"] == EXTERNAL

    @property
    def batch_size(self) -> int:
        return int(self.manifest.get("eval_batch_size", EVAL_BATCH_SIZE))

    def describe(self) -> str:
        r = self.run
        return (f"run {r['defense']} ({r['model']}, {r['training']}, T={r['T']}, seed {r['seed']}) on {r['dataset']}, "
                f"{len(self.evaluations)} evaluations, checkpoint sha256 {self.checkpoint_sha256[:12]}"
                f"{' (included)' if self.has_checkpoint else ''}")


@dataclass
class Verification:
    """What :func:`verify` re-ran and found (stored with the imported run as the ``submission`` artifact)."""

    seed: int
    sample: int
    device: str
    randomized: bool
    tolerant: bool = False  # outcomes compared by the sign test (randomized model, or another kind of device)
    evaluations: int = 0  # evaluations re-run (clean, attacks, protocol stages)
    recomputed: int = 0  # evaluations recomputed from the bundle (worst case, the protocol's final row)
    compared: int = 0  # outcomes compared (clean and adversarial, every sample of every re-run batch)
    worse: int = 0  # bundle correct, re-run wrong (the bundle claims more than the model does)
    better: int = 0  # bundle wrong, re-run correct
    p_value: float = 1.0
    seconds: float = 0.0
    first: str = ""  # the first differing outcome, for the message
    strict: int = 0  # differing outcomes among those that must reproduce exactly
    first_strict: str = ""
    notes: list[str] = field(default_factory=list)  # why some outcomes were compared within the sign test

    def summary(self) -> str:
        diff = self.worse + self.better
        return (f"re-ran {self.evaluations} evaluations ({self.recomputed} more recomputed) on {self.device}, "
                f"sample {self.sample}, seed {self.seed}: {diff} of {self.compared} outcomes differ"
                + (f" (within the sign test: p={self.p_value:.3g})" if diff else "")
                + (" (randomized model)" if self.randomized else "")
                + "".join(f"; {n}" for n in self.notes) + f", {self.seconds:.1f}s")


# --- export ------------------------------------------------------------------------------------------------
def _b64(bits: np.ndarray) -> str:
    return base64.b64encode(pack(bits)).decode("ascii")


def _unb64(text: Any, n: int, where: str) -> np.ndarray:
    if not isinstance(text, str):
        raise BenchError(f"{where}: outcome bits are not base64 text")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeError):
        raise BenchError(f"{where}: outcome bits are not valid base64") from None
    if len(raw) != (n + 7) // 8:
        raise BenchError(f"{where}: {len(raw)} bytes of outcome bits for n={n} samples (expected {(n + 7) // 8})")
    return unpack(raw, n)


def _plain(v: Any) -> Any:
    return v.isoformat() if isinstance(v, dt.datetime) else v


def select_evaluations(evals: Sequence[Any], attacks: Sequence[str]) -> tuple[list[Any], list[str]]:
    """The evaluations a bundle carries: all (``attacks`` empty) or the named ones, a worst case with every
    evaluation it is the worst case over, a protocol (or one of its stages) with its final row and all its stages
    (``name/stage``); a stage whose protocol row is not stored (an interrupted protocol) stays out.
    Returns (rows, notes)."""
    cfg = {e.id: json.loads(e.attack_config_json) for e in evals}
    parent = {e.id: str(cfg[e.id]["parent"]) for e in evals if "stage_index" in cfg[e.id] and "parent" in cfg[e.id]}
    finals = {e.attack for e in evals if is_protocol(cfg[e.id])}
    notes = [f"left out {e.attack}: a stage of a protocol whose final row is not stored (interrupted)"
             for e in evals if e.id in parent and parent[e.id] not in finals]
    pool = [e for e in evals if e.id not in parent or parent[e.id] in finals]
    names = set(attacks)
    missing = sorted(names - {e.attack for e in pool} - set(parent.values()))
    if missing:
        raise BenchError(f"--attack {missing[0]}: the run has no such evaluation (it has: "
                         f"{', '.join(sorted({e.attack for e in pool if e.id not in parent})) or 'none'})")
    chosen = {e.id for e in pool if not names or e.attack in names or parent.get(e.id) in names}
    for w in [e for e in pool if e.id in chosen and cfg[e.id].get("from_store")]:
        added = {e.id: parent.get(e.id, e.attack) for e in pool if e.id not in chosen and e.n == w.n
                 and counts_toward_worst(cfg[e.id], float(cfg[w.id]["eps"]))}
        chosen |= set(added)
        notes += [f"added {name}: a source of the worst case {w.attack}" for name in sorted(set(added.values()))]
    protocols = {parent[i] for i in chosen if i in parent} | {e.attack for e in pool if e.id in chosen and e.attack in finals}
    chosen |= {e.id for e in pool if e.attack in protocols or parent.get(e.id) in protocols}
    return [e for e in pool if e.id in chosen], notes


def write_bundle(store: Store, run_id: int, out: str | Path, attacks: Sequence[str] = (),
                 with_checkpoint: bool = False) -> tuple[Bundle, list[str]]:
    """Write run ``run_id``'s bundle to ``out`` (a zip, written atomically); returns it as read back, with notes.
    The bundle is checked as :func:`check_bundle` will check it at the receiving end, so an inconsistent
    store (a stale worst case, a tampered row) fails here, at the sender."""
    from snnbench.provenance import git_sha, versions

    run = next((r for r in store.runs() if r.id == run_id), None)
    if run is None:
        raise BenchError(f"--run {run_id}: no such run (or its row is unreadable); see bench ls runs")
    if run.status not in ("trained", EXTERNAL):
        raise BenchError(f"--run {run_id}: status {run.status!r}; only a trained (or external) model's results can be submitted")
    evals, notes = select_evaluations(store.evaluations(run_id), attacks)
    if not evals:
        raise BenchError(f"--run {run_id}: no evaluations stored; run an attack first (e.g. bench run --attack standard)")
    hashes = {e.attack_hash for e in evals}
    protocols = {e.attack for e in evals if is_protocol(json.loads(e.attack_config_json))}
    flags = [{"scope": f.scope, "kind": f.kind, "attack_hash": f.attack_hash, "ok": bool(f.ok), "value": f.value,
              "message": f.message} for f in store.flags(run_id) if f.attack_hash in hashes or not f.attack_hash]
    artifacts = [{"kind": kind, "key": key, "payload": payload} for kind in ARTIFACT_KINDS
                 for key, payload in sorted(store.artifacts(run_id, kind).items())
                 if kind != "protocol" or key in protocols]
    sha = _checkpoint_sha256(run)
    ck_file = _checkpoint_file(run, sha) if with_checkpoint else None
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "snnbench": versions().get("snnbench", "?"),
        "git_sha": git_sha(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "eval_batch_size": EVAL_BATCH_SIZE,
        "checkpoint": {"sha256": sha, "file": CHECKPOINT if ck_file else None},
        "run": {c: _plain(getattr(run, c)) for c in RUN_COLUMNS},
        "evaluations": [{**{c: _plain(getattr(e, c)) for c in EVAL_COLUMNS},
                         **dict(zip(("clean_bits", "adv_bits"), map(_b64, store.sample_outcomes(e.id)), strict=True))}
                        for e in evals],
        "flags": flags,
        "artifacts": artifacts,
        "substitutes": _substitute_digests(store, evals),
    }
    bundle = _parse(Path(out), manifest, has_checkpoint=ck_file is not None)
    check_bundle(bundle)
    _write_zip(Path(out), json.dumps(manifest, sort_keys=True, indent=1), ck_file)
    return bundle, notes


def _substitute_digests(store: Store, evals: Sequence[Any]) -> dict[str, str]:
    """The checkpoint sha256 of every transfer substitute the evaluations name (config hash -> digest), from the
    substitutes' run rows: the verifier compares its own substitutes with them."""
    hashes = {h for e in evals for h in str(json.loads(e.attack_config_json).get("substitute") or "").split("+") if h}
    out = {}
    for h in sorted(hashes):
        row = store.run_by_hash(h)
        if row is not None and row.checkpoint_sha256:
            out[h] = str(row.checkpoint_sha256)
    return out


def _checkpoint_sha256(run: Any) -> str:
    """The weights' identity: the run row's checkpoint digest (a recipe), or the one in an external model's config."""
    if run.checkpoint_sha256:
        return str(run.checkpoint_sha256)
    cfg = json.loads(run.config_json)
    sha = str(cfg.get("external", {}).get("weights_sha256", "") or cfg.get("checkpoint_sha256", ""))
    if not sha:
        raise BenchError(f"run {run.id} has no checkpoint sha256 (it never finished training); it cannot be submitted")
    return sha


def _checkpoint_file(run: Any, sha: str) -> Path:
    """The run's checkpoint file for ``--with-checkpoint``, after checking it still has the recorded digest."""
    from snnbench.specs import regular_file
    from snnbench.train import sha256_file

    if run.status == EXTERNAL or not run.checkpoint_path:
        raise BenchError(f"--with-checkpoint: run {run.id} has no checkpoint file (an external model's weights are "
                         "not stored by snnbench)")
    p = regular_file(run.checkpoint_path, "--with-checkpoint: checkpoint")
    if sha256_file(p) != sha:
        raise BenchError(f"--with-checkpoint: {p} no longer has the sha256 recorded for run {run.id} ({sha[:12]}...): "
                         "the file changed after the run; re-run it or export without --with-checkpoint")
    return p


def _write_zip(out: Path, text: str, checkpoint: Path | None) -> None:
    import os

    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr(MANIFEST, text)
            if checkpoint is not None:
                z.write(checkpoint, CHECKPOINT, compress_type=zipfile.ZIP_STORED)  # already a zip (torch.save)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- read and check ----------------------------------------------------------------------------------------
def read_bundle(path: str | Path) -> Bundle:
    """Read and parse a bundle (one-line BenchError for anything that is not a readable bundle of this format)."""
    from snnbench.specs import regular_file

    p = regular_file(path, "bundle")
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
            if MANIFEST not in names:
                raise BenchError(f"bundle {p}: no {MANIFEST} inside; not a submission bundle (bench export --submission)")
            if z.getinfo(MANIFEST).file_size > MAX_MANIFEST:
                raise BenchError(f"bundle {p}: {MANIFEST} is larger than {MAX_MANIFEST >> 20} MiB")
            manifest = json.loads(z.read(MANIFEST).decode("utf-8"))
    except zipfile.BadZipFile:
        raise BenchError(f"bundle {p} is not a zip file; a submission bundle is what bench export --submission writes") from None
    except (ValueError, UnicodeError) as e:
        raise BenchError(f"bundle {p}: {MANIFEST} is not JSON ({str(e)[:80]})") from None
    return _parse(p, manifest, has_checkpoint=CHECKPOINT in names)


def _parse(path: Path, m: Any, has_checkpoint: bool) -> Bundle:
    where = f"bundle {path}"
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BenchError(f"{where}: not a submission bundle (format {str(m.get('format') if isinstance(m, dict) else m)[:40]!r})")
    if m.get("format_version") != FORMAT_VERSION:
        raise BenchError(f"{where}: bundle format version {m.get('format_version')!r}; this snnbench reads {FORMAT_VERSION}")
    try:
        run = check_row("run", {c: m["run"][c] for c in RUN_COLUMNS})
        evals = []
        for e in m["evaluations"]:
            row = check_row("evaluation", {c: e[c] for c in EVAL_COLUMNS})
            w = f"{where}: evaluation {row['attack']!r}"
            clean, adv = _unb64(e["clean_bits"], row["n"], w), _unb64(e["adv_bits"], row["n"], w)
            evals.append(BundleEval(row, json.loads(row["attack_config_json"]), clean, adv))
        flags = [check_row("flag", {k: f[k] for k in ("scope", "kind", "attack_hash", "ok", "value", "message")})
                 for f in m["flags"]]
        artifacts = [{"kind": str(a["kind"]), "key": str(a["key"]), "payload": a["payload"]} for a in m["artifacts"]]
        sha = m["checkpoint"]["sha256"]
        batch = m["eval_batch_size"]
        subs = {str(k): str(v) for k, v in m.get("substitutes", {}).items()}
    except (KeyError, TypeError, IndexError) as e:
        raise BenchError(f"{where}: missing or malformed field {str(e)[:60]}") from None
    except ValueError as e:
        raise BenchError(f"{where}: {str(e)[:200]}") from None
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise BenchError(f"{where}: the checkpoint sha256 {str(sha)[:70]!r} is not 64 hex digits")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise BenchError(f"{where}: eval_batch_size {batch!r} is not a positive integer")
    return Bundle(path, m, run, evals, flags, artifacts, sha, has_checkpoint, subs)


def protocol_stages(b: Bundle) -> dict[str, list[tuple[int, BundleEval]]]:
    """Each protocol final row's stages by hash of the final row, ``(stage_index, evaluation)`` in order: a stage
    belongs to the final row whose attack hash its own hash is chained to (``strategies.run_cascade``)."""
    finals = {e.hash: e for e in b.evaluations if is_protocol(e.config)}
    out: dict[str, list[tuple[int, BundleEval]]] = {h: [] for h in finals}
    for e in b.evaluations:
        if "stage_index" not in e.config or "parent" not in e.config:
            continue
        i = e.config["stage_index"]
        owner = [h for h in finals if canonical_hash({"protocol": h, "stage": i, "attack": e.config}) == e.hash]
        if not owner:
            raise BenchError(f"bundle refused: the protocol stage {e.name!r} belongs to no protocol row of the bundle "
                             "(its attack hash is not chained to one); nothing imported")
        out[owner[0]].append((int(i), e))
    for stages in out.values():
        stages.sort(key=lambda t: t[0])
    return out


def check_bundle(b: Bundle) -> None:
    """The bundle's consistency in itself (torch-free; raises BenchError ``bundle refused: ...``): unique
    evaluations; per-sample outcomes that agree with the stored counts (store.check_row checked counts against
    accuracies); adversarial correct only where clean correct for the attacks (never for EOT-scored noise);
    each protocol's stages chained to its final row, cumulative and ending in the final row's outcome, in the
    order of the protocol artifact; each worst case equal to the worst case of its sources; flags about
    evaluations of the bundle."""

    def refuse(msg: str) -> BenchError:
        return BenchError(f"bundle refused: {msg}; nothing imported")

    if b.run["checkpoint_sha256"] not in ("", b.checkpoint_sha256):
        raise refuse("the run row names another checkpoint sha256 than the bundle's")
    seen: set[str] = set()
    for e in b.evaluations:
        if e.hash in seen:
            raise refuse(f"evaluation {e.name!r} appears twice (attack hash {e.hash[:12]})")
        seen.add(e.hash)
        if int(e.clean.sum()) != e.row["n_clean_correct"] or int(e.adv.sum()) != e.row["n_robust_correct"]:
            raise refuse(f"evaluation {e.name!r}: its per-sample outcomes ({int(e.clean.sum())} clean, {int(e.adv.sum())} "
                         f"robust of {e.n}) disagree with its counts ({e.row['n_clean_correct']}, {e.row['n_robust_correct']})")
    by_hash = {e.hash: e for e in b.evaluations}
    protocol_art = {a["key"]: a["payload"] for a in b.artifacts if a["kind"] == "protocol"}
    for h, stages in protocol_stages(b).items():
        final = by_hash[h]
        _check_cascade(final, stages, protocol_art.get(final.name), refuse)
    for e in b.evaluations:
        if e.config.get("from_store"):
            _check_worst(e, b.evaluations, refuse)
    for f in b.flags:
        if f["attack_hash"] and f["attack_hash"] not in by_hash:
            raise refuse(f"flag {f['kind']} ({f['scope']}) is about an evaluation the bundle does not hold")


def _check_cascade(final: BundleEval, stages: list[tuple[int, BundleEval]], art: Any, refuse: Callable) -> None:
    name = final.name
    if not stages:
        raise refuse(f"protocol {name!r} has no stored stage")
    indices = [i for i, _ in stages]
    if len(set(indices)) != len(indices):
        raise refuse(f"protocol {name!r}: stage index {indices} repeats")
    prev = final.clean
    for _, st in stages:
        if st.n != final.n or not np.array_equal(st.clean, final.clean):
            raise refuse(f"protocol {name!r}: stage {st.name!r} has other clean outcomes than the protocol row")
        if np.any(st.adv & ~prev):
            raise refuse(f"protocol {name!r}: stage {st.name!r} marks robust a sample an earlier stage broke "
                         "(the cascade is cumulative)")
        prev = st.adv
    if not np.array_equal(prev, final.adv):
        raise refuse(f"protocol {name!r}: its robust outcomes differ from its last stage's ({int(final.adv.sum())} vs "
                     f"{int(prev.sum())} robust)")
    if isinstance(art, dict):
        ran = [s.get("name") for s in art.get("stages", []) if isinstance(s, dict) and not s.get("skipped")]
        stored = [st.config.get("stage") for _, st in stages]
        if ran != stored or art.get("n") != final.n:
            raise refuse(f"protocol {name!r}: its cascade artifact lists stages {ran} (n={art.get('n')}), the bundle "
                         f"holds {stored} (n={final.n})")


def _check_worst(w: BundleEval, evals: list[BundleEval], refuse: Callable) -> None:
    eps = float(w.config.get("eps", w.row["eps"]))
    rows = [e for e in evals if e is not w and e.n == w.n and counts_toward_worst(e.config, eps)]
    if not rows:
        raise refuse(f"worst case {w.name!r}: none of its sources is in the bundle")
    clean, adv = worst_case([(e.clean, e.adv) for e in rows])
    sources = sorted({e.name for e in rows})
    if not (np.array_equal(clean, w.clean) and np.array_equal(adv, w.adv)) or sources != w.config.get("sources"):
        raise refuse(f"worst case {w.name!r} is not the worst case of the bundle's evaluations {sources} (stale: "
                     "rerun `bench run --attack worst` with the other attacks, then export again)")


# --- verify ------------------------------------------------------------------------------------------------
@dataclass
class _Rerun:
    """The model, data and settings a verification re-runs on."""

    reg: Any
    plan: Any
    suite_train: dict[str, Any] | None
    prep: Any
    scratch: Store
    results_dir: Path
    batch_size: int
    bundle_substitutes: dict[str, str]
    substitutes: dict[str, Any] = field(default_factory=dict)  # training -> (model, config hash, sha256)
    inexact: set[str] = field(default_factory=set)  # evaluations on substitutes other than the submitter's


def sign_test_p(worse: int, better: int) -> float:
    """One-sided exact sign test: P(X >= worse) for X ~ Binomial(worse + better, 1/2)."""
    return binomial_tail(worse, worse + better)


def verify(b: Bundle, reg: Any, checkpoint: str | Path, results_dir: Path, *, sample: int = DEFAULT_SAMPLE,
           seed: int = 0, device: str | None = None, data_root: str | None = None, checkpoint_dir: str | None = None,
           progress: Callable | None = None) -> Verification:
    """Re-run a seeded sample of every evaluation of ``b`` on ``checkpoint`` (loaded exactly as ``bench run
    --checkpoint`` loads it) and compare with the bundle's outcomes; raises BenchError ``bundle refused: ...``
    when the checkpoint, the config or the outcomes do not match (module docstring: what is re-run, the
    tolerance). Nothing is written to any results store (the re-run registers its model in a scratch store;
    substitute models of transfer attacks are trained or loaded through the checkpoint cache)."""
    from snnbench.plan import RunRequest, resolve
    from snnbench.prepare import prepare
    from snnbench.specs import regular_file
    from snnbench.train import sha256_file

    t0 = time.perf_counter()
    check_bundle(b)
    if b.external:
        raise BenchError(
            f"bundle refused: run {b.run['defense']!r} is an external model (snnbench.evaluate): snnbench cannot rebuild "
            "it from a checkpoint, so its outcomes cannot be re-run offline; import it with --unverified (kept off the "
            "ranking) or submit it as a registry architecture's checkpoint; nothing imported")
    ck = regular_file(checkpoint, "--checkpoint")
    digest = sha256_file(ck)
    if digest != b.checkpoint_sha256:
        raise BenchError(f"bundle refused: checkpoint {ck} has sha256 {digest[:16]}..., the bundle's results were "
                         f"made with {b.checkpoint_sha256[:16]}...; nothing imported")
    config = b.config
    if canonical_hash(config) != b.run["config_hash"]:
        raise BenchError("bundle refused: the run's config does not hash to its config hash; nothing imported")
    if config.get("checkpoint_sha256", digest) != digest:
        raise BenchError("bundle refused: the run's config names another checkpoint than the bundle; nothing imported")
    req = RunRequest(defense=b.run["defense"], dataset=b.run["dataset"], model=b.run["model"], checkpoint=str(ck),
                     checkpoint_dir=checkpoint_dir, data_root=data_root, device=device,
                     eval_batch_size=b.batch_size, channels=str(config.get("dataset", {}).get("channels", "") or ""))
    plan = resolve(reg, req, suite_train=config.get("train"))
    mine = {k: v for k, v in plan.config.items() if k != "checkpoint_sha256"}
    theirs = {k: v for k, v in config.items() if k != "checkpoint_sha256"}
    if json_ready(mine) != json_ready(theirs):
        diff = sorted(k for k in set(mine) | set(theirs) if json_ready(mine.get(k)) != json_ready(theirs.get(k)))
        raise BenchError(f"bundle refused: this snnbench builds defense {b.run['defense']!r} / model {b.run['model']!r} "
                         f"with another config than the bundle's (differs in: {', '.join(diff)}); verify with the "
                         "registry the run used (--registry); nothing imported")
    with tempfile.TemporaryDirectory(prefix="snnbench-verify-") as tmp:
        scratch = Store(f"sqlite:///{Path(tmp) / 'verify.sqlite'}")
        prep = prepare(plan, scratch, results_dir, progress)
        model = prep.model
        v = Verification(seed, sample, str(plan.device), bool(getattr(model, "randomized", False)))
        v.tolerant = v.randomized or _device_kind(b.run["device"]) != _device_kind(v.device)
        ctx = _Rerun(reg, plan, config.get("train"), prep, scratch, results_dir, b.batch_size, b.substitutes)
        stages = protocol_stages(b)
        staged = {id(e) for ss in stages.values() for _, e in ss}
        for e in b.evaluations:
            if id(e) in staged:
                continue
            if e.n > len(prep.data.test):
                raise BenchError(f"bundle refused: evaluation {e.name!r} has n={e.n}, the test set of "
                                 f"{plan.dataset.name} here has {len(prep.data.test)}; nothing imported")
            if e.config.get("kind") == "clean":
                _rerun_clean(ctx, e, v)
            elif e.config.get("from_store"):
                _rebuild_checked(ctx, e, e.config, ("sources",))
                v.recomputed += 1  # check_bundle recomputed it from its sources
            elif is_protocol(e.config):
                _rerun_protocol(ctx, e, stages[e.hash], v)
            else:
                _rerun_batches(ctx, e, _rebuild_checked(ctx, e, e.config), np.arange(e.n), True, v)
        if ctx.inexact:
            v.notes.append(f"{len(ctx.inexact)} evaluations attack transfer substitutes other than the submitter's "
                           "(retrained here): compared within the sign test")
    v.p_value = sign_test_p(v.worse, v.better)
    v.seconds = time.perf_counter() - t0
    diff = v.worse + v.better
    if v.strict or (diff and v.p_value < SIGN_TEST_ALPHA):
        why = (f"{v.strict} of {v.compared} re-run outcomes differ from the bundle's (first: {v.first_strict})"
               if v.strict else
               f"the bundle's outcomes are better than the re-run's beyond chance ({v.worse} better in the bundle, "
               f"{v.better} worse of {v.compared}; sign test p={v.p_value:.2g} < {SIGN_TEST_ALPHA}; first: {v.first})")
        hint = (f"; the results were made on {b.run['device'] or 'an unrecorded device'}, verified on {v.device}"
                if _device_kind(b.run["device"]) != _device_kind(v.device) else "")
        raise BenchError(f"bundle refused: {why}{hint}; nothing imported")
    return v


def _device_kind(text: str) -> str:
    return "cpu" if str(text).startswith("cpu") else "gpu"


def _rebuild(config: dict[str, Any], where: str) -> Any:
    """The attack instance a stored attack config describes (its kind's Params from the config's keys)."""
    import dataclasses

    from snnbench.attacks import ATTACKS
    from snnbench.specs import from_mapping

    cls = ATTACKS.get(str(config.get("kind")), f"{where}.kind")
    names = {f.name for f in dataclasses.fields(cls.Params)}
    params = from_mapping(cls.Params, {k: v for k, v in config.items() if k in names}, f"{where}.params")
    return cls(params, float(config["eps"]), float(config["alpha"]))


def _rebuild_checked(ctx: _Rerun, e: BundleEval, config: dict[str, Any], ignore: tuple[str, ...] = ()) -> Any:
    """:func:`_rebuild`, refusing a config this snnbench would not have written (another code version, or an
    edited config: re-running an edited config would reproduce the edited attack) and attaching the
    substitutes of a transfer attack (their identity must be the stored one)."""
    where = f"bundle evaluation {e.name!r}"
    try:
        atk = _rebuild(config, where)
    except (BenchError, KeyError, TypeError, ValueError) as err:
        raise BenchError(f"bundle refused: evaluation {e.name!r}: its attack config cannot be rebuilt here "
                         f"({str(err)[:160]}); nothing imported") from None
    for training in atk.substitute_trainings:
        model, h, sha = _substitute(ctx, training)
        atk.set_substitute(model, h, training)
        if ctx.bundle_substitutes.get(h) != sha:  # retrained here (other code, hardware): other adversarial examples
            ctx.inexact.add(e.hash)
    skip = set(ignore) | set(STAGE_KEYS)
    mine = {k: v for k, v in json_ready(atk.config()).items() if k not in skip}
    theirs = {k: v for k, v in config.items() if k not in skip}
    if mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        what = ("its transfer substitutes are not the models this snnbench builds for the run" if diff == ["substitute"]
                else f"its attack config is not what this snnbench builds from it (differs in: {', '.join(diff)})")
        raise BenchError(f"bundle refused: evaluation {e.name!r}: {what}; nothing imported")
    eot = atk.eot_samples(ctx.prep.model) if not atk.from_store else e.row["eot"]
    if int(eot) != e.row["eot"]:
        raise BenchError(f"bundle refused: evaluation {e.name!r} says EOT {e.row['eot']}, its attack takes {eot} on "
                         "this model; nothing imported")
    return atk


def _substitute(ctx: _Rerun, training: str) -> tuple[Any, str]:
    """The vanilla substitute of a transfer attack (seed + 1; ``training`` standard or at), trained or loaded
    through the checkpoint cache exactly as the pipeline does (``plan.substitute_request``): the verifier's own,
    never the submitter's (a weak substitute would make the transfer stage weaker). Returns (model, config hash,
    checkpoint sha256)."""
    from snnbench.plan import resolve, substitute_request
    from snnbench.prepare import prepare
    from snnbench.train import sha256_file

    if training not in ctx.substitutes:
        plan = ctx.plan
        sub_plan = resolve(ctx.reg, substitute_request(plan.request, plan.train, training), ctx.suite_train)
        sub = prepare(sub_plan, ctx.scratch, ctx.results_dir)
        ctx.substitutes[training] = (sub.model, sub_plan.config_hash, sha256_file(sub.checkpoint))
    return ctx.substitutes[training]


def _draw(ctx: _Rerun, e: BundleEval, count: int, v: Verification) -> set[int]:
    """Batch numbers over ``count`` attacked samples, drawn in a random order (seeded by the verification's seed
    and the evaluation's hash) until they hold at least ``v.sample`` samples (or all)."""
    rng = np.random.default_rng([v.seed, zlib.crc32(e.hash.encode())])
    bs = ctx.batch_size
    chosen, held = set(), 0
    for b in rng.permutation((count + bs - 1) // bs):
        if held >= min(v.sample, count):
            break
        chosen.add(int(b))
        held += min(bs, count - int(b) * bs)
    return chosen


def _compare(ctx: _Rerun, v: Verification, e: BundleEval, what: str, samples: np.ndarray, stored: np.ndarray,
             rerun: np.ndarray) -> None:
    """Count the differing outcomes; those that must reproduce exactly (a deterministic model on the bundle's kind
    of device, substitutes identical to the submitter's) also count as strict."""
    v.compared += len(samples)
    worse, better = stored & ~rerun, ~stored & rerun
    v.worse += int(worse.sum())
    v.better += int(better.sum())
    if not (worse.any() or better.any()):
        return
    k = int(np.flatnonzero(worse | better)[0])
    first = (f"evaluation {e.name!r}, sample {int(samples[k])}: {what} {'correct' if stored[k] else 'wrong'} in "
             f"the bundle, {'correct' if rerun[k] else 'wrong'} re-run")
    v.first = v.first or first
    if not v.tolerant and e.hash not in ctx.inexact:
        v.strict += int(worse.sum() + better.sum())
        v.first_strict = v.first_strict or first


def _rerun_batches(ctx: _Rerun, e: BundleEval, atk: Any, idx: np.ndarray, first: bool, v: Verification) -> None:
    """Re-run drawn batches of ``atk`` over the attacked samples ``idx`` and compare their outcomes.
    ``first``: the samples are all n (a single attack, or a protocol's first stage: clean outcomes are compared
    too; a first stage stores robust = adversarial-correct and clean-correct)."""
    from snnbench.scoring import evaluate_attack

    p = ctx.plan
    batches = _draw(ctx, e, len(idx), v)
    if not batches:
        return
    out = evaluate_attack(ctx.prep.model, atk, ctx.prep.data.test, e.n, ctx.batch_size, p.device, indices=idx,
                          batches=batches, desc=f"verify {e.name}")
    ran = np.concatenate([idx[b * ctx.batch_size:(b + 1) * ctx.batch_size] for b in sorted(batches)])
    adv = out.adv_correct
    if first:
        _compare(ctx, v, e, "clean", ran, e.clean[ran], out.clean_correct)
        if "stage_index" in e.config:
            adv = adv & out.clean_correct
    _compare(ctx, v, e, "adversarial", ran, e.adv[ran], adv)
    v.evaluations += 1


def _rerun_clean(ctx: _Rerun, e: BundleEval, v: Verification) -> None:
    """Clean accuracy: one seeded pass over the batches up to the last drawn one (pipeline.run_clean)."""
    from snnbench.scoring import clean_correct

    batches = _draw(ctx, e, e.n, v)
    if not batches:
        return
    m = min(e.n, (max(batches) + 1) * ctx.batch_size)
    got = clean_correct(ctx.prep.model, ctx.prep.data.test, m, ctx.batch_size, ctx.plan.device, ctx.plan.seed)
    _compare(ctx, v, e, "clean", np.arange(m), e.clean[:m], got)
    v.evaluations += 1


def _rerun_protocol(ctx: _Rerun, final: BundleEval, stages: list[tuple[int, BundleEval]], v: Verification) -> None:
    """The protocol's stages, each on the samples every earlier stage left robust (read from the bundle's
    cumulative previous stage), after checking the stages are the protocol's own (this snnbench's definition of
    the protocol version and budget the final row names; every stage run: a recipe model supports all)."""
    proto = _rebuild_checked(ctx, final, final.config)
    defined = proto.stages()
    stored = [st.config.get("stage") for _, st in stages]
    if [i for i, _ in stages] != list(range(len(defined))) or stored != [n for n, _ in defined]:
        raise BenchError(f"bundle refused: protocol {final.name!r} holds stages {stored}; {proto.protocol_version} "
                         f"(budget {proto.params.budget}) runs {[n for n, _ in defined]} here; nothing imported")
    robust = None
    for (_, st), (_, want) in zip(stages, defined, strict=True):
        atk = _rebuild_checked(ctx, st, st.config)
        ref = {k: v_ for k, v_ in json_ready(want.config()).items() if k != "substitute"}
        if {k: v_ for k, v_ in json_ready(atk.config()).items() if k != "substitute"} != ref:
            raise BenchError(f"bundle refused: stage {st.name!r} is not the stage {proto.protocol_version} defines "
                             "for its budget; nothing imported")
        idx = np.arange(final.n) if robust is None else np.flatnonzero(robust)
        _rerun_batches(ctx, st, atk, idx, robust is None, v)
        robust = st.adv
    v.recomputed += 1


# --- import ------------------------------------------------------------------------------------------------
def import_bundle(b: Bundle, store: Store, checkpoint: Path | None, verification: Verification | None) -> int:
    """Write the bundle's run, evaluations (with outcomes), flags and artifacts into ``store``; idempotent (a
    second import replaces the same rows). ``verification`` None: imported unverified (an external model),
    marked by a failed ``unverified_submission`` flag. Refuses a store that holds the same config with other
    weights. Returns the run id in ``store``."""
    run = b.run
    known = store.run_by_hash(run["config_hash"])
    if known is not None and known.checkpoint_sha256 and known.checkpoint_sha256 != b.checkpoint_sha256:
        raise BenchError(f"{store.display_url} already holds run {known.id} of this config with other weights "
                         f"(sha256 {known.checkpoint_sha256[:12]}...); use another --db or `bench rm --run {known.id}`")
    info = RunInfo(config_hash=run["config_hash"], config=b.config, dataset=run["dataset"], model=run["model"],
                   defense=run["defense"], training=run["training"], T=run["T"], seed=run["seed"],
                   git_sha=run["git_sha"], versions=_json_dict(run["versions_json"]), device=run["device"],
                   host=run["host"])
    run_id = store.upsert_run(info)
    store.finish_run(run_id, status=run["status"], train_seconds=run["train_seconds"],
                     checkpoint_path=str(checkpoint.resolve()) if checkpoint and not b.external else "",
                     checkpoint_sha256=b.checkpoint_sha256, resumed_from=run["resumed_from"])
    by_eval: dict[str, list[FlagRecord]] = {}
    for f in b.flags:
        by_eval.setdefault(f["attack_hash"], []).append(
            FlagRecord(f["scope"], f["kind"], f["ok"], f["value"], f["message"], f["attack_hash"]))
    for e in b.evaluations:
        rec = EvalRecord(e.name, e.hash, e.config, e.row["eps"], e.clean, e.adv, e.row["seconds"], e.row["eot"])
        store.record_evaluation(run_id, rec, by_eval.get(e.hash, []))
    store.record_flags(run_id, [*by_eval.get("", []), _submission_flag(b, verification)])
    for a in b.artifacts:
        store.put_artifact(run_id, a["kind"], a["key"], a["payload"])
    store.put_artifact(run_id, "submission", "", {
        "bundle_snnbench": b.manifest.get("snnbench"), "bundle_git_sha": b.manifest.get("git_sha"),
        "bundle_created": b.manifest.get("created"), "checkpoint_sha256": b.checkpoint_sha256,
        "imported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "verified": verification is not None,
        **({"verification": {k: getattr(verification, k) for k in (
            "seed", "sample", "device", "randomized", "tolerant", "evaluations", "recomputed", "compared", "worse", "better",
            "strict", "p_value", "seconds", "notes")}} if verification is not None else {}),
    })
    return run_id


def _json_dict(text: str) -> dict[str, str]:
    try:
        d = json.loads(text or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in d.items()} if isinstance(d, dict) else {}


def _submission_flag(b: Bundle, v: Verification | None) -> FlagRecord:
    if v is None:
        return FlagRecord("run", "unverified_submission", False, None,
                          "imported from a submission bundle without re-running it (an external model cannot be "
                          "rebuilt by snnbench): its numbers are the submitter's")
    return FlagRecord("run", "submission_verified", True, float(v.compared),
                      f"imported from a submission bundle: {v.summary()}")


def extract_checkpoint(b: Bundle, dest: Path) -> Path:
    """Extract the bundle's own checkpoint to the file ``dest`` (a scratch path: :func:`verify` checks its
    digest; :func:`keep_checkpoint` keeps it once the bundle is accepted)."""
    if not b.has_checkpoint:
        raise BenchError(f"bundle {b.path} holds no checkpoint (exported without --with-checkpoint); pass --checkpoint PATH")
    with zipfile.ZipFile(b.path) as z, z.open(CHECKPOINT) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return dest


def keep_checkpoint(src: Path, sha256: str, checkpoint_dir: Path) -> Path:
    """Move a verified checkpoint from a bundle to ``checkpoint_dir/submitted/<sha256[:32]>.pt``
    (content-addressed: a second import of the same weights finds it) and return that path."""
    out_dir = checkpoint_dir / "submitted"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{sha256[:32]}.pt"
    if not out.is_file():
        shutil.copyfile(src, out.with_name(f".{out.name}.tmp"))
        out.with_name(f".{out.name}.tmp").replace(out)
    return out
