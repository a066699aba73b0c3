"""Data loaders: digits split, user .npz (layouts, dtypes, bad files), torchvision formats from small files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from snnbench.data import infer_custom_spec, load_data, load_npz, to_float
from snnbench.errors import BenchError


def test_digits_split(digits_data):
    assert len(digits_data.train) == 1437 and len(digits_data.test) == 360
    assert digits_data.train.x.shape[1:] == (1, 8, 8)
    assert 0 <= float(digits_data.train.x.min()) and float(digits_data.train.x.max()) <= 1


def _npz(tmp_path, **arrays):
    p = tmp_path / "mine.npz"
    np.savez(p, **arrays)
    return p


@pytest.mark.parametrize("layout", ["nhwc", "nchw", "nhw"])
def test_npz_layouts(tmp_path, registry, layout):
    rng = np.random.default_rng(0)
    shape = {"nhwc": (20, 6, 6, 3), "nchw": (20, 3, 6, 6), "nhw": (20, 6, 6)}[layout]
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    p = _npz(tmp_path, x_train=x, y_train=rng.integers(0, 4, 20), x_test=x[:5], y_test=np.arange(5) % 4)
    spec = infer_custom_spec(p, registry.datasets["digits"])
    assert spec.classes == 4 and spec.shape[1:] == (6, 6)
    data = load_npz(spec, p)
    assert data.train.x.shape[1:] == spec.shape
    if layout == "nhwc":  # channel moved, values preserved
        assert torch.equal(data.train.x[0, :, 1, 2], torch.from_numpy(x[0, 1, 2]))
    assert spec.eps == (0.1 if layout == "nhw" else pytest.approx(8 / 255))


def test_npz_float_images_in_unit_range(tmp_path, registry):
    x = np.random.default_rng(0).random((10, 1, 4, 4)).astype(np.float32)
    p = _npz(tmp_path, x_train=x, y_train=np.arange(10) % 2, x_test=x, y_test=np.arange(10) % 2)
    data = load_npz(infer_custom_spec(p, registry.datasets["digits"]), p)
    assert torch.allclose(to_float(data.test.x), torch.from_numpy(x))


@pytest.mark.parametrize(
    "arrays,fragment",
    [
        ({"x_train": np.zeros((4, 2, 2), np.uint8), "y_train": np.zeros(4, int)}, "missing arrays"),
        ({"x_train": np.full((4, 2, 2), 3.0), "y_train": np.zeros(4, int), "x_test": np.zeros((2, 2, 2)),
          "y_test": np.zeros(2, int)}, "[0, 1]"),
        ({"x_train": np.zeros((4, 2, 2), np.uint8), "y_train": np.zeros(3, int), "x_test": np.zeros((2, 2, 2), np.uint8),
          "y_test": np.zeros(2, int)}, "labels"),
        ({"x_train": np.zeros((4, 2), np.uint8), "y_train": np.zeros(4, int), "x_test": np.zeros((2, 2), np.uint8),
          "y_test": np.zeros(2, int)}, "images must be"),
    ],
)
def test_npz_bad_files(tmp_path, registry, arrays, fragment):
    p = _npz(tmp_path, **arrays)
    with pytest.raises(BenchError, match=None) as e:
        infer_custom_spec(p, registry.datasets["digits"])
    assert fragment in str(e.value)


def test_labels_out_of_range_for_declared_classes(tmp_path, registry):
    import dataclasses

    x = np.zeros((4, 1, 8, 8), np.uint8)
    p = _npz(tmp_path, x_train=x, y_train=np.array([0, 1, 2, 12]), x_test=x, y_test=np.zeros(4, int))
    spec = dataclasses.replace(registry.datasets["digits"], source="npz", path=str(p))
    with pytest.raises(BenchError, match="out of range"):
        load_data(spec)


def test_cifar10_from_small_files(tmp_path, registry, monkeypatch):
    """The real torchvision CIFAR-10 reader on files in its on-disk format (md5 check bypassed)."""
    import torchvision.datasets as tvd

    root = tmp_path / "data"
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for n in names:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": list(range(4))}
        (base / n).write_bytes(pickle.dumps(batch))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    import torchvision.datasets.cifar as tvc

    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tvc, "check_integrity", lambda *a, **k: True)
    data = load_data(registry.datasets["cifar10"], root)
    assert data.train.x.shape == (20, 3, 32, 32) and data.test.x.shape == (4, 3, 32, 32)
    assert data.train.x.dtype == torch.uint8 and data.test.y.tolist() == [0, 1, 2, 3]


def test_mnist_from_small_idx_files(tmp_path, registry):
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)

    def idx(path, arr: np.ndarray, magic: int):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
        path.write_bytes(header + arr.astype(np.uint8).tobytes())

    imgs = np.random.default_rng(0).integers(0, 256, (6, 28, 28))
    for split in ("train", "t10k"):
        idx(raw / f"{split}-images-idx3-ubyte", imgs, 2051)
        idx(raw / f"{split}-labels-idx1-ubyte", np.arange(6) % 10, 2049)
    data = load_data(registry.datasets["mnist"], root)
    assert data.train.x.shape == (6, 1, 28, 28) and data.train.y.tolist() == [0, 1, 2, 3, 4, 5]


def test_missing_torchvision_files_give_clear_error(tmp_path, registry, monkeypatch):
    import torchvision.datasets as tvd

    def no_network(self, *a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvd.CIFAR10, "download", no_network)
    with pytest.raises(BenchError, match="download failed"):
        load_data(registry.datasets["cifar10"], tmp_path)
