"""registry.yaml loading: errors name the YAML path, the bad value and the valid options."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.errors import BenchError
from bench.registry import DEFAULT_PATH, Registry, load_registry
from bench.specs import parse_number


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
        load_registry(p)
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


def test_malformed_yaml(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("datasets: {digits: [\n")
    with pytest.raises(BenchError, match="malformed YAML"):
        load_registry(p)


def test_yaml_tags_are_not_executed(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("datasets: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(BenchError, match="malformed YAML"):
        load_registry(p)


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
    """Every implemented kind has a YAML entry, every YAML kind is implemented or declared planned."""
    from attacks import ATTACKS
    from defenses import DEFENSES

    for kinds, entries in ((DEFENSES, registry.defenses), (ATTACKS, registry.attacks)):
        used = {e.kind for e in entries.values()}
        assert set(kinds.names()) <= used, set(kinds.names()) - used
        assert used <= set(kinds.names()) | kinds.planned
        assert not (kinds.planned & set(kinds.names())), "a kind is both implemented and planned"
