"""Model construction, the shared training loop, and checkpoints.

One training step for every defense (docs/design.md), read top to bottom:
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
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from snnbench.data import Data, augment, to_float
from snnbench.defenses.base import Defense, StepState, TrainContext
from snnbench.errors import BenchError
from snnbench.snn.classifier import SNNClassifier
from snnbench.snn.models import ARCHITECTURES
from snnbench.snn.neuron import NeuronSpec
from snnbench.specs import DatasetSpec, ModelSpec, TrainSpec, from_mapping, regular_file

CHECKPOINT_FORMAT = 1
log = logging.getLogger(__name__)


def build_model(dataset: DatasetSpec, model: ModelSpec, defense: Defense, T: int) -> SNNClassifier:
    """Architecture + defense neuron/encoder + in-model normalisation."""
    neuron = from_mapping(NeuronSpec, model.neuron, f"models.{model.name}.neuron")
    with warnings.catch_warnings():  # images too small give zero-size layers: check_input_size says so
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        net = ARCHITECTURES[model.arch](
            tuple(dataset.shape), dataset.classes, defense.make_neuron(neuron, T), **model.params
        )
    encoder = defense.make_encoder(model.encoder, T, tuple(dataset.shape))
    clf = SNNClassifier(net, encoder, T, dataset.mean, dataset.std)
    check_input_size(clf, dataset, model)
    return clf


def check_input_size(clf: SNNClassifier, dataset: DatasetSpec, model: ModelSpec) -> None:
    """One forward pass of a zero image on the meta device: images too small for the architecture (its
    pooling stages shrink them to nothing) are a one-line error before any training or database write."""
    import copy

    shape = tuple(dataset.shape)
    try:
        probe = copy.deepcopy(clf).to("meta")
        with torch.no_grad(), torch.random.fork_rng():
            probe(torch.zeros(1, *shape, device="meta"))
    except (RuntimeError, ValueError, NotImplementedError) as e:
        if _too_small(e):
            raise BenchError(
                f"images of shape {list(shape)} are too small for model {model.name!r} ({model.arch}); "
                "use larger images or a model for small inputs (bench ls models)"
            ) from None
        # meta tensors unsupported by some op: not a size problem, so not our error to raise


def _too_small(e: Exception) -> bool:
    msg = str(e).lower()
    return any(k in msg for k in ("too small", "output size", "kernel size", "non-positive", "shape", "size mismatch", "mat1"))


def check_device(name: str) -> torch.device:
    """``--device``: a device torch has and this machine offers (cpu, cuda[:N], mps); a BenchError otherwise."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise BenchError(f"--device {name[:40]!r}: not a device; valid: cpu, cuda, cuda:N, mps") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchError(f"--device {name}: no CUDA device is available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BenchError(f"--device {name}: only {torch.cuda.device_count()} CUDA devices here")
        return dev
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise BenchError(f"--device {name}: Apple MPS is not available here; use --device cpu")
        return dev
    raise BenchError(f"--device {name}: snnbench runs on cpu, cuda or mps, not {dev.type}")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_save(obj: object, path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename: a crash never leaves a truncated checkpoint,
    and a failed write (disk full, read-only directory) removes its temporary file and says why."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BenchError(f"cannot write checkpoint {path}: {e.strerror or e}") from None
    except RuntimeError as e:  # torch's zip writer reports a full disk as "[enforce fail at inline_container.cc]"
        tmp.unlink(missing_ok=True)
        free = _free_bytes(path.parent)
        raise BenchError(f"cannot write checkpoint {path}: the write failed ({str(e).splitlines()[0][:80]}); "
                         f"{free} free on that disk" + (" (full)" if free == "0 B" else "")) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _free_bytes(d: Path) -> str:
    try:
        st = os.statvfs(d)
    except OSError:
        return "unknown space"
    b = st.f_bavail * st.f_frsize
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if b < 1024 or unit == "TB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b} B"


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


def train_lock_timeout() -> float:
    """Seconds to wait for another process training the same config: ``$BENCH_TRAIN_LOCK_TIMEOUT``
    (default 86400, one day: a CIFAR model trains for hours; 0 = give up at once)."""
    try:
        return max(0.0, float(os.environ.get("BENCH_TRAIN_LOCK_TIMEOUT", "86400")))
    except ValueError:
        raise BenchError("$BENCH_TRAIN_LOCK_TIMEOUT must be a number of seconds") from None


@contextlib.contextmanager
def checkpoint_lock(final: Path) -> Iterator[None]:
    """Exclusive advisory lock for training the model saved at ``final``.

    While another process holds it, logs (once) what it waits for, and gives up after
    :func:`train_lock_timeout` seconds with a BenchError naming the lock file.
    """
    lock = final.with_suffix(".lock")
    try:
        f = open(lock, "a+b")
    except OSError as e:
        raise BenchError(
            f"checkpoint directory {final.parent} is not writable ({e.strerror}); pass --checkpoint-dir DIR"
        ) from None
    with f:
        deadline, told = time.monotonic() + train_lock_timeout(), False
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BenchError(
                        f"another process is still training this model (lock {lock}); gave up after "
                        f"{train_lock_timeout():.0f}s ($BENCH_TRAIN_LOCK_TIMEOUT)"
                    ) from None
                if not told:
                    log.warning("waiting for another process training this model (lock %s)", lock)
                    told = True
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def code_fingerprint(defense: object) -> str:
    """sha256 (16 hex) of the source that decides what a recipe trains: the defense's module, the defense
    base, this training loop, the spiking core (bench/snn) and the data loaders. Stored with every trained
    checkpoint and run, so results of code that has changed since are recognised as stale and redone
    (issue 23: a reverted regression must clear itself, without ``bench rm``)."""
    import inspect

    here = Path(__file__).resolve().parent
    files = {Path(inspect.getsourcefile(type(defense)) or ""), Path(inspect.getsourcefile(Defense) or ""),
             here / "train.py", here / "data.py", *sorted((here / "snn").glob("*.py"))}
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.name + str(p)):
        try:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        except OSError:  # an installed package without sources: no fingerprint to compare
            return ""
    return h.hexdigest()[:16]


