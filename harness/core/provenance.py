"""Provenance recorded in every manifest: the git commit, the time, the platform."""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess

from harness.core.paths import REPO_ROOT


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def utc_stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def platform_record(torch_version: str, device: str) -> dict:
    return {"python": platform.python_version(), "machine": platform.platform(), "torch": torch_version,
            "cpus": os.cpu_count(), "device": device}
