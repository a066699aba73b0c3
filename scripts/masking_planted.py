"""Each planted masking model (tests/_masked.py) through the protocol: credited robust accuracy, the true
(adaptive) robustness of its inner network, whether the row is ranked, and the failed checks.

    python scripts/masking_planted.py --protocol standard_smoke --n 60
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _masked import Binarize, StraightThrough, binarized_mlp, inner_mlp, planted, true_robust  # noqa: E402

import snnbench  # noqa: E402
from snnbench.protocol import binomial_tolerance  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", default="standard_smoke")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    inner = inner_mlp()
    truth = true_robust(inner, a.n)
    db = Path(tempfile.mkdtemp()) / "m.sqlite"
    print(f"inner MLP: true robust {100 * truth:.1f}% (PGD-20 x2 at 0.98 eps), tolerance "
          f"{100 * binomial_tolerance(truth, a.n):.1f} points, n={a.n}, {a.protocol}")
    models = {"honest": (inner, truth), **{k: (m, truth) for k, m in planted(inner).items()}}
    if not a.only or "binarize" in a.only:  # truth from BPDA: straight-through PGD on the binarized network
        binary = binarized_mlp()
        model = Binarize(binary)
        models["binarize"] = (model, true_robust(StraightThrough(binary), a.n, decide=model))
    for name, (m, truth) in models.items():
        if a.only and name not in a.only:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                rep = snnbench.evaluate(m, protocol=a.protocol, n=a.n, db=db, name=name, randomized=False,
                                        checks=True)
            except Exception as e:  # noqa: BLE001 - the table says what happened
                print(f"{name:<14} ERROR {type(e).__name__}: {str(e)[:120]}")
                continue
        robust = float(rep.table.iloc[-1]["robust_acc"])
        ok = robust <= truth + binomial_tolerance(truth, a.n)
        verdict = "unranked" if rep.blocking_checks else ("ranked, honest number" if ok else "RANKED, OVERCREDITED")
        print(f"{name:<14} clean {100 * rep.clean:5.1f}%  protocol {100 * robust:5.1f}%  truth {100 * truth:5.1f}%  {verdict:<22} "
              f"{', '.join(rep.blocking_checks)[:150]}")


if __name__ == "__main__":
    main()
