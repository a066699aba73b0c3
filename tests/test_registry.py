"""registry.yaml loading: errors name the YAML path, the bad value and the valid options."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snnbench.errors import BenchError
from snnbench.kinds import python_kinds
from snnbench.registry import DEFAULT_PATH, Registry, load_registry
from snnbench.specs import parse_number

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    mutate(raw)
    p = tmp_path / "registry.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_repository_registry_is_valid(registry):
    assert "digits" in registry.datasets and "vanilla" in registry.defenses and "pgd" in registry.attacks


@pytest.mark.parametrize(
    "mutate,fragments",
    [
        (lambda r: r["attacks"]["pgd"].__setitem__("kind", "pgdx"), ["attacks.pgd.kind", "'pgdx'", "did you mean 'pgd'"]),
        (lambda r: r["attacks"]["pgd"]["params"].__setitem__("stepz", 3), ["attacks.pgd.params", "'stepz'", "did you mean 'steps'"]),
        (lambda r: r["attacks"]["pgd"]["params"].__setitem__("steps", "many"), ["attacks.pgd.params.steps", "integer"]),
        (lambda r: r["attacks"]["pgd"]["params"].__setitem__("eps", "8/0"), ["attacks.pgd.params.eps", "not a number"]),
        (lambda r: r["datasets"]["digits"].__setitem__("eps", 2), ["datasets.digits.eps", "outside [0, 1]"]),
        (lambda r: r["datasets"]["digits"].__setitem__("default_model", "resnet"), ["datasets.digits.default_model", "'resnet'"]),
        (lambda r: r["datasets"]["digits"]["train"].__setitem__("T", 0), ["datasets.digits.train", "T must be >= 1"]),
        (lambda r: r["models"]["vgg11"].__setitem__("arch", "vgg_11"), ["models.vgg11.arch", "did you mean 'vgg11'"]),
        (lambda r: r["models"]["small_conv"].__setitem__("neuron", {"surrogate": "tri"}), ["models.small_conv.neuron", "triangle"]),
        (lambda r: r["defenses"].__setitem__("Bad Name", {"kind": "vanilla"}), ["defenses", "'Bad Name'", "must match"]),
        (lambda r: r.__setitem__("atacks", {}), ["unknown top-level key 'atacks'", "did you mean 'attacks'"]),
    ],
)
def test_registry_errors_name_path_value_and_options(tmp_path, mutate, fragments):
    p = _write(tmp_path, mutate)
    with pytest.raises(BenchError) as e:
        load_registry(p, kinds=python_kinds())
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


def test_malformed_yaml(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("datasets: {digits: [\n")
    with pytest.raises(BenchError, match="malformed YAML"):
        load_registry(p, kinds=python_kinds())


def test_yaml_tags_are_not_executed(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("datasets: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(BenchError, match="malformed YAML"):
        load_registry(p, kinds=python_kinds())


def test_generic_registry_collision_and_did_you_mean():
    reg: Registry[int] = Registry("thing")
    reg.register("alpha")(1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("alpha")(2)
    with pytest.raises(BenchError, match="did you mean 'alpha'"):
        reg.get("alpah")


@pytest.mark.parametrize("text,value", [("8/255", 8 / 255), (0.1, 0.1), ("0.25", 0.25), (3, 3.0)])
def test_parse_number(text, value):
    assert parse_number(text, "x") == pytest.approx(value)


@pytest.mark.parametrize("text", ["nan", "inf", True, None, "1/0", [1]])
def test_parse_number_rejects(text):
    with pytest.raises(BenchError):
        parse_number(text, "x")


def test_code_and_yaml_agree(registry):
    """Every implemented kind has a YAML entry, every YAML kind is implemented."""
    from snnbench.attacks import ATTACKS
    from snnbench.defenses import DEFENSES

    for kinds, entries in ((DEFENSES, registry.defenses), (ATTACKS, registry.attacks)):
        used = {e.kind for e in entries.values()}
        assert set(kinds.names()) <= used, set(kinds.names()) - used
        assert used <= set(kinds.names()), used - set(kinds.names())


def test_kind_checks_need_the_kind_tables(tmp_path):
    """``kinds=None`` (read-only commands) checks structure and references; kinds and params need the tables."""
    p = _write(tmp_path, lambda r: r["attacks"]["pgd"].__setitem__("kind", "pgdx"))
    assert load_registry(p, kinds=None).attacks["pgd"].kind == "pgdx"
    with pytest.raises(BenchError, match="unknown attack kind 'pgdx'"):
        load_registry(p, kinds=python_kinds())
    bad_ref = _write(tmp_path, lambda r: r["suites"]["smoke"]["columns"].append("pgdd"))
    with pytest.raises(BenchError, match="unknown attack 'pgdd'"):
        load_registry(bad_ref, kinds=None)


def test_registry_loader_imports_no_implementation():
    """bench/registry.py reads YAML without attacks/, defenses/, bench/snn/ or torch (they import it)."""
    code = (
        "import sys; from snnbench.registry import load_registry; load_registry(kinds=None); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' "
        "or m.startswith(('snnbench.snn', 'snnbench.attacks', 'snnbench.defenses'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_registries_and_kinds_are_in_no_import_cycle():
    """scripts/import_graph.py (module- and function-level imports): no cycle through the registry modules or
    any attack/defense module (the registry <-> attacks/defenses cycle of 22f6618 stays gone)."""
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    graph = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph)
    full = graph.graph(ROOT)
    assert "snnbench.attacks" in full["snnbench.kinds"] and "snnbench.attacks" not in full["snnbench.registry"]
    ours = ("snnbench.registry", "snnbench.kind_table", "snnbench.kinds")
    for comp in graph.cycles(full, include_function_level=True):
        assert not [m for m in comp if graph.package_of(m) in ("snnbench.attacks", "snnbench.defenses") or m in ours], comp
