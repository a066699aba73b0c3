"""Datasets as in-memory tensors: scikit-learn's bundled ``digits`` (the offline default), CIFAR-10/100,
MNIST and Fashion-MNIST through torchvision, and a user's own ``.npz`` file or ImageFolder directory.

Images are kept as uint8 (or float32 in [0, 1]) ``[N, C, H, W]``; :func:`to_float` converts a batch.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from snnbench.errors import BenchError
from snnbench.specs import DatasetSpec, regular_file

log = logging.getLogger(__name__)
MAX_CLASSES = 100_000  # a user dataset's labels must be 0..K-1 with K at most this (ImageNet-21k is 21,841)


@dataclass(frozen=True)
class Split:
    """Images ``x`` [N, C, H, W] (uint8 or float32 in [0, 1]) and int64 labels ``y`` [N]."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Data:
    spec: DatasetSpec
    train: Split
    test: Split


def to_float(x: Tensor) -> Tensor:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1]."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


MAX_SIDE = 1024  # largest image side accepted from a user's files (the papers' models use 8..224 px)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


CHANNEL_LAYOUTS = ("", "first", "last")


def _to_nchw(x: np.ndarray, where: str, layout: str = "") -> np.ndarray:
    """[N, H, W] -> [N, 1, H, W]; 4-D arrays by ``layout`` (``--channels``: the dataset spec's ``channels``),
    else by the one axis (1 or -1) of size 1 or 3. Both or neither (e.g. [N, 8, 8, 4], [N, 3, 32, 3]):
    ambiguous, so the user must say."""
    if layout not in CHANNEL_LAYOUTS:
        raise BenchError(f"--channels must be 'first' or 'last', got {layout[:20]!r}")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise BenchError(f"{where}: images must be [N, H, W], [N, C, H, W] or [N, H, W, C], got shape {x.shape}")
    first, last = x.shape[1] in (1, 3), x.shape[-1] in (1, 3)
    if layout == "last" or (not layout and last and not first):
        return x.transpose(0, 3, 1, 2)
    if layout == "first" or (not layout and first and not last):
        return x
    raise BenchError(
        f"{where}: cannot tell the channel axis of shape {tuple(x.shape)} (1 or 3 channels expected first or last); "
        "pass --channels first ([N, C, H, W]) or --channels last ([N, H, W, C]) (snnbench.evaluate: channels=...)"
    )


def _check_size(shape: tuple[int, ...], where: str) -> None:
    if len(shape) >= 2 and max(shape[-2:]) > MAX_SIDE:
        raise BenchError(f"{where}: images of {shape[-2]}x{shape[-1]} px exceed the {MAX_SIDE} px limit; resize them")


