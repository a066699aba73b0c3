"""``bench bench``: training-step and PGD-7 throughput of one architecture, side by side in one process.

Paths compared (shared/perf/anchors.md method): the plain-torch neuron loop (``torch``, the reference), the
fused multi-step neuron (``fused``, bench/snn/fused.py) and the same architecture as a ReLU ANN fed T*B
images (``ann``, the practical limit). Workloads: ``vanilla`` (CE), ``tgo`` (TGO-like: Gaussian membrane
noise, sigma 0.1, and the threshold hinge on recorded V, Eq. 12-13) and ``mpd`` (MPD-SGR-like: per-(l, c, t)
Gaussian overlap of recorded V, Eq. 16-17). The two recording workloads are stand-ins with the recipes'
tensors and operations, so their cost is measured without depending on the defenses' code.

Timing: random CIFAR-sized data (or the chosen dataset's shape), warm-up excluded, CUDA events on GPU and
``perf_counter`` on CPU; images/s are counted in SNN samples (B per step, also for the ANN at T*B). Peak
memory: ``torch.cuda.max_memory_allocated`` per measurement on GPU; on CPU the process's peak RSS
(a high-water mark over the whole run, so only the first measurement's value is specific to it).
"""

from __future__ import annotations

import math
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from bench.errors import BenchError, did_you_mean
from bench.snn.classifier import SNNClassifier
from bench.snn.encoders import DirectEncoder
from bench.snn.fused import set_backend
from bench.snn.models import ARCHITECTURES
from bench.snn.neuron import LIFNeuron, NeuronSpec

WORKLOADS = ("vanilla", "tgo", "mpd")
PATHS = ("torch", "fused", "ann")
PRECISIONS = ("fp32", "bf16")
REGISTRY = Path(__file__).resolve().parents[1] / "registry.yaml"


@dataclass(frozen=True)
class BenchSpec:
    """What ``bench bench`` measures; ``None`` fields come from the dataset's registry entry."""

    model: str | None = None  # registry model name (default: the dataset's default_model)
    dataset: str = "cifar10"  # only its shape, classes, T and batch size are used: data are random
    T: int | None = None
    batch_size: int | None = None
    workloads: tuple[str, ...] = ("vanilla",)
    paths: tuple[str, ...] = PATHS
    precisions: tuple[str, ...] = ("fp32",)
    channels_last: bool = False
    iters: int = 10
    warmup: int = 3
    pgd_steps: int = 7
    device: str | None = None


@dataclass
class Measurement:
    workload: str
    path: str
    precision: str
    train_img_s: float
    pgd_img_s: float
    train_peak_mib: float
    pgd_peak_mib: float
    train_best_img_s: float | None = None  # CPU only: from the fastest single call (robust to busy cores)
    pgd_best_img_s: float | None = None


@dataclass
class BenchResult:
    spec: dict
    setup: dict
    rows: list[Measurement] = field(default_factory=list)
    ratios: list[dict] = field(default_factory=list)


class NoisyLIF(LIFNeuron):
    """TGO-like NLIF stand-in: V[t] += sigma N(0, 1), sampled from the global RNG (also in eval)."""

    randomized = True
    noise_independent_of_v = True
    sigma = 0.1

    def membrane_noise(self, v: Tensor, t: int) -> Tensor:
        return self.sigma * torch.randn_like(v)


def _check(name: str, values: tuple[str, ...], valid: tuple[str, ...]) -> None:
    for v in values:
        if v not in valid:
            raise BenchError(f"{name}: {v!r} is not valid; {did_you_mean(v, valid)}")


