"""Helpers shared by the `harness` subcommands: list, seed and `--set` parsing, the default device."""
from __future__ import annotations

import torch

from harness.core.errors import ConfigError


def csv_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in csv_list(text))
    except ValueError:
        raise ConfigError(f"malformed --seeds '{text}': give comma-separated integers, e.g. --seeds 0,1,2") from None


def parse_overrides(items: list[str]) -> tuple[tuple[str, object], ...]:
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"malformed --set '{item}': use FIELD=VALUE, e.g. --set epochs=1")
        for conv in (int, float):
            try:
                value = conv(value)
                break
            except ValueError:
                continue
        else:
            value = {"true": True, "false": False}.get(value.lower(), value)
        out.append((key.strip(), value))
    return tuple(out)


def auto_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
