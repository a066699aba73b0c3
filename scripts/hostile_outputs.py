"""Issue 22 note: each hostile model output (``tests/test_contract.py`` HOSTILE, plus in-place edits, detached
outputs, the meta device and bad arguments) through ``evaluate(..., attacks=["fgsm"])``: the one-line error and
the runs stored afterwards (0 = nothing stored), as a Markdown table.

Run from the repository root: ``python scripts/hostile_outputs.py``
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402
from test_contract import HOSTILE, Net, _stored_runs  # noqa: E402
from torch import nn  # noqa: E402

import snnbench  # noqa: E402


class InPlace(nn.Module):
    """Edits its input in place (it gets a copy; the test data is verified unchanged)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x.data.mul_(0.5)
        return self.fc(x.flatten(1))


def _meta() -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def _try(db: Path, build: Callable[[], nn.Module], **kw) -> str:
    try:
        snnbench.evaluate(build(), attacks=["fgsm"], db=db, randomized=False, checks=False, progress=False, **kw)
        return "(accepted)"
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def main() -> None:
    d = Path(tempfile.mkdtemp())
    cases: list[tuple[str, Callable[[], nn.Module], dict]] = [
        (k, (lambda w=wrap: Net(w)), {"n": 20}) for k, (wrap, _) in sorted(HOSTILE.items())]
    cases += [("edits its input in place", InPlace, {"n": 20}),
              ("detached output", lambda: Net(lambda z, x: z.detach()), {"n": 20}),
              ("on the meta device", _meta, {"n": 20})]
    cases += [(label, lambda: Net(lambda z, x: z), kw) for label, kw in (
        ("name=12345", {"name": 12345}), ("n=59.5", {"n": 59.5}), ("n=10**9", {"n": 10**9}),
        ("n=True", {"n": True}), ("T=-5", {"T": -5}))]
    print("| output | what evaluate says | runs stored |\n|---|---|---|")
    for i, (label, build, kw) in enumerate(cases):
        db = d / f"{i}.sqlite"
        msg = _try(db, build, **kw).replace("|", "\\|")
        print(f"| {label} | {msg[:230]} | {_stored_runs(db)} |", flush=True)


if __name__ == "__main__":
    main()
