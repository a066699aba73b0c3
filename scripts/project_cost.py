"""Projected GPU-hours of the MPD-SGR Table 1 CIFAR-10 half from measured ``bench perf`` rates.

Usage: python scripts/project_cost.py perf/gpu_h100_bench_b256.json [precision]

Model: 7 defenses x {standard, AT} = 14 VGG-11 (T=8) models, 200 epochs of the 50k CIFAR-10 training images;
AT adds PGD-2 (2 input-gradient steps) per batch; evaluation on the 10k test images with FGSM (1 step),
PGD-7 and BIM-7 (15 input-gradient steps), EOT x10 for the randomized defenses (StoG; TGO per docs/defenses.md 2.7).
One input-gradient step costs 1/(7 r_pgd7) s per image. Rates per defense (the workload whose tensors it
uses): vanilla/RAT, DLIF, SR -> ``vanilla``; MPD-SGR -> ``mpd``; TGO and StoG (a random draw per neuron and
step) -> ``tgo``; FEEL (per-step learnable leak, not fused) -> the plain ``torch`` path. Measured at
B=256; the recipes' B=64 runs about 10% slower at the ANN limit (docs/perf-anchors.md: 3394-3424 vs 3744-3750 img/s),
which is applied as a factor 1.1.
"""

from __future__ import annotations

import json
import sys

DEFENSES = {  # name: (workload rates to use, path, randomized)
    "vanilla/RAT": ("vanilla", "fused", False),
    "DLIF": ("vanilla", "fused", False),
    "SR": ("vanilla", "fused", False),
    "MPD-SGR": ("mpd", "fused", False),
    "TGO": ("tgo", "fused", True),
    "StoG": ("tgo", "fused", True),
    "FEEL": ("vanilla", "torch", False),
}
EPOCHS, N_TRAIN, N_TEST, AT_STEPS, EVAL_STEPS, EOT, B64 = 200, 50_000, 10_000, 2, 15, 10, 1.1


def project(rows: list[dict], precision: str, all_plain: bool = False) -> tuple[float, dict]:
    rate = {(r["workload"], r["path"]): r for r in rows if r["precision"] == precision}
    hours, per = 0.0, {}
    for name, (wl, path, randomized) in DEFENSES.items():
        r = rate[wl, "torch" if all_plain else path]
        step = 1 / (7 * r["pgd_img_s"])  # s per image per input-gradient step
        train = EPOCHS * N_TRAIN * (1 / r["train_img_s"]) * B64
        at = train + EPOCHS * N_TRAIN * AT_STEPS * step * B64
        ev = N_TEST * EVAL_STEPS * step * (EOT if randomized else 1)
        h = (train + at + 2 * ev) / 3600
        per[name] = round(h, 2)
        hours += h
    return hours, per


def main() -> None:
    data = json.load(open(sys.argv[1]))
    precision = sys.argv[2] if len(sys.argv) > 2 else "fp32"
    fused, per = project(data["rows"], precision)
    plain, per_plain = project(data["rows"], precision, all_plain=True)
    print(f"device {data['setup'].get('gpu')} precision {precision}")
    print(f"{'defense':<12} {'fused h':>8} {'plain h':>8}")
    for k in per:
        print(f"{k:<12} {per[k]:>8.2f} {per_plain[k]:>8.2f}")
    print(f"{'total':<12} {fused:>8.1f} {plain:>8.1f}   ({plain / fused:.2f}x)")


if __name__ == "__main__":
    main()
