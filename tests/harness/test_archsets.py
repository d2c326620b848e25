"""`--archs`: all / unique / sample:N / file:PATH / a space's named subset, and one-line errors that
name the bad value."""
from __future__ import annotations

import re

import numpy as np
import pytest

from harness.archsets import MAX_ENUMERATE, resolve_archs
from harness.core.errors import ArchError, ConfigError
from harness.spaces.base import Decision, SearchSpace
from harness.spaces.mobilenet_probe import MobileNetProbeSpace
from harness.spaces.nb201 import NONE, SKIP, Nb201Space


@pytest.fixture(scope="module")
def nb201() -> Nb201Space:
    return Nb201Space()


class SmallSpace(SearchSpace):
    """3 x 4 choices; (0, 0) is not allowed; no isomorphism key."""

    name = "small"
    decisions = (Decision("a", ("x", "y", "z")), Decision("b", ("p", "q", "r", "s")))

    def is_allowed(self, arch):
        return tuple(arch) != (0, 0)

    def parse(self, text):
        try:
            return self.validate(int(t) for t in text.split("-"))
        except ValueError:
            raise ArchError(f"bad small arch '{text}'") from None

    def format(self, arch):
        return "-".join(map(str, arch))

    def default_op(self, spec):  # pragma: no cover - no networks here
        raise NotImplementedError

    build_supernet = build_standalone = default_op


# --- all / unique / named subsets ----------------------------------------------------------------
def test_all_is_every_allowed_architecture_in_space_order(nb201):
    archs = resolve_archs(nb201, "all")
    assert archs == list(nb201.enumerate()) and len(archs) == 15625
    small = resolve_archs(SmallSpace(), " all ")  # surrounding spaces are ignored
    assert len(small) == 11 and (0, 0) not in small


def test_all_refuses_a_space_too_big_to_enumerate():
    space = MobileNetProbeSpace()
    assert space.size > MAX_ENUMERATE
    with pytest.raises(ConfigError, match=f"--archs all: {space.name} has .* use sample:N or file:PATH"):
        resolve_archs(space, "all")


def test_unique_keeps_the_first_architecture_of_each_isomorphism_class(nb201):
    archs = resolve_archs(nb201, "unique")
    keys = [nb201.isomorphism_key(a) for a in archs]
    assert len(archs) == 6466 == len(set(keys))  # NB201's own count of unique cells
    everything = list(nb201.enumerate())
    first = {}
    for a in everything:
        first.setdefault(nb201.isomorphism_key(a), a)
    assert archs == [a for a in everything if first[nb201.isomorphism_key(a)] == a]


def test_unique_needs_an_isomorphism_key():
    with pytest.raises(ConfigError, match="--archs unique: space small defines no isomorphism key"):
        resolve_archs(SmallSpace(), "unique")


def test_a_named_subset_filters_all(nb201):
    archs = resolve_archs(nb201, "no-none-no-skip")
    assert len(archs) == 3 ** 6
    assert all(NONE not in a and SKIP not in a for a in archs)


# --- sample:N ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 37, 500])
def test_sample_is_n_distinct_archs_fixed_by_the_arch_seed(nb201, n):
    a = resolve_archs(nb201, f"sample:{n}", seed=0)
    assert len(a) == n == len(set(a))
    assert a == resolve_archs(nb201, f"sample:{n}", seed=0)
    index = [nb201.arch_index(x) for x in a]
    assert index == sorted(index)  # listed in space order
    if n > 1:
        others = [resolve_archs(nb201, f"sample:{n}", seed=s) for s in (1, 2)]
        assert all(o != a for o in others)


def test_sample_spreads_over_the_space(nb201):
    """A uniform draw without replacement: the mean benchmark index of 2,000 samples lies within
    6 standard errors of the middle (a sample stuck at one end of the list would not)."""
    a = resolve_archs(nb201, "sample:2000", seed=0)
    idx = np.array([nb201.arch_index(x) for x in a])
    n, size = len(idx), 15625
    se = np.sqrt((size ** 2 - 1) / 12 / n * (size - n) / (size - 1))
    assert abs(idx.mean() - (size - 1) / 2) < 6 * se


def test_sample_of_a_huge_space_is_distinct_allowed_and_seeded():
    space = MobileNetProbeSpace()
    a = resolve_archs(space, "sample:40", seed=3)
    assert len(set(a)) == 40 and all(space.is_allowed(x) for x in a)
    assert a == resolve_archs(space, "sample:40", seed=3) and a != resolve_archs(space, "sample:40", seed=4)


def test_sample_respects_the_spaces_constraints():
    space = SmallSpace()
    a = resolve_archs(space, "sample:11")
    assert sorted(a) == sorted(resolve_archs(space, "all"))  # every allowed arch, (0, 0) never
    with pytest.raises(ConfigError, match=r"--archs 'sample:12': the space has only 11 architectures; use all"):
        resolve_archs(space, "sample:12")


@pytest.mark.parametrize("spec", ["sample:0", "sample:-3", "sample:abc", "sample:", "sample:2.5"])
def test_a_bad_sample_size_is_named(nb201, spec):
    with pytest.raises(ConfigError, match=f"--archs '{spec}': N must be a positive integer"):
        resolve_archs(nb201, spec)


# --- file:PATH -----------------------------------------------------------------------------------
def test_file_lists_parsed_archs_without_duplicates(nb201, tmp_path):
    picks = [nb201.from_index(i) for i in (17, 3, 9000)]
    lines = ["# a comment", "", nb201.format(picks[0]), f"  {nb201.format(picks[1])}  ", nb201.format(picks[0]),
             "", nb201.format(picks[2])]
    path = tmp_path / "archs.txt"
    path.write_text("\n".join(lines) + "\n")
    assert resolve_archs(nb201, f"file:{path}") == picks  # file order, first occurrence kept


def test_file_errors_name_the_file_and_line(nb201, tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=re.escape(f"--archs file: '{missing}' does not exist")):
        resolve_archs(nb201, f"file:{missing}")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only comments\n\n")
    with pytest.raises(ConfigError, match=re.escape(f"--archs file: '{empty}' lists no architectures")):
        resolve_archs(nb201, f"file:{empty}")
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{nb201.format(nb201.from_index(0))}\n# fine so far\n|conv_9x9~0|+|none~0|none~1|+|x|\n")
    with pytest.raises(ArchError, match="^" + re.escape(f"{bad}:3: ")):
        resolve_archs(nb201, f"file:{bad}")


# --- unknown specs -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["bogus", "all:3", "unique:1", "Sample:5", "samples:5"])
def test_an_unknown_spec_is_named_with_the_choices(nb201, spec):
    with pytest.raises(ConfigError) as info:
        resolve_archs(nb201, spec)
    msg = str(info.value)
    assert msg == f"unknown architecture set '{spec}'; choose one of: all, unique, sample:N, file:PATH, no-none-no-skip"