def _as_images(x: np.ndarray, where: str, layout: str = "") -> Tensor:
    x = np.asarray(x)
    if x.dtype == object or x.dtype.kind not in "uif":
        raise BenchError(f"{where}: images must be a numeric array (uint8 or float in [0, 1]), got dtype {x.dtype}")
    x = _to_nchw(x, where, layout)
    if x.shape[0] == 0:
        raise BenchError(f"{where}: has 0 images")
    _check_size(x.shape, where)
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x))
    if not np.issubdtype(x.dtype, np.floating):
        raise BenchError(f"{where}: images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise BenchError(f"{where}: float images hold NaN or inf; pixels must be finite and in [0, 1]")
    if x.min() < 0 or x.max() > 1:
        raise BenchError(f"{where}: float images must be in [0, 1] (got range {x.min():.4g}..{x.max():.4g})")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _as_labels(y: np.ndarray, n: int, classes: int, where: str) -> Tensor:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise BenchError(f"{where}: labels must be a 1-D array of {n} entries, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise BenchError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= classes):
        raise BenchError(f"{where}: labels out of range [0, {classes}): min {y.min()}, max {y.max()}")
    return torch.from_numpy(y.astype(np.int64))


def load_digits_data(spec: DatasetSpec) -> Data:
    """scikit-learn's bundled 8x8 digits (1,797 images, 17 gray levels); stratified 80/20 split, seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8] in [0, 1]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)
    return Data(spec, Split(torch.from_numpy(xtr), torch.from_numpy(ytr)), Split(torch.from_numpy(xte), torch.from_numpy(yte)))


def _torchvision_split(spec: DatasetSpec, root: Path, train: bool, download: bool = True) -> Split:
    import torchvision.datasets as tvd

    cls = {"CIFAR10": tvd.CIFAR10, "CIFAR100": tvd.CIFAR100, "MNIST": tvd.MNIST, "FashionMNIST": tvd.FashionMNIST}[
        spec.torchvision
    ]
    try:
        ds = cls(str(root), train=train, download=False)
    except RuntimeError:
        if not download:
            raise BenchError(f"dataset {spec.name!r}: files not found under {root} (not downloaded)") from None
        try:
            ds = cls(str(root), train=train, download=True)
        except Exception as e:  # network errors come in many types (URLError, OSError, HTTPError)
            raise BenchError(
                f"dataset {spec.name!r}: files not found under {root} and the download failed "
                f"({type(e).__name__}); put the {spec.torchvision} files there or pass --data-root DIR"
            ) from None
    x = ds.data.numpy() if isinstance(ds.data, Tensor) else np.asarray(ds.data)
    y = np.asarray(ds.targets.numpy() if isinstance(ds.targets, Tensor) else ds.targets)
    where = f"dataset {spec.name}"
    return Split(_as_images(x, where), _as_labels(y, len(x), spec.classes, where))


def load_npz(spec: DatasetSpec, path: Path) -> Data:
    """A user's ``.npz`` with ``x_train y_train x_test y_test`` (uint8 or float in [0, 1], NHWC or NCHW)."""
    regular_file(path, "--dataset")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise BenchError(f"{path}: missing arrays {missing}; found {z.files[:10]}")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except BenchError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise BenchError(
            f"cannot read {path}: {why}; expected an .npz of numeric arrays x_train y_train x_test y_test"
        ) from None
    tr = _as_images(arrays["x_train"], f"{path}: x_train", spec.channels)
    te = _as_images(arrays["x_test"], f"{path}: x_test", spec.channels)
    return Data(
        spec,
        Split(tr, _as_labels(arrays["y_train"], len(tr), spec.classes, f"{path}: y_train")),
        Split(te, _as_labels(arrays["y_test"], len(te), spec.classes, f"{path}: y_test")),
    )


def _image_files(d: Path) -> list[Path]:
    """The image files of a class folder (a FIFO or device named like an image is refused, not opened)."""
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    for p in files:
        if p.exists() and not p.is_file():
            regular_file(p, "image")
    return files


def _read_image(p: Path, mode: str) -> np.ndarray:
    """One image as an array, with its size checked from the header before any pixel is decoded."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                w, h = img.size
                if max(w, h) > MAX_SIDE:
                    raise BenchError(f"{p}: image of {w}x{h} px exceeds the {MAX_SIDE} px limit; resize it")
                return np.asarray(img.convert(mode))
    except BenchError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if not p.exists():
            raise BenchError(f"{p}: file missing (dangling symbolic link?)") from None
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise BenchError(f"{p}: unreadable image ({why})") from None


def load_imagefolder(spec: DatasetSpec, root: Path) -> Data:
    """An ImageFolder tree ``root/{train,test}/<class>/*.png``; all images must share one size.

    Classes are the sub-directories of ``train/`` (sorted names -> labels 0..K-1); ``test/`` classes are
    mapped by name, so a test split with fewer classes keeps the right labels; a test class that train
    lacks, an empty class directory and an unreadable image are errors naming the path.
    """
    for name in ("train", "test"):
        if not (root / name).is_dir():
            raise BenchError(f"{root}: expected sub-directories train/ and test/ (ImageFolder layout), missing {name}/")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise BenchError(f"{root / 'train'}: no class sub-directories (ImageFolder layout train/<class>/*.png)")
    index = {c: i for i, c in enumerate(classes)}
    mode = "L" if spec.shape[0] == 1 else "RGB"
    splits = []
    for name in ("train", "test"):
        d = root / name
        found = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        unknown_cls = [c for c in found if c not in index]
        if unknown_cls:
            raise BenchError(
                f"{d}: classes {unknown_cls[:5]} are not in train/ (train classes: {', '.join(classes[:20])})"
            )
        imgs, labels = [], []
        for c in found:
            files = _image_files(d / c)
            if not files:
                raise BenchError(f"{d / c}: empty class directory (no {', '.join(IMAGE_SUFFIXES[:3])} ... images)")
            for f in files:
                imgs.append(_read_image(f, mode))
                labels.append(index[c])
        if not imgs:
            raise BenchError(f"{d}: no images")
        if len({i.shape for i in imgs}) != 1:
            sizes = sorted({i.shape for i in imgs})[:3]
            raise BenchError(f"{d}: images must all have the same size, found {sizes} ...")
        splits.append(Split(_as_images(np.stack(imgs), str(d)), torch.tensor(labels, dtype=torch.int64)))
    return Data(spec, splits[0], splits[1])


def infer_custom_spec(path: Path, base: DatasetSpec, channels: str = "") -> DatasetSpec:
    """Describe a user's npz/ImageFolder data: shape, classes, mean/std from the training split, and the
    threat model of its kind (0.1 for gray images, 8/255 for colour, docs/design.md 'Threat model');
    ``channels``: the channel axis of 4-D .npz images ("" = inferred)."""
    source = "npz" if path.suffix == ".npz" else "imagefolder"
    probe = dataclasses.replace(base, name="custom", source=source, path=str(path), classes=10**9, channels=channels)
    data = load_npz(probe, path) if source == "npz" else load_imagefolder(probe, path)
    xtr = to_float(data.train.x)
    if tuple(data.test.x.shape[1:]) != tuple(xtr.shape[1:]):
        raise BenchError(f"{path}: test images {tuple(data.test.x.shape[1:])} differ from train images {tuple(xtr.shape[1:])}")
    classes = int(max(data.train.y.max(), data.test.y.max())) + 1
    if classes > MAX_CLASSES:
        raise BenchError(f"{path}: labels go up to {classes - 1}; at most {MAX_CLASSES} classes (labels 0..{MAX_CLASSES - 1})")
    c = xtr.shape[1]
    gray = c == 1
    eps = 0.1 if gray else 8 / 255
    return dataclasses.replace(
        probe,
        name=re.sub(r"[^a-z0-9_.-]", "_", path.stem.lower())[:64].lstrip("_.-") or "custom",  # registry charset
        shape=tuple(xtr.shape[1:]),
        classes=classes,
        mean=tuple(xtr.mean(dim=(0, 2, 3)).tolist()),
        std=tuple(xtr.std(dim=(0, 2, 3)).clamp(min=1e-3).tolist()),
        eps=eps,
        alpha=eps / 4 if gray else 0.01,
        train_eps=eps / 4,
        default_model="small_conv" if xtr.shape[-1] <= 28 else "vgg11",
        description=f"user data from {path}",
    )


def load_data(spec: DatasetSpec, data_root: str | Path | None = None, download: bool = True) -> Data:
    """Load a dataset by its spec; every failure is a one-line BenchError (``download=False``: a
    torchvision dataset whose files are absent is an error, not a download)."""
    if spec.source == "sklearn_digits":
        data = load_digits_data(spec)
    elif spec.source == "torchvision":
        root = Path(data_root or "data")
        if data_root is not None and not root.is_dir():
            raise BenchError(f"--data-root {root} does not exist; create it or point it at the dataset files")
        data = Data(spec, _torchvision_split(spec, root, True, download), _torchvision_split(spec, root, False, download))
    elif spec.source == "npz":
        data = load_npz(spec, Path(spec.path))
    elif spec.source == "imagefolder":
        data = load_imagefolder(spec, Path(spec.path))
    elif spec.source == "synthetic":
        g = torch.Generator().manual_seed(0)
        mk = lambda n: Split(torch.rand(n, *spec.shape, generator=g), torch.randint(0, spec.classes, (n,), generator=g))  # noqa: E731
        data = Data(spec, mk(256), mk(64))
    else:  # pragma: no cover - validated by the registry
        raise BenchError(f"unknown data source {spec.source!r}")
    for name, split in (("train", data.train), ("test", data.test)):
        if tuple(split.x.shape[1:]) != tuple(spec.shape):
            raise BenchError(
                f"dataset {spec.name}: {name} images have shape {tuple(split.x.shape[1:])}, expected {tuple(spec.shape)}"
            )
    return data


def augment(x: Tensor, mode: str, pad: int, generator: torch.Generator) -> Tensor:
    """RandomCrop(pad) (+ horizontal flip for ``crop_flip``) on a float batch [B, C, H, W]."""
    if mode == "none":
        return x
    b, _, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, x.shape[1], h, w + 2 * pad)
    out = xp.gather(2, rows.to(x.device))
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, x.shape[1], h, w)
    out = out.gather(3, cols.to(x.device))
    if mode == "crop_flip":
        flip = torch.rand(b, generator=generator) < 0.5
        out[flip.to(x.device)] = out[flip.to(x.device)].flip(-1)
    return out
