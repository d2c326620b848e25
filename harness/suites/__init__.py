"""Suites, registered by name: ``nb201`` and the two probe suites (modules of this package)."""
from harness.suites.base import SUITES, Suite, get_suite, register_suite

__all__ = ["SUITES", "Suite", "get_suite", "register_suite"]
