"""Security (issue 7): unsafe registry names are refused, the site escapes every string that comes from the
registry or the database, checkpoints never unpickle code, and the code base has no eval/exec, no shell
strings and no ``torch.load`` without ``weights_only=True``."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from snnbench.errors import BenchError
from snnbench.kinds import python_kinds
from snnbench.registry import DEFAULT_PATH, load_registry
from snnbench.store import EvalRecord, FlagRecord, RunInfo, Store
from snnbench.train import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
XSS = "<script>alert('x')</script>"


def _write_registry(tmp: Path, mutate) -> Path:
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    mutate(raw)
    path = tmp / "registry.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("section", ["datasets", "models", "defenses", "attacks", "suites"])
def test_script_tag_names_are_refused(tmp_path, section):
    def mutate(raw):
        table = raw.setdefault(section, {}) or {}
        raw[section] = table
        first = next(iter(table.values())) if table else {}
        table[XSS] = first

    with pytest.raises(BenchError, match="must match"):
        load_registry(_write_registry(tmp_path, mutate), kinds=python_kinds())


def test_site_escapes_registry_and_database_strings(tmp_path):
    from snnbench.report import build_site

    def mutate(raw):
        raw["defenses"]["vanilla"]["description"] = XSS
        raw["suites"] = {
            "xss": {
                "description": XSS,
                "source": XSS,
                "dataset": "digits",
                "columns": ["clean", {"attack": "fgsm", "label": XSS, "note": XSS}],
                "rows": [
                    {"defense": "vanilla", "label": XSS, "reported": [1, 2]},
                    {"label": XSS, "reported": [3, 4]},
                ],
            }
        }

    reg = load_registry(_write_registry(tmp_path, mutate), kinds=python_kinds())
    store = Store(f"sqlite:///{tmp_path / 'bench.sqlite'}")
    info = RunInfo(
        "f" * 64, {"note": XSS}, "digits", "small_conv", XSS, XSS[:16], 4, 42, XSS, {XSS: XSS}, XSS, XSS
    )
    rid = store.upsert_run(info)
    store.finish_run(rid, status=XSS[:16], checkpoint_path=XSS, checkpoint_sha256=XSS[:64])
    ok = np.array([True, False, True])
    store.record_evaluation(
        rid,
        EvalRecord(XSS, "a" * 64, {"kind": XSS}, 0.1, ok, ok, 1.0),
        [FlagRecord(XSS, XSS, False, 1.0, XSS)],
    )
    pages = build_site(reg, store, tmp_path / "site")
    html = {p.name: p.read_text() for p in pages if p.suffix == ".html"}
    assert {"index.html", "suite-xss.html", f"run-{rid}.html"} <= set(html)
    for name, text in html.items():
        assert "<script>alert" not in text, f"{name} renders a planted string unescaped"
    assert "&lt;script&gt;" in html["suite-xss.html"] and "&lt;script&gt;" in html[f"run-{rid}.html"]
    assert "&lt;script&gt;" in html["index.html"]


class _Payload:
    """Unpickling this would create ``marker``: what a malicious checkpoint would do with a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload(marker)}, evil)
    with pytest.raises(BenchError, match="corrupt or not a plain state dict"):
        load_checkpoint(evil)
    assert not marker.exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, owner, name


def test_no_eval_no_shell_and_safe_torch_load():
    files = [p for d in ("bench", "defenses", "attacks") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 20
    problems = []
    for path in files:
        for node, owner, name in _calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            kw = {k.arg: k.value for k in node.keywords}
            if isinstance(node.func, ast.Name) and name in (
                "eval",
                "exec",
            ):  # not module.eval() (train/eval mode)
                problems.append(f"{where}: {name}()")
            if (owner, name) in (("os", "system"), ("os", "popen")):
                problems.append(f"{where}: {owner}.{name}()")
            if owner == "subprocess" and isinstance(kw.get("shell"), ast.Constant) and kw["shell"].value:
                problems.append(f"{where}: subprocess with shell=True")
            if (
                owner == "subprocess"
                and node.args
                and isinstance(node.args[0], (ast.Constant, ast.JoinedStr))
            ):
                problems.append(f"{where}: subprocess with a command string")
            if (owner, name) == ("torch", "load"):
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
    assert not problems, problems
