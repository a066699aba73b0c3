"""Print the spiking activity of every model of a suite (default ``smoke``): defense, training, firing rate,
SynOps and dense MACs per inference, and the per-layer firing rates (issue 23 item 5; definitions in
``snnbench.activity``).

Runs that predate the activity measurement get it computed here the way the pipeline does
(``snnbench.diagnostics.record_activity``: the first 256 clean test samples, seeded): the model is rebuilt
from the suite's plan and its cached checkpoint is loaded and verified (sha256 and config hash), never
retrained. The result is stored as the run's ``activity`` artifact unless ``--no-store``.

Usage::

    python scripts/activity_smoke.py                      # results/ (the smoke suite after `bench run --suite smoke`)
    python scripts/activity_smoke.py /tmp/ci/results --suite smoke --no-store
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from snnbench.activity import ACTIVITY_SAMPLES, measure_activity
from snnbench.data import load_data, to_float
from snnbench.diagnostics import record_activity
from snnbench.kinds import python_kinds
from snnbench.plan import Plan
from snnbench.prepare import Prepared
from snnbench.registry import load_registry
from snnbench.seeding import seeded
from snnbench.store import Store
from snnbench.suite_spec import CLEAN
from snnbench.suites import plan_cell
from snnbench.train import apply_state_dict, build_model, checkpoint_dir, load_verified


def load_model(plan: Plan, results: Path, run) -> torch.nn.Module:
    """The suite cell's model with its cached checkpoint (verified), as ``snnbench.prepare`` loads it."""
    with seeded(plan.train.seed, plan.device):
        model = build_model(plan.dataset, plan.model, plan.defense, plan.train.T)
    final = checkpoint_dir(results, plan.request.checkpoint_dir) / f"{plan.config_hash[:32]}.pt"
    ck = load_verified(final, plan.config_hash, run.checkpoint_sha256 or "")
    apply_state_dict(model, ck["state_dict"], str(final))
    return model.to(plan.device).eval()


def activity(plan: Plan, results: Path, store: Store, run, write: bool) -> tuple[dict, str]:
    """(payload, "stored" | "computed" | "computed, stored") for the run of ``plan``."""
    art = store.artifacts(run.id, "activity").get("")
    if art is not None:
        return art, "stored"
    model = load_model(plan, results, run)
    data = load_data(plan.dataset, plan.request.data_root)
    if write:
        record_activity(plan, Prepared(model, data, run.id, False, 0.0, None), store)
        return store.artifacts(run.id, "activity")[""], "computed, stored"
    x = to_float(data.test.x[:ACTIVITY_SAMPLES]).to(plan.device)
    with seeded(plan.seed, plan.device):
        return measure_activity(model, x, T=plan.train.T), "computed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", default="results", help="results folder (bench.sqlite, checkpoints/)")
    ap.add_argument("--suite", default="smoke")
    ap.add_argument("--db", default=None, help="SQLAlchemy URL (default: sqlite:///RESULTS/bench.sqlite)")
    ap.add_argument("--registry", default=None, help="registry.yaml (default: the packaged one)")
    ap.add_argument("--no-store", action="store_true", help="compute missing activity without storing it")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = Path(args.results)
    reg = load_registry(args.registry, kinds=python_kinds())
    store = Store(args.db or f"sqlite:///{results / 'bench.sqlite'}")
    suite = reg.suites[args.suite]
    print(f"{'defense':10} {'training':9} {'run':>4} {'firing rate':>11} {'SynOps/inf':>11} {'dense MACs':>11}  "
          f"per-layer firing rate   source")
    seen = set()
    for cell in suite.cells:
        if not cell.runnable or cell.attack != CLEAN:
            continue
        plan = plan_cell(reg, suite, cell, device="cpu")
        if plan.config_hash in seen:
            continue
        run = store.run_by_hash(plan.config_hash)
        if run is None:
            print(f"{cell.defense:10} {cell.training:9} {'-':>4}  not run (no stored run of this cell's config)")
            continue
        seen.add(plan.config_hash)
        a, source = activity(plan, results, store, run, not args.no_store)
        if a.get("status") != "measured":
            print(f"{cell.defense:10} {cell.training:9} {run.id:>4}  not measured: {a.get('reason')}")
            continue
        layers = " ".join(f"{100 * x['firing_rate']:.1f}%" for x in a["layers"])
        print(f"{cell.defense:10} {cell.training:9} {run.id:>4} {100 * a['firing_rate']:>10.2f}% "
              f"{a['synops']:>11,.0f} {a['dense_macs']:>11,.0f}  {layers:22}  {source}")
    print(f"(first {ACTIVITY_SAMPLES} clean test samples; SynOps = spikes x fan-out into the next synaptic layer, "
          "average pools folded in; dense MACs = layers fed by the encoded image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