def resolve(spec: BenchSpec) -> tuple[dict, dict, int, int]:
    """(model entry, dataset entry, T, B) from registry.yaml (read as data; no defense code imported)."""
    _check("--workload", spec.workloads, WORKLOADS)
    _check("--path", spec.paths, PATHS)
    _check("--precision", spec.precisions, PRECISIONS)
    reg = yaml.safe_load(REGISTRY.read_text())
    datasets, models = reg.get("datasets", {}), reg.get("models", {})
    if spec.dataset not in datasets:
        raise BenchError(
            f"--dataset: {spec.dataset!r} is not a registry dataset; {did_you_mean(spec.dataset, datasets)}"
        )
    ds = datasets[spec.dataset]
    name = spec.model or ds.get("default_model", "vgg11")
    if name not in models:
        raise BenchError(f"--model: {name!r} is not a registry model; {did_you_mean(name, models)}")
    T = spec.T if spec.T is not None else int(ds.get("train", {}).get("T", 8))
    B = spec.batch_size if spec.batch_size is not None else int(ds.get("train", {}).get("batch_size", 64))
    if T < 1 or B < 1 or spec.iters < 1 or spec.warmup < 0 or spec.pgd_steps < 1:
        raise BenchError(
            f"T, batch size, iters and pgd steps must be >= 1 (got T={T}, B={B}, iters={spec.iters})"
        )
    return {"name": name, **models[name]}, ds, T, B


def _build(model: dict, ds: dict, T: int, path: str, workload: str) -> nn.Module:
    shape, classes = tuple(ds["shape"]), int(ds["classes"])
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in (model.get("params") or {}).items()}
    neuron = NeuronSpec(**(model.get("neuron") or {}))
    if path == "ann":
        return ARCHITECTURES[model["arch"]](shape, classes, lambda s: nn.ReLU(), **params)
    cls = NoisyLIF if workload == "tgo" else LIFNeuron
    net = ARCHITECTURES[model["arch"]](shape, classes, lambda s: cls(neuron, s), **params)
    clf = SNNClassifier(net, DirectEncoder(), T, ds["mean"], ds["std"])
    set_backend(clf, path)
    return clf


def regularizer(workload: str, neurons: list[LIFNeuron], v_th: float = 1.0) -> Tensor | None:
    """TGO hinge (delta 0.5, lambda 0.6) or MPD-SGR overlap (gamma 1, eta 0.1) over recorded V [T, B, ...]."""
    if workload == "vanilla" or not neurons:
        return None
    terms = []
    for n in neurons:
        v = n.v_pre - v_th  # U-bar = V - V_th
        if workload == "tgo":
            terms.append(0.6 * F.relu(0.5 - v.abs()).mean())
        else:
            dims = [1] + list(range(3, v.dim()))  # moments over batch and space, per (t, c)
            mu, sigma = v.mean(dims), v.std(dims) + 1e-5
            terms.append(
                0.1 * (torch.special.ndtr((mu + 1) / sigma) - torch.special.ndtr((mu - 1) / sigma)).mean()
            )
    return torch.stack(terms).sum()


def _timer(device: torch.device) -> tuple[Callable[[], object], Callable[[object], float]]:
    if device.type == "cuda":

        def start() -> object:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev

        def stop(ev: object) -> float:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return ev.elapsed_time(end) / 1e3  # type: ignore[attr-defined]

        return start, stop
    return time.perf_counter, lambda t0: time.perf_counter() - t0  # type: ignore[operator]


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(fn: Callable[[], None], spec: BenchSpec, device: torch.device) -> tuple[float, float, float]:
    """Seconds per call (mean over ``iters`` after ``warmup``), peak MiB, and the fastest single call's
    seconds (CPU only, each call timed alone; the GPU path times the whole loop with events)."""
    _peak_reset(device)
    for _ in range(spec.warmup):
        fn()
    start, stop = _timer(device)
    if device.type == "cuda":
        t0 = start()
        for _ in range(spec.iters):
            fn()
        wall = stop(t0) / spec.iters
        return wall, _peak_mib(device), wall
    calls = []
    for _ in range(spec.iters):
        t0 = time.perf_counter()
        fn()
        calls.append(time.perf_counter() - t0)
    return sum(calls) / len(calls), _peak_mib(device), min(calls)


