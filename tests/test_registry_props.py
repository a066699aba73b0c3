"""Property tests for the registry loader (issue 7): whatever YAML it is given - random documents, random
text, or the real registry.yaml with one value replaced or removed anywhere - ``load_registry`` either
returns a registry whose names all match the safe charset, or raises ``BenchError``; never another
exception type (a traceback for the user) and never a half-validated registry."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snnbench.errors import BenchError
from snnbench.kinds import python_kinds
from snnbench.registry import DEFAULT_PATH, NAME_RE, SECTIONS, BenchRegistry, load_registry

_FULL = yaml.safe_load(DEFAULT_PATH.read_text())
# everything but the big paper tables (YAML parsing dominates the cost of an example): two small suites
BASE = {**_FULL, "suites": {k: v for k, v in list(_FULL["suites"].items())[:2] if len(yaml.safe_dump(v)) < 2000}}
_DIR = Path(tempfile.mkdtemp(prefix="bench-props-"))
SETTINGS = settings(max_examples=int(os.environ.get("BENCH_PROPS_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow])

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(
        ["8/255", "1/0", "nan", "-inf", "1e400", "<script>", "../x", "pgd", "vanilla", "digits"]
    )
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10) | st.integers(), inner, max_size=4)
    ),
    max_leaves=12,
)


def _load(text: str) -> BenchRegistry | None:
    path = _DIR / "registry.yaml"
    path.write_text(text)
    try:
        reg = load_registry(path, kinds=python_kinds())
    except BenchError as e:
        assert str(e) and "\n" not in str(e).strip(), "errors are one line"
        return None
    for section in SECTIONS:
        assert all(NAME_RE.match(n) for n in getattr(reg, section)), "an unsafe name was accepted"
    return reg


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(BASE)


@SETTINGS
@given(doc=values)
def test_random_documents(doc):
    _load(yaml.safe_dump(doc))


@SETTINGS
@given(text=st.text(max_size=200))
def test_random_text(text):
    _load(text)


@SETTINGS
@given(data=st.data())
def test_real_registry_with_one_value_replaced_or_removed(data):
    raw = copy.deepcopy(BASE)
    path = data.draw(st.sampled_from(PATHS))
    parent = raw
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()):
        parent[path[-1]] = data.draw(values)
    elif isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent.pop(path[-1])
    _load(yaml.safe_dump(raw))


@SETTINGS
@given(name=st.text(max_size=20), section=st.sampled_from(["defenses", "attacks"]))
def test_names_outside_the_safe_charset_are_rejected(name, section):
    raw = copy.deepcopy(BASE)
    raw[section][name] = {"kind": "fgsm" if section == "attacks" else "vanilla"}
    reg = _load(yaml.safe_dump(raw))
    assert (reg is not None) == bool(NAME_RE.match(name)) or name in BASE[section]


def test_unmodified_registry_loads():
    assert _load(DEFAULT_PATH.read_text()) is not None
