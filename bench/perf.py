"""``bench perf``: training-step, PGD-7 and APGD throughput of one architecture, side by side in one process.

Paths compared (the GPU anchors' method, README "Performance"): the plain-torch neuron loop (``torch``, the
reference), the fused multi-step neuron (``fused``, bench/snn/fused.py) and the same architecture as a ReLU
ANN fed T*B images (``ann``, the practical limit).

Training workloads are registry defense configs, built and regularised by the defenses' own code:
``vanilla`` (CE), ``tgo`` (TGO: noisy LIF + threshold hinge, ``defenses/tgo.py``) and ``mpd``
(``mpd_sgr``: the Gaussian overlap of recorded V, ``defenses/mpd_sgr.py``); the regulariser runs at
lambda(e) of the middle of training (TGO's cosine ramp is 0 at the first epoch). With the fused backend the
defenses' V-penalties are computed inside the neuron (their first recorded step, in the warm-up, arms it).

Evaluation workloads (``--eval``), the attack schedule of the standard protocol's gradient stage:
``apgd`` (APGD-CE, ``--apgd-steps`` iterations, EOT 1, on the vanilla SNN) and ``apgd_eot`` (the same with
``--eot`` draws per gradient, batched, on the TGO SNN whose noise stays on at inference). The ANN runs the
same schedule on T*B images. Labels are each model's own clean predictions, so every point is attacked for
all iterations (fra31's APGD skips points that start misclassified).

Whole evaluations (issue 25): ``standard`` runs the standard protocol's cascade (every stage of
``snn-standard-v2`` at ``--protocol-budget``, each on the samples still robust, the model itself standing in
for both transfer substitutes) and ``autoattack`` fra31's AutoAttack ``standard`` version, on the same vanilla
SNN and the same B images; their ``vs_autoattack`` ratio is the protocol's throughput over AutoAttack's. On
the ANN path the SNN-only knobs (surrogates, HART, RGA) leave the gradient as it is, so the ANN runs the
same stages at the same cost. Labels are the model's own predictions; a point leaves the cascade once
broken, as in a real evaluation, so these are whole-evaluation rates, not per-iteration ones.

Evaluation workloads attack at the dataset's budget (``--eps`` overrides) a random network whose layers are
calibrated on the batch so that every neuron layer's input is standardised (:func:`calibrate`; uncalibrated,
the random VGG-11 SNN outputs 0 for every class on every image).

Timing: random data of the dataset's shape, warm-up excluded, CUDA events on GPU and ``perf_counter`` on
CPU; images/s are counted in SNN samples (B per step, also for the ANN at T*B). Peak memory:
``torch.cuda.max_memory_allocated`` per measurement on GPU; on CPU the process's peak RSS (a high-water
mark over the whole run, so only the first measurement's value is specific to it).
"""

from __future__ import annotations

import math
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnbench.errors import BenchError, did_you_mean
from snnbench.registry import BenchRegistry
from snnbench.seeding import seeded
from snnbench.snn.neuron import set_backend
from snnbench.specs import DatasetSpec, ModelSpec, check_step, from_mapping

#: training workload -> registry defense config
WORKLOADS = {"vanilla": "vanilla", "tgo": "tgo", "mpd": "mpd_sgr"}
#: evaluation workload -> (training workload whose SNN is attacked, uses EOT)
EVALS = {"apgd": ("vanilla", False), "apgd_eot": ("tgo", True), "standard": ("vanilla", False),
         "autoattack": ("vanilla", False)}
PATHS = ("torch", "fused", "ann")
PRECISIONS = ("fp32", "bf16")
CPU_DATASET, GPU_DATASET = "digits", "cifar10"


