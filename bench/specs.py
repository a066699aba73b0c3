"""Frozen dataclasses for every configuration object, and the number parser for YAML values.

These are the single source of defaults and types: YAML ``params:`` and CLI flags map onto them field by
field (``from_mapping`` rejects unknown keys and wrong types with a message naming the path).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from snnbench.errors import BenchError, did_you_mean

_DECIMAL = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
#: a number as text: ASCII decimal (no underscores, no hex, no unicode digits), or a fraction of two
_NUMBER = re.compile(rf"^\s*({_DECIMAL})\s*$", re.ASCII)
_FRACTION = re.compile(rf"^\s*({_DECIMAL})\s*/\s*({_DECIMAL})\s*$", re.ASCII)
#: the smallest positive step size or budget accepted (pixel units of [0, 1] images): below it an attack or
#: an optimiser step does not move a float32 value near 1 (its spacing is 6e-8) and a no-op would be stored
MIN_STEP = 1e-6
MAX_T = 1024  # simulation time steps of a trained model
SHOWN = 60  # characters of a user's value echoed in an error message, at most


def shown(value: Any) -> str:
    """``repr(value)`` cut to :data:`SHOWN` characters: error messages never echo unbounded input.

    Containers are described by type and size instead of printed (a YAML alias bomb expands to billions
    of elements; the repr of it alone would run out of memory).
    """
    if isinstance(value, (dict, list, tuple, set)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, str) and len(value) > 4 * SHOWN:
        value = value[: 4 * SHOWN]
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def parse_number(value: Any, where: str) -> float:
    """The one number parser of every flag, YAML value and API argument (issue 24): an int or float, or
    text that is an ASCII decimal (``0.1``, ``1e-3``) or a fraction of two (``8/255``). Rejected with one
    line naming ``where``: bools, underscores (Python would read ``0_1`` as 1), hex and other notations,
    NaN, infinities, overflow and subnormal values (a step of 1e-320 is a no-op, never a setting)."""
    if isinstance(value, bool):
        raise BenchError(f"{where}: expected a number, got {shown(value)}")
    if isinstance(value, (int, float)):
        try:
            out = float(value)
        except OverflowError:
            raise BenchError(f"{where}: {shown(value)} is not a finite number") from None
    elif isinstance(value, str):
        m, f = _NUMBER.match(value), _FRACTION.match(value)
        if not (m or f):
            if value.strip().lower().lstrip("+-") in ("inf", "infinity", "nan"):
                raise BenchError(f"{where}: {shown(value)} is not a finite number")
            raise BenchError(f"{where}: {shown(value)} is not a number (use e.g. 0.1, 1e-3 or 8/255)")
        try:
            out = float(f.group(1)) / float(f.group(2)) if f else float(m.group(1))
        except ZeroDivisionError:
            raise BenchError(f"{where}: {shown(value)} is not a number (it divides by zero)") from None
        except OverflowError:
            raise BenchError(f"{where}: {shown(value)} is not a finite number") from None
    else:
        raise BenchError(f"{where}: expected a number, got {type(value).__name__} {shown(value)}")
    if not math.isfinite(out):
        raise BenchError(f"{where}: {shown(value)} is not a finite number")
    if out != 0 and abs(out) < sys.float_info.min:
        raise BenchError(f"{where}: {shown(value)} is too small to be a setting (subnormal); use 0 or a normal number")
    return out + 0.0  # -0.0 + 0.0 == +0.0: eps 0 and -0 are one value, hence one stored row


_INTEGER = re.compile(r"^\s*[+-]?[0-9]+\s*$", re.ASCII)


def parse_integer(value: Any, where: str) -> int:
    """An integer flag or value: an int, or ASCII digits (``int("1_0")`` would be 10; ``"1e3"`` and
    ``"10.0"`` are refused as text, a float that is whole is taken)."""
    if isinstance(value, bool):
        raise BenchError(f"{where}: expected an integer, got {shown(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.match(value):
        return int(value)
    raise BenchError(f"{where}: {shown(value)} is not an integer")


def check_step(value: float, where: str, zero_ok: bool = False) -> float:
    """A step size or budget in pixel units: in [:data:`MIN_STEP`, 1] (or 0 where ``zero_ok``: an eps of
    0 is clean accuracy). Below the minimum an attack does not move a float32 image."""
    if zero_ok and value == 0:
        return value
    if not MIN_STEP <= value <= 1:
        lo = f"0 or [{MIN_STEP:g}" if zero_ok else f"[{MIN_STEP:g}"
        raise BenchError(f"{where} {value:g} must be in {lo}, 1] (pixel units of [0, 1] images, e.g. 8/255 or 0.1)")
    return value


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
            raise BenchError(f"{where}: expected an integer, got {shown(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise BenchError(f"{where}: expected true/false, got {shown(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise BenchError(f"{where}: expected a string, got {shown(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise BenchError(f"{where}: expected a list, got {shown(value)}")
        elem = args[0] if args else Any
        return tuple(_coerce(v, elem, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise BenchError(f"{where}: expected a mapping, got {shown(value)}")
        return dict(value)
    return value


def from_mapping(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and bad types name ``where.key``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BenchError(f"{where}: expected a mapping, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise BenchError(f"{where}: unknown key {shown(key)}; {did_you_mean(str(key)[:SHOWN], names)}")
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


def canonical_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no spaces): every config and attack hash."""
    return hashlib.sha256(json.dumps(json_ready(obj), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class ATSpec:
    """PGD adversarial training (FEEL/MPD-SGR convention: eps 2/255, 2 steps, alpha 1/255 on CIFAR).

    ``eps``/``alpha`` None mean the dataset's training budget (docs/design.md threat model per dataset).
    """

    eps: float | None = None
    alpha: float | None = None
    steps: int = 2
    grad_mode: str = "bptt"


@dataclass(frozen=True)
class TrainSpec:
    """Shared training loop settings (docs/defenses.md 1.5 defaults: SGD 0.1, momentum 0.9, wd 5e-4, cosine)."""

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
        if self.T > MAX_T:
            raise BenchError(f"T must be <= {MAX_T} (got {self.T}); no SNN in the papers uses more than 8")
        if self.epochs < 0:
            raise BenchError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise BenchError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.training not in ("standard", "at"):
            raise BenchError(f"training: {self.training!r} is not a mode; valid: at, standard")
        if not (self.lr > 0):
            raise BenchError(f"lr must be > 0, got {self.lr}")
        check_seed(self.seed, "seed")


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
    #: channel axis of a user's 4-D .npz images: "first", "last" or "" (inferred); ``bench run --channels``
    channels: str = ""


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


# --- attack parameters ---------------------------------------------------------------------------------
MAX_SEED = 2**32 - 1  # numpy's and CUDA's seed range; torch accepts more, but a seed must fit everywhere
MAX_EOT = 1000  # EOT samples per gradient (the papers use 10-30); beyond this an evaluation never ends
MAX_STEPS = 100_000  # attack iterations


def check_seed(value: int, where: str) -> int:
    """A seed in [0, 2**32 - 1] (what every RNG in the stack accepts)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise BenchError(f"{where} must be an integer in [0, {MAX_SEED}], got {shown(value)}")
    return value


def check_attack_params(params: Any, where: str) -> None:
    """Bounds shared by every attack's ``Params`` (fields it lacks are skipped); names ``where.field``.

    steps in [1, MAX_STEPS], alpha > 0, eps in [0, 1] (pixel units), eot in [1, MAX_EOT], gamma > 0,
    seed in [0, 2**32 - 1]. A zero or negative step count or step size would store an attack that never
    moves the input (clean accuracy reported as robust).
    """
    get = lambda k: getattr(params, k, None)  # noqa: E731
    steps, alpha, eps, eot, gamma, seed = (get(k) for k in ("steps", "alpha", "eps", "eot", "gamma", "seed"))
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise BenchError(f"{where}.steps (--steps) must be in [1, {MAX_STEPS}], got {shown(steps)}")
    if eps is not None:
        check_step(eps, f"{where}.eps (--eps)", zero_ok=True)
    if alpha is not None:
        check_step(alpha, f"{where}.alpha (--alpha)", zero_ok=eps == 0)  # eps 0 (a sweep's origin): no step
    if eot is not None and not 1 <= eot <= MAX_EOT:
        raise BenchError(f"{where}.eot (--eot) must be in [1, {MAX_EOT}], got {shown(eot)}")
    if gamma is not None and not gamma > 0:
        raise BenchError(f"{where}.gamma (--gamma) must be > 0, got {shown(gamma)}")
    if seed is not None:
        check_seed(seed, f"{where}.seed")


# --- bounded YAML ---------------------------------------------------------------------------------------
MAX_YAML_BYTES = 4 << 20  # a registry of every paper table is ~30 KB; 4 MB is generous
MAX_YAML_DEPTH = 64  # nesting of mappings/lists (the real registry uses 6)


def regular_file(path: str | Path, what: str) -> Path:
    """``path`` as a regular file to read, or one line saying what it is instead: opening a FIFO blocks until
    a writer appears (a hang), a device never ends; both are refused before anything opens them."""
    p = Path(path)
    if not p.exists():
        raise BenchError(f"{what} {p}: no such file" + (" (a dangling symbolic link)" if p.is_symlink() else ""))
    if p.is_dir():
        raise BenchError(f"{what} {p} is a directory, not a file")
    if not p.is_file():
        raise BenchError(f"{what} {p} is not a regular file (a FIFO, socket or device); give a file")
    return p


def read_text_bounded(path: str | Path, what: str, limit: int = MAX_YAML_BYTES) -> str:
    """Read a small UTF-8 text file (registry, baseline): at most ``limit`` bytes, else a BenchError.

    Reads ``limit + 1`` bytes at most, so ``/dev/zero`` or a FIFO returns at once instead of filling memory.
    """
    p = regular_file(path, what)
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise BenchError(f"cannot read {what} {p}: {e.strerror or type(e).__name__}") from None
    if len(data) > limit:
        raise BenchError(f"{what} {p} is larger than {limit >> 20} MB; not a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BenchError(f"{what} {p} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})") from None


MAX_YAML_NODES = 1_000_000  # scalars + collections after expanding aliases (the real registry: ~5,000)


_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with a nesting limit (:data:`MAX_YAML_DEPTH`), checked while composing; numbers
    resolved by the strict rules of :func:`parse_number` (YAML 1.1 would read ``0_1`` as 1, ``0x10`` as 16
    and ``1:30`` as 90: such scalars stay text, and a numeric field then refuses them with one line); a
    key given twice in one mapping is an error (YAML keeps the last one silently); a plain key that reads
    as a number stays the text written (``0e0:`` names ``0e0``, not ``0.0``: keys are names, never numbers)."""

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.style is None and key_node.tag in (_INT_TAG, _FLOAT_TAG):
                        key_node.tag = "tag:yaml.org,2002:str"
                    key = key_node.value
                    if key in seen:
                        raise BenchError(f"line {key_node.start_mark.line + 1}: key {shown(key)} appears twice in one mapping")
                    seen.add(key)
        return super().construct_mapping(node, deep)

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        self._bench_depth = getattr(self, "_bench_depth", 0) + 1
        try:
            if self._bench_depth > MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise BenchError(f"line {line}: YAML nested deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._bench_depth -= 1


def _strict_number_resolvers() -> None:
    """Replace the loader's int/float resolvers by ASCII decimal ones (no underscores, base prefixes or
    sexagesimal); ``.inf``/``.nan`` still resolve, and :func:`parse_number` refuses them."""
    table = {k: [(tag, rx) for tag, rx in v if tag not in (_INT_TAG, _FLOAT_TAG)]
             for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    _BoundedLoader.yaml_implicit_resolvers = table
    _BoundedLoader.add_implicit_resolver(_INT_TAG, re.compile(r"^[-+]?[0-9]+$", re.ASCII),
                                         list("-+0123456789"))
    _BoundedLoader.add_implicit_resolver(
        _FLOAT_TAG,
        re.compile(r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
                   r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", re.ASCII),
        list("-+0123456789."))


_strict_number_resolvers()


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes in the document once every alias is expanded (a shared node counts once per use), computed
    on the composed graph in linear time, before any Python object is built."""
    key = id(node)
    if key not in memo:
        memo[key] = 1  # a (malformed) cycle counts once instead of recursing forever
        if isinstance(node, yaml.SequenceNode):
            memo[key] = 1 + sum(_expanded_size(v, memo) for v in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[key] = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    return memo[key]


def safe_yaml(text: str, where: str) -> Any:
    """Parse YAML with safe tags only, bounded size, depth and alias expansion ("billion laughs":
    :data:`MAX_YAML_NODES` after expansion). Every failure is one BenchError line prefixed by ``where``
    (never the document's content)."""
    if len(text) > MAX_YAML_BYTES:
        raise BenchError(f"{where}: larger than {MAX_YAML_BYTES >> 20} MB")
    try:
        loader = _BoundedLoader(text)  # the reader checks the characters already here
    except yaml.YAMLError as e:
        raise BenchError(f"{where}: malformed YAML: {str(e).splitlines()[0][:200]}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_NODES:
            raise BenchError(
                f"{where}: YAML aliases expand to {size:.3g} nodes (limit {MAX_YAML_NODES:,}); write the values out"
            )
        return loader.construct_document(node)
    except BenchError as e:
        raise BenchError(f"{where}: {e}" if not str(e).startswith(where) else str(e)) from None
    except yaml.YAMLError as e:
        raise BenchError(f"{where}: malformed YAML: {str(e).splitlines()[0][:200]}") from None
    except RecursionError:
        raise BenchError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path, what: str = "registry") -> Any:
    """Read and parse a YAML file with the bounds of :func:`read_text_bounded` and :func:`safe_yaml`."""
    return safe_yaml(read_text_bounded(path, what), str(path))
