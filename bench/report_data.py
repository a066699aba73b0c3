"""Rows for ``bench report`` and its downloads, built from the store in Python (numbers stay numbers).

- **Intervals**: every accuracy is a count ``k`` of ``n`` test samples, shown with its 95% Wilson score
  interval (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over the normal interval for small n).
- **Ranking** (RobustBench convention): one fixed metric per threat model. A threat model is dataset x
  norm x eps; its table ranks the evaluations stored with ``"kind": "standard"`` (the standard protocol,
  one section per protocol version and budget, so a smoke-budget run never sits above a full one). Models
  without a standard evaluation are listed apart, unranked. Ties are shown as rank ranges: a row's best
  rank is 1 + the rows whose interval lies wholly above its own, its worst rank the rows minus those wholly
  below (overlapping 95% intervals are a conservative test: no overlap means a clear difference).
- **Potentially unreliable**: any failed reliability flag of the run (gradient masking checks such as
  ``gradfree_gap``, ``transfer_gap``, ``large_eps``, ``more_iters``, ``library_warning``, ``zero_grad``,
  ``eps_monotone`` ...) marks the row, as RobustBench marks entries whose evaluation is in doubt.
- **Provenance**: trained here (epochs, seed, training time) or an external checkpoint (file sha256, the
  declared source).
- **Unreadable rows**: a stored row whose JSON does not parse (tampered, truncated) is shown as
  "unreadable" with the reason, never a crash.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from snnbench.protocol import SMOKE_BUDGET_FLAGS, counts_toward_worst, ranking_blockers
from snnbench.protocol import worst_case as per_sample_worst
from snnbench.registry import BenchRegistry
from snnbench.specs import TrainSpec
from snnbench.store import Store
from snnbench.suite_spec import CLEAN

Z95 = 1.959963984540054  # two-sided 95% normal quantile
STANDARD = "standard"
R = TypeVar("R")


# --- intervals ---------------------------------------------------------------------------------------
def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


@dataclass(frozen=True)
class Acc:
    """An accuracy: k correct of n, with its 95% Wilson interval."""

    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else 0.0

    @property
    def lo(self) -> float:
        return wilson(self.k, self.n)[0]

    @property
    def hi(self) -> float:
        return wilson(self.k, self.n)[1]

    def overlaps(self, other: Acc) -> bool:
        return self.lo <= other.hi and other.lo <= self.hi

    def fields(self, prefix: str) -> dict[str, Any]:
        """Export columns: ``<prefix>_acc``, ``_ci_low``, ``_ci_high`` (fractions), ``n_<prefix>_correct``."""
        return {
            f"{prefix}_acc": round(self.value, 6),
            f"{prefix}_ci_low": round(self.lo, 6),
            f"{prefix}_ci_high": round(self.hi, 6),
            f"n_{prefix}_correct": self.k,
        }


def acc_from_fraction(p: float | None, n: int) -> Acc | None:
    if p is None or not n:
        return None
    return Acc(int(round(p * n)), n)


# --- stored JSON, read defensively ---------------------------------------------------------------------
class Unreadable(ValueError):
    """A stored row whose JSON or numbers do not parse."""


def load_json(text: Any, what: str, expect: type = dict) -> Any:
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as e:
        raise Unreadable(f"{what}: not JSON ({str(e)[:60]})") from None
    if not isinstance(value, expect):
        raise Unreadable(f"{what}: expected a JSON {expect.__name__}, got {type(value).__name__}")
    return value


def safe(fn: Callable[[], R], default: R) -> R:
    """``fn()``, or ``default`` when the stored data behind it is unreadable."""
    try:
        return fn()
    except (Unreadable, ValueError, TypeError, KeyError, AttributeError):
        return default


def attack_cfg(e: Any) -> dict[str, Any]:
    """The evaluation's stored attack config (``{"kind": "clean"}`` for clean rows); raises Unreadable."""
    if e.attack == CLEAN:
        return {"kind": CLEAN}
    return load_json(e.attack_config_json, f"evaluation {e.id} attack config")


