"""Suites = the papers' comparison tables (and the CI ``smoke`` suite), loaded from ``registry.yaml``.

A suite is a table: ``columns`` x ``rows``. Every column and row is a partial *cell spec* (dataset, model,
T, training, defense, attack and attack overrides); a cell is the merge ``suite < column < row`` (a key set
by both a column and its row to different values is an error, so a table cannot silently contradict itself).
Each row may carry ``reported: [...]``, the numbers the paper printed (percent), aligned with the columns
(``null`` = not reported). Without ``rows``/``columns`` the suite is the cross product
``defenses x trainings`` (rows) by ``attacks`` (columns), which is how the ``smoke`` suite is written.

``attack: clean`` is the clean-accuracy column. A row without ``defense`` is reported-only (a method the
harness cannot build, e.g. FEEL's "AT+StoG+FEEL" composites): its cells render as "not run". Names of
defenses and attacks must exist in the registry (typos fail validation).

Example (``registry.yaml``)::

    mpd_sgr_table3:
      source: MPD-SGR Table 3
      dataset: cifar100
      model: vgg11
      train: {T: 8}
      columns: [clean, {attack: gaussian, eps: 0.1}, {attack: uniform, eps: 0.1}]
      rows:
        - {label: REG, defense: vanilla, reported: [72.82, 24.73, 49.86]}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from snnbench.errors import BenchError, did_you_mean, unknown
from snnbench.specs import TrainSpec, from_mapping, parse_number

CLEAN = "clean"
TRAININGS = ("standard", "at")
# cell keys that become attack overrides (runner.ATTACK_OVERRIDE_KEYS + free ``attack_params``)
ATTACK_KEYS = ("eps", "alpha", "steps", "grad_mode", "eot")
CELL_KEYS = (
    "dataset",
    "model",
    "T",
    "training",
    "defense",
    "attack",
    *ATTACK_KEYS,
    "attack_params",
    "n_eval",
)
SPEC_KEYS = (*CELL_KEYS, "label", "group", "source", "note", "reported_only")


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One table cell after merging suite < column < row: what to run and what the paper reported.
    Built by keyword only (19 fields: a positional call would silently swap two of them)."""

    suite: str
    row: int
    col: int
    row_label: str
    col_label: str
    dataset: str
    model: str
    T: int | None
    training: str
    defense: str | None  # None: reported-only row (no registry config for this method)
    attack: str  # an attack config name, or "clean"
    attack_overrides: dict = field(default_factory=dict)  # eps, steps, grad_mode, ... and attack_params
    n_eval: int = 0  # test samples evaluated (0 = the whole test set)
    reported: float | None = None  # percent, as printed
    source: str = ""
    reported_only: bool = False  # the harness has no config for this cell (yet): shown, never run
    row_group: str = ""
    col_group: str = ""
    note: str = ""

    @property
    def runnable(self) -> bool:
        return self.defense is not None and not self.reported_only

    @property
    def key(self) -> str:
        """Stable identity (baseline.json, exports): the cell's settings, not its position in the table."""
        parts = [
            self.dataset,
            self.model,
            f"T{self.T}" if self.T else "T-",
            self.training,
            self.defense or "-",
            self.attack,
        ]
        parts += [f"{k}={_fmt(v)}" for k, v in sorted(self.attack_overrides.items())]
        return "/".join([*parts, f"n={self.n_eval}"])


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Suite:
    """A paper table (or the CI smoke suite): its cells, with the numbers the paper reported."""

    name: str
    description: str = ""
    dataset: str = ""  # default of every cell; after loading: the cells' datasets joined by "+"
    model: str = ""  # default of every cell ("" = the dataset's default model); after loading: as dataset
    defenses: tuple[str, ...] = ()  # cross-product rows when ``rows`` is empty
    trainings: tuple[str, ...] = ("standard",)
    attacks: tuple[str, ...] = ()  # columns when ``columns`` is empty
    columns: tuple[Any, ...] = ()  # str (attack name) or mapping (partial cell spec)
    rows: tuple[dict, ...] = ()
    train: dict = field(default_factory=dict)  # training overrides for every cell (epochs, T, ...)
    n_eval: int = 0  # evaluated test samples per cell (0 = the whole test set)
    source: str = ""  # default source tag of reported numbers, e.g. "MPD-SGR Table 1"
    sweeps: dict = field(default_factory=dict)  # {attack: pgd, eps: [...], steps: [...], eps_steps: 4}
    paper: str = ""  # id in registry.yaml's `papers:` section (bench/papers.py), checked by the loader
    cells: tuple[Cell, ...] = ()  # filled by the loader

    @property
    def row_labels(self) -> list[str]:
        return _labels(self.cells, "row")

    @property
    def col_labels(self) -> list[str]:
        return _labels(self.cells, "col")


def _labels(cells: tuple[Cell, ...], axis: str) -> list[str]:
    out: dict[int, str] = {}
    for c in cells:
        out.setdefault(getattr(c, axis), getattr(c, f"{axis}_label"))
    return [out[i] for i in sorted(out)]


