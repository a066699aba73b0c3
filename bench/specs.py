"""Frozen dataclasses for every configuration object, and the number parser for YAML values.

These are the single source of defaults and types: YAML ``params:`` and CLI flags map onto them field by
field (``from_mapping`` rejects unknown keys and wrong types with a message naming the path).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError, did_you_mean

_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


def parse_number(value: Any, where: str) -> float:
    """Parse a YAML number, accepting fractions such as ``"8/255"``; rejects bools, NaN and inf."""
    if isinstance(value, bool):
        raise BenchError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        m = _FRACTION.match(value)
        try:
            out = float(m.group(1)) / float(m.group(2)) if m else float(value)
        except (ValueError, ZeroDivisionError):
            raise BenchError(f"{where}: {value!r} is not a number (use e.g. 0.1 or 8/255)") from None
    else:
        raise BenchError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(out):
        raise BenchError(f"{where}: {value!r} is not a finite number")
    return out


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one YAML value to a dataclass field type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if tp is float:
        return parse_number(value, where)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise BenchError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise BenchError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise BenchError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise BenchError(f"{where}: expected a list, got {value!r}")
        elem = args[0] if args else Any
        return tuple(_coerce(v, elem, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise BenchError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def from_mapping(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and bad types name ``where.key``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BenchError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise BenchError(f"{where}: unknown key {key!r}; {did_you_mean(str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [k for k in required if k not in kwargs]
    if missing:
        raise BenchError(f"{where}: missing key {missing[0]!r} (required: {', '.join(required)})")
    try:
        return cls(**kwargs)
    except BenchError as e:
        raise BenchError(f"{where}: {e}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (tuples become lists) for canonical JSON."""
    return json_ready(dataclasses.asdict(obj))


def json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


@dataclass(frozen=True)
class ATSpec:
    """PGD adversarial training (FEEL/MPD-SGR convention: eps 2/255, 2 steps, alpha 1/255 on CIFAR).

    ``eps``/``alpha`` None mean the dataset's training budget (DESIGN.md threat model per dataset).
    """

    eps: float | None = None
    alpha: float | None = None
    steps: int = 2
    grad_mode: str = "bptt"


@dataclass(frozen=True)
class TrainSpec:
    """Shared training loop settings (spec 1.5 defaults: SGD 0.1, momentum 0.9, wd 5e-4, cosine)."""

    epochs: int = 200
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    T: int = 8
    seed: int = 42
    training: str = "standard"
    at: ATSpec = field(default_factory=ATSpec)

    def __post_init__(self) -> None:
        if self.T < 1:
            raise BenchError(f"T must be >= 1, got {self.T}")
        if self.T > 1024:
            raise BenchError(f"T must be <= 1024 (got {self.T}); no SNN in the papers uses more than 8")
        if self.epochs < 0:
            raise BenchError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise BenchError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.training not in ("standard", "at"):
            raise BenchError(f"training: {self.training!r} is not a mode; valid: at, standard")
        if not (self.lr > 0):
            raise BenchError(f"lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset and its threat model (eps/alpha for attacks, train_eps for adversarial training)."""

    name: str
    source: str
    shape: tuple[int, ...]
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eps: float
    alpha: float
    train_eps: float
    default_model: str
    torchvision: str = ""
    path: str = ""
    eval_samples: int = 0  # 0 = the whole test set
    augmentation: str = "none"  # none | crop | crop_flip (RandomCrop with `pad`, + horizontal flip)
    pad: int = 4
    train: dict = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """An architecture with its parameters, neuron settings and encoder."""

    name: str
    arch: str
    params: dict = field(default_factory=dict)
    neuron: dict = field(default_factory=dict)
    encoder: str = "direct"
    description: str = ""


@dataclass(frozen=True)
class Entry:
    """A named configuration of a registered Python kind (defense or attack)."""

    name: str
    kind: str
    params: dict = field(default_factory=dict)
    description: str = ""
