"""report.html / report.pdf / compare on a tiny real run folder.

The run goes through the real runner (SPOS with diagnostics hooks, reference rows, a collapsing
method) on synthetic images at C=4, 8px, so it takes seconds; the ground truth is the real NB201
table. The HTML is rendered in headless Chromium (console errors must be absent, sections
present) and the PDF pages with pdftoppm (pages exist and are not blank). The document checks of
the PDF (page size, headings, word boxes, summary cells, escaping) are in test_report_document.py.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import report as R
from harness.engine.diagnostics import default_hooks_factory
from harness.core.errors import ConfigError
from harness.study.runner import run
from harness.study.spec import RunConfig
from harness.engine.method import METHODS, Collapsed, Method, MethodConfig, MethodEntry
from tests.conftest import tiny_data

# one tiny end-to-end run shared by the module (~10 s on an idle 2-core machine, most of it drawing)
pytestmark = pytest.mark.slow

TINY = (("channels", 4), ("cells", 1), ("resolution", 8), ("epochs", 1), ("batch_size", 32), ("score_size", 128),
        ("eval_batch_size", 128), ("threads", 1), ("checkpoint_every", 0))


class _AlwaysCollapses(Method):
    """Stands in for a supernet method whose outputs collapsed (the report must show it)."""

    Config = MethodConfig

    def fit(self, job):
        raise Collapsed("outputs are constant across the batch (test)")


def make_tiny_run(out: Path, shared: Path, methods=("spos", "params", "random", "test-collapse"),
                  seeds=(0, 1)) -> Path:
    def fake_data(data_dir, cache_dir, resolution, score_size, device, progress=True, dataset="cifar10"):
        return tiny_data(resolution=resolution), {"source": "synthetic (test)", "splits": {}, "resolution": resolution}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("harness.study.runner.prepare_data", fake_data)
        mp.setitem(METHODS, "test-collapse", MethodEntry(_AlwaysCollapses, ()))
        run_dir = run(RunConfig(suite="nb201", methods=tuple(methods), seeds=tuple(seeds), archs="sample:40",
                                out=str(out), data_dir=str(shared), progress=False, report=False,
                                budget_overrides=TINY), out_stream=open("/dev/null", "w"),
                     hooks_factory=default_hooks_factory)
    # artefacts methods may leave in their job folders (rendered without importing methods)
    job = run_dir / "jobs" / "spos-s0"
    rng = np.random.default_rng(0)
    pd.DataFrame({"arch_index": range(20), "code0": rng.random(20), "code1": rng.random(20)}).to_csv(
        job / "kshot_codes.csv", index=False)
    json.dump([{"round": i, "kept": 5 - i, "note": "<script>alert(1)</script>"} for i in range(3)],
              open(job / "senas_history.json", "w"))
    pd.DataFrame({"step": range(10), **{f"alpha_{j}": np.linspace(0, 1, 10) * j for j in range(3)}}).to_csv(
        job / "stc_alpha_history.csv", index=False)
    return run_dir


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_dir) -> Path:
    run_dir = make_tiny_run(tmp_path_factory.mktemp("run") / "tiny", shared_dir)
    R.write_report(run_dir)
    return run_dir


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip("chromium not installed (.ci/run installs it: apt-get install chromium)")
    return exe


def _chromium_run(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp / 'chrome-profile'}", "--enable-logging=stderr", "--v=0", *extra,
           page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def test_console_error_detection_sees_errors(tmp_path):
    """The check below can fail: a page with a script error is caught."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><script>console.error("boom"); undefinedFn();</script></body></html>')
    res = _chromium_run(page, tmp_path, "--dump-dom")
    assert any("undefinedFn" in line for line in _console_errors(res.stderr))


def test_report_files_and_figures(tiny_run):
    assert (tiny_run / "report.html").is_file() and (tiny_run / "report.pdf").is_file()
    figs = {p.name for p in (tiny_run / "figures").iterdir()}
    for name in ("tau_per_method", "tau_boxplot", "ranking_stability", "score_vs_gt", "topk_curves",
                 "drift_spos", "cosine_spos", "artefact_spos_kshot_codes_csv", "artefact_spos_stc_alpha_history_csv"):
        assert f"{name}.png" in figs and f"{name}.svg" in figs, name
    run = R.load_run(tiny_run)
    assert set(run.reference) == {"params", "random"}  # no diagnostics, no supernet
    assert "spos" in run.diagnostics and set(run.diagnostics["spos"]) == {0, 1}
    assert not [n for n in run.notes if "could not" in n], run.notes