@dataclass(frozen=True)
class BenchSpec:
    """What ``bench perf`` measures; ``None`` fields come from the registry (dataset: cifar10 with CUDA,
    digits without)."""

    model: str | None = None  # registry model name (default: the dataset's default_model)
    dataset: str | None = None  # only its shape, classes, T and batch size are used: data are random
    T: int | None = None
    batch_size: int | None = None
    workloads: tuple[str, ...] = ("vanilla",)
    evals: tuple[str, ...] = ()
    paths: tuple[str, ...] = PATHS
    precisions: tuple[str, ...] = ("fp32",)
    channels_last: bool = False
    iters: int = 10
    warmup: int = 3
    pgd_steps: int = 7
    apgd_steps: int = 100
    eot: int = 10
    eval_iters: int = 1
    protocol_budget: str | None = None  # standard's budget (default: smoke on CPU, full on CUDA)
    protocol_version: str = "v2"  # standard's version (v1: the protocol before issue 20)
    eps: float | None = None  # L-inf budget of the evaluation workloads (None: the dataset's)
    device: str | None = None
    registry: str | None = None


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
class EvalMeasurement:
    eval: str
    path: str
    precision: str
    steps: int
    eot: int
    img_s: float
    seconds: float  # per attack call on B SNN samples (T*B ANN images)
    peak_mib: float
    robust: int | None = None  # standard/autoattack: samples the model still classifies as labelled after it
    #: standard: per stage of the last timed run, {"stage", "seconds", "samples" (attacked), "broken"}
    stages: list[dict] | None = None


@dataclass
class BenchResult:
    spec: dict
    setup: dict
    rows: list[Measurement] = field(default_factory=list)
    ratios: list[dict] = field(default_factory=list)
    evals: list[EvalMeasurement] = field(default_factory=list)
    eval_ratios: list[dict] = field(default_factory=list)


def _check(name: str, values: tuple[str, ...], valid) -> None:
    for v in values:
        if v not in valid:
            raise BenchError(f"{name}: {v!r} is not valid; {did_you_mean(v, list(valid))}")


def default_dataset(device: str | None) -> str:
    """cifar10 (CIFAR-sized VGG-11) where CUDA is used, digits (small_conv, 8x8) on CPU."""
    cuda = device == "cuda" or (device is None and torch.cuda.is_available())
    return GPU_DATASET if cuda else CPU_DATASET


def resolve(spec: BenchSpec, reg: BenchRegistry | None = None) -> tuple[ModelSpec, DatasetSpec, int, int]:
    """(model, dataset, T, B) from the validated registry (``spec.registry`` or the default one)."""
    from snnbench.kinds import python_kinds
    from snnbench.registry import load_registry

    _check("--workload", spec.workloads, WORKLOADS)
    _check("--eval", spec.evals, EVALS)
    _check("--path", spec.paths, PATHS)
    _check("--precision", spec.precisions, PRECISIONS)
    reg = reg or load_registry(spec.registry, kinds=python_kinds())
    name = spec.dataset or default_dataset(spec.device)
    ds = reg.get("datasets", name, "--dataset")
    model = reg.get("models", spec.model or ds.default_model, "--model")
    T = spec.T if spec.T is not None else int(ds.train.get("T", 8))
    B = spec.batch_size if spec.batch_size is not None else int(ds.train.get("batch_size", 64))
    if T < 1 or B < 1 or spec.iters < 1 or spec.warmup < 0 or spec.pgd_steps < 1:
        raise BenchError(
            f"T, batch size, iters and pgd steps must be >= 1 (got T={T}, B={B}, iters={spec.iters})"
        )
    if spec.apgd_steps < 1 or spec.eot < 1 or spec.eval_iters < 1:
        raise BenchError(
            f"--apgd-steps, --eot and --eval-iters must be >= 1 (got {spec.apgd_steps}, {spec.eot}, {spec.eval_iters})"
        )
    if spec.eps is not None:
        check_step(spec.eps, "--eps")
    for w in {*spec.workloads, *(EVALS[e][0] for e in spec.evals)}:
        reg.get("defenses", WORKLOADS[w], "--workload")
    return model, ds, T, B


