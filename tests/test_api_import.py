"""``bench import --format snnrat`` (bench/importers.py): reference-layout models written here after the
SNN-RAT code (models/WideResNet.py, models/VGG.py, models/layers.py; our own compact re-implementation, tiny
widths), random weights and BN statistics, their state dicts imported: snnbench's logits equal theirs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnbench.errors import BenchError
from snnbench.importers import SNNRAT_NORM, import_snnrat
from snnbench.plan import make_defense
from snnbench.train import build_model, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
T = 2


# --- the reference layout (SNN-RAT names, T folded into the batch, IF neuron, hard reset) ----------------
class ZIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v):
        return (v >= 0).float()

    @staticmethod
    def backward(ctx, g):
        return g


class LIFSpike(nn.Module):
    def forward(self, x):
        x = x.view(T, -1, *x.shape[1:])
        mem, out = 0.0, []
        for t in range(T):
            mem = mem + x[t]
            s = ZIF.apply(mem - 1.0)
            mem = (1 - s) * mem
            out.append(s)
        return torch.stack(out).flatten(0, 1)


class ConvexCombination(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.comb = nn.Parameter(torch.ones(n) / n)

    def forward(self, a, b):
        return a * self.comb[0] + b * self.comb[1]


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.act1 = nn.BatchNorm2d(cin), LIFSpike()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(cout), LIFSpike()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
        self.convex = ConvexCombination(2)

    def forward(self, x):
        if not self.equal:
            x = self.act1(self.bn1(x))
            out = x
        else:
            out = self.act1(self.bn1(x))
        out = self.conv2(self.act2(self.bn2(self.conv1(out))))
        return self.convex(x if self.equal else self.convShortcut(x), out)


class RefWideResNet(nn.Module):
    """SNN-RAT WideResNet, depth 16, channels (base, base*k, 2 base*k, 4 base*k)."""

    def __init__(self, base, k, classes, mean, std):
        super().__init__()
        ch = [base, base * k, 2 * base * k, 4 * base * k]
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        self.conv1 = nn.Conv2d(len(mean), ch[0], 3, 1, 1, bias=False)
        for g, stride in ((1, 1), (2, 2), (3, 2)):
            setattr(
                self,
                f"block{g}",
                nn.Sequential(BasicBlock(ch[g - 1], ch[g], stride), BasicBlock(ch[g], ch[g], 1)),
            )
        self.bn1, self.act, self.fc = nn.BatchNorm2d(ch[3]), LIFSpike(), nn.Linear(ch[3], classes)

    def forward(self, x):
        x = ((x - self.mean) / self.std).repeat(T, 1, 1, 1)  # add_dimention + MergeTemporalDim
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.adaptive_avg_pool2d(self.act(self.bn1(out)), 1).flatten(1)
        return self.fc(out).view(T, -1, self.fc.out_features).mean(0)


class RefVGG(nn.Module):
    """SNN-RAT VGG-11: cfg [[64, A], [128, 256, A], [512 x3, A], [512, 512], []] scaled by ``width``."""

    def __init__(self, width, fc, classes, in_ch, hw, mean, std):
        super().__init__()
        cfg = [[64, "A"], [128, 256, "A"], [512, 512, 512, "A"], [512, 512], []]
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        c = in_ch
        for i, layer in enumerate(cfg, 1):
            mods = []
            for v in layer:
                if v == "A":
                    mods.append(nn.AvgPool2d(2))
                    hw //= 2
                else:
                    out = max(1, int(round(v * width)))
                    mods += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), LIFSpike()]
                    c = out
            setattr(self, f"layer{i}", nn.Sequential(*mods))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * hw * hw, fc),
            LIFSpike(),
            nn.Linear(fc, fc),
            LIFSpike(),
            nn.Linear(fc, classes),
        )

    def forward(self, x):
        x = ((x - self.mean) / self.std).repeat(T, 1, 1, 1)
        for i in range(1, 6):
            x = getattr(self, f"layer{i}")(x)
        out = self.classifier(x)
        return out.view(T, -1, out.shape[-1]).mean(0)


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BN statistics, so a wrong mapping cannot give equal logits by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.copy_(0.5 + torch.rand(t.shape, generator=g))
                elif name.endswith("comb"):
                    t.copy_(0.3 + 0.7 * torch.rand(t.shape, generator=g))
                else:
                    t.copy_(0.6 * torch.randn(t.shape, generator=g))
    return model.eval()


def _ours(registry, model_name: str):
    ds = registry.datasets["cifar10"]
    _, vanilla = make_defense(registry, "vanilla")
    return build_model(ds, registry.models[model_name], vanilla, T).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _reference(registry, model_name):
    spec = registry.models[model_name]
    if spec.arch == "wrn16":
        return _randomise(RefWideResNet(spec.params["base"], spec.params["widen"], 10, *SNNRAT_NORM), 1)
    return _randomise(RefVGG(spec.params["width"], spec.params["fc"], 10, 3, 32, *SNNRAT_NORM), 2)


@pytest.mark.parametrize("model_name", ["wrn16_tiny", "vgg11_tiny"])
def test_import_gives_the_reference_logits(registry, images, model_name):
    ref = _reference(registry, model_name)
    ours = _ours(registry, model_name)
    state = import_snnrat(
        {f"module.{k}": v for k, v in ref.state_dict().items()}, ours, registry.models[model_name].arch
    )
    ours.load_state_dict(state)
    with torch.no_grad():
        want, got = ref(images), ours(images)
    assert want.abs().max() > 0.1 and want.std() > 0.01  # spikes flow: a meaningful comparison
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert not torch.allclose(_ours(registry, model_name)(images), want, atol=1e-2)  # weights mattered


def _import_cli(src: Path, model: str, out: Path) -> subprocess.CompletedProcess:
    """``bench import --format snnrat SRC --model MODEL -o OUT`` in a subprocess, as a user types it."""
    cmd = [sys.executable, "-m", "snnbench", "import", "--format", "snnrat", str(src), "--model", model, "-o", str(out)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_round_trip_loads_as_bench_run_would(registry, images, tmp_path):
    ref = _reference(registry, "wrn16_tiny")
    src = tmp_path / "rat.pth"
    torch.save(ref.state_dict(), src)
    out = tmp_path / "ours.pt"
    r = _import_cli(src, "wrn16_tiny", out)
    assert r.returncode == 0, r.stderr
    assert f"imported {len(ref.state_dict())} tensors" in r.stdout and str(out) in r.stdout
    ck = load_checkpoint(out)
    assert ck["imported"]["format"] == "snnrat" and len(ck["imported"]["sha256"]) == 64
    ours = _ours(registry, "wrn16_tiny")
    ours.load_state_dict(ck["state_dict"])
    with torch.no_grad():
        assert torch.allclose(ours(images), ref(images), atol=1e-4)
    from snnbench.train import apply_state_dict

    ds = registry.datasets["cifar10"]
    _, rat = make_defense(registry, "rat_wrn")
    target = build_model(ds, registry.models["wrn16_tiny"], rat, T)
    apply_state_dict(target, ck["state_dict"], str(out))  # strict, as `bench run --checkpoint` loads it
    with torch.no_grad():
        assert torch.allclose(target.eval()(images), ref(images), atol=1e-4)


def test_unmatched_keys_are_one_line(registry, tmp_path):
    ref = _reference(registry, "vgg11_tiny")
    state = ref.state_dict()
    state["layer9.0.weight"] = torch.zeros(1)
    with pytest.raises(BenchError, match=r"1 reference keys unmatched: layer9\.0\.weight") as e:
        import_snnrat(state, _ours(registry, "vgg11_tiny"), "vgg11")
    assert "\n" not in str(e.value)
    del state["layer9.0.weight"], state["classifier.5.bias"]
    with pytest.raises(BenchError, match=r"model keys not filled: net\.\d+\.bias"):
        import_snnrat(state, _ours(registry, "vgg11_tiny"), "vgg11")
    src = tmp_path / "vgg.pth"
    torch.save(_reference(registry, "vgg11_tiny").state_dict(), src)
    r = _import_cli(src, "wrn16_tiny", tmp_path / "x.pt")
    assert r.returncode == 2 and r.stderr.startswith("error: snnrat checkpoint does not map onto wrn16")
    assert len(r.stderr.strip().splitlines()) == 1 and "reference keys unmatched" in r.stderr
    assert not (tmp_path / "x.pt").exists()


def test_import_takes_the_checkpoints_normalisation_and_any_dataset_and_prints_a_clean_check(registry, tmp_path):
    """Issue 22 item 4: --mean/--std set the normalisation the checkpoint was trained with (printed, and
    stored in the checkpoint's in-model buffers); --dataset takes an .npz like bench run; a clean-accuracy
    check on the first test samples is printed after import."""
    import numpy as np

    ref = _reference(registry, "vgg11_tiny")
    src = tmp_path / "vgg.pth"
    torch.save(ref.state_dict(), src)
    g = np.random.default_rng(0)
    npz = tmp_path / "mine.npz"
    np.savez(npz, x_train=g.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8), y_train=g.integers(0, 10, 40),
             x_test=g.integers(0, 255, (30, 32, 32, 3), dtype=np.uint8), y_test=g.integers(0, 10, 30))
    out = tmp_path / "o.pt"
    cmd = [sys.executable, "-m", "snnbench", "import", "--format", "snnrat", str(src), "--model", "vgg11_tiny",
           "--dataset", str(npz), "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "-o", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "normalisation (custom): mean (0.5, 0.5, 0.5) std (0.25, 0.25, 0.25)" in r.stdout
    assert re.search(r"clean check: \d+\.\d% on the first 30 test samples of mine", r.stdout), r.stdout
    ck = load_checkpoint(out)
    assert ck["state_dict"]["std"].flatten().tolist() == [0.25] * 3
    # the default names the baked-in statistics and how to change them
    r = _import_cli(src, "vgg11_tiny", tmp_path / "d.pt")
    assert r.returncode == 0 and "normalisation (reference): mean (0.4914, 0.4822, 0.4465)" in r.stdout
    assert "give --mean/--std" in r.stdout
    bad = subprocess.run(cmd[:-6] + ["--mean", "0.5", "--std", "0.25", "-o", str(tmp_path / "b.pt")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "give 3 values each" in bad.stderr and not (tmp_path / "b.pt").exists()