def test_html_self_contained_and_escaped(tiny_run):
    text = (tiny_run / "report.html").read_text()
    assert "<script" not in text.lower().replace("&lt;script", "")  # the JSON artefact's script is escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert not re.search(r'(src|href)="(?!data:|#)', text)  # nothing fetched from outside the file
    assert text.count("data:image/png;base64,") >= 8
    assert "collapsed" in text and 'class="collapsed"' in text  # the collapsed jobs are shown as such
    assert 'class="failed"' in text  # and the collapsing method's verdict row
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["git_commit"] in text and manifest["harness_version"] in text


def test_report_with_linked_figures_references_existing_files(tiny_run, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run, run_dir)
    text = R.write_report(run_dir, embed_figures=False).read_text()
    assert "data:image/png" not in text
    linked = re.findall(r'src="(figures/[^"]+\.png)"', text)
    assert len(linked) >= 8 and all((run_dir / f).is_file() for f in linked)
    assert "fidelity_curves" in "".join(linked)  # the tiny run's SPOS jobs have a curve
    assert len(text) < len((tiny_run / "report.html").read_text()) / 3


def test_html_renders_in_chromium_without_console_errors(tiny_run, tmp_path):
    page = tiny_run / "report.html"
    dom = _chromium_run(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for sid, title in R.SECTIONS:
        assert f'id="{sid}"' in dom.stdout and title in dom.stdout, sid
    console = _console_errors(dom.stderr)
    assert not console, console
    shot = tmp_path / "shot.png"
    res = _chromium_run(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.std() > 0.02  # a rendered page, not a blank one


def test_pdf_pages_render_and_are_not_blank(tiny_run, tmp_path):
    exe = shutil.which("pdftoppm")
    if exe is None:
        pytest.skip("pdftoppm (poppler-utils) not installed")
    subprocess.run([exe, "-r", "30", "-png", str(tiny_run / "report.pdf"), str(tmp_path / "page")], check=True,
                   timeout=120)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 4
    import matplotlib.image as mpimg

    for p in pages:
        img = mpimg.imread(p)
        assert img.std() > 0.005, f"{p.name} is blank"


def test_report_without_ground_truth_skips_gt_plots(tiny_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("figures", "report.*"))
    m = json.loads((copy / "manifest.json").read_text())
    m["config"]["data_dir"] = str(tmp_path / "nowhere")
    (copy / "manifest.json").write_text(json.dumps(m))
    R.write_report(copy)
    figs = {p.stem for p in (copy / "figures").glob("*.png")}
    assert "tau_per_method" in figs and "score_vs_gt" not in figs and "ranking_stability" not in figs
    assert "ground truth unavailable" in (copy / "report.html").read_text()


def test_compare_flags_changes_beyond_seed_spread(tiny_run, tmp_path, capsys):
    other = tmp_path / "b"
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns("figures", "report.*"))
    s = pd.read_csv(other / "summary.csv")
    hit = (s["method"] == "spos") & (s["metric"] == "kendall_tau") & (s["subset"] == "scored")
    s.loc[hit, "mean"] -= 10 * s.loc[hit, "std"].max() + 0.2
    s.to_csv(other / "summary.csv", index=False)
    assert R.compare_runs(tiny_run, other, tmp_path / "cmp") == 0
    df = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    flagged = df[df["flag"].isin(["better", "WORSE"])]
    assert list(zip(flagged["method"], flagged["metric"], flagged["flag"])) == [("spos", "kendall_tau", "WORSE")]
    assert "WORSE" in (tmp_path / "cmp" / "compare.html").read_text()
    assert "1 of" in capsys.readouterr().out


def test_compare_refuses_other_suite(tiny_run, tmp_path):
    other = tmp_path / "b"
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns("figures", "report.*"))
    m = json.loads((other / "manifest.json").read_text())
    m["suite"] = "resnet-probe"
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="different suites"):
        R.compare_runs(tiny_run, other, tmp_path / "cmp")