def _defense(reg: BenchRegistry, workload: str):
    from snnbench.defenses import DEFENSES

    entry = reg.get("defenses", WORKLOADS[workload], "--workload")
    cls = DEFENSES.get(entry.kind)
    return cls(from_mapping(cls.Params, entry.params, f"defenses.{entry.name}.params"))


def _build(reg: BenchRegistry, model: ModelSpec, ds: DatasetSpec, T: int, path: str, workload: str):
    """(network, defense or None): the ANN with ReLUs, or the defense's SNN on the chosen neuron backend."""
    from snnbench.snn.models import ARCHITECTURES
    from snnbench.train import build_model

    params = {k: tuple(v) if isinstance(v, list) else v for k, v in model.params.items()}
    if path == "ann":
        return ARCHITECTURES[model.arch](tuple(ds.shape), ds.classes, lambda s: nn.ReLU(), **params), None
    defense = _defense(reg, workload)
    clf = build_model(ds, model, defense, T)
    set_backend(clf, path)
    return clf, defense


def _regularizer(
    defense, neurons: list, x: Tensor, y: Tensor, logits: Tensor, net: nn.Module
) -> Tensor | None:
    """The defense's own regulariser at lambda of the middle of training (epoch 1 of 2)."""
    from snnbench.defenses.base import StepState, TrainContext

    ctx = TrainContext(net, None, SimpleNamespace(epochs=2), epoch=1)  # type: ignore[arg-type]
    return defense.regularizer(StepState(ctx, x, y, logits, neurons))


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


def _timed(
    fn: Callable[[], None], iters: int, warmup: int, device: torch.device
) -> tuple[float, float, float]:
    """Seconds per call (mean over ``iters`` after ``warmup``), peak MiB, and the fastest single call's
    seconds (CPU only, each call timed alone; the GPU path times the whole loop with events)."""
    _peak_reset(device)
    for _ in range(warmup):
        fn()
    start, stop = _timer(device)
    if device.type == "cuda":
        t0 = start()
        for _ in range(iters):
            fn()
        wall = stop(t0) / iters
        return wall, _peak_mib(device), wall
    calls = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        calls.append(time.perf_counter() - t0)
    return sum(calls) / len(calls), _peak_mib(device), min(calls)


@dataclass
class Case:
    """One (workload, path, precision) measurement's fixed inputs."""

    reg: BenchRegistry
    model: ModelSpec
    ds: DatasetSpec
    T: int
    B: int
    workload: str
    path: str
    precision: str
    device: torch.device


def _setup_case(spec: BenchSpec, c: Case):
    """(net, defense, x, y, autocast context) on the device, in the requested memory format."""
    net, defense = _build(c.reg, c.model, c.ds, c.T, c.path, c.workload)
    net = net.to(c.device)
    n_in = c.T * c.B if c.path == "ann" else c.B  # the ANN sees T*B images: the practical limit
    x = torch.rand(n_in, *c.ds.shape, device=c.device)
    y = torch.randint(0, c.ds.classes, (n_in,), device=c.device)
    mf = torch.channels_last if spec.channels_last else torch.contiguous_format
    net = net.to(memory_format=mf)
    x = x.contiguous(memory_format=mf)
    amp = torch.autocast(c.device.type, dtype=torch.bfloat16, enabled=c.precision == "bf16")
    return net, defense, x, y, amp


