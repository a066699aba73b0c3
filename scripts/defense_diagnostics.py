"""Membrane-potential diagnostics of trained digits models (issue 12): clean and PGD-7 accuracy, the share of
pre-spike potentials within ``window`` of the threshold (TGO Fig. 4), the firing rate, silent channels and the
mean BN scale (MPD-SGR's failure mode on digits). Trains (or loads from RESULTS the cached checkpoint of) each
named config through the normal runner, so the numbers belong to the same models ``bench run`` evaluates.

    python scripts/defense_diagnostics.py -d vanilla -d tgo --results-dir /tmp/tables_cmp
    python scripts/defense_diagnostics.py -d mpd_sgr --eta 0.1,0.3,1,3,10 --results-dir /tmp/tables_eta
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
import yaml
from torch import nn

from snnbench.data import to_float
from snnbench.defenses.base import pgd_examples
from snnbench.kinds import python_kinds
from snnbench.plan import RunRequest, resolve
from snnbench.prepare import prepare
from snnbench.registry import DEFAULT_PATH, load_registry
from snnbench.store import Store


@torch.no_grad()
def potentials(model, x: torch.Tensor, window: float) -> dict[str, float]:
    """Near-threshold share |V - V_th| < window, firing rate, share of channels that never fire."""
    with model.recording() as neurons:
        model(x)
        near = torch.cat([((n.v_pre - n.spec.v_th).abs() < window).flatten() for n in neurons]).float().mean()
        rate = torch.cat([n.spikes.flatten() for n in neurons]).mean()
        silent = [(n.spikes.sum(dim=(0, 1, *range(3, n.spikes.dim()))) == 0).float() for n in neurons]
        silent_share = torch.cat(silent).mean()
    bn = [m.weight.abs().mean() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return {"near": float(near), "rate": float(rate), "silent": float(silent_share),
            "bn_scale": float(torch.stack(bn).mean())}


def diagnose(reg_path: Path, name: str, results: Path, seed: int, window: float) -> dict[str, float]:
    reg = load_registry(reg_path, kinds=python_kinds())
    plan = resolve(reg, RunRequest(defense=name, train_overrides={"seed": seed}, device="cpu"))
    store = Store(f"sqlite:///{results / 'bench.sqlite'}")
    prep = prepare(plan, store, results)
    model, data = prep.model.eval(), prep.data
    x, y = to_float(data.test.x), data.test.y
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    ds = plan.dataset
    x_adv = pgd_examples(model, x, y, ds.eps, ds.alpha, 7, "bptt", torch.Generator().manual_seed(0))
    with torch.no_grad():
        robust = float((model(x_adv).argmax(1) == y).float().mean())
    return {"clean": clean, "pgd": robust, **potentials(model, x, window)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-d", "--defense", action="append", required=True)
    ap.add_argument("--eta", default="", help="comma list: MPD-SGR eta values (adds configs mpd_eta<value>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=float, default=0.5, help="|V - V_th| window (TGO's delta)")
    ap.add_argument("--results-dir", type=Path, default=Path("/tmp/tables_diag"))
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    a.results_dir.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    names = list(a.defense)
    for eta in filter(None, a.eta.split(",")):
        key = f"mpd_eta{eta}".replace(".", "_")
        raw["defenses"][key] = {"kind": "mpd_sgr", "params": {"eta": float(eta)}}
        names.append(key)
    with tempfile.TemporaryDirectory() as tmp:
        reg_path = Path(tmp) / "registry.yaml"
        reg_path.write_text(yaml.safe_dump(raw))
        print(f"{'config':<14} {'clean':>6} {'pgd':>6} {'near':>6} {'rate':>6} {'silent':>6} {'bn|w|':>6}")
        for name in names:
            r = diagnose(reg_path, name, a.results_dir, a.seed, a.window)
            print(f"{name:<14} {r['clean']:6.3f} {r['pgd']:6.3f} {r['near']:6.3f} {r['rate']:6.3f} "
                  f"{r['silent']:6.3f} {r['bn_scale']:6.3f}", flush=True)


if __name__ == "__main__":
    main()
