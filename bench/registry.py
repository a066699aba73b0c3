"""Loader and validator of ``registry.yaml``; the Python kind tables it checks against are passed in.

Python registers behaviour (defense and attack *kinds*, architectures, encoders: each a
:class:`~bench.registry_base.Registry`); YAML names configurations. The loader uses ``yaml.safe_load`` only
and validates the whole file up front: every error names the YAML path, the bad value and the valid options.

This module imports no implementation (no ``attacks``, ``defenses``, ``bench.snn``, no torch): callers that
run models pass ``kinds=python_kinds()`` (:mod:`bench.kinds`) and get every kind name and ``params`` block
checked against the Python classes; read-only callers (report, check, export) may pass ``kinds=None`` and get
the structure and every cross-reference checked without importing torch (kind names and params are then
checked when a model is built).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snnbench.errors import BenchError, did_you_mean, unknown
from snnbench.kind_table import Registry
from snnbench.papers import Paper, check_ref, load_papers
from snnbench.paths import REGISTRY_PATH
from snnbench.specs import DatasetSpec, Entry, ModelSpec, TrainSpec, from_mapping, load_yaml_file
from snnbench.suite_spec import Suite, load_suite

__all__ = ["DEFAULT_PATH", "BenchRegistry", "Kinds", "Registry", "load_registry"]  # Registry: re-exported

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
SECTIONS = ("datasets", "models", "defenses", "attacks", "suites")
DEFAULT_PATH = REGISTRY_PATH  # the packaged registry.yaml (snnbench/paths.py)


@dataclass(frozen=True)
class Kinds:
    """The Python tables a registry is validated against (built by :func:`bench.kinds.python_kinds`).

    ``attacks``/``defenses`` map kind -> class with a ``Params`` dataclass; ``architectures``/``encoders``
    map name -> builder; ``neuron`` is the dataclass that a model's ``neuron:`` mapping must fit.
    """

    attacks: Registry
    defenses: Registry
    architectures: Registry
    encoders: Registry
    neuron: type


@dataclass(frozen=True)
class BenchRegistry:
    """The validated contents of registry.yaml."""

    path: str
    datasets: dict[str, DatasetSpec]
    models: dict[str, ModelSpec]
    defenses: dict[str, Entry]
    attacks: dict[str, Entry]
    suites: dict[str, Suite]
    papers: dict[str, Paper] = field(default_factory=dict)  # `papers:` section (bench/papers.py)
    defense_papers: dict[str, str] = field(default_factory=dict)  # defense config -> paper id

    def get(self, section: str, name: str, where: str = "") -> Any:
        table = getattr(self, section)
        if name not in table:
            raise unknown(section[:-1], name, table, where)
        return table[name]


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BenchError(
            f"{where}: name {name!r} must match {NAME_RE.pattern} (lowercase letters, digits, _ . -; "
            "names become file names and HTML)"
        )
    return name


def _section(raw: dict, key: str, where: str) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise BenchError(f"{where}{key}: expected a mapping of name -> config, got {type(value).__name__}")
    return value


def _load_dataset(name: str, body: Any, where: str) -> DatasetSpec:
    if not isinstance(body, dict):
        raise BenchError(f"{where}: expected a mapping, got {body!r}")
    spec: DatasetSpec = from_mapping(DatasetSpec, {"name": name, **body}, where)
    for key in ("eps", "alpha", "train_eps"):
        if not 0 <= getattr(spec, key) <= 1:
            raise BenchError(f"{where}.{key}: {getattr(spec, key)} is outside [0, 1] (pixel units)")
    sources = ("sklearn_digits", "torchvision", "npz", "imagefolder", "synthetic")
    if spec.source not in sources:
        raise BenchError(f"{where}.source: {spec.source!r} is unknown; {did_you_mean(spec.source, sources)}")
    if len(spec.shape) != 3 or len(spec.mean) != spec.shape[0] or len(spec.std) != spec.shape[0]:
        raise BenchError(f"{where}: shape must be [C, H, W] with one mean/std per channel")
    from_mapping(TrainSpec, spec.train, f"{where}.train")
    return spec


def _load_entry(
    name: str, body: Any, where: str, kinds: Registry | None, allowed_extra: tuple[str, ...] = ()
) -> Entry:
    if not isinstance(body, dict):
        raise BenchError(f"{where}: expected a mapping with 'kind', got {body!r}")
    extra = {k: body[k] for k in allowed_extra if k in body}
    core = {k: v for k, v in body.items() if k not in allowed_extra}
    entry: Entry = from_mapping(Entry, {"name": name, **core}, where)
    if kinds is not None:
        if entry.kind not in kinds:
            raise unknown(kinds.kind + " kind", entry.kind, kinds, f"{where}.kind")
        from_mapping(kinds.get(entry.kind).Params, entry.params, f"{where}.params")
    return Entry(entry.name, entry.kind, entry.params, entry.description or extra.get("description", ""))


def load_registry(path: str | os.PathLike | None = None, *, kinds: Kinds | None) -> BenchRegistry:
    """Load and validate registry.yaml (default: $BENCH_REGISTRY or the repository's file).

    ``kinds`` is required so that every caller chooses: ``python_kinds()`` (:mod:`bench.kinds`) checks kind
    names, ``params``, architectures, encoders and neuron settings against the code; ``None`` checks
    everything else without importing torch.
    """
    p = Path(path or os.environ.get("BENCH_REGISTRY") or DEFAULT_PATH)
    raw = load_yaml_file(p, "registry") or {}  # bounded size/depth, no aliases, UTF-8 (bench/specs.py)
    if not isinstance(raw, dict):
        raise BenchError(f"{p}: top level must be a mapping with keys {', '.join(SECTIONS)}")
    for key in raw:
        if key not in (*SECTIONS, "version", "papers"):
            raise BenchError(f"{p}: unknown top-level key {key!r}; {did_you_mean(str(key), (*SECTIONS, 'version', 'papers'))}")
    w = f"{p.name}: "
    sec = {s: _section(raw, s, w) for s in SECTIONS}
    empty = [s for s in ("datasets", "models", "defenses", "attacks") if not sec[s]]
    if empty:
        raise BenchError(f"{p}: no {', '.join(empty)}: a registry needs at least one dataset, model, defense and "
                         "attack (see the packaged registry.yaml)")
    for s in SECTIONS:
        for name in sec[s]:
            _check_name(name, f"{w}{s}")
    datasets = {n: _load_dataset(n, b, f"{w}datasets.{n}") for n, b in sec["datasets"].items()}
    models = {
        n: from_mapping(ModelSpec, {"name": n, **b} if isinstance(b, dict) else b, f"{w}models.{n}")
        for n, b in sec["models"].items()
    }
    if kinds is not None:
        for n, m in models.items():
            kinds.architectures.get(m.arch, f"{w}models.{n}.arch")
            kinds.encoders.get(m.encoder, f"{w}models.{n}.encoder")
            from_mapping(kinds.neuron, m.neuron, f"{w}models.{n}.neuron")
    for n, d in datasets.items():
        if d.default_model not in models:
            raise unknown("model", d.default_model, models, f"{w}datasets.{n}.default_model")
    papers = load_papers(raw.get("papers"), f"{w}papers")
    defenses = {n: _load_entry(n, b, f"{w}defenses.{n}", kinds and kinds.defenses, ("paper",))
                for n, b in sec["defenses"].items()}
    defense_papers = {
        n: check_ref(b.get("paper"), papers, f"{w}defenses.{n}.paper") for n, b in sec["defenses"].items()
    }
    attacks = {n: _load_entry(n, b, f"{w}attacks.{n}", kinds and kinds.attacks) for n, b in sec["attacks"].items()}
    names = {"datasets": datasets, "models": models, "defenses": defenses, "attacks": attacks}
    suites = {n: load_suite(n, b, f"{w}suites.{n}", names, kinds and kinds.attacks) for n, b in sec["suites"].items()}
    for n, s in suites.items():
        check_ref(s.paper, papers, f"{w}suites.{n}.paper")
    return BenchRegistry(
        str(p), datasets, models, defenses, attacks, suites, papers, {k: v for k, v in defense_papers.items() if v}
    )
