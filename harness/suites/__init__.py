"""Suites, registered by name: one TOML per suite in ``harness/suites_data/`` (``nb201`` and the two
probe suites), loaded by ``harness.suites.base``."""
from harness.suites.base import SUITES, Suite, get_suite, load_suite_toml, register_suite, register_suite_file

__all__ = ["SUITES", "Suite", "get_suite", "load_suite_toml", "register_suite", "register_suite_file"]