def measure(
    spec: BenchSpec,
    model: dict,
    ds: dict,
    T: int,
    B: int,
    workload: str,
    path: str,
    precision: str,
    device: torch.device,
) -> Measurement:
    """One (workload, path, precision): a training step and a PGD attack on random data."""
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        torch.manual_seed(0)
        net = _build(model, ds, T, path, workload).to(device)
        n_in = T * B if path == "ann" else B  # the ANN sees T*B images: the practical limit
        x = torch.rand(n_in, *ds["shape"], device=device)
        y = torch.randint(0, int(ds["classes"]), (n_in,), device=device)
        mf = torch.channels_last if spec.channels_last else torch.contiguous_format
        net = net.to(memory_format=mf)
        x = x.contiguous(memory_format=mf)
        amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        records = workload != "vanilla" and path != "ann"

        def train_step() -> None:
            net.train()
            with amp:
                if records:
                    with net.recording() as neurons:
                        out = net(x)
                        loss = F.cross_entropy(out.float(), y) + regularizer(workload, neurons)
                else:
                    loss = F.cross_entropy(net(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        eps, alpha = 8 / 255, 0.01

        def pgd() -> None:  # L-inf PGD, random start, input gradients only (BPTT through the neurons)
            net.eval()
            xa = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
            for _ in range(spec.pgd_steps):
                xa.requires_grad_(True)
                with amp:
                    loss = F.cross_entropy(net(xa).float(), y)
                (g,) = torch.autograd.grad(loss, xa)
                xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)

        t_train, m_train, c_train = _timed(train_step, spec, device)
        t_pgd, m_pgd, c_pgd = _timed(pgd, spec, device)
    m = Measurement(workload, path, precision, B / t_train, B / t_pgd, round(m_train, 1), round(m_pgd, 1))
    if device.type == "cpu":
        m.train_best_img_s, m.pgd_best_img_s = B / c_train, B / c_pgd
    return m


def ratios(rows: list[Measurement]) -> list[dict]:
    """Each SNN row over the ANN limit at the same precision and over the fp32 ANN limit."""
    ann = {r.precision: r for r in rows if r.path == "ann"}
    plain = {(r.workload, r.precision): r for r in rows if r.path == "torch"}
    out = []
    for r in rows:
        d: dict = {"workload": r.workload, "path": r.path, "precision": r.precision}
        for key, ref in (("vs_ann", ann.get(r.precision)), ("vs_ann_fp32", ann.get("fp32"))):
            if ref is not None:
                d[f"train_{key}"] = round(r.train_img_s / ref.train_img_s, 3)
                d[f"pgd_{key}"] = round(r.pgd_img_s / ref.pgd_img_s, 3)
        p = plain.get((r.workload, r.precision))
        if p is not None and r.path != "ann":
            d["train_vs_plain"] = round(r.train_img_s / p.train_img_s, 3)
            d["pgd_vs_plain"] = round(r.pgd_img_s / p.pgd_img_s, 3)
            d["train_mem_vs_plain"] = (
                round(r.train_peak_mib / p.train_peak_mib, 3) if p.train_peak_mib else math.nan
            )
            if r.train_best_img_s and p.train_best_img_s and r.pgd_best_img_s and p.pgd_best_img_s:
                d["train_vs_plain_best"] = round(r.train_best_img_s / p.train_best_img_s, 3)
                d["pgd_vs_plain_best"] = round(r.pgd_best_img_s / p.pgd_best_img_s, 3)
        out.append(d)
    return out


def _setup(device: torch.device) -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = None
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def run_benchmark(spec: BenchSpec, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Measure every (workload, path, precision) of ``spec`` in this process; the ANN once per precision."""
    model, ds, T, B = resolve(spec)
    device = torch.device(spec.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is available")
    res = BenchResult(
        {**asdict(spec), "model": model["name"], "arch": model["arch"], "T": T, "batch_size": B},
        _setup(device),
    )
    for precision in spec.precisions:
        if "ann" in spec.paths:
            if progress:
                progress(f"ann {precision}")
            res.rows.append(measure(spec, model, ds, T, B, "vanilla", "ann", precision, device))
            res.rows[-1].workload = "-"
        for workload in spec.workloads:
            for path in (p for p in spec.paths if p != "ann"):
                if progress:
                    progress(f"{workload} {path} {precision}")
                res.rows.append(measure(spec, model, ds, T, B, workload, path, precision, device))
    res.ratios = ratios(res.rows)
    return res


def to_json(res: BenchResult) -> dict:
    return {"spec": res.spec, "setup": res.setup, "rows": [asdict(r) for r in res.rows], "ratios": res.ratios}