def measure(spec: BenchSpec, c: Case) -> Measurement:
    """One (workload, path, precision): a training step and a PGD attack on random data."""
    with seeded(0, c.device):
        net, defense, x, y, amp = _setup_case(spec, c)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        records = defense is not None and defense.records

        def train_step() -> None:
            net.train()
            with amp:
                if records:
                    with net.recording() as neurons:
                        out = net(x)
                        loss = F.cross_entropy(out.float(), y)
                        reg = _regularizer(defense, neurons, x, y, out, net)
                        if reg is not None:
                            loss = loss + reg
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

        if records and spec.warmup == 0:
            train_step()  # arms the fused V-penalties (their first recorded step takes the autograd route)
        t_train, m_train, c_train = _timed(train_step, spec.iters, spec.warmup, c.device)
        t_pgd, m_pgd, c_pgd = _timed(pgd, spec.iters, spec.warmup, c.device)
    B = c.B
    m = Measurement(
        c.workload, c.path, c.precision, B / t_train, B / t_pgd, round(m_train, 1), round(m_pgd, 1)
    )
    if c.device.type == "cpu":
        m.train_best_img_s, m.pgd_best_img_s = B / c_train, B / c_pgd
    return m


class _Float32Logits(nn.Module):
    """Forward under the measurement's autocast, logits in fp32 (fra31's APGD works in fp32)."""

    def __init__(self, net: nn.Module, amp) -> None:
        super().__init__()
        self.net, self.amp = net, amp

    def forward(self, x: Tensor) -> Tensor:
        with self.amp:
            return self.net(x).float()


class _Plain(nn.Module):
    """The ANN as an attacker sees an SNN (``gradient_mode`` accepted, nothing to switch): the protocol's
    SNN-only stages then run on it at their cost, with the plain gradient."""

    randomized = False

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def gradient_mode(self, mode: str = "bptt", surrogate: str | None = None, gamma: float | None = None):
        from contextlib import nullcontext

        return nullcontext(self)


def _cascade(model: nn.Module, attack, x: Tensor, y: Tensor, log: list[dict] | None = None) -> int:
    """The protocol's stages on ``x`` (each on the samples still robust); returns the samples left robust.
    ``log`` gets each stage that ran: its seconds (synchronised on CUDA), samples attacked and broken."""
    robust = torch.ones(len(y), dtype=torch.bool, device=x.device)
    for i, (name, stage) in enumerate(attack.stages()):
        idx = robust.nonzero().flatten()
        if not len(idx):
            break
        t0 = time.perf_counter()
        adv = stage.generate(model, x[idx], y[idx], batch_index=i)
        with torch.no_grad():
            robust[idx] = model(adv).argmax(1) == y[idx]
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        if log is not None:
            log.append({"stage": name, "seconds": round(time.perf_counter() - t0, 4), "samples": len(idx),
                        "broken": int(len(idx) - robust[idx].sum())})
    return int(robust.sum())


def calibrate(net: nn.Module, x: Tensor) -> None:
    """Make a random SNN's outputs depend on its input before timing a whole evaluation (LSUV-style, Mishkin
    & Matas 2016, on spiking layers): for each LIF neuron layer in forward order, the layer that feeds it
    (the last module before it with a weight: a BatchNorm, convolution or linear layer) is rescaled and
    shifted so that the neuron's input current on ``x`` has mean 0 and std 1 over time, batch and units.
    Uncalibrated, the random VGG-11 SNN fires no spike in its classifier layers and outputs 0 for every
    class on every image (measured on CIFAR-sized noise, T=8): an evaluation of it times a constant
    function. Leaves ``net`` in eval mode; no-op for a network without LIF neurons (the ANN)."""
    from snnbench.snn.neuron import LIFNeuron

    net.eval()
    feeder = None
    for m in net.modules():
        if isinstance(m, LIFNeuron):
            if feeder is not None:
                _standardise_input(net, x, m, feeder)
            feeder = None
        elif not list(m.children()) and isinstance(getattr(m, "weight", None), nn.Parameter):
            feeder = m


@torch.no_grad()
def _standardise_input(net: nn.Module, x: Tensor, neuron: nn.Module, feeder: nn.Module) -> None:
    """Rescale ``feeder``'s weight (and shift its bias) so that ``neuron``'s input on ``x`` has mean 0, std 1."""
    seen: list[Tensor] = []
    hook = neuron.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach().float()))
    try:
        net(x)
    finally:
        hook.remove()
    mean, std = seen[0].mean(), seen[0].std()
    if not torch.isfinite(std) or std <= 0:
        return  # a constant input cannot be rescaled into a varying one
    feeder.weight.div_(std)
    bias = getattr(feeder, "bias", None)
    if isinstance(bias, nn.Parameter):
        bias.sub_(mean).div_(std)


