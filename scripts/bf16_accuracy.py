"""Clean accuracy with and without bf16 autocast (fused neurons), small_conv SNN on scikit-learn digits.

The device machine has no CIFAR-10 and no network, so this checks "accuracy unchanged within noise" on the
offline dataset: 3 seeds x {fp32, bf16}, 15 epochs, T=4, B=64, SGD 0.1/0.9/5e-4, cosine (the registry's
digits recipe). Prints one JSON line and writes it to argv[1] when given.
"""

from __future__ import annotations

import json
import statistics
import sys

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from snnbench.snn.classifier import SNNClassifier
from snnbench.snn.encoders import DirectEncoder
from snnbench.snn.models import ARCHITECTURES
from snnbench.snn.neuron import LIFNeuron, NeuronSpec, set_backend


def run(seed: int, bf16: bool, device: torch.device, epochs: int = 15) -> float:
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N, 1, 8, 8] in [0, 1]
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[: int(0.8 * len(y))], perm[int(0.8 * len(y)) :]
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net = ARCHITECTURES["small_conv"](
            (1, 8, 8), 10, lambda s: LIFNeuron(NeuronSpec(), s), channels=(16, 32)
        )
        model = SNNClassifier(net, DirectEncoder(), 4, [0.3054], [0.3761]).to(device)
    set_backend(model, "auto")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    xtr, ytr, xte, yte = x[tr].to(device), y[tr].to(device), x[te].to(device), y[te].to(device)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(tr), generator=gen).to(device)
        for i in range(0, len(tr), 64):
            idx = order[i : i + 64]
            with amp:
                loss = F.cross_entropy(model(xtr[idx]).float(), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad(), amp:
        return float((model(xte).argmax(1) == yte).float().mean())


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        accs = [run(seed, bf16, device) for seed in (0, 1, 2)]
        out[name] = {"acc": accs, "mean": statistics.mean(accs), "std": statistics.stdev(accs)}
    line = json.dumps(out)
    print(line)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
