"""Interleaved A/B timing of the neuron backends on one model: train steps (and PGD-7 calls) alternate
torch / fused on the same weights and data, so machine load hits both equally; prints per-call median and
fastest ratios. Usage: python scripts/cpu_backend_ab.py [--rounds 40] [--workload vanilla|tgo|mpd] [-b 64]."""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from snnbench import perf
from snnbench.kinds import python_kinds
from snnbench.registry import load_registry
from snnbench.snn.neuron import set_backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--workload", default="vanilla", choices=sorted(perf.WORKLOADS))
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("-b", "--batch-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    reg = load_registry(kinds=python_kinds())
    spec = perf.BenchSpec(dataset=a.dataset, batch_size=a.batch_size, workloads=(a.workload,))
    model, ds, T, B = perf.resolve(spec, reg)
    torch.manual_seed(0)
    net, defense = perf._build(reg, model, ds, T, "torch", a.workload)
    x, y = torch.rand(B, *ds.shape), torch.randint(0, ds.classes, (B,))
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)

    def train_step() -> None:
        net.train()
        with net.recording() if defense.records else torch.enable_grad() as neurons:
            out = net(x)
            loss = F.cross_entropy(out, y)
            if defense.records:
                reg_ = perf._regularizer(defense, neurons, x, y, out, net)
                loss = loss + (reg_ if reg_ is not None else 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def pgd7() -> None:
        net.eval()
        xa = x.clone()
        for _ in range(7):
            xa.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(net(xa), y), xa)
            xa = (xa.detach() + 0.01 * g.sign()).clamp(0, 1)

    times: dict[tuple[str, str], list[float]] = {}
    for r in range(a.rounds + 2):
        for backend in ("torch", "fused") if r % 2 else ("fused", "torch"):
            set_backend(net, backend)
            for name, fn in (("train", train_step), ("pgd7", pgd7)):
                t0 = time.perf_counter()
                fn()
                if r >= 2:  # 2 warm-up rounds
                    times.setdefault((name, backend), []).append(time.perf_counter() - t0)
    print(
        f"{model.name} on {ds.name} T={T} B={B} workload={a.workload} threads={a.threads} rounds={a.rounds}"
    )
    for name in ("train", "pgd7"):
        t, f = times[name, "torch"], times[name, "fused"]
        print(
            f"{name:<5} torch median {statistics.median(t) * 1e3:8.1f} ms  fused median {statistics.median(f) * 1e3:8.1f} ms  "
            f"fused/torch speed: median {statistics.median(t) / statistics.median(f):.2f}x, fastest {min(t) / min(f):.2f}x"
        )


if __name__ == "__main__":
    main()
