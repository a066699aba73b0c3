#!/usr/bin/env bash
# Issue 21: the built wheel works from any folder, beside a user's own attacks.py, defenses.py and bench.py.
# Builds the wheel, installs it (not editable) into a fresh venv that borrows the CI venv's third-party
# packages through a plain .pth path line (so the editable snnbench of the CI venv is NOT importable there),
# then, from a folder that holds those three files, imports snnbench and runs `bench run`.
# Usage: bash .ci/wheel_check.sh   (with the CI venv active)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m pip wheel -q --no-deps -w "$work/dist" "$root" 2>&1 | grep -v "^WARNING: Location" || true
wheel="$(ls "$work"/dist/snnbench-*.whl)"
python -m venv "$work/venv"
site_main="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
site_new="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$site_main" > "$site_new/ci_deps.pth"
"$work/venv/bin/python" -m pip install -q --no-deps "$wheel" 2>&1 | grep -v "^WARNING: Location" || true
mkdir "$work/user"
cd "$work/user"
for m in attacks defenses bench; do echo "raise SystemExit('the user module $m.py was imported')" > "$m.py"; done
"$work/venv/bin/python" - <<'PY'
import snnbench, snnbench.api, snnbench.cli
from pathlib import Path
p = Path(snnbench.__file__)
assert "site-packages" in str(p), f"snnbench imported from {p}, not the installed wheel"
from snnbench.paths import REGISTRY_PATH, PERF_DIR
assert REGISTRY_PATH.is_file() and not REGISTRY_PATH.is_symlink(), REGISTRY_PATH
assert any(PERF_DIR.glob("*.json")), PERF_DIR
print("wheel: import ok from", p.parent)
PY
"$work/venv/bin/bench" run --defense vanilla --attack pgd --epochs 1 --n-eval 50 --results-dir "$work/results" -q
"$work/venv/bin/bench" validate >/dev/null
echo "wheel check: passed"
