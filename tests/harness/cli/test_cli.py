"""Bad input gets one clear line (exit 2, no traceback) naming the value and the fix."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.core.errors import ArchError
from harness.spaces.nb201 import NB201_OPS, Nb201Space

SPACE = Nb201Space()


@pytest.mark.parametrize("argv,needle", [
    (["run", "--suite", "nb202"], "unknown suite 'nb202' (did you mean 'nb201'?)"),
    (["run", "--methods", "spso"], "unknown method 'spso' (did you mean 'spos'?)"),
    (["run", "--budget", "smok"], "unknown budget 'smok' (did you mean 'smoke'?)"),
    (["run", "--seeds", "0,x"], "malformed --seeds '0,x'"),
    (["run", "--seeds", "1,1"], "repeats a seed"),
    (["run", "--set", "epoch=3"], "unknown budget field 'epoch' (did you mean 'epochs'?)"),
    (["run", "--set", "epochs"], "malformed --set 'epochs'"),
    (["run", "--ray-address", "127.0.0.1:6379"], "--ray-address needs --executor ray"),
    (["run", "--device", "cuda:0"], "no CUDA device"),
    (["run", "--set", "epochs=-3"], "budget field epochs=-3: must be a number > 0"),
    (["run", "--set", "lr=abc"], "budget field lr='abc': must be a number > 0"),
    (["run", "--set", "batch_size=1.5"], "budget field batch_size=1.5: must be a whole number >= 1"),
    (["run", "--set", "bn_mode=mean"], "budget field bn_mode='mean': use one of batch, recal"),
    (["run", "--set", "curve_points=-1"], "budget field curve_points=-1"),
    (["run", "--jobs", "0"], "--jobs 0: give 1 or more"),
    (["run", "--compare", "fairnas"], "malformed pair 'fairnas'"),
])
def test_bad_flags_one_line_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "--device" in argv:
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
    assert main(argv + ["--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_out_naming_a_file_is_refused_and_left_alone(capsys, tmp_path):
    out = tmp_path / "a-file"
    out.write_text("mine")
    assert main(["run", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is an existing file" in err and len(err.splitlines()) == 1
    assert out.read_text() == "mine"


def test_bad_arch_set_and_gt(capsys, tmp_path, shared_dir):
    assert main(["run", "--archs", "sample:0", "--data-dir", str(shared_dir), "--out", str(tmp_path / "o")]) == 2
    assert "sample:1000" in capsys.readouterr().err
    assert main(["run", "--gt", "cifar10_test", "--data-dir", str(shared_dir), "--out", str(tmp_path / "o")]) == 2
    assert "unknown ground-truth column 'cifar10_test'" in capsys.readouterr().err
    bad = tmp_path / "archs.txt"
    bad.write_text("|nor_conv_3x3~0|+|oops|\n")
    assert main(["run", "--archs", f"file:{bad}", "--data-dir", str(shared_dir), "--out", str(tmp_path / "o")]) == 2
    assert f"{bad}:1" in capsys.readouterr().err


def test_missing_data_dir(capsys, tmp_path):
    assert main(["run", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nats_tss_accuracy.csv" in err and "--data-dir" in err


def test_list_prints_registries(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "nb201" in out and "spos" in out and "smoke" in out and "cifar10_test_200ep" in out


arch_strategy = st.tuples(*[st.integers(0, 4)] * 6)


@given(arch_strategy)
def test_format_parse_roundtrip(arch):
    assert SPACE.parse(SPACE.format(arch)) == arch


token = st.sampled_from(list(NB201_OPS) + ["conv", "skip", "~", "|", "+", "0", "1", "2", "3", " ", "none~"])


VALID = {SPACE.format(a) for a in SPACE.enumerate()}


@settings(max_examples=300)
@given(st.lists(token, max_size=30).map("".join))
def test_parser_accepts_exactly_valid_strings(text):
    """Parsing succeeds iff the text (outer whitespace aside) is one of the 15,625 canonical strings."""
    if text.strip() in VALID:
        assert SPACE.format(SPACE.parse(text)) == text.strip()
    else:
        with pytest.raises(ArchError):
            SPACE.parse(text)


@given(arch_strategy, st.integers(0, 60), st.sampled_from(["|", "+", "~", "x", "~9", ""]))
def test_mutated_valid_strings_are_rejected_or_still_valid(arch, pos, junk):
    text = SPACE.format(arch)
    mutated = text[:pos] + junk + text[pos + 1:]
    if mutated.strip() in VALID:
        assert SPACE.format(SPACE.parse(mutated)) == mutated.strip()
    else:
        with pytest.raises(ArchError):
            SPACE.parse(mutated)
