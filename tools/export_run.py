"""Copy a run folder (or a folder of runs) for committing: everything but checkpoints, drift arrays,
SVG duplicates of figures, locks and temp files (each file must stay under the repository's 1 MiB).

    python tools/export_run.py SRC DEST
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

SKIP_SUFFIXES = (".pt", ".pt.sha256", ".npz", ".svg", ".tmp")
SKIP_NAMES = {".lock"}
MAX_BYTES = 1 << 20


def export(src: Path, dest: Path) -> list[Path]:
    """Copy ``src`` to ``dest`` without the skipped files; returns files left out for their size."""
    too_big = []
    for path in sorted(src.rglob("*")):
        if path.is_dir() or path.name in SKIP_NAMES or path.name.endswith(SKIP_SUFFIXES):
            continue
        if path.stat().st_size > MAX_BYTES:
            too_big.append(path)
            continue
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return too_big


if __name__ == "__main__":
    left_out = export(Path(sys.argv[1]), Path(sys.argv[2]))
    for p in left_out:
        print(f"left out (over 1 MiB): {p}")