def test_load_run_rebuilds_estimates_from_job_scores_when_the_file_was_left_out(tiny_run, tmp_path):
    """A committed study whose estimates.csv passed the 1 MiB file limit (tools/export_run.py leaves
    it out) loads the same rows from its jobs' scores.csv."""
    copy = tmp_path / "exported"
    shutil.copytree(tiny_run, copy)
    (copy / "estimates.csv").unlink()
    key = ["method", "seed", "subset", "arch_index"]
    full = R.load_run(tiny_run).estimates.sort_values(key).reset_index(drop=True)
    rebuilt = R.load_run(copy).estimates.sort_values(key).reset_index(drop=True)
    assert len(full) > 0 and list(rebuilt.columns) == list(full.columns)
    pd.testing.assert_frame_equal(rebuilt, full, check_dtype=False)


def test_load_run_rejects_non_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a run folder"):
        R.load_run(tmp_path)


def _run_with_noise(seed0, seed1, gt_column="standalone") -> R.RunData:
    from harness.groundtruth.table import gt_noise

    table = pd.DataFrame({"arch": [f"a{i}" for i in range(len(seed0))], "standalone_s0": seed0,
                          "standalone_s1": seed1})
    table["standalone"] = (table["standalone_s0"] + table["standalone_s1"]) / 2
    manifest = {"gt_quality": {"gt_noise": gt_noise(table)}}
    empty = pd.DataFrame()
    return R.RunData(Path("."), manifest, empty, empty, empty, {}, [], [], gt_column, None)


def test_gt_ceiling_is_the_tau_between_gt_seeds_and_a_low_one_is_said_plainly():
    agree = _run_with_noise([50, 51, 52, 53, 54], [50.5, 51.5, 52.5, 53.5, 54.5])
    c = R.gt_ceiling(agree)
    assert c["tau"] == pytest.approx(1.0) and not c["low"] and "do not rank" not in c["text"]
    shuffled = _run_with_noise([50, 51, 52, 53, 54], [54, 50, 53, 51, 52])  # tau = 0 between seeds
    c = R.gt_ceiling(shuffled)
    assert c["low"] and c["tau"] < 0.3 and "do not rank methods" in c["text"]
    # benchmark columns have no seeds to compare: no ceiling row
    assert R.gt_ceiling(_run_with_noise([1, 2, 3], [1, 2, 3], gt_column="cifar10_test_200ep")) is None


def test_tau_plot_draws_the_ceiling_line():
    from harness import plots as P

    per_seed = pd.DataFrame({"method": ["spos", "spos"], "seed": [0, 1], "value": [0.1, 0.2]})
    fig = P.tau_per_method(per_seed, ["spos"], [], ceiling=0.42)
    ys = [line.get_ydata()[0] for line in fig.axes[0].get_lines() if line.get_linestyle() == ":"]
    assert ys == [pytest.approx(0.42)]


def test_tau_by_gt_table_puts_benchmark_and_standalone_taus_side_by_side():
    rows = [{"method": "spos", "gt": g, "subset": "scored", "metric": "kendall_tau", "k": "", "mean": v, "std": 0.1,
             "ci_low": v - 0.2, "ci_high": v + 0.2, "n_seeds": 2}
            for g, v in (("cifar10_test_200ep", -0.05), ("standalone", 0.31))]
    summary = pd.DataFrame(rows)
    empty = pd.DataFrame()
    run = R.RunData(Path("."), {"gt_columns": ["cifar10_test_200ep", "standalone"]}, empty, summary, empty, {},
                    ["spos", "params"], ["params"], "cifar10_test_200ep", None)
    table = R.tau_by_gt_table(run)
    assert list(table.columns) == ["method", "tau vs cifar10_test_200ep", "tau vs standalone"]
    spos = table.iloc[0]
    assert spos["tau vs cifar10_test_200ep"].startswith("-0.05") and spos["tau vs standalone"].startswith("0.31")
    assert table.iloc[1]["tau vs standalone"] == "n/a"  # params has no rows in this summary
    run.manifest["gt_columns"] = ["cifar10_test_200ep"]
    assert R.tau_by_gt_table(run).empty