def _spec(raw: Any, where: str, allowed: tuple[str, ...]) -> dict:
    if isinstance(raw, str):
        raw = {"attack": raw}
    if not isinstance(raw, dict):
        raise BenchError(f"{where}: expected an attack name or a mapping, got {raw!r}")
    for k in raw:
        if k not in allowed:
            raise BenchError(f"{where}: unknown key {k!r}; {did_you_mean(str(k), allowed)}")
    return dict(raw)


def _merge(parts: list[tuple[dict, str]], where: str) -> dict:
    """Merge partial specs in order; a key set twice to different values names both places."""
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for spec, src in parts:
        for k, v in spec.items():
            if k in ("label", "group", "note", "reported"):
                continue
            if k == "reported_only":
                out[k] = bool(out.get(k)) or bool(v)
                continue
            if k == "attack_params":
                params = dict(out.get(k, {}))
                params.update(v or {})
                out[k] = params
                continue
            if k in out and out[k] != v and seen[k] != "suite":
                raise BenchError(
                    f"{where}: {k!r} is {out[k]!r} in {seen[k]} but {v!r} in {src}; set it in one place"
                )
            out[k], seen[k] = v, src
    return out


def _label(spec: dict, fallback: str) -> str:
    return str(spec.get("label") or fallback)


def load_suite(name: str, body: Any, where: str, reg: dict[str, dict], attack_kinds: Any) -> Suite:
    """Validate one ``suites.<name>`` entry and expand it into cells (no torch, no data)."""
    if not isinstance(body, dict):
        raise BenchError(f"{where}: expected a mapping, got {body!r}")
    suite: Suite = from_mapping(
        Suite, {"name": name, **{k: v for k, v in body.items() if k != "cells"}}, where
    )
    if "cells" in body:
        raise BenchError(f"{where}: unknown key 'cells' (cells are derived from rows x columns)")
    if suite.n_eval < 0:
        raise BenchError(f"{where}.n_eval: must be >= 0 (0 = the whole test set), got {suite.n_eval}")
    from_mapping(TrainSpec, suite.train, f"{where}.train")
    _check_sweeps(suite.sweeps, f"{where}.sweeps", reg)
    cols = [_spec(c, f"{where}.columns[{i}]", SPEC_KEYS) for i, c in enumerate(suite.columns)]
    if not cols:
        cols = [{"attack": a} for a in suite.attacks]
    if suite.columns and suite.attacks:
        raise BenchError(f"{where}: give either 'columns' or 'attacks', not both")
    rows = [_spec(r, f"{where}.rows[{i}]", (*SPEC_KEYS, "reported")) for i, r in enumerate(suite.rows)]
    if not rows:
        rows = [{"defense": d, "training": t} for t in suite.trainings for d in suite.defenses]
        for i, t in enumerate(suite.trainings):
            if t not in TRAININGS:
                raise BenchError(
                    f"{where}.trainings[{i}]: {t!r} is not a training mode; valid: {', '.join(TRAININGS)}"
                )
    elif suite.defenses:
        raise BenchError(f"{where}: give either 'rows' or 'defenses' x 'trainings', not both")
    if not cols or not rows:
        raise BenchError(f"{where}: a suite needs at least one column (attack) and one row (defense)")
    base: dict[str, Any] = {"training": "standard"}
    if suite.dataset:
        base["dataset"] = suite.dataset
    if suite.model:
        base["model"] = suite.model
    cells = []
    for r, row in enumerate(rows):
        reported = row.get("reported")
        if reported is not None and (not isinstance(reported, list) or len(reported) != len(cols)):
            raise BenchError(
                f"{where}.rows[{r}].reported: expected a list of {len(cols)} numbers or nulls (one per column), got {reported!r}"
            )
        for c, col in enumerate(cols):
            w = f"{where}.rows[{r}] x columns[{c}]"
            spec = _merge([(base, "suite"), (col, f"columns[{c}]"), (row, f"rows[{r}]")], w)
            value = (
                None
                if reported is None or reported[c] is None
                else parse_number(reported[c], f"{where}.rows[{r}].reported[{c}]")
            )
            cells.append(_cell(suite, spec, r, c, row, col, value, w, reg, attack_kinds))
    derived = {
        "dataset": "+".join(sorted({c.dataset for c in cells})),
        "model": "+".join(sorted({c.model for c in cells})),
        "defenses": tuple(sorted({c.defense for c in cells if c.defense})),
        "trainings": tuple(sorted({c.training for c in cells})),
        "attacks": tuple(sorted({c.attack for c in cells})),
    }
    return dataclasses.replace(suite, cells=tuple(cells), **derived)


