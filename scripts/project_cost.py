"""Projected GPU-hours of the MPD-SGR Table 1 CIFAR-10 half (the suite ``mpd_sgr_table1`` in registry.yaml:
7 defenses x {standard, AT}, VGG-11, T=8; clean, FGSM, PGD-7, BIM-7 on the 10k test images) from measured
``bench perf`` rates, with the cost model of ``bench/cost.py`` (each attack's cost from its class, each
defense's workload from its class), on each defense's own neuron path and on the plain (reference) path.

Usage: python scripts/project_cost.py perf/gpu_h100_bench_b256.json [precision]
"""

from __future__ import annotations

import sys
from pathlib import Path

from snnbench.cost import load_rates, project
from snnbench.kinds import python_kinds
from snnbench.registry import load_registry
from snnbench.suite_results import Measured


def main() -> None:
    perf = Path(sys.argv[1])
    precision = sys.argv[2] if len(sys.argv) > 2 else "fp32"
    reg = load_registry(kinds=python_kinds())
    suite = reg.suites["mpd_sgr_table1"]
    rates = load_rates(perf.parent, (perf.name,), precision)
    if not rates[1]:
        raise SystemExit(f"{perf}: no rows at precision {precision}")
    cells = [c for c in suite.cells if c.dataset == "cifar10" and c.runnable]
    print(f"{perf.name} precision {precision}: {len(cells)} CIFAR-10 cells of mpd_sgr_table1")
    print(f"{'defense':<10} {'training':<9} {'own path h':>10} {'plain h':>8}")
    total = {None: 0.0, "torch": 0.0}
    for key in sorted({(c.defense, c.training) for c in cells}):
        todo = [Measured(c, "not run") for c in cells if (c.defense, c.training) == key]
        h = {p: project(reg, suite, todo, rates=rates, path=p).hours or 0.0 for p in total}
        for p in total:
            total[p] += h[p]
        print(f"{key[0]:<10} {key[1]:<9} {h[None]:>10.2f} {h['torch']:>8.2f}")
    print(f"{'total':<20} {total[None]:>10.1f} {total['torch']:>8.1f}   ({total['torch'] / total[None]:.2f}x)")


if __name__ == "__main__":
    main()
