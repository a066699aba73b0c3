"""List (and with ``--fix`` rewrite) citations of design/method notes that are not in the repository.

The design and method notes began outside the repository (``DESIGN.md``, ``spec/defenses.md``,
``spec/ecosystem.md``, ``perf/anchors.md`` in a ``../shared/`` folder); they now live in ``docs/`` with the
same section numbers. A user of the repository cannot open the old paths, so code, README, help text,
templates and registry comments must cite ``docs/...``.

Usage::

    python scripts/check_citations.py          # list every old citation with its replacement; exit 1 if any
    python scripts/check_citations.py --fix    # rewrite them in place (mechanical), then list what is left

Mapping (the only rewrites ``--fix`` does):

==================================================  ==========================================
old citation                                        new citation
==================================================  ==========================================
``DESIGN.md`` (any ``../shared/`` prefix)           ``docs/design.md``
``spec/defenses.md X`` (any prefix)                 ``docs/defenses.md X``
``spec/ecosystem.md X`` (any prefix)                ``docs/ecosystem.md X``
``spec 4.3`` (bare section number)                  ``docs/defenses.md 4.3``
``anchors.md`` / ``perf/anchors.md`` (any prefix)   ``docs/perf-anchors.md``
``../shared/<other>``                               listed, not rewritten (no copy in docs/)
``STYLE.md``                                        listed, not rewritten (no copy in docs/)
==================================================  ==========================================

Scanned: every text file under the repository root except ``docs/`` (the targets), this script, VCS,
virtual environments and build outputs (``results/``, ``site/``, caches, data).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".html", ".css", ".txt", ".sh", ".cfg", ".ini", ""}
SKIP_DIRS = {
    ".git", ".venv", "venv", "docs", "results", "site", "data", "build", "__pycache__",
    ".pytest_cache", ".ruff_cache", ".hypothesis", ".mypy_cache", "node_modules",
}
SELF = Path(__file__).resolve()

_PREFIX = r"(?:(?:\.\./)+)?(?:shared/)?"
# (pattern, replacement or None when there is no mechanical mapping); applied in order, first match wins
RULES: list[tuple[re.Pattern[str], str | None]] = [
    (re.compile(rf"(?<![\w/.-]){_PREFIX}DESIGN\.md"), "docs/design.md"),
    (re.compile(rf"(?<![\w/.-]){_PREFIX}spec/defenses\.md"), "docs/defenses.md"),
    (re.compile(rf"(?<![\w/.-]){_PREFIX}spec/ecosystem\.md"), "docs/ecosystem.md"),
    (re.compile(rf"(?<![\w/.-]){_PREFIX}(?:perf/)?anchors(?:-\d{{4}}-\d{{2}}-\d{{2}})?\.md"), "docs/perf-anchors.md"),
    (re.compile(r"(?<![\w/.-])spec (\d+(?:\.\d+)*)\b"), r"docs/defenses.md \1"),
    (re.compile(r"(?<![\w/.-])(?:\.\./)+shared/[\w./-]+"), None),
    (re.compile(rf"(?<![\w/.-]){_PREFIX}STYLE\.md"), None),
]


@dataclass(frozen=True)
class Citation:
    path: Path
    line: int
    text: str
    replacement: str | None


def files(root: Path = ROOT) -> Iterator[Path]:
    """Text files to scan, sorted."""
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1]):
            continue
        if path.is_file() and path.suffix in SUFFIXES and path.resolve() != SELF:
            yield path


def _spans(line: str) -> list[tuple[int, int, str | None]]:
    """Non-overlapping (start, end, replacement) of old citations in one line, in order."""
    taken: list[tuple[int, int, str | None]] = []
    for pattern, repl in RULES:
        for m in pattern.finditer(line):
            if all(m.end() <= s or m.start() >= e for s, e, _ in taken):
                taken.append((m.start(), m.end(), None if repl is None else m.expand(repl)))
    return sorted(taken, key=lambda t: t[0])


def scan(path: Path) -> list[Citation]:
    try:
        text = path.read_text()
    except (UnicodeDecodeError, OSError):
        return []
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        for s, e, repl in _spans(line):
            out.append(Citation(path, i, line[s:e], repl))
    return out


def fix(path: Path) -> int:
    """Rewrite every mappable citation in ``path``; returns how many were rewritten."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    n = 0
    for i, line in enumerate(lines):
        for s, e, repl in reversed(_spans(line)):
            if repl is not None:
                line = line[:s] + repl + line[e:]
                n += 1
        lines[i] = line
    if n:
        path.write_text("".join(lines))
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fix", action="store_true", help="rewrite the mappable citations in place")
    ap.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this one)")
    args = ap.parse_args(argv)
    if args.fix:
        total = sum(fix(p) for p in files(args.root))
        print(f"rewrote {total} citations")
    found = [c for p in files(args.root) for c in scan(p)]
    for c in found:
        where = f"{c.path.relative_to(args.root)}:{c.line}"
        print(f"{where}: {c.text!r} -> {c.replacement or 'NO MAPPING (fix by hand)'}")
    n_files = len({c.path for c in found})
    print(f"{len(found)} citations of files outside the repository in {n_files} files")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
