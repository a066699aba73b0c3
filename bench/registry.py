"""``Registry[T]`` for Python kinds, and the loader/validator of ``registry.yaml``.

Python registers behaviour (defense and attack *kinds*, architectures); YAML names configurations. The
loader uses ``yaml.safe_load`` only and validates the whole file up front: every error names the YAML path,
the bad value and the valid options.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from bench.errors import BenchError, did_you_mean, unknown
from bench.specs import DatasetSpec, Entry, ModelSpec, TrainSpec, from_mapping, load_yaml_file
from bench.suite_spec import Suite, load_suite

T = TypeVar("T")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
SECTIONS = ("datasets", "models", "defenses", "attacks", "suites")
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "registry.yaml"


class Registry(Generic[T]):
    """Name -> object map; a collision raises, an unknown name says "did you mean"."""

    def __init__(self, kind: str, planned: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        # kinds declared in registry.yaml whose Python implementation has not landed yet
        self.planned: set[str] = set(planned)

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str, where: str = "") -> T:
        if name not in self._items:
            raise unknown(self.kind, name, self._items, where)
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)


@dataclass(frozen=True)
class BenchRegistry:
    """The validated contents of registry.yaml."""

    path: str
    datasets: dict[str, DatasetSpec]
    models: dict[str, ModelSpec]
    defenses: dict[str, Entry]
    attacks: dict[str, Entry]
    suites: dict[str, Suite]

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


def _load_entry(name: str, body: Any, where: str, kinds: Registry, allowed_extra: tuple[str, ...] = ()) -> Entry:
    if not isinstance(body, dict):
        raise BenchError(f"{where}: expected a mapping with 'kind', got {body!r}")
    extra = {k: body[k] for k in allowed_extra if k in body}
    core = {k: v for k, v in body.items() if k not in allowed_extra}
    entry: Entry = from_mapping(Entry, {"name": name, **core}, where)
    if entry.kind in kinds:
        cls = kinds.get(entry.kind)
        from_mapping(cls.Params, entry.params, f"{where}.params")
    else:
        if entry.kind not in kinds.planned:
            raise unknown(kinds.kind + " kind", entry.kind, list(kinds) + sorted(kinds.planned), f"{where}.kind")
    return Entry(entry.name, entry.kind, entry.params, entry.description or extra.get("description", ""))


def load_registry(path: str | os.PathLike | None = None) -> BenchRegistry:
    """Load and fully validate registry.yaml (default: $BENCH_REGISTRY or the repository's file)."""
    from attacks import ATTACKS
    from defenses import DEFENSES

    p = Path(path or os.environ.get("BENCH_REGISTRY") or DEFAULT_PATH)
    raw = load_yaml_file(p, "registry") or {}  # bounded size/depth, no aliases, UTF-8 (bench/specs.py)
    if not isinstance(raw, dict):
        raise BenchError(f"{p}: top level must be a mapping with keys {', '.join(SECTIONS)}")
    for key in raw:
        if key not in (*SECTIONS, "version"):
            raise BenchError(f"{p}: unknown top-level key {key!r}; {did_you_mean(str(key), (*SECTIONS, 'version'))}")
    w = f"{p.name}: "
    sec = {s: _section(raw, s, w) for s in SECTIONS}
    for s in SECTIONS:
        for name in sec[s]:
            _check_name(name, f"{w}{s}")
    datasets = {n: _load_dataset(n, b, f"{w}datasets.{n}") for n, b in sec["datasets"].items()}
    models = {
        n: from_mapping(ModelSpec, {"name": n, **b} if isinstance(b, dict) else b, f"{w}models.{n}")
        for n, b in sec["models"].items()
    }
    from bench.snn.encoders import ENCODERS
    from bench.snn.models import ARCHITECTURES
    from bench.snn.neuron import NeuronSpec

    for n, m in models.items():
        if m.arch not in ARCHITECTURES:
            raise unknown("architecture", m.arch, ARCHITECTURES, f"{w}models.{n}.arch")
        if m.encoder not in ENCODERS:
            raise unknown("encoder", m.encoder, ENCODERS, f"{w}models.{n}.encoder")
        from_mapping(NeuronSpec, m.neuron, f"{w}models.{n}.neuron")
    for n, d in datasets.items():
        if d.default_model not in models:
            raise unknown("model", d.default_model, models, f"{w}datasets.{n}.default_model")
    defenses = {n: _load_entry(n, b, f"{w}defenses.{n}", DEFENSES) for n, b in sec["defenses"].items()}
    attacks = {n: _load_entry(n, b, f"{w}attacks.{n}", ATTACKS) for n, b in sec["attacks"].items()}
    names = {"datasets": datasets, "models": models, "defenses": defenses, "attacks": attacks}
    suites = {n: load_suite(n, b, f"{w}suites.{n}", names, ATTACKS) for n, b in sec["suites"].items()}
    return BenchRegistry(str(p), datasets, models, defenses, attacks, suites)