def fmt_eps(eps: float) -> str:
    """``8/255`` for multiples of 1/255 that are not round decimals, else ``0.1`` style."""
    k = eps * 255
    if eps > 0 and abs(k - round(k)) < 1e-6 and abs(eps * 1000 - round(eps * 1000)) > 1e-6:
        return f"{round(k)}/255"
    return f"{eps:.4g}"


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def attack_label(name: str, cfg: dict[str, Any], eot: int | None = None) -> str:
    """The attack's name with its budget: ``pgd (7 steps, α 0.025)``, ``autoattack (rand, EOT 1)``,
    ``standard protocol snn-standard-v1 (smoke budget)``. eps is shown in its own column."""
    kind = cfg.get("kind", name)
    if kind == CLEAN:
        return "clean"
    if kind == STANDARD:
        return f"standard protocol {cfg.get('protocol', '?')} ({cfg.get('budget', '?')} budget)"
    parts = []
    if kind != name:
        parts.append(str(kind))
    if kind == "autoattack" and cfg.get("version"):
        parts.append(str(cfg["version"]))
    if kind == "transfer" and cfg.get("source"):
        parts.append(f"from {cfg['source']} on a substitute")
    if cfg.get("loss"):
        parts.append(str(cfg["loss"]).upper())
    if cfg.get("steps") is not None and kind not in ("gaussian", "uniform", "worst", "autoattack"):
        parts.append(f"{cfg['steps']} step{'s' if cfg['steps'] != 1 else ''}")
    if cfg.get("restarts") not in (None, 1):
        parts.append(f"{cfg['restarts']} restarts")
    if cfg.get("alpha") not in (None, 0, 0.0) and kind not in (
        "gaussian",
        "uniform",
        "worst",
        "cw_l2",
        "autoattack",
        "apgd",
    ):
        parts.append(f"α {_num(cfg['alpha'])}")
    if cfg.get("grad_mode") not in (None, "bptt"):
        parts.append(str(cfg["grad_mode"]).upper())
    eot = eot if eot is not None else cfg.get("eot")
    if eot is not None and (eot != 1 or kind == "autoattack"):
        parts.append(f"EOT {eot}")
    if cfg.get("norm") not in (None, "linf"):
        parts.append(str(cfg["norm"]).upper())
    return f"{name} ({', '.join(parts)})" if parts else name


# --- provenance -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Provenance:
    """Where a model comes from: ``trained`` here or an ``external`` checkpoint."""

    origin: str  # trained | external | unreadable
    epochs: int | None = None
    seed: int | None = None
    train_seconds: float | None = None
    training: str = ""
    sha256: str = ""
    source: str = ""
    resumed_from: int = 0
    module: str = ""  # an external nn.Module evaluated through snnbench.evaluate: its class

    @property
    def rebuildable(self) -> bool:
        """``bench run --checkpoint`` can load it (a recipe's or an imported checkpoint, not a user's class)."""
        return not self.module

    @property
    def summary(self) -> str:
        if self.module:
            sha = self.sha256[:12] or "not recorded"
            return f"external model {self.module} evaluated with snnbench.evaluate, weights sha256 {sha}"
        if self.origin == "external":
            src = f", declared source {self.source}" if self.source else ", no declared source"
            return f"external checkpoint sha256 {self.sha256[:12]}{src}"
        if self.origin == "trained":
            t = "" if self.train_seconds is None else f", {self.train_seconds:.1f} s"
            return f"trained here: {self.epochs} epochs, seed {self.seed}{t}"
        return "unreadable run config"


