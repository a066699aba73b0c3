"""The package layout (issue 21): one import namespace, layers without cycles or up-arrows, no user module can
shadow ours, the public names are not shadowed by submodules, and the move changed no hash (stored results and
cached checkpoints from before it still load)."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

import snnbench
from snnbench.kinds import python_kinds
from snnbench.plan import External, ModelCard, RunRequest, plan_external, resolve
from snnbench.registry import load_registry
from snnbench.strategies import attack_hash

ROOT = Path(__file__).resolve().parents[1]


def _graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_import_cycle_and_no_import_up_a_layer():
    g = _graph()
    full = g.graph(ROOT)
    assert g.cycles(full, include_function_level=True) == []
    assert g.up_arrows(full) == []


def test_the_layer_check_fails_on_a_planted_up_arrow_and_cycle(tmp_path):
    """The check is a check: a leaf module importing the CLI is an up-arrow, and with the CLI importing it
    back, a cycle; `--check` exits 1 on the planted copy."""
    for folder in ("bench", "attacks", "defenses"):
        dst = tmp_path / folder
        dst.mkdir()
        for src in (ROOT / folder).rglob("*.py"):
            out = dst / src.relative_to(ROOT / folder)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(src.read_text())
    errors = tmp_path / "bench" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _planted():\n    from snnbench import cli  # noqa: F401\n")
    g = _graph()
    full = g.graph(tmp_path)
    assert ("snnbench.errors", "snnbench.cli", True) in g.up_arrows(full)
    assert g.cycles(full, include_function_level=True)
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), "--check", "--cycles",
                        "--root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1 and "snnbench.errors -> snnbench.cli (f)" in r.stdout


def test_every_module_is_placed_in_a_layer():
    g = _graph()
    assert [m for m in g.modules(ROOT) if g.layer_of(m) < 0] == []


def test_public_names_are_not_shadowed_by_submodules():
    """`snnbench.evaluate` must stay the function after any submodule import (bench/evaluate.py once made
    it a module)."""
    subs = {m.name for m in pkgutil.iter_modules(snnbench.__path__)}
    assert not subs & set(snnbench.__all__), subs & set(snnbench.__all__)
    for sub in sorted(subs - {'cli_perf', '__main__'}):  # importing any submodule must not replace a public name
        importlib.import_module(f'snnbench.{sub}')

    assert callable(snnbench.evaluate) and snnbench.evaluate.__module__ == "snnbench.api"


def test_a_users_attacks_defenses_and_bench_modules_do_not_shadow_ours(tmp_path):
    for m in ("attacks", "defenses", "bench"):
        (tmp_path / f"{m}.py").write_text(f"raise SystemExit('user module {m}.py was imported')\n")
    code = ("import snnbench, snnbench.api, snnbench.cli, snnbench.attacks, snnbench.defenses; "
            "from snnbench.paths import REGISTRY_PATH; assert REGISTRY_PATH.is_file(); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


# Config and attack hashes computed on commit 401caaa (before the move and the pipeline merge) with the same
# requests: the checkpoint cache and stored evaluations are addressed by them, so they must not change.
PINNED = {
    ("vanilla", "pgd"): ("d4bbb8e5f08ce049acc6132c36e8b822c0278455ae93b118c6b7d6dda557d094",
                         "99f3896495c8c58cf3473e80961cfbd53ece97dbc52fb650b98ff223f87efbc8"),
    ("tgo", "standard"): ("b1cfefcf4172cba2d502cc8cd6795c4f2e113846106179d34c2862a2b32d5488",
                          "900bf9f603ebedb32d76fd8b43d75cdd9c3dd91a733a8ddf3fd425abc4973265"),
    ("sr", "apgd"): ("2c11f7e9b2ac38b98e0b7988240ca04c7a96e3089e73c0881718f78e17cad9e9",
                     "307a6d98be13e614fd675b2703b8155222580768203e4ea6ba5d538ce8563a82"),
}
PINNED_EXTERNAL = ("67753a3f200c6642753adced1c29ff3278e960006258b285f9182c4ad88c4b8d",
                   "c60b665545246a5412fe43edfd608dee3c79b80bd3d9820d4dcc13eb61c40227")


def test_config_and_attack_hashes_are_unchanged_by_the_move():
    reg = load_registry(kinds=python_kinds())
    # the pinned protocol row was stored by snn-standard-v1 (registry.yaml's `standard` is v2 since issue 20):
    # the same entry at version v1 must hash as it did, so stored v1 rows are still found
    v1 = dataclasses.replace(reg.attacks["standard"], params={**reg.attacks["standard"].params, "version": "v1"})
    reg = dataclasses.replace(reg, attacks={**reg.attacks, "standard": v1})
    for (defense, attack), (config_hash, a_hash) in PINNED.items():
        plan = resolve(reg, RunRequest(defense=defense, attacks=(attack,), device="cpu"))
        entry, atk = plan.attacks[0]
        assert (plan.config_hash, attack_hash(plan, entry, atk)) == (config_hash, a_hash), (defense, attack)


def test_external_config_hash_is_unchanged_by_the_move():
    from snnbench.api import weights_sha256

    reg = load_registry(kinds=python_kinds())
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    card = ModelCard(name="pin", module="pin.Model", libraries=("snnbench",), weights_sha256=weights_sha256(m))
    plan = plan_external(reg, External(m, card), reg.datasets["digits"], ["pgd"], {"eps": None}, 100,
                         torch.device("cpu"), 256, substitute=False)
    assert (card.weights_sha256, plan.config_hash) == PINNED_EXTERNAL
