"""Study files: the TOML writer, read_study's checks, flags over the file, RUN/study.toml reruns the run."""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import harness.cli.run as cli_run
from harness.cli import main
from harness.core.errors import ConfigError
from harness.study.spec import (EXECUTION_FIELDS, EXECUTION_KEYS, STUDY_FILE, STUDY_KEYS, RunConfig,
                                config_from_study, json_config, read_study, study_source, study_toml, toml_dumps,
                                toml_string)
from tests.conftest import tiny_data

# --- the TOML writer ----------------------------------------------------------------------
scalar = st.one_of(st.text(), st.integers(-2**63, 2**63 - 1), st.booleans(),
                   st.floats(allow_nan=False))
value = st.one_of(scalar, st.lists(scalar, max_size=4))
key = st.text(min_size=0, max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(key, value, max_size=5), st.dictionaries(key, st.dictionaries(key, value, max_size=4),
                                                               max_size=3))
def test_toml_round_trip(plain, tables):
    data = {**plain, **{k: v for k, v in tables.items() if k not in plain}}
    assert tomllib.loads(toml_dumps(data, "a header\nover two lines")) == data


@pytest.mark.parametrize("text", ['a "quoted" word', "back\\slash", "tab\there", "new\nline", "cr\r", "\x00\x1f\x7f",
                                  "ünïcode ✓", "'single'", '"""', "#not a comment", "C:\\temp\\x"])
def test_strings_are_escaped(text):
    assert tomllib.loads(f"v = {toml_string(text)}")["v"] == text
    assert "\n" not in toml_string(text)


def test_odd_floats_and_keys():
    data = {"inf": math.inf, "ninf": -math.inf, "tiny": 1e-300, "big": 1e300, "neg0": -0.0, "a b": 1, "ü": 2.5,
            "": "empty key", "t": {"x.y": [1, 2.0, "3", True]}}
    back = tomllib.loads(toml_dumps(data))
    assert back == data and math.copysign(1, back["neg0"]) == -1
    assert math.isnan(tomllib.loads(toml_dumps({"n": math.nan}))["n"])


# --- study.toml -------------------------------------------------------------------------
FULL = RunConfig(suite="nb201", methods=("spos", "params"), seeds=(3, 1), budget="study", archs="sample:50",
                 gt=("cifar10_test_200ep", "cifar10_valid_12ep"), gt_file='gt "x".csv', arch_seed=7, device="cpu",
                 precision="bf16", copy_isomorphic=True, compare=("fairnas:spos",), executor="ray", jobs=3,
                 ray_address="auto", max_retries=5,
                 budget_overrides=(("epochs", 0.04), ("score_size", 128), ("bn_mode", "recal"), ("threads", 1)))


def test_every_config_field_has_a_place_in_the_file():
    assert set(STUDY_KEYS) | set(EXECUTION_KEYS) == {f.name for f in dataclasses.fields(RunConfig)}
    assert not set(STUDY_KEYS) & set(EXECUTION_KEYS)


def numbers_fields(cfg: RunConfig) -> dict:
    return {k: v for k, v in json_config(cfg).items() if k not in EXECUTION_FIELDS}


@pytest.mark.parametrize("cfg", [FULL, RunConfig()], ids=["full", "defaults"])
def test_study_toml_reads_back_as_the_same_config(cfg, tmp_path):
    path = tmp_path / STUDY_FILE
    path.write_text(study_toml(cfg))
    back = config_from_study(read_study(path), {})
    assert numbers_fields(back) == numbers_fields(cfg)
    assert (back.executor, back.jobs, back.max_retries, back.ray_address) == \
           (cfg.executor, cfg.jobs, cfg.max_retries, cfg.ray_address)
    assert back.budget_overrides == cfg.budget_overrides  # order and types kept (0.04 float, 128 int)


def test_study_toml_leaves_out_machine_paths():
    text = study_toml(dataclasses.replace(FULL, out="/x/run", data_dir="/data", cache_dir="/cache"))
    assert "/x/run" not in text and "/data" not in text and "/cache" not in text


def test_flags_override_file_and_set_merges():
    values = {"seeds": [0, 1], "budget": "study", "budget_overrides": {"epochs": 3, "threads": 2}, "jobs": 2}
    cfg = config_from_study(values, {"seeds": (5,), "budget_overrides": (("epochs", 1), ("lr", 0.1))},
                            defaults={"device": "cuda", "budget": "smoke"})
    assert cfg.seeds == (5,) and cfg.budget == "study" and cfg.jobs == 2 and cfg.device == "cuda"
    assert dict(cfg.budget_overrides) == {"epochs": 1, "threads": 2, "lr": 0.1}
    assert config_from_study({}, {}) == RunConfig()