def eval_eps(spec: BenchSpec, ds: DatasetSpec) -> float:
    """The evaluation workloads' L-inf budget: ``--eps``, else the dataset's (8/255 CIFAR, 0.1 digits)."""
    return float(spec.eps) if spec.eps is not None else float(ds.eps)


def measure_protocol(spec: BenchSpec, c: Case, name: str) -> EvalMeasurement:
    """One whole evaluation (``standard`` or ``autoattack``) of the B images (T*B for the ANN)."""
    from snnbench.attacks import ATTACKS

    budget = spec.protocol_budget or ("full" if c.device.type == "cuda" else "smoke")
    with seeded(0, c.device):
        net, _, x, _, amp = _setup_case(spec, c)
        calibrate(net, x)
        model = _Plain(_Float32Logits(net, amp)) if c.path == "ann" else _SNNView(net, amp)
        with torch.no_grad():
            y = model(x).argmax(1)
        cls = ATTACKS.get("standard" if name == "standard" else "autoattack")
        params = cls.Params(budget=budget, version=spec.protocol_version) if name == "standard" \
            else cls.Params(version="standard")
        eps = eval_eps(spec, c.ds)
        attack = cls(params, eps, eps / 4)
        for t in attack.substitute_trainings:
            attack.set_substitute(model, f"self-{t}", t)
        left: list[int] = []
        log: list[dict] = []

        def run() -> None:
            if name == "standard":
                log.clear()
                left.append(_cascade(model, attack, x, y, log))
            else:
                adv = attack.generate(model, x, y)
                with torch.no_grad():
                    left.append(int((model(adv).argmax(1) == y).sum()))

        t, peak, _ = _timed(run, spec.eval_iters, 0, c.device)
    steps = int(attack.cost(False).steps)
    return EvalMeasurement(name, c.path, c.precision, steps, 1, c.B / t, round(t, 4), round(peak, 1), left[-1],
                           list(log) if name == "standard" else None)


class _SNNView(_Float32Logits):
    """:class:`_Float32Logits` of the SNN classifier, keeping its attacker interface (gradient modes,
    surrogates, neurons) for the protocol's stages."""

    @property
    def randomized(self) -> bool:
        return bool(getattr(self.net, "randomized", False))

    def gradient_mode(self, mode: str = "bptt", surrogate: str | None = None, gamma: float | None = None):
        return self.net.gradient_mode(mode, surrogate, gamma)

    def reset_attack_state(self) -> None:
        self.net.reset_attack_state()


def measure_eval(spec: BenchSpec, c: Case, name: str) -> EvalMeasurement:
    """One APGD run (attacks/autoattack.py, batched EOT) over the B images (T*B for the ANN)."""
    from snnbench.attacks.autoattack import batched_apgd_class

    if name in ("standard", "autoattack"):
        return measure_protocol(spec, c, name)

    eot = spec.eot if EVALS[name][1] else 1
    with seeded(0, c.device):
        net, _, x, _, amp = _setup_case(spec, c)
        calibrate(net, x)
        model = _Float32Logits(net, amp)
        with torch.no_grad():
            y = model(x).argmax(1)  # every point starts "correct": attacked for all iterations
        cls = batched_apgd_class()

        def attack(steps: int) -> None:
            cls(
                model,
                n_iter=steps,
                norm="Linf",
                n_restarts=1,
                eps=eval_eps(spec, c.ds),
                seed=0,
                loss="ce",
                eot_iter=eot,
                rho=0.75,
                device=c.device,
            ).perturb(x, y)

        attack(2)  # warm-up, untimed
        t, peak, _ = _timed(lambda: attack(spec.apgd_steps), spec.eval_iters, 0, c.device)
    return EvalMeasurement(
        name, c.path, c.precision, spec.apgd_steps, eot, c.B / t, round(t, 4), round(peak, 1)
    )


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