def provenance(run: Any) -> Provenance:
    """Trained here vs external checkpoint, from the run's stored canonical config."""
    try:
        cfg = load_json(run.config_json, f"run {run.id} config")
    except Unreadable:
        return Provenance("unreadable", sha256=run.checkpoint_sha256 or "")
    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    module = cfg.get("external") if isinstance(cfg.get("external"), dict) else None
    if module is not None:  # snnbench.evaluate: the weights' sha256 and class are in the config
        return Provenance("external", sha256=str(module.get("weights_sha256") or ""),
                          module=str(module.get("module") or "?"), training=str(run.training))
    external = "checkpoint_sha256" in cfg or bool(cfg.get("external"))
    if external:
        source = next(
            (str(cfg[k]) for k in ("checkpoint_source", "source", "declared_source") if cfg.get(k)), ""
        )
        return Provenance(
            "external",
            sha256=str(cfg.get("checkpoint_sha256") or run.checkpoint_sha256 or ""),
            source=source or "",
            training=str(train.get("training", run.training)),
        )
    return Provenance(
        "trained",
        epochs=train.get("epochs"),
        seed=train.get("seed", run.seed),
        train_seconds=run.train_seconds,
        training=str(train.get("training", run.training)),
        sha256=run.checkpoint_sha256 or "",
        resumed_from=run.resumed_from or 0,
    )


# --- flags --------------------------------------------------------------------------------------------
def sorted_flags(flags: list[Any]) -> tuple[list[Any], list[Any]]:
    """(failed, ok): failed checks first, each group by scope then kind."""
    failed = [f for f in flags if not f.ok]
    ok = [f for f in flags if f.ok]
    return failed, ok


def failed_flags(store: Store, run_id: int) -> list[str]:
    return sorted({f"{f.kind} ({f.scope})" for f in store.flags(run_id) if not f.ok})


# --- spiking activity ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Activity:
    """A run's spiking activity on clean test samples (artifact ``activity``, written by
    :func:`snnbench.diagnostics.record_activity`; definitions in :mod:`snnbench.activity`): the firing rate
    (spikes per neuron per time step, all spiking layers) and SynOps per inference; ``note`` says why they
    are missing ("" when measured)."""

    firing_rate: float | None = None
    synops: float | None = None
    note: str = "not measured: the run predates the activity measurement"


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def activity_of(store: Store, run_id: int) -> Activity:
    """The stored activity of a run, read defensively (an unreadable artifact is "not measured")."""
    art = safe(lambda: store.artifacts(run_id, "activity").get(""), None)
    if not isinstance(art, dict):
        return Activity()
    if art.get("status") != "measured":
        return Activity(note=f"not measured: {art.get('reason') or 'no reason stored'}")
    rate, synops = _finite(art.get("firing_rate")), _finite(art.get("synops"))
    if rate is None or synops is None or not 0 <= rate <= 1 or synops < 0:
        return Activity(note="not measured: the stored activity is unreadable")
    return Activity(rate, synops, "")


# --- leaderboard --------------------------------------------------------------------------------------
@dataclass
class ThreatModel:
    """One ranked table: dataset x norm x eps, for one protocol version and budget."""

    dataset: str
    norm: str
    eps: float
    protocol: str
    budget: str
    rows: list[LeaderRow] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.dataset}-{self.norm}-{self.eps:.6g}-{self.protocol}-{self.budget}".replace("/", "_")

    @property
    def norm_label(self) -> str:
        return {"linf": "L∞", "l2": "L2"}.get(self.norm, self.norm)

    @property
    def label(self) -> str:
        return f"{self.dataset} · {self.norm_label} · ε = {fmt_eps(self.eps)}"

    @property
    def ci(self) -> bool:
        """A board of the CI (smoke) budget or any other reduced budget: shown apart, not a ranking."""
        return self.budget != "full"

    @property
    def title(self) -> str:
        """What the board is: ``digits · L∞ ε = 0.1 · standard protocol snn-standard-v2 (full budget)``."""
        return (f"{self.dataset} · {self.norm_label} ε = {fmt_eps(self.eps)} · standard protocol {self.protocol} "
                f"({self.budget} budget)")

    @property
    def epochs(self) -> str:
        """The training epochs of the board's models trained here: ``3``, ``2–3`` or "" (none known)."""
        e = sorted({r.provenance.epochs for r in self.rows if isinstance(r.provenance.epochs, int)})
        return "" if not e else str(e[0]) if len(e) == 1 else f"{e[0]}–{e[-1]}"

    @property
    def tied_with_leader(self) -> list[LeaderRow]:
        return [r for r in self.rows if r.tied_with_leader]