def test_study_source_records_what_came_from_where(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("x")
    values = {"seeds": [0], "budget": "study", "budget_overrides": {"epochs": 3, "threads": 2}}
    src = study_source(path, values, {"seeds": (1,), "out": "o", "budget_overrides": (("epochs", 1), ("lr", 0.1))})
    assert src["path"] == str(path.resolve()) and len(src["sha256"]) == 64
    assert src["from_file"] == ["budget", "budget_overrides.threads"]
    assert src["overridden_by_flags"] == ["--seeds", "--set epochs"]


@pytest.mark.parametrize("text,needle", [
    ("seeds = [0, 1\n", "is not valid TOML"),
    ('sed = [0]\n', "unknown key 'sed' in the top level (did you mean 'seeds'?)"),
    ('[budget_override]\nepochs = 1\n', "unknown key 'budget_override' in the top level (did you mean 'budget_overrides'?)"),
    ('[execution]\njbos = 2\n', "unknown key 'jbos' in [execution] (did you mean 'jobs'?)"),
    ('jobs = 2\n', "'jobs' belongs in [execution], not the top level"),
    ('[execution]\nsuite = "nb201"\n', "'suite' belongs in the top level, not [execution]"),
    ('seeds = "0,1"\n', 'seeds = "0,1": give a list of integers'),
    ('seeds = [0, true]\n', "seeds = [0, true]: give a list of integers"),
    ('methods = "spos"\n', 'methods = "spos": give a list of method names'),
    ('arch_seed = 1.5\n', "arch_seed = 1.5: give an integer"),
    ('copy_isomorphic = "yes"\n', 'copy_isomorphic = "yes": give true or false'),
    ('precision = "fp16"\n', 'precision = "fp16": give "fp32" or "bf16"'),
    ('suite = 3\n', "suite = 3: give a suite name"),
    ('[budget_overrides]\nepochs = [1, 2]\n', "budget_overrides = {epochs = [1, 2]}: give a table of budget fields"),
    ('budget_overrides = 3\n', "budget_overrides = 3: give a table"),
    ('execution = 3\n', "execution = 3: give a table"),
    ('[execution]\njobs = "2"\n', 'jobs = "2": give an integer >= 1'),
])
def test_bad_study_files(text, needle, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_study(path)
    msg = str(info.value)
    assert needle in msg and str(path) in msg and "\n" not in msg


def test_missing_study_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_study(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a folder"):
        read_study(tmp_path)


# --- the CLI ----------------------------------------------------------------------------
@pytest.mark.parametrize("text,needle", [
    (None, "not found"),
    ("seeds = [0,\n", "is not valid TOML"),
    ('mehtods = ["spos"]\n', "unknown key 'mehtods' in the top level (did you mean 'methods'?)"),
    ('seeds = "0,1"\n', 'seeds = "0,1": give a list of integers'),
    ('suite = "nb202"\n', "unknown suite 'nb202' (did you mean 'nb201'?)"),
    ('[budget_overrides]\nepoch = 3\n', "unknown budget field 'epoch' (did you mean 'epochs'?)"),
    ('[execution]\nexecutor = "local"\nray_address = "auto"\n', "--ray-address needs --executor ray"),
])
def test_cli_bad_study_one_line_exit_2_nothing_written(text, needle, tmp_path, capsys):
    path = tmp_path / "study.toml"
    if text is not None:
        path.write_text(text)
    out = tmp_path / "o"
    assert main(["run", "--study", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error: ") and needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.fixture
def captured_run(monkeypatch, tmp_path):
    """`harness run` with the runner replaced: what config and study record it would run with."""
    seen = {}

    def fake_run(cfg, report_writer=None, study_file=None, **_):
        seen.update(cfg=cfg, study_file=study_file)
        run_dir = tmp_path / "fake-run"
        run_dir.mkdir(exist_ok=True)
        (run_dir / "manifest.json").write_text(json.dumps({"jobs": {}}))
        return run_dir

    monkeypatch.setattr(cli_run, "run", fake_run)
    return seen


def test_cli_flags_given_override_the_file_others_take_it(captured_run, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('suite = "nb201"\nmethods = ["params"]\nseeds = [4, 5]\nbudget = "study"\ndevice = "cpu"\n'
                    'copy_isomorphic = true\n[budget_overrides]\nepochs = 2\nthreads = 2\n'
                    '[execution]\njobs = 3\nreport = false\n')
    assert main(["run", "--study", str(path), "--seeds", "0", "--set", "epochs=1", "--set", "lr=0.5",
                 "--no-copy-isomorphic", "--out", str(tmp_path / "o")]) == 0
    cfg = captured_run["cfg"]
    assert cfg.methods == ("params",) and cfg.budget == "study" and cfg.jobs == 3 and cfg.report is False
    assert cfg.seeds == (0,) and cfg.copy_isomorphic is False and cfg.out == str(tmp_path / "o")
    assert dict(cfg.budget_overrides) == {"epochs": 1, "threads": 2, "lr": 0.5}
    assert cfg.progress is True and cfg.precision == "fp32"  # neither in the file nor on the line: the default
    src = captured_run["study_file"]
    assert src["overridden_by_flags"] == ["--seeds", "--copy-isomorphic", "--set epochs"]
    assert set(src["from_file"]) == {"suite", "methods", "budget", "device", "jobs", "report",
                                     "budget_overrides.threads"}


def test_cli_without_study_keeps_the_defaults(captured_run, tmp_path):
    assert main(["run", "--out", str(tmp_path / "o")]) == 0
    cfg = captured_run["cfg"]
    assert dataclasses.replace(cfg, out=None, device="cpu") == RunConfig()
    assert captured_run["study_file"] is None
    # a flag given with the default's value is still "given": it overrides a file's value
    path = tmp_path / "s.toml"
    path.write_text('budget = "study"\n')
    assert main(["run", "--study", str(path), "--budget", "smoke"]) == 0
    assert captured_run["cfg"].budget == "smoke" and captured_run["study_file"]["overridden_by_flags"] == ["--budget"]


# --- RUN/study.toml reruns the run ---------------------------------------------------------
TINY = ["channels=4", "cells=1", "resolution=8", "epochs=1", "batch_size=32", "score_size=128",
        "eval_batch_size=128", "threads=1", "checkpoint_every=0"]


@pytest.fixture
def fake_data(monkeypatch):
    def prepare(data_dir, cache_dir, resolution, score_size, device, progress=True, dataset="cifar10"):
        return tiny_data(resolution=resolution), {"source": "synthetic (test)", "splits": {}, "resolution": resolution}

    monkeypatch.setattr("harness.study.runner.prepare_data", prepare)


@pytest.mark.slow
def test_run_folder_study_toml_reproduces_the_run(fake_data, shared_dir, tmp_path, capsys):
    first, again = tmp_path / "first", tmp_path / "again"
    common = ["--data-dir", str(shared_dir), "--no-progress", "--no-report"]
    argv = ["run", "--suite", "nb201", "--methods", "params,spos", "--seeds", "0", "--archs", "sample:20",
            "--arch-seed", "3", "--device", "cpu", "--out", str(first)] + [a for s in TINY for a in ("--set", s)]
    assert main(argv + common) == 0
    study = first / STUDY_FILE
    assert read_study(study)["budget_overrides"]["channels"] == 4
    assert "study_file" not in json.loads((first / "manifest.json").read_text())

    assert main(["run", "--study", str(study), "--out", str(again)] + common) == 0
    for name in ("metrics.csv", "estimates.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(first / name), pd.read_csv(again / name))
    assert (again / STUDY_FILE).read_text() == study.read_text()
    man = json.loads((again / "manifest.json").read_text())
    assert man["config"]["arch_seed"] == 3 and man["config"]["budget_overrides"]["channels"] == 4
    assert man["study_file"]["path"] == str(study.resolve()) and man["study_file"]["overridden_by_flags"] == []
    assert "seeds" in man["study_file"]["from_file"]

    # the file resumes its own folder (same config), and the study record is no config difference
    before = json.loads((first / "jobs" / "spos-s0" / "result.json").read_text())["started"]
    assert main(["run", "--study", str(study), "--out", str(first), "--jobs", "1"] + common) == 0
    assert json.loads((first / "jobs" / "spos-s0" / "result.json").read_text())["started"] == before
    # a numbers flag over the file into the same folder is a different config
    assert main(["run", "--study", str(study), "--out", str(first), "--seeds", "1"] + common) == 2
    assert "different config (seeds)" in capsys.readouterr().err
