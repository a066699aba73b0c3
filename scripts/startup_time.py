"""Start-up cost of the read-only commands: wall time and ``python -X importtime`` totals.

Usage: ``python scripts/startup_time.py [REPEATS]`` (default 5) from the repository root. For each command
it prints the median and min wall time over REPEATS runs, the median CPU time (user + sys: less sensitive
to other load on the machine), the total import time reported by
``-X importtime`` (sum of the "self" column), the number of modules imported and whether torch was
imported. ``bench check`` and ``bench report`` run against an empty results directory (so the numbers
measure start-up and registry/store loading, not a particular database). Run single-threaded
(``OMP_NUM_THREADS=1``) on an otherwise idle machine for comparable numbers.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def _commands(tmp: str) -> dict[str, list[str]]:
    return {
        "bench check --help": ["-m", "snnbench", "check", "--help"],
        "bench report --help": ["-m", "snnbench", "report", "--help"],
        "bench check (empty store)": ["-m", "snnbench", "check", "--results-dir", tmp],
        "bench report (empty store)": ["-m", "snnbench", "report", "--results-dir", tmp, "--out", f"{tmp}/site"],
    }


def _importtime(args: list[str]) -> tuple[float, int, bool]:
    p = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True)
    total_us, n, torch = 0, 0, False
    for line in p.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = [s.strip() for s in line[len("import time:") :].split("|")]
        total_us += int(parts[0])
        n += 1
        torch = torch or parts[2].strip() == "torch"
    return total_us / 1e6, n, torch


def main(argv: list[str]) -> int:
    repeats = int(argv[0]) if argv else 5
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'command':<28} {'median s':>9} {'min s':>7} {'cpu s':>6} {'imports s':>10} {'modules':>8} torch")
        for label, args in _commands(tmp).items():
            walls, cpus = [], []
            for _ in range(repeats):
                r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
                subprocess.run([sys.executable, *args], capture_output=True, env=os.environ)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                walls.append(time.perf_counter() - t0)
                cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
            imp, n, torch = _importtime(args)
            print(
                f"{label:<28} {statistics.median(walls):9.2f} {min(walls):7.2f} {statistics.median(cpus):6.2f} "
                f"{imp:10.2f} {n:8d} {torch}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
