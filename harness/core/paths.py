"""Where things live: the repository, the package's data files, the data and cache directories.

The data directory comes from ``--data-dir`` or ``HARNESS_DATA_DIR`` (never copied into the repo);
caches (decoded datasets, standalone ground truth) go to ``HARNESS_CACHE_DIR``.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
REPO_ROOT = PACKAGE_ROOT.parent
SUITES_DATA = PACKAGE_ROOT / "suites_data"


def default_data_dir() -> Path | None:
    env = os.environ.get("HARNESS_DATA_DIR")
    return Path(env) if env else None


def default_cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE_DIR", "~/.cache/supernet-harness")).expanduser()
