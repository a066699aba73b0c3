"""Model construction, the shared training loop, and checkpoints.

One training step for every defense (DESIGN.md), read top to bottom:
perturb (AT) -> forward (recording potentials if the defense asks) -> CE + regulariser -> backward ->
SGD step -> after_step hook. Checkpoints are written atomically after every epoch (``<hash>.partial.pt``
with optimiser, scheduler and RNG states) so that a killed run resumes where it stopped and ends with the
same weights as an uninterrupted one; the final ``<hash>.pt`` holds the state dict only. Every load uses
``torch.load(weights_only=True)``.

Checkpoints are addressed by config hash in one directory (``results/checkpoints``, or a directory shared by
many workers via ``--checkpoint-dir`` / ``$BENCH_CHECKPOINTS``). Beside each final checkpoint a
``<hash>.pt.sha256`` file records its digest; a cached checkpoint whose digest differs from that file or
from the database row is refused. Training one config is serialised across processes by an advisory file
lock (``<hash>.lock``), so two workers sharing a directory never train the same model twice at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.data import Data, augment, to_float
from bench.errors import BenchError
from bench.snn.classifier import SNNClassifier
from bench.snn.models import ARCHITECTURES
from bench.snn.neuron import NeuronSpec
from bench.specs import DatasetSpec, ModelSpec, TrainSpec, from_mapping
from defenses.base import Defense, StepState, TrainContext

CHECKPOINT_FORMAT = 1


def build_model(dataset: DatasetSpec, model: ModelSpec, defense: Defense, T: int) -> SNNClassifier:
    """Architecture + defense neuron/encoder + in-model normalisation."""
    neuron = from_mapping(NeuronSpec, model.neuron, f"models.{model.name}.neuron")
    net = ARCHITECTURES[model.arch](
        tuple(dataset.shape), dataset.classes, defense.make_neuron(neuron, T), **model.params
    )
    encoder = defense.make_encoder(model.encoder, T, tuple(dataset.shape))
    return SNNClassifier(net, encoder, T, dataset.mean, dataset.std)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_save(obj: object, path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename: a crash never leaves a truncated checkpoint."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoint_dir(results_dir: Path, override: str | Path | None = None) -> Path:
    """Where checkpoints live: ``override`` (``--checkpoint-dir``), else ``$BENCH_CHECKPOINTS``, else
    ``results_dir/checkpoints``. Created if missing."""
    d = Path(override or os.environ.get("BENCH_CHECKPOINTS") or results_dir / "checkpoints")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BenchError(
            f"checkpoint directory {d} cannot be created ({e.strerror}); pass --checkpoint-dir DIR"
        ) from None
    return d


@contextlib.contextmanager
def checkpoint_lock(final: Path) -> Iterator[None]:
    """Exclusive advisory lock for training the model saved at ``final`` (blocks while another holds it)."""
    with open(final.with_suffix(".lock"), "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def save_final(state_dict: dict, config_hash: str, final: Path) -> str:
    """Write the final checkpoint and its ``.sha256`` record atomically; returns the digest."""
    atomic_save({"format": CHECKPOINT_FORMAT, "config_hash": config_hash, "state_dict": state_dict}, final)
    digest = sha256_file(final)
    tmp = final.with_name(final.name + f".sha256.tmp{os.getpid()}")
    tmp.write_text(f"{digest}  {final.name}\n")
    os.replace(tmp, final.with_name(final.name + ".sha256"))
    return digest


def load_verified(final: Path, config_hash: str, recorded_sha256: str = "") -> dict:
    """Load a cached checkpoint after checking its digest and config hash.

    The ``.sha256`` file beside the checkpoint is the record for that file; the database row's digest is
    used only when there is none (a checkpoint from before the record existed): with a shared database but
    per-node checkpoint directories, nodes may legitimately hold different bytes for one config (GPU
    training is not bitwise reproducible) and the row keeps the digest of the last one trained.
    """
    digest = sha256_file(final)
    side = final.with_name(final.name + ".sha256")
    if side.is_file():
        expected = [((side.read_text().split() or [""])[0], str(side))]
    else:
        expected = [(recorded_sha256, "the results database")] if recorded_sha256 else []
    for want, where in expected:
        if want != digest:
            raise BenchError(
                f"checkpoint {final}: sha256 {digest[:16]}... differs from {want[:16] or 'empty'}... recorded in {where} "
                f"(modified or corrupted); delete {final.name} and {side.name} to retrain"
            )
    ck = load_checkpoint(final)
    if ck.get("config_hash", config_hash) != config_hash:
        raise BenchError(
            f"checkpoint {final} belongs to config {str(ck['config_hash'])[:12]}, not {config_hash[:12]}"
        )
    return ck


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely (weights_only=True); a clear BenchError when it is corrupt or foreign."""
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"checkpoint {p} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zips, disallowed globals: all mean "not loadable"
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise BenchError(
            f"checkpoint {p} is corrupt or not a plain state dict ({msg}); re-train or re-export it"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    raise BenchError(f"checkpoint {p} holds a {type(obj).__name__}, not a state dict")


def apply_state_dict(model: nn.Module, state: dict, source: str) -> None:
    """load_state_dict(strict) with a one-line explanation of any mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"shape mismatch at {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        raise BenchError(f"checkpoint {source} does not match this model/defense: {'; '.join(parts)}")
    model.load_state_dict(state)


@dataclass(frozen=True)
class TrainOutcome:
    seconds: float
    epochs: int
    resumed_from: int
    final_loss: float


def _rng_state(gen: torch.Generator) -> dict:
    state = {"cpu": torch.get_rng_state(), "gen": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["cpu"])
    gen.set_state(state["gen"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    model: SNNClassifier,
    defense: Defense,
    data: Data,
    train_spec: TrainSpec,
    partial_path: Path,
    device: torch.device,
    progress: Callable | None = None,
) -> TrainOutcome:
    """Train ``model`` in place with the shared loop; resumes from ``partial_path`` when it exists.

    Call inside ``torch.random.fork_rng`` seeded with the run's seed (the runner does) so that the global
    RNG used by stochastic neurons is reproducible and the caller's stream is untouched.
    """
    ds = data.spec
    model.to(device).train()
    gen = torch.Generator().manual_seed(train_spec.seed)
    opt = torch.optim.SGD(
        defense.param_groups(model, train_spec), lr=train_spec.lr, momentum=train_spec.momentum
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, train_spec.epochs))
    ctx = TrainContext(model=model, dataset=ds, train=train_spec, generator=gen)
    start_epoch, elapsed, loss_val = 0, 0.0, float("nan")
    if partial_path.exists():
        ck = load_checkpoint(partial_path)
        apply_state_dict(model, ck["state_dict"], str(partial_path))
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"], gen)
        start_epoch, elapsed = int(ck["epoch"]), float(ck["elapsed"])
        ctx.step = int(ck.get("step", 0))
    xtr, ytr = data.train.x, data.train.y
    n = len(ytr)
    steps_per_epoch = (n + train_spec.batch_size - 1) // train_spec.batch_size
    bar = (
        progress(
            total=train_spec.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, desc="train"
        )
        if progress
        else None
    )
    for epoch in range(start_epoch, train_spec.epochs):
        t0 = time.perf_counter()
        ctx.epoch = epoch
        defense.on_epoch_start(ctx, opt)
        perm = torch.randperm(n, generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * train_spec.batch_size : (i + 1) * train_spec.batch_size]
            x = augment(to_float(xtr[idx]), ds.augmentation, ds.pad, gen).to(device)  # [B, C, H, W]
            y = ytr[idx].to(device)
            # 1. training inputs (adversarial under AT)
            x_in = defense.perturb(ctx, x, y)
            # 2. forward, recording membrane potentials when the defense regularises them
            rec = model.recording() if defense.records else contextlib.nullcontext([])
            with rec as neurons:
                logits = model(x_in)  # [B, K]
                loss = F.cross_entropy(logits, y)
                reg = defense.regularizer(StepState(ctx, x_in, y, logits, neurons))
                if reg is not None:
                    loss = loss + reg
            # 3. update, then the defense's post-step projection
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                defense.after_step(model, ctx)
            ctx.step += 1
            loss_val = float(loss.detach())
            if not torch.isfinite(loss.detach()):
                raise BenchError(
                    f"training diverged at epoch {epoch} (loss {loss_val}); lower --lr or check the defense params"
                )
            if bar:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_val:.3f}")
        sched.step()
        elapsed += time.perf_counter() - t0
        atomic_save(
            {
                "format": CHECKPOINT_FORMAT,
                "state_dict": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": _rng_state(gen),
                "epoch": epoch + 1,
                "step": ctx.step,
                "elapsed": elapsed,
            },
            partial_path,
        )
    if bar:
        bar.close()
    model.eval()
    return TrainOutcome(elapsed, train_spec.epochs, start_epoch, loss_val)