def save_final(state_dict: dict, config_hash: str, final: Path, code: str = "") -> str:
    """Write the final checkpoint (with the :func:`code_fingerprint` that trained it) and its ``.sha256``
    record atomically; returns the digest."""
    atomic_save({"format": CHECKPOINT_FORMAT, "config_hash": config_hash, "state_dict": state_dict, "code": code},
                final)
    digest = sha256_file(final)
    tmp = final.with_name(final.name + f".sha256.tmp{os.getpid()}")
    try:
        tmp.write_text(f"{digest}  {final.name}\n")
        os.replace(tmp, final.with_name(final.name + ".sha256"))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        final.unlink(missing_ok=True)  # a checkpoint without its record would be refused next time
        raise BenchError(f"cannot write {final}.sha256: {e.strerror or e}") from None
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
    p = regular_file(path, "checkpoint")
    try:
        with warnings.catch_warnings():  # e.g. "validating sparse tensor invariants": checked below instead
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zips, disallowed globals: all mean "not loadable"
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise BenchError(
            f"checkpoint {p} is corrupt or not a plain state dict ({msg}); re-train or re-export it"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj:
        check_state_dict(obj["state_dict"], str(p))
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        check_state_dict(obj, str(p))
        return {"state_dict": obj}
    raise BenchError(f"checkpoint {p} holds a {type(obj).__name__}, not a state dict")


def check_state_dict(state: object, source: str) -> None:
    """A loadable state dict: a non-empty mapping of dense, finite tensors on CPU whose parameters are
    floating point (integer buffers such as BatchNorm's ``num_batches_tracked`` stay integer).

    Integer or boolean weights would be cast silently by ``load_state_dict``; NaN/inf weights predict
    one class; sparse or meta tensors cannot be evaluated. Each is a wrong number stored, so each is refused.
    """
    if not isinstance(state, dict) or not state:
        raise BenchError(f"checkpoint {source}: 'state_dict' is {type(state).__name__}, not a mapping of tensors")
    for k, v in state.items():
        name = str(k)[:80]
        if not isinstance(v, torch.Tensor):
            raise BenchError(f"checkpoint {source}: entry {name!r} is a {type(v).__name__}, not a tensor")
        if v.layout != torch.strided or v.is_meta or v.device.type != "cpu":
            raise BenchError(f"checkpoint {source}: tensor {name!r} is {v.layout} on {v.device}; a dense CPU tensor is required")
        integer_ok = name.endswith("num_batches_tracked")
        if not v.is_floating_point() and not integer_ok:
            raise BenchError(f"checkpoint {source}: tensor {name!r} has dtype {v.dtype}; weights must be floating point")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise BenchError(f"checkpoint {source}: tensor {name!r} holds NaN or inf; the checkpoint is not finite")


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


@dataclass
class TrainState:
    """What one training needs between steps: optimiser, schedule, generator, context and counters."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator
    ctx: TrainContext
    start_epoch: int = 0
    elapsed: float = 0.0


def new_state(model: SNNClassifier, defense: Defense, dataset: DatasetSpec, train_spec: TrainSpec) -> TrainState:
    """Fresh SGD (momentum, the defense's parameter groups), cosine schedule and seeded generator."""
    gen = torch.Generator().manual_seed(train_spec.seed)
    opt = torch.optim.SGD(defense.param_groups(model, train_spec), lr=train_spec.lr, momentum=train_spec.momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, train_spec.epochs))
    return TrainState(opt, sched, gen, TrainContext(model=model, dataset=dataset, train=train_spec, generator=gen))


def resume(model: SNNClassifier, defense: Defense, st: TrainState, partial_path: Path) -> TrainState:
    """Restore model, optimiser, schedule, RNG and counters from ``partial_path`` when it exists.

    A partial checkpoint that cannot be resumed (corrupt, truncated, foreign, missing the optimiser) is
    moved aside to ``<name>.corrupt-<time>`` with a warning, and training restarts from epoch 0 exactly as
    a fresh run would (weights, optimiser and RNG as before the attempt): a broken file never blocks
    every later run.
    """
    if not partial_path.exists():
        return st
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    cpu_rng = torch.get_rng_state()
    try:
        ck = load_checkpoint(partial_path)
        apply_state_dict(model, ck["state_dict"], str(partial_path))
        st.opt.load_state_dict(ck["optimizer"])
        st.sched.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"], st.gen)
        st.start_epoch, st.elapsed = int(ck["epoch"]), float(ck["elapsed"])
        st.ctx.step = int(ck.get("step", 0))
        return st
    except (BenchError, KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        aside = partial_path.with_name(f"{partial_path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(partial_path, aside)
        why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        log.warning("partial checkpoint %s cannot be resumed (%s); moved to %s, training restarts", partial_path, why, aside)
        model.load_state_dict(fresh)
        torch.set_rng_state(cpu_rng)
        return new_state(model, defense, st.ctx.dataset, st.ctx.train)


def step(model: SNNClassifier, defense: Defense, st: TrainState, x: torch.Tensor, y: torch.Tensor) -> float:
    """One step of the shared loop on a float batch ``x`` [B, C, H, W]; returns the loss (finite, else a
    BenchError: a diverged model must never be saved as trained)."""
    ctx = st.ctx
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
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    st.opt.step()
    with torch.no_grad():
        defense.after_step(model, ctx)
    ctx.step += 1
    loss_val = float(loss.detach())
    if not torch.isfinite(loss.detach()):
        raise BenchError(
            f"training diverged at epoch {ctx.epoch} (loss {loss_val}); lower --lr or check the defense params"
        )
    return loss_val


def save_partial(model: SNNClassifier, st: TrainState, epoch: int, partial_path: Path) -> None:
    """Atomically write everything :func:`resume` needs after ``epoch`` (0-based) has finished."""
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "state_dict": model.state_dict(),
            "optimizer": st.opt.state_dict(),
            "scheduler": st.sched.state_dict(),
            "rng": _rng_state(st.gen),
            "epoch": epoch + 1,
            "step": st.ctx.step,
            "elapsed": st.elapsed,
        },
        partial_path,
    )


def train(
    model: SNNClassifier,
    defense: Defense,
    data: Data,
    train_spec: TrainSpec,
    partial_path: Path,
    device: torch.device,
    progress: Callable | None = None,
) -> TrainOutcome:
    """Train ``model`` in place with the shared loop: :func:`resume`, then :func:`step` over every batch
    of every remaining epoch, :func:`save_partial` after each epoch.

    Call inside ``torch.random.fork_rng`` seeded with the run's seed (the runner does) so that the global
    RNG used by stochastic neurons is reproducible and the caller's stream is untouched.
    """
    ds = data.spec
    model.to(device).train()
    st = resume(model, defense, new_state(model, defense, ds, train_spec), partial_path)
    loss_val = float("nan")
    xtr, ytr = data.train.x, data.train.y
    n = len(ytr)
    steps_per_epoch = (n + train_spec.batch_size - 1) // train_spec.batch_size
    bar = (
        progress(total=train_spec.epochs * steps_per_epoch, initial=st.start_epoch * steps_per_epoch, desc="train")
        if progress
        else None
    )
    for epoch in range(st.start_epoch, train_spec.epochs):
        t0 = time.perf_counter()
        st.ctx.epoch = epoch
        defense.on_epoch_start(st.ctx, st.opt)
        perm = torch.randperm(n, generator=st.gen)
        for i in range(steps_per_epoch):
            idx = perm[i * train_spec.batch_size : (i + 1) * train_spec.batch_size]
            x = augment(to_float(xtr[idx]), ds.augmentation, ds.pad, st.gen).to(device)  # [B, C, H, W]
            loss_val = step(model, defense, st, x, ytr[idx].to(device))
            if bar:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_val:.3f}")
        st.sched.step()
        st.elapsed += time.perf_counter() - t0
        save_partial(model, st, epoch, partial_path)
    if bar:
        bar.close()
    model.eval()
    return TrainOutcome(st.elapsed, train_spec.epochs, st.start_epoch, loss_val)


@contextlib.contextmanager
def failed_run_guard(store, config_hash: str) -> Iterator[None]:
    """Around training: an exception marks the run "failed" with its reason (never left "running"), then
    propagates. A KeyboardInterrupt or kill leaves "running": rerunning resumes from the partial checkpoint."""
    try:
        yield
    except Exception as e:
        try:
            store.fail_run(config_hash, str(e) or type(e).__name__)
        except Exception as e2:  # the database itself failing (disk full): the original error matters more
            log.warning("could not mark run %s failed: %s", config_hash[:12], e2)
        raise
