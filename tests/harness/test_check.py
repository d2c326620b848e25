"""`harness check`: thresholds on a run's mean metrics; exit 0 pass, 1 fail, 2 malformed file."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.check import parse_thresholds, run_checks
from harness.cli import main as cli_main
from harness.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
GT = "cifar10_test_200ep"


def make_run(path: Path, values: dict[tuple[str, str, str], list[float]], statuses: dict[str, str] | None = None,
             suite: str = "nb201") -> Path:
    """A run folder holding just what `check` reads: manifest.json and metrics.csv.

    ``values``: (method, metric, k) -> one value per seed.
    """
    path.mkdir(parents=True, exist_ok=True)
    rows, jobs = [], {}
    for (method, metric, k), vals in values.items():
        for seed, v in enumerate(vals):
            status = (statuses or {}).get(f"{method}-s{seed}", "done")
            subset = "derived" if metric in ("picked_gt", "regret") else "scored"
            rows.append({"method": method, "seed": seed, "gt": GT, "subset": subset, "metric": metric, "k": k,
                         "value": v if status == "done" else float("nan"), "status": status})
            jobs[f"{method}-s{seed}"] = {"method": method, "seed": seed, "status": status}
    pd.DataFrame(rows).to_csv(path / "metrics.csv", index=False)
    (path / "manifest.json").write_text(json.dumps({"suite": suite, "gt_columns": [GT], "jobs": jobs}))
    return path


VALUES = {("params", "kendall_tau", ""): [0.52, 0.52], ("spos", "kendall_tau", ""): [-0.10, -0.06],
          ("spos", "high_low_tau", 0.1): [-0.2, 0.0], ("spos", "regret", ""): [3.0, 5.0]}


def thresholds(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "t.toml"
    p.write_text(text)
    return p


def check(run: Path, t: Path, baseline: Path | None = None) -> int:
    argv = ["check", str(run), "--thresholds", str(t)] + (["--baseline", str(baseline)] if baseline else [])
    return cli_main(argv)


def test_passes_when_measured_values_meet_thresholds(tmp_path, capsys):
    run = make_run(tmp_path / "run", VALUES)
    t = thresholds(tmp_path, '[nb201.params]\nkendall_tau = { min = 0.40 }\n'
                             '[nb201.spos]\nkendall_tau = { min = -0.5, max = 0.9 }\n"high_low_tau@0.1" = { min = -0.5 }\n')
    assert check(run, t) == 0
    out = capsys.readouterr().out
    assert "6/6 checks passed" in out and "FAIL" not in out


def test_fails_when_threshold_raised_above_measured_value(tmp_path, capsys):
    run = make_run(tmp_path / "run", VALUES)
    assert check(run, thresholds(tmp_path, "[nb201.params]\nkendall_tau = { min = 0.52 }\n")) == 0
    capsys.readouterr()
    # just above the measured mean of 0.52: must fail
    assert check(run, thresholds(tmp_path, "[nb201.params]\nkendall_tau = { min = 0.5201 }\n")) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 FAILED" in out


def test_max_drop_against_baseline(tmp_path):
    run = make_run(tmp_path / "run", VALUES)  # spos tau mean -0.08
    t = thresholds(tmp_path, "[nb201.spos]\nkendall_tau = { max_drop = 0.10 }\n")
    same = make_run(tmp_path / "base-same", {("spos", "kendall_tau", ""): [0.0, 0.0]})  # drop 0.08
    better = make_run(tmp_path / "base-better", {("spos", "kendall_tau", ""): [0.1, 0.1]})  # drop 0.18
    assert check(run, t, same) == 0
    assert check(run, t, better) == 1
    df = run_checks(run, t, better)
    assert df.loc[df["rule"] == "max_drop", "result"].item() == "FAIL"


def test_max_drop_follows_metric_direction(tmp_path):
    run = make_run(tmp_path / "run", VALUES)  # spos regret mean 4.0 (lower is better)
    t = thresholds(tmp_path, "[nb201.spos]\nregret = { max_drop = 1.0 }\n")
    assert check(run, t, make_run(tmp_path / "b1", {("spos", "regret", ""): [3.5, 3.5]})) == 0  # rose 0.5
    assert check(run, t, make_run(tmp_path / "b2", {("spos", "regret", ""): [2.0, 2.0]})) == 1  # rose 2.0
    assert check(run, t, make_run(tmp_path / "b3", {("spos", "regret", ""): [9.0, 9.0]})) == 0  # improved


def test_collapsed_seed_or_missing_method_fails(tmp_path):
    run = make_run(tmp_path / "run", VALUES, statuses={"spos-s1": "collapsed"})
    t = thresholds(tmp_path, "[nb201.spos]\nkendall_tau = { min = -0.5 }\n[nb201.kshot]\nkendall_tau = { min = 0 }\n")
    df = run_checks(run, t)
    jobs = df[df["metric"] == "jobs done"].set_index("method")
    assert jobs.loc["spos", "result"] == "FAIL" and jobs.loc["spos", "value"] == "1/2"
    assert jobs.loc["kshot", "result"] == "FAIL"
    assert check(run, t) == 1


@pytest.mark.parametrize("text, message", [
    ("[nb201.params\nkendall_tau = { min = 0.4 }\n", "malformed thresholds file"),
    ("[nb201.params]\nkendal_tau = { min = 0.4 }\n", "unknown metric 'kendal_tau'"),
    ("[nb201.params]\nkendall_tau = { minimum = 0.4 }\n", "unknown rule 'minimum'"),
    ("[nb201.params]\nkendall_tau = { min = \"high\" }\n", "must be a finite number"),
    ("[nb201.params]\nkendall_tau = 0.4\n", "inline table"),
    ("[nb201.params]\nhigh_low_tau = { min = 0.4 }\n", "needs a k"),
    ("[nb201.params]\n\"high_low_tau@1.5\" = { min = 0.4 }\n", "fraction"),
    ("[nb201.spos]\nkendall_tau = { max_drop = 0.1 }\n", "--baseline"),
    ("[other.params]\nkendall_tau = { min = 0.1 }\n", "no [nb201.<method>] tables"),
    ("", "holds no rules"),
])
def test_malformed_thresholds_exit_2_with_reason(tmp_path, capsys, text, message):
    run = make_run(tmp_path / "run", VALUES)
    t = thresholds(tmp_path, text)
    assert check(run, t) == 2
    assert message in capsys.readouterr().err


def test_missing_thresholds_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_thresholds(tmp_path / "nope.toml")


def test_shipped_smoke_thresholds_pass_on_the_committed_baseline():
    """The CI file parses, gates params with a min, spos with max_drop, and the baseline passes it."""
    t = REPO / ".ci" / "thresholds-smoke.toml"
    base = REPO / "reports" / "baselines" / "nb201-smoke"
    rules = parse_thresholds(t)
    kinds = {(r.method, r.kind) for r in rules}
    assert ("params", "min") in kinds and ("spos", "max_drop") in kinds
    df = run_checks(base, t, base)
    assert (df["result"] == "pass").all(), df.to_string()


# --- --exact: value-for-value reproduction of a baseline ----------------------------------
PLATFORM = {"cpu_model": "Test CPU (family 1, model 2)", "torch": "2.14.1+cpu"}
CONFIG = {"suite": "nb201", "methods": ["params", "spos"], "seeds": [0, 1], "archs": None, "gt": None,
          "arch_seed": 0, "device": "cpu", "precision": "fp32", "copy_isomorphic": False}


def with_platform(path: Path, platform=PLATFORM, config=CONFIG, budget=None) -> Path:
    man = json.loads((path / "manifest.json").read_text())
    man.update(platform=platform, config=config, budget=budget or {"name": "smoke", "epochs": 3})
    (path / "manifest.json").write_text(json.dumps(man))
    return path


def test_exact_comparison_same_and_one_value_changed(tmp_path, capsys):
    from harness.check import exact_comparison

    base = with_platform(make_run(tmp_path / "base", VALUES))
    run = with_platform(make_run(tmp_path / "run", VALUES))
    verdict, lines = exact_comparison(run, base)
    assert verdict == "same" and "identical" in lines[0]
    changed = dict(VALUES)
    changed[("spos", "kendall_tau", "")] = [-0.10, -0.06 + 1e-12]  # one ulp-scale change is a difference
    run2 = with_platform(make_run(tmp_path / "run2", changed))
    verdict, lines = exact_comparison(run2, base)
    assert verdict == "differs" and any("spos/1" in line for line in lines)
    thresholds = tmp_path / "t.toml"
    thresholds.write_text('[nb201.params]\nkendall_tau = { min = 0.5 }\n')
    assert cli_main(["check", str(run2), "--thresholds", str(thresholds), "--baseline", str(base), "--exact"]) == 1
    assert cli_main(["check", str(run), "--thresholds", str(thresholds), "--baseline", str(base), "--exact"]) == 0
    assert "all 8 metric values identical" in capsys.readouterr().out


def test_exact_comparison_skips_another_platform_and_refuses_another_command(tmp_path):
    from harness.check import exact_comparison

    base = with_platform(make_run(tmp_path / "base", VALUES))
    other_cpu = with_platform(make_run(tmp_path / "cpu", VALUES), platform={**PLATFORM, "cpu_model": "Other CPU"})
    verdict, lines = exact_comparison(other_cpu, base)
    assert verdict == "skipped" and "Other CPU" in lines[0] and "Test CPU" in lines[0]
    unrecorded = with_platform(make_run(tmp_path / "old", VALUES), platform={"torch": PLATFORM["torch"]})
    assert exact_comparison(base, unrecorded)[0] == "skipped"  # a baseline that predates cpu_model
    other_seeds = with_platform(make_run(tmp_path / "seeds", VALUES), config={**CONFIG, "seeds": [0]})
    verdict, lines = exact_comparison(other_seeds, base)
    assert verdict == "differs" and "seeds" in lines[0]
    other_budget = with_platform(make_run(tmp_path / "budget", VALUES), budget={"name": "smoke", "epochs": 4})
    assert exact_comparison(other_budget, base)[0] == "differs"
    # a baseline that predates a budget field (grad_clip) counts as its default, 5.0
    clip5 = with_platform(make_run(tmp_path / "clip5", VALUES), budget={"name": "smoke", "epochs": 3, "grad_clip": 5.0})
    assert exact_comparison(clip5, base)[0] == "same"
    clip1 = with_platform(make_run(tmp_path / "clip1", VALUES), budget={"name": "smoke", "epochs": 3, "grad_clip": 1.0})
    verdict, lines = exact_comparison(clip1, base)
    assert verdict == "differs" and "budget" in lines[0]


def test_exact_also_compares_with_the_baseline_made_on_this_platform(tmp_path, capsys):
    """The same command's baselines from two CPUs: --exact takes the one of this run's platform."""
    other = with_platform(make_run(tmp_path / "other", VALUES), platform={**PLATFORM, "cpu_model": "Other CPU"})
    here = with_platform(make_run(tmp_path / "here", VALUES))
    run = with_platform(make_run(tmp_path / "run", VALUES))
    thresholds = tmp_path / "t.toml"
    thresholds.write_text('[nb201.params]\nkendall_tau = { min = 0.5 }\n')
    args = ["check", str(run), "--thresholds", str(thresholds), "--baseline", str(other), "--exact"]
    assert cli_main(args) == 0
    assert "skipped (another platform" in capsys.readouterr().out
    assert cli_main([*args, "--exact-also", str(here)]) == 0
    assert f"exact comparison with {here}: all 8 metric values identical" in capsys.readouterr().out
    changed = dict(VALUES)
    changed[("params", "kendall_tau", "")] = [0.61, 0.61]
    differs = with_platform(make_run(tmp_path / "differs", changed))
    assert cli_main([*args[:-1], "--exact", "--exact-also", str(differs)]) == 1


def test_exact_needs_a_baseline(tmp_path, capsys):
    run = with_platform(make_run(tmp_path / "run", VALUES))
    thresholds = tmp_path / "t.toml"
    thresholds.write_text('[nb201.params]\nkendall_tau = { min = 0.5 }\n')
    assert cli_main(["check", str(run), "--thresholds", str(thresholds), "--exact"]) == 2
    assert "--exact compares with a baseline" in capsys.readouterr().err
