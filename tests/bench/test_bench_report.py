"""How long `harness report` takes on a large run, and how big report.html gets (issue 17; `make bench`).

A synthetic run folder of 20 methods x 5 seeds x all 15,625 NB201 architectures (scores = the real
ground truth plus noise, aggregated by the real aggregation; tests/harness/synthetic_run.py),
then the full report: figures, report.html with embedded figures, report.pdf when Chromium is
installed. Reported (benchmark.extra_info and printed): seconds for the HTML, for the PDF, the
HTML's and the PDF's size and page count. The issue's targets are < 1 minute and < 15 MB; the
size is asserted (it does not depend on the machine), the time only reported.
"""
from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from harness import report as R
from tests.harness.synthetic_run import make_synthetic_run

pytestmark = pytest.mark.bench

SUPERNETS = ("spos", "fairnas", "kshot", "pinas", "senas", "stcnas")
METHODS = (*SUPERNETS, *(f"{m}-v{i}" for m in SUPERNETS[:4] for i in (1, 2, 3)), "params", "flops")
assert len(METHODS) == 20


def test_bench_report_large_run(benchmark, tmp_path_factory, shared_dir):
    t0 = time.perf_counter()
    run_dir = make_synthetic_run(tmp_path_factory.mktemp("large") / "large", shared_dir, methods=METHODS,
                                 seeds=(0, 1, 2, 3, 4), n_archs=None, curve_points=8, curve_archs=300,
                                 paired_archs=300)
    setup_s = time.perf_counter() - t0
    timings = {}

    def render():
        t = time.perf_counter()
        R.write_report(run_dir, pdf=False)
        timings["html_s"] = time.perf_counter() - t

    benchmark.pedantic(render, rounds=1, iterations=1)
    html_mb = (run_dir / "report.html").stat().st_size / 2**20
    info = {"setup_s": round(setup_s, 1), "html_s": round(timings["html_s"], 1), "html_mb": round(html_mb, 2)}
    if shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome"):
        t = time.perf_counter()
        R.html_to_pdf(run_dir / "report.html", run_dir / "report.pdf")
        info["pdf_s"] = round(time.perf_counter() - t, 1)
        info["pdf_mb"] = round((run_dir / "report.pdf").stat().st_size / 2**20, 2)
        if shutil.which("pdfinfo"):
            out = subprocess.run(["pdfinfo", str(run_dir / "report.pdf")], capture_output=True, text=True).stdout
            info["pdf_pages"] = int(next(ln.split()[-1] for ln in out.splitlines() if ln.startswith("Pages:")))
    benchmark.extra_info.update(info)
    print(f"\nlarge report (20 methods x 5 seeds x 15,625 archs): {info}")
    assert html_mb < 15