def eval_ratios(rows: list[EvalMeasurement]) -> list[dict]:
    """Each evaluation row over the ANN running the same schedule (same eval, precision), over the plain
    path, and (the protocol) over AutoAttack on the same path: a ratio above 1 is faster."""
    ann = {(r.eval, r.precision): r for r in rows if r.path == "ann"}
    plain = {(r.eval, r.precision): r for r in rows if r.path == "torch"}
    aa = {(r.path, r.precision): r for r in rows if r.eval == "autoattack"}
    out = []
    for r in rows:
        d: dict = {"eval": r.eval, "path": r.path, "precision": r.precision}
        a, p = ann.get((r.eval, r.precision)), plain.get((r.eval, r.precision))
        if a is not None:
            d["vs_ann"] = round(r.img_s / a.img_s, 3)
        if p is not None and r.path != "ann":
            d["vs_plain"] = round(r.img_s / p.img_s, 3)
        ref = aa.get((r.path, r.precision))
        if r.eval == "standard" and ref is not None:
            d["vs_autoattack"] = round(r.img_s / ref.img_s, 3)
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


def check_writable(path: str | os.PathLike) -> Path:
    """``path`` as a file we can write, checked before minutes of measuring (BenchError otherwise)."""
    p = Path(path)
    if p.is_dir():
        raise BenchError(f"--json: {p} is a directory; give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise BenchError(f"--json: directory {parent} does not exist")
    if not os.access(p if p.exists() else parent, os.W_OK):
        raise BenchError(f"--json: cannot write {p}: permission denied")
    return p


def run_benchmark(
    spec: BenchSpec, progress: Callable[[str], None] | None = None, reg: BenchRegistry | None = None
) -> BenchResult:
    """Measure every (workload, path, precision) of ``spec`` in this process; the ANN once per precision;
    then every evaluation workload per path and precision."""
    from snnbench.kinds import python_kinds
    from snnbench.registry import load_registry

    reg = reg or load_registry(spec.registry, kinds=python_kinds())
    model, ds, T, B = resolve(spec, reg)
    device = torch.device(spec.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is available")
    res = BenchResult(
        {
            **asdict(spec),
            "dataset": ds.name,
            "model": model.name,
            "arch": model.arch,
            "T": T,
            "batch_size": B,
            "eps": eval_eps(spec, ds),
        },
        _setup(device),
    )

    def case(workload: str, path: str, precision: str) -> Case:
        return Case(reg, model, ds, T, B, workload, path, precision, device)

    for precision in spec.precisions:
        if "ann" in spec.paths and spec.workloads:
            if progress:
                progress(f"ann {precision}")
            res.rows.append(measure(spec, case("vanilla", "ann", precision)))
            res.rows[-1].workload = "-"
        for workload in spec.workloads:
            for path in (p for p in spec.paths if p != "ann"):
                if progress:
                    progress(f"{workload} {path} {precision}")
                res.rows.append(measure(spec, case(workload, path, precision)))
        for name in spec.evals:
            for path in spec.paths:
                if progress:
                    progress(f"{name} {path} {precision}")
                res.evals.append(measure_eval(spec, case(EVALS[name][0], path, precision), name))
    res.ratios = ratios(res.rows)
    res.eval_ratios = eval_ratios(res.evals)
    return res


def to_json(res: BenchResult) -> dict:
    return {
        "spec": res.spec,
        "setup": res.setup,
        "rows": [asdict(r) for r in res.rows],
        "ratios": res.ratios,
        "evals": [asdict(r) for r in res.evals],
        "eval_ratios": res.eval_ratios,
    }
