"""User-facing errors: one line that names the bad value and the fix.

The CLI prints ``HarnessError`` messages and exits 2 without a traceback; anything else is a
programming error and raises normally.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """An error caused by user input (flags, files, data); its message is shown as is."""


class ConfigError(HarnessError):
    """A bad flag, config field or name."""


class DataError(HarnessError):
    """Missing, malformed or corrupt input data."""


class ArchError(HarnessError):
    """A malformed architecture string or an architecture outside the space."""


def did_you_mean(value: str, options: Iterable[str]) -> str:
    """' (did you mean X?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(value, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, value: str, options: Iterable[str]) -> ConfigError:
    options = sorted(options)
    return ConfigError(
        f"unknown {kind} '{value}'{did_you_mean(value, options)}; choose one of: {', '.join(options)}"
    )