@dataclass
class LeaderRow:
    run_id: int
    dataset: str
    defense: str
    paper: str
    training: str
    model: str
    arch: str
    T: int
    clean: Acc
    robust: Acc
    attack: str  # full label with budget
    seconds: float
    stages: list[dict[str, Any]]
    flags: list[str]
    provenance: Provenance
    rank_lo: int = 0
    rank_hi: int = 0
    tied_with_leader: bool = False

    budget: str = "full"
    protocol_name: str = "standard"  # the protocol evaluation's name (its flags' scope)
    activity: Activity = field(default_factory=Activity)

    @property
    def unreliable(self) -> bool:
        return bool(self.flags)

    @property
    def budget_artefacts(self) -> list[str]:
        """Failed checks that only say the attack budget is reduced (:data:`snnbench.protocol.SMOKE_BUDGET_FLAGS`
        at a budget other than full): a 20-iteration protocol may sit above a 100-iteration attack of the
        same model, and doubling its iterations may still lower it. Not a doubt about the defense."""
        if self.budget == "full":
            return []
        return [f for f in self.flags if f.partition(" (")[0] in SMOKE_BUDGET_FLAGS]

    @property
    def doubts(self) -> list[str]:
        """The failed checks that do cast doubt on the number (every failed check but the budget artefacts)."""
        return [f for f in self.flags if f not in self.budget_artefacts]

    @property
    def blocking(self) -> list[str]:
        """The failed checks that keep this row off the ranking (bench.protocol.ranking_blockers)."""
        return ranking_blockers(self.flags, self.protocol_name, self.budget)

    @property
    def ranked(self) -> bool:
        return not self.blocking

    @property
    def rank(self) -> str:
        if not self.ranked:
            return "unranked"
        return str(self.rank_lo) if self.rank_lo == self.rank_hi else f"{self.rank_lo}–{self.rank_hi}"

    @property
    def robust_bound(self) -> str:
        """The robust accuracy as shown: an upper bound ("≤ 52.5%") when a check failed."""
        return ("≤ " if not self.ranked else "") + f"{100 * self.robust.value:.1f}%"


@dataclass
class OtherRow:
    """A model without a standard-protocol evaluation (listed apart, never ranked), or an unreadable one."""

    run_id: int
    dataset: str
    defense: str
    training: str
    model: str
    T: int
    clean: Acc | None
    strongest: Acc | None
    strongest_attack: str
    n_attacks: int
    flags: list[str]
    provenance: Provenance
    reason: str = ""  # unreadable: why
    activity: Activity = field(default_factory=Activity)
    rank_command: str = ""  # the command that evaluates it with the standard protocol


def rank_ranges(all_rows: list[LeaderRow]) -> None:
    """Sort by robust then clean accuracy; set each ranked row's rank range from interval overlaps.
    Rows with a failed check that blocks ranking (issue 20: a masked model must not rank on the number its
    masking bought) go after every ranked row, unranked, their number an upper bound."""
    all_rows.sort(key=lambda r: (not r.ranked, -r.robust.value, -r.clean.value, r.run_id))
    rows = [r for r in all_rows if r.ranked]
    for r in all_rows:
        if not r.ranked:
            r.rank_lo = r.rank_hi = 0
    n = len(rows)
    for r in rows:
        above = sum(1 for o in rows if o is not r and o.robust.lo > r.robust.hi)
        below = sum(1 for o in rows if o is not r and o.robust.hi < r.robust.lo)
        r.rank_lo, r.rank_hi = 1 + above, n - below
    if rows:
        lead = rows[0]
        for r in rows[1:]:
            r.tied_with_leader = r.robust.overlaps(lead.robust)
        lead.tied_with_leader = any(r.tied_with_leader for r in rows[1:])


def _stages(store: Store, run_id: int, attack: str) -> list[dict[str, Any]]:
    art = safe(lambda: store.artifacts(run_id, "protocol"), {})
    payload = art.get(attack) if isinstance(art, dict) else None
    stages = payload.get("stages") if isinstance(payload, dict) else None
    out = []
    for s in stages if isinstance(stages, list) else []:
        if isinstance(s, dict) and "name" in s:
            out.append({"name": str(s["name"]), "robust": s.get("robust"), "n_broken": s.get("n_broken"),
                        "skipped": str(s.get("skipped") or "")})
    return out