def _cell(
    suite: Suite,
    spec: dict,
    r: int,
    c: int,
    row: dict,
    col: dict,
    value: float | None,
    where: str,
    reg: dict[str, dict],
    attack_kinds: Any,
) -> Cell:
    for key, hint in (("attack", "'clean' for clean accuracy"), ("dataset", "e.g. digits")):
        if key not in spec:
            raise BenchError(f"{where}: no {key!r} (set it in the suite, the column or the row; {hint})")
    for key in ("dataset", "model", "defense", "attack", "training"):
        if spec.get(key) is not None and not isinstance(spec[key], str):  # names are looked up in dicts
            raise BenchError(f"{where}.{key}: expected a name (string), got {spec[key]!r}")
    dataset = spec["dataset"]
    if dataset not in reg["datasets"]:
        raise unknown("dataset", dataset, reg["datasets"], f"{where}.dataset")
    model = spec.get("model") or reg["datasets"][dataset].default_model
    if model not in reg["models"]:
        raise unknown("model", model, reg["models"], f"{where}.model")
    defense = spec.get("defense")
    if defense is not None and defense not in reg["defenses"]:
        raise unknown("defense", defense, reg["defenses"], f"{where}.defense")
    attack = spec["attack"]
    if attack != CLEAN and attack not in reg["attacks"]:
        raise unknown("attack", attack, [CLEAN, *reg["attacks"]], f"{where}.attack")
    training = spec.get("training", "standard")
    if training not in TRAININGS:
        raise BenchError(
            f"{where}.training: {training!r} is not a training mode; valid: {', '.join(TRAININGS)}"
        )
    T = spec.get("T", suite.train.get("T"))
    if T is not None and (isinstance(T, bool) or not isinstance(T, int) or T < 1):
        raise BenchError(f"{where}.T: expected an integer >= 1, got {T!r}")
    overrides = _attack_overrides(spec, attack, where, reg, attack_kinds)
    n_eval = spec.get("n_eval", suite.n_eval)
    if isinstance(n_eval, bool) or not isinstance(n_eval, int) or n_eval < 0:
        raise BenchError(f"{where}.n_eval: expected an integer >= 0, got {n_eval!r}")
    col_label = _label(
        col,
        attack
        if not overrides
        else f"{attack} " + " ".join(f"{k}={_fmt(v)}" for k, v in sorted(overrides.items())),
    )
    row_label = _label(row, f"{defense or '?'} ({training})")
    source = str(row.get("source") or col.get("source") or suite.source)
    note = "; ".join(str(x["note"]) for x in (col, row) if x.get("note"))
    return Cell(
        suite=suite.name,
        row=r,
        col=c,
        row_label=row_label,
        col_label=col_label,
        dataset=dataset,
        model=model,
        T=T,
        training=training,
        defense=defense,
        attack=attack,
        attack_overrides=overrides,
        n_eval=n_eval,
        reported=value,
        source=source,
        reported_only=bool(spec.get("reported_only")),
        row_group=str(row.get("group", "")),
        col_group=str(col.get("group", "")),
        note=note,
    )


def _attack_overrides(spec: dict, attack: str, where: str, reg: dict[str, dict], attack_kinds: Any) -> dict:
    out: dict[str, Any] = {}
    for k in ATTACK_KEYS:
        if k in spec:
            v = spec[k]
            out[k] = parse_number(v, f"{where}.{k}") if k in ("eps", "alpha") else v
    if "eps" in out and not 0 <= out["eps"] <= 1:
        raise BenchError(f"{where}.eps: {out['eps']} is outside [0, 1] (pixel units, e.g. 8/255)")
    params = spec.get("attack_params") or {}
    if not isinstance(params, dict):
        raise BenchError(f"{where}.attack_params: expected a mapping, got {params!r}")
    out.update(params)
    if attack == CLEAN:  # row-level attack settings (e.g. a BPTR row) do not apply to clean accuracy
        return {}
    if out:
        kind = reg["attacks"][attack].kind
        if attack_kinds is not None:  # kinds given (bench.kinds): check the overrides against its Params now
            cls = attack_kinds.get(kind)
            from_mapping(cls.Params, {**reg["attacks"][attack].params, **out}, f"{where} (attack {attack})")
    return out


def _check_sweeps(sw: dict, where: str, reg: dict[str, dict]) -> None:
    """``sweeps: {attack: pgd, eps: [...], eps_steps: 4, steps: [...]}`` (all optional)."""
    keys = ("attack", "eps", "eps_steps", "steps")
    for k in sw:
        if k not in keys:
            raise BenchError(f"{where}: unknown key {k!r}; {did_you_mean(str(k), keys)}")
    attack = sw.get("attack", "pgd")
    if attack not in reg["attacks"]:
        raise unknown("attack", attack, reg["attacks"], f"{where}.attack")
    for i, e in enumerate(sw.get("eps", [])):
        if not 0 <= parse_number(e, f"{where}.eps[{i}]") <= 1:
            raise BenchError(f"{where}.eps[{i}]: {e} is outside [0, 1] (pixel units)")
    for k in [*sw.get("steps", []), sw.get("eps_steps", 1)]:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BenchError(f"{where}.steps: expected integers >= 1, got {k!r}")
