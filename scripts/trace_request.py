"""Which project modules one request passes through (issue 21's before/after measure).

Runs one ``bench`` command line, or a ``snnbench.evaluate`` call on a small plain-torch model, in this process
under ``sys.setprofile`` and prints: the project modules whose functions ran, and the orchestration path,
i.e. each call that moves control from one orchestration module to another (cli*, runner, pipeline, api,
plan, prepare, strategies, diagnostics, suites).

Usage::

    python scripts/trace_request.py run --defense vanilla --attack pgd --epochs 1 --n-eval 50 -q --results-dir /tmp/tr
    python scripts/trace_request.py --api --results-dir /tmp/tr
    python scripts/trace_request.py --root OTHER_CHECKOUT ...   # an old checkout (top-level bench/ attacks/ defenses/)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ORCH = ("cli", "runner", "pipeline", "api", "plan", "prepare", "strategies", "diagnostics", "suites")


def module_of(filename: str, root: Path) -> str | None:
    p = Path(filename)
    try:
        rel = p.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    if rel.parts[0] not in ("bench", "attacks", "defenses") or p.suffix != ".py":
        return None
    return ".".join(rel.with_suffix("").parts)


def trace(fn, root: Path) -> tuple[list[str], list[str]]:
    seen: dict[str, None] = {}
    path: list[str] = []

    def orch(mod: str | None) -> str | None:
        if mod is None:
            return None
        short = mod.split(".", 1)[1] if mod.startswith("bench.") else mod
        return short if short.split(".")[0].startswith(ORCH) and short.split("_")[0] in ORCH else None

    def prof(frame, event, arg):
        if event != "call":
            return
        mod = module_of(frame.f_code.co_filename, root)
        if mod is None:
            return
        seen.setdefault(mod, None)
        me = orch(mod)
        name = frame.f_code.co_name
        if me is None or name == "<module>":  # imports are not control flow
            return
        obj = frame.f_locals.get("self")
        if obj is not None and isinstance(getattr(type(obj), name, None), property):  # attribute reads
            return
        back = frame.f_back
        while back is not None and module_of(back.f_code.co_filename, root) is None:
            back = back.f_back
        caller = orch(module_of(back.f_code.co_filename, root)) if back is not None else None
        if caller is not None and caller != me:
            path.append(f"{caller} -> {me}.{name}")

    sys.setprofile(prof)
    try:
        fn()
    except SystemExit:
        pass
    finally:
        sys.setprofile(None)
    return list(seen), path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--api", action="store_true", help="trace a snnbench.evaluate call instead of a CLI command")
    ap.add_argument("--results-dir", default="/tmp/trace_results")
    args, rest = ap.parse_known_args()
    if args.api:
        import torch
        from torch import nn

        try:
            import snnbench as api
        except ImportError:  # pragma: no cover
            raise
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        db = str(Path(args.results_dir) / "api.sqlite")
        Path(args.results_dir).mkdir(parents=True, exist_ok=True)
        mods, path = trace(lambda: api.evaluate(model, attacks=["pgd"], n=50, db=db, substitute=False), args.root)
    else:
        if (args.root / "bench" / "runner.py").exists():  # a checkout from before the move (PYTHONPATH=ROOT)
            from bench.cli import main as cli
        else:
            from snnbench.cli import main as cli
        argv = [*rest, "--results-dir", args.results_dir] if "--results-dir" not in rest else rest
        mods, path = trace(lambda: cli(argv, standalone_mode=False), args.root)
    print(f"{len(mods)} project modules ran:")
    print("  " + ", ".join(sorted(mods)))
    print(f"orchestration path ({len(path)} crossings between orchestration modules):")
    for step in path:
        print(f"  {step}")


if __name__ == "__main__":
    main()