def _card_paper(store: Store, run_id: int, prov: Provenance) -> str:
    """The declared paper link of a model evaluated through the API (http(s) only), else ""."""
    if not prov.module:
        return ""
    card = safe(lambda: store.artifacts(run_id, "model_card").get("", {}), {})
    paper = str(card.get("paper") or "") if isinstance(card, dict) else ""
    return paper if paper.startswith(("http://", "https://")) else ""


def leaderboard(reg: BenchRegistry, store: Store) -> tuple[list[ThreatModel], list[OtherRow]]:
    """(ranked threat models, unranked models): see the module docstring."""
    tables: dict[tuple, ThreatModel] = {}
    others: list[OtherRow] = []
    for run in store.runs():
        prov = provenance(run)
        activity = activity_of(store, run.id)
        model = reg.models.get(run.model)
        try:
            evals = store.evaluations(run.id)
            failed = [f for f in store.flags(run.id) if not f.ok]
            flags = sorted({f"{f.kind} ({f.scope})" for f in failed})
        except Exception as e:  # noqa: BLE001 - a tampered row must not take the site down
            others.append(_unreadable(run, prov, f"stored rows do not load ({type(e).__name__})"))
            continue
        standard: dict[tuple, Any] = {}
        bad = []
        for e in evals:
            try:
                cfg = attack_cfg(e)
            except Unreadable as err:
                bad.append(str(err))
                continue
            if cfg.get("kind") == STANDARD and e.n > 0:
                key = (
                    run.dataset,
                    str(cfg.get("norm") or "linf"),
                    round(float(e.eps), 8),
                    str(cfg.get("protocol", "?")),
                    str(cfg.get("budget", "?")),
                )
                if key not in standard or e.n > standard[key][0].n:
                    standard[key] = (e, cfg)
        protocols = {e.attack for e, _ in standard.values()}
        for key, (e, cfg) in standard.items():
            tm = tables.setdefault(key, ThreatModel(*key))
            others_p = protocols - {e.attack}  # a flag of another protocol run (e.g. its smoke budget) is not this row's

            def mine(f: Any, e: Any = e, others_p: set = others_p) -> bool:
                own_scope = f.scope == e.attack or f.scope.startswith(e.attack + "/")
                if own_scope:  # another evaluation under the same name (another n) keeps its own flags
                    return f.attack_hash in ("", e.attack_hash)
                return not any(f.scope == p or f.scope.startswith(p + "/") for p in others_p)

            row_flags = sorted({f"{f.kind} ({f.scope})" for f in failed if mine(f)})
            tm.rows.append(
                LeaderRow(
                    run.id,
                    run.dataset,
                    run.defense,
                    reg.defense_papers.get(run.defense, "") or _card_paper(store, run.id, prov),
                    run.training,
                    run.model,
                    model.arch if model else run.model,
                    run.T,
                    Acc(e.n_clean_correct, e.n),
                    Acc(e.n_robust_correct, e.n),
                    attack_label(e.attack, cfg, e.eot),
                    e.seconds,
                    _stages(store, run.id, e.attack),
                    row_flags + [f"unreadable evaluation ({b})" for b in bad],
                    prov,
                    budget=str(cfg.get("budget", "?")),
                    protocol_name=e.attack,
                    activity=activity,
                )
            )
        if not standard and (evals or bad):  # a run with no evaluation at all (a transfer substitute) is no model row
            other = _other(reg, store, run, evals, flags, prov, bad)
            others.append(dataclasses.replace(other, activity=activity, rank_command=rank_command(reg, run, prov)))
    out = sorted(  # full-budget boards first: the CI boards are shown apart, after them
        tables.values(), key=lambda t: (t.ci, t.dataset, t.norm, t.eps, t.protocol, t.budget)
    )
    for t in out:
        rank_ranges(t.rows)
    others.sort(key=lambda r: (r.dataset, r.reason != "", -(r.clean.value if r.clean else 0), r.run_id))
    return out, others


