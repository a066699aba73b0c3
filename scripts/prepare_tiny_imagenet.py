"""Lay out the official Tiny-ImageNet-200 zip as the ImageFolder tree that registry.yaml's ``tiny_imagenet``
expects: ROOT/train/<wnid>/images/*.JPEG is used as is; ROOT/val/images + val_annotations.txt become
ROOT/test/<wnid>/*.JPEG (symbolic links, nothing is copied).

    python scripts/prepare_tiny_imagenet.py data/tiny-imagenet-200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def make_test_split(root: Path) -> int:
    """Link every validation image into test/<wnid>/; returns the number of images linked."""
    ann = root / "val" / "val_annotations.txt"
    if not ann.is_file() or not (root / "train").is_dir():
        raise SystemExit(f"{root}: expected train/ and val/val_annotations.txt (the official tiny-imagenet-200 zip)")
    n = 0
    for line in ann.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        name, wnid = parts[0], parts[1]
        dst = root / "test" / wnid / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to((root / "val" / "images" / name).resolve())
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="the unzipped tiny-imagenet-200 directory")
    n = make_test_split(ap.parse_args().root)
    print(f"linked {n} validation images into test/<wnid>/", file=sys.stderr)


if __name__ == "__main__":
    main()
