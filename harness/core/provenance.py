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


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; else platform.processor()): floating-point
    results of the same code and torch build can differ between CPU models (kernel choice)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or "unknown"
    ids = ", ".join(f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields)
    return f"{fields['model name']} ({fields.get('vendor_id', '?')}; {ids})"


def platform_record(torch_version: str, device: str) -> dict:
    return {"python": platform.python_version(), "machine": platform.platform(), "cpu_model": cpu_model(),
            "torch": torch_version, "cpus": os.cpu_count(), "device": device}