#: the ``bench run`` flags of training settings a recipe's config hash depends on (stored config key -> flag)
RUN_FLAGS = (("epochs", "--epochs"), ("T", "--T"), ("seed", "--seed"), ("lr", "--lr"), ("batch_size", "--batch-size"))


def rank_command(reg: BenchRegistry, run: Any, prov: Provenance) -> str:
    """The command that evaluates a stored model with the standard protocol (``standard``, full budget), so
    it joins the ranking: ``bench run`` with the flags that rebuild the same config (so the cached
    checkpoint is reused, nothing retrained) for a recipe, ``--checkpoint`` for an imported checkpoint,
    ``snnbench.evaluate`` for a user's module. Training settings the CLI has no flag for are not repeated."""
    if prov.module:
        return 'snnbench.evaluate(model, protocol="standard")  # the same model object, weights and name'
    cfg = safe(lambda: load_json(run.config_json, "run config"), {})
    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    ds = reg.datasets.get(run.dataset)
    parts = ["bench run", f"--defense {run.defense}", f"--training {train.get('training', run.training)}"]
    if run.dataset != "digits":
        parts.append(f"--dataset {run.dataset}")
    if ds is None or run.model != ds.default_model:
        parts.append(f"--model {run.model}")
    if prov.origin == "external":
        parts.append(f"--checkpoint {run.checkpoint_path or 'PATH'}")
    defaults = {**_train_defaults(), **(ds.train if ds else {})}
    for key, flag in RUN_FLAGS:
        if key in train and train[key] != defaults.get(key):
            parts.append(f"{flag} {train[key]}")
    return " ".join([*parts, "--attack standard"])


def _train_defaults() -> dict[str, Any]:
    return {k: getattr(TrainSpec, k) for k, _ in RUN_FLAGS}


def _unreadable(run: Any, prov: Provenance, reason: str) -> OtherRow:
    return OtherRow(
        run.id, run.dataset, run.defense, run.training, run.model, run.T, None, None, "", 0, [], prov, reason
    )


def _other(
    reg: BenchRegistry,
    store: Store,
    run: Any,
    evals: list,
    flags: list[str],
    prov: Provenance,
    bad: list[str],
) -> OtherRow:
    """An unranked model: clean accuracy and its strongest stored bounded L-inf attack at the dataset's eps."""
    ds = reg.datasets.get(run.dataset)
    eps = ds.eps if ds else None
    clean_evals = [e for e in evals if e.attack == CLEAN and e.n] or [e for e in evals if e.n]
    clean = max(clean_evals, key=lambda e: e.n) if clean_evals else None
    attacks = []
    for e in evals:
        cfg = safe(lambda e=e: attack_cfg(e), None)
        if cfg is not None and eps is not None and e.n and counts_toward_worst(cfg, eps, e.eps):
            attacks.append((e, cfg))
    strongest = min(attacks, key=lambda ec: ec[0].robust_acc) if attacks else None
    return OtherRow(
        run.id,
        run.dataset,
        run.defense,
        run.training,
        run.model,
        run.T,
        Acc(clean.n_clean_correct, clean.n) if clean else None,
        Acc(strongest[0].n_robust_correct, strongest[0].n) if strongest else None,
        attack_label(strongest[0].attack, strongest[1], strongest[0].eot) if strongest else "",
        len(attacks),
        flags,
        prov,
        "; ".join(bad),
    )


def worst_case(store: Store, evals: list, eps: float) -> tuple[Acc | None, list[str]]:
    """Per-sample worst case over the bounded L-inf evaluations at ``eps`` (same n): a sample is robust only
    if no such attack fooled it. Returns (accuracy, labels of the attacks it covers)."""
    rows = []
    for e in evals:
        cfg = safe(lambda e=e: attack_cfg(e), None)
        if cfg is not None and e.n and counts_toward_worst(cfg, eps, e.eps):
            rows.append((e, cfg))
    if not rows:
        return None, []
    n = max((e.n for e, _ in rows), key=lambda m: sum(1 for e, _ in rows if e.n == m))
    same = [(e, c) for e, c in rows if e.n == n]
    try:
        _, adv = per_sample_worst([store.sample_outcomes(e.id) for e, _ in same])
    except Exception:  # noqa: BLE001 - missing or truncated outcome bits: no worst case, not a crash
        return None, []
    return Acc(int(adv.sum()), n), [attack_label(e.attack, c, e.eot) for e, c in same]


def leaderboard_records(tables: list, others: list) -> list[dict[str, Any]]:
    """The leaderboard as rows, one schema for every reader: the site's ``leaderboard.csv|json``
    (docs/export_schema.md "Leaderboard rows") and ``snnbench.leaderboard()``'s DataFrame take these
    columns. Ranked tables first (``ranked`` False and the check in ``unranked_by`` for a row a failed
    check keeps off the ranking, its robust accuracy an upper bound), then models without a
    standard-protocol evaluation."""
    rows = []
    for t in tables:
        for r in t.rows:
            rows.append(
                {
                    "threat_model": t.label,
                    "dataset": t.dataset,
                    "norm": t.norm,
                    "eps": round(t.eps, 8),
                    "protocol": t.protocol,
                    "budget": t.budget,
                    "ranked": r.ranked,
                    "rank": r.rank if r.ranked else f"not ranked: failed {', '.join(r.blocking)}",
                    "rank_best": r.rank_lo if r.ranked else None,
                    "rank_worst": r.rank_hi if r.ranked else None,
                    "robust_is_upper_bound": not r.ranked,
                    "tied_with_leader": r.tied_with_leader,
                    "run_id": r.run_id,
                    "defense": r.defense,
                    "paper": r.paper,
                    "training": r.training,
                    "model": r.model,
                    "T": r.T,
                    "n": r.robust.n,
                    **r.clean.fields("clean"),
                    **r.robust.fields("robust"),
                    "attack_label": r.attack,
                    "potentially_unreliable": r.unreliable,
                    "flags_failed": "; ".join(r.flags),
                    "origin": r.provenance.origin,
                    "epochs": r.provenance.epochs,
                    "checkpoint_sha256": r.provenance.sha256,
                    "checkpoint_source": r.provenance.source,
                    "n_attacks": None,
                    "unranked_by": ", ".join(r.blocking),
                    "firing_rate": r.activity.firing_rate,
                    "synops": r.activity.synops,
                }
            )
    for o in others:
        rows.append(
            {
                "threat_model": "",
                "dataset": o.dataset,
                "norm": "",
                "eps": None,
                "protocol": "",
                "budget": "",
                "ranked": False,
                "rank": "not ranked: no standard-protocol evaluation" if not o.reason else "unreadable",
                "rank_best": None,
                "rank_worst": None,
                "robust_is_upper_bound": True,
                "tied_with_leader": False,
                "run_id": o.run_id,
                "defense": o.defense,
                "paper": "",
                "training": o.training,
                "model": o.model,
                "T": o.T,
                "n": o.strongest.n if o.strongest else (o.clean.n if o.clean else None),
                **(
                    o.clean.fields("clean")
                    if o.clean
                    else dict.fromkeys(("clean_acc", "clean_ci_low", "clean_ci_high", "n_clean_correct"))
                ),
                **(
                    o.strongest.fields("robust")
                    if o.strongest
                    else dict.fromkeys(("robust_acc", "robust_ci_low", "robust_ci_high", "n_robust_correct"))
                ),
                "attack_label": o.strongest_attack,
                "potentially_unreliable": bool(o.flags),
                "flags_failed": "; ".join(o.flags),
                "origin": o.provenance.origin,
                "epochs": o.provenance.epochs,
                "checkpoint_sha256": o.provenance.sha256,
                "checkpoint_source": o.provenance.source,
                "n_attacks": o.n_attacks,
                "unranked_by": "no standard-protocol evaluation",
                "firing_rate": o.activity.firing_rate,
                "synops": o.activity.synops,
            }
        )
    return rows
