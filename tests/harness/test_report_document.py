"""report.html and report.pdf as one document (issue 17), on synthetic run folders.

The run folders are written by tests/harness/synthetic_run.py (the real aggregation over fake job
folders; no training), so a report with pending, collapsed and warning jobs takes seconds to set
up. Checks: Chromium renders the HTML without console errors with every section; the PDF (the
same HTML printed by Chromium) has one page size, every <h2> as a heading line, no word drawn
over another (pdftotext -bbox), every summary cell whole in its text, no blank page; names
holding `<script>` come out escaped; the verdict page says better / worse / not distinguishable;
`harness compare` writes compare.html / compare.pdf with the gates that change.
"""
from __future__ import annotations

import html as htmllib
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from harness import report as R
from harness.cli import main as cli_main
from harness.pdf import ENGINE_ENV, PdfEngineMissing, chromium_command, html_to_pdf
from tests.harness.synthetic_run import make_synthetic_run

pytestmark = pytest.mark.slow

EVIL_METHOD = "<script>x</script>"
EVIL_RUN = "run<script>alert(1)"
WARNING = "K-shot codes stayed near uniform: <b>max share 0.26</b> after 4 epochs"
METHODS = ("spos", EVIL_METHOD, "params", "fairnas")
# spos ranks well, the evil method badly (a clear paired 'worse' on 3 seeds), fairnas in between
NOISE = {"spos": 0.1, EVIL_METHOD: 50.0, "params": 0.5, "fairnas": 0.9}


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} not installed (.ci/run installs chromium and poppler-utils)")
    return exe


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("chromium not installed (.ci/run installs it: apt-get install chromium)")


@pytest.fixture(scope="module")
def doc_run(tmp_path_factory, shared_dir) -> Path:
    _chromium()
    run_dir = make_synthetic_run(tmp_path_factory.mktemp("doc") / EVIL_RUN, shared_dir, methods=METHODS,
                                 seeds=(0, 1, 2), n_archs=60, noise=NOISE,
                                 statuses={("fairnas", 2): "pending", ("params", 1): "collapsed"},
                                 warnings={("spos", 0): [WARNING]})
    R.write_report(run_dir, pdf=True)
    return run_dir


def _dump_dom(page: Path, tmp: Path) -> subprocess.CompletedProcess:
    cmd = chromium_command(_chromium(), tmp / "profile", "--enable-logging=stderr", "--v=0", "--dump-dom",
                           page.resolve().as_uri())
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def _pdf_text(pdf: Path, *args: str) -> str:
    return subprocess.run([_tool("pdftotext"), *args, str(pdf), "-"], capture_output=True, text=True,
                          check=True, timeout=120).stdout


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class _Cells(HTMLParser):
    """td cells (their lines, split at <br>) of the tables inside given section ids; h2 texts."""

    def __init__(self, sections=()):
        super().__init__(convert_charrefs=True)
        self.sections, self.section = set(sections), None
        self.cells, self.h2 = [], []
        self._cell = self._h2 = None

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.section = dict(attrs).get("id")
        elif tag == "td" and self.section in self.sections:
            self._cell = [""]
        elif tag == "br" and self._cell is not None:
            self._cell.append("")
        elif tag == "h2":
            self._h2 = ""

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(tuple(_squash(x) for x in self._cell if _squash(x)))
            self._cell = None
        elif tag == "h2" and self._h2 is not None:
            self.h2.append(_squash(self._h2))
            self._h2 = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[-1] += data
        if self._h2 is not None:
            self._h2 += data


def _parse(page: Path, sections=()) -> _Cells:
    p = _Cells(sections)
    p.feed(page.read_text())
    return p


def overlapping_words(bbox_html: str, tolerance: float = 0.3) -> list[tuple[str, str]]:
    """Pairs of words on one page of `pdftotext -bbox` output whose boxes overlap by more than
    ``tolerance`` points in both directions (a word drawn over another)."""
    pairs = []
    for page in bbox_html.split("<page ")[1:]:
        words = [(float(a), float(b), float(c), float(d), htmllib.unescape(w)) for a, b, c, d, w in re.findall(
            r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>', page)]
        words.sort()
        for i, (x0, y0, x1, y1, w) in enumerate(words):
            for X0, Y0, X1, Y1, W in words[i + 1:]:
                if X0 >= x1 - tolerance:
                    break
                if min(x1, X1) - max(x0, X0) > tolerance and min(y1, Y1) - max(y0, Y0) > tolerance:
                    pairs.append((w, W))
    return pairs


# --- the HTML -------------------------------------------------------------------------------------
def test_report_html_renders_in_chromium_with_every_section(doc_run, tmp_path):
    dom = _dump_dom(doc_run / "report.html", tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for sid, title in R.SECTIONS:
        assert f'id="{sid}"' in dom.stdout and f"<h2>{title}</h2>" in dom.stdout, sid
    assert not _console_errors(dom.stderr), _console_errors(dom.stderr)
    assert [t for _, t in R.SECTIONS] == _parse(doc_run / "report.html").h2  # the sections, in order


def test_console_error_detection_sees_errors(tmp_path):
    """The console check above can fail: a page with a script error is caught."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><script>console.error("boom"); undefinedFn();</script></body></html>')
    assert any("undefinedFn" in line for line in _console_errors(_dump_dom(page, tmp_path).stderr))


def test_names_with_script_tags_are_escaped_in_html_and_pdf(doc_run):
    text = (doc_run / "report.html").read_text()
    assert "<script" not in text.lower()
    assert "&lt;script&gt;x&lt;/script&gt;" in text and "run&lt;script&gt;alert(1)" in text
    assert "&lt;b&gt;max share 0.26&lt;/b&gt;" in text  # a warning's markup is text, not markup
    assert not re.search(r'(src|href)="(?!data:|#)', text)  # self-contained: nothing fetched
    pdf = _pdf_text(doc_run / "report.pdf")
    assert EVIL_METHOD in pdf and EVIL_RUN in pdf and "<b>max share 0.26</b>" in pdf  # drawn as text


def test_verdict_page_gives_paired_verdicts_status_and_warnings(doc_run):
    page1 = _pdf_text(doc_run / "report.pdf", "-f", "1", "-l", "1", "-layout")
    assert "Verdict" in page1 and "nb201" in page1 and "cifar10_test_200ep" in page1 and "GT ceiling" in page1
    lines = page1.splitlines()
    # a verdict row is two text lines (value, then verdict word / CI); keyed by the method name
    rows: dict[str, str] = {}
    for i, ln in enumerate(lines[:-1]):
        if ln.strip():
            rows.setdefault(ln.split()[0], ln + " " + lines[i + 1])
    assert "worse" in rows[EVIL_METHOD]  # 3 seeds, each far below SPOS: the paired test says worse
    assert "baseline" in rows["spos"]
    assert "not distinguishable (< 3 seeds)" in rows["params"]  # params s1 collapsed: 2 shared seeds
    assert "2/3 done" in page1 and "1 pending" in page1 and "1 collapsed" in page1 and "1 warning" in page1
    assert f"spos s0: {WARNING}" in _squash(page1)
    jobs = _parse(doc_run / "report.html", ["jobs"]).cells
    assert (WARNING,) in jobs  # and in the job table
    # the verdict's 'worse' is paired.csv's verdict, oriented method - baseline
    p = R.paired_lookup(R.read_table(doc_run / "paired.csv", R.TABLE_COLUMNS), EVIL_METHOD, "spos")
    assert p["word"] == "worse" and p["diff"] < 0 and p["ci_high"] < 0


def test_job_warnings_missing_key_is_no_warnings():
    assert R.job_warnings({"extra": {}}) == [] and R.job_warnings({}) == []
    assert R.job_warnings({"extra": {"warnings": ["a", "b"]}}) == ["a", "b"]


# --- the PDF --------------------------------------------------------------------------------------
def test_pdf_has_one_page_size_for_all_pages(doc_run):
    info = subprocess.run([_tool("pdfinfo"), "-f", "1", "-l", "999", str(doc_run / "report.pdf")],
                          capture_output=True, text=True, check=True).stdout
    sizes = re.findall(r"Page\s+\d+ size:\s+(.*)", info)
    assert len(sizes) >= 3 and len(set(sizes)) == 1, set(sizes)
    assert "(A4)" in sizes[0]


def test_every_h2_section_is_a_heading_line_in_the_pdf(doc_run):
    lines = {_squash(x) for x in _pdf_text(doc_run / "report.pdf").splitlines()}
    for title in _parse(doc_run / "report.html").h2:
        assert title in lines, title
    for title in _parse(doc_run / "report.html").h2:  # and the table of contents lists them, numbered
        assert any(re.fullmatch(rf"\d+\. {re.escape(title)}", x) for x in lines), title


def test_no_word_in_the_pdf_is_drawn_over_another(doc_run):
    assert overlapping_words(_pdf_text(doc_run / "report.pdf", "-bbox")) == []


def test_overlap_check_sees_overlapping_words(tmp_path):
    """The overlap check can fail: two words printed on top of each other are found."""
    page = tmp_path / "overlap.html"
    page.write_text('<html><body style="font-size:14pt"><div style="position:absolute;left:50px;top:50px">'
                    'clipped</div><div style="position:absolute;left:60px;top:52px">number</div></body></html>')
    pdf = html_to_pdf(page, tmp_path / "overlap.pdf")
    assert ("clipped", "number") in overlapping_words(_pdf_text(pdf, "-bbox"))


def test_every_summary_cell_occurs_whole_in_the_pdf_text(doc_run):
    text = _squash(_pdf_text(doc_run / "report.pdf", "-layout"))
    cells = _parse(doc_run / "report.html", ["verdict", "ranking"]).cells
    assert len(cells) > 40
    missing = [line for c in cells for line in c if line not in text]
    assert not missing, missing[:10]


def test_pdf_pages_are_not_blank(doc_run, tmp_path):
    subprocess.run([_tool("pdftoppm"), "-r", "30", "-png", str(doc_run / "report.pdf"), str(tmp_path / "p")],
                   check=True, timeout=120)
    pages = sorted(tmp_path.glob("p-*.png"))
    assert len(pages) >= 3
    for p in pages:
        assert mpimg.imread(p).std() > 0.005, f"{p.name} is blank"


# --- the engine -----------------------------------------------------------------------------------
def test_report_pdf_without_the_engine_is_one_line_and_exit_2(doc_run, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(doc_run, copy, ignore=shutil.ignore_patterns("report.*", "figures"))
    monkeypatch.setenv(ENGINE_ENV, str(tmp_path / "no-such-chromium"))
    assert cli_main(["report", str(copy), "--pdf"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "chromium" in err, err
    assert not (copy / "report.html").exists()  # nothing half-done
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium on PATH either
    monkeypatch.delenv(ENGINE_ENV)
    with pytest.raises(PdfEngineMissing, match="apt-get install chromium"):
        R.write_report(copy, pdf=True)
    R.write_report(copy)  # default: the HTML, and a note saying why there is no PDF
    assert "PDF not written" in (copy / "report.html").read_text() and not (copy / "report.pdf").exists()


# --- compare --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compared(doc_run, tmp_path_factory, shared_dir) -> tuple[Path, Path]:
    """Run B: the same synthetic run with SPOS ranking far worse; thresholds: a gate SPOS passes in A only."""
    root = tmp_path_factory.mktemp("cmp")
    run_b = make_synthetic_run(root / "b", shared_dir, methods=METHODS, seeds=(0, 1, 2), n_archs=60,
                               noise={**NOISE, "spos": 50.0},
                               statuses={("fairnas", 2): "pending", ("params", 1): "collapsed"})
    summary = json.loads(json.dumps(R.load_run(doc_run).summary.to_dict("records")))
    tau_a = next(r["mean"] for r in summary if r["method"] == "spos" and r["metric"] == "kendall_tau"
                 and r["subset"] == "scored" and r["k"] == "")
    thresholds = root / "thresholds.toml"
    thresholds.write_text(f'[nb201.spos]\nkendall_tau = {{ min = {tau_a - 0.1:.4f} }}\n'
                          '[nb201.fairnas]\nkendall_tau = { min = -1.0 }\n')
    out = root / "out"
    assert R.compare_runs(doc_run, run_b, out, thresholds=thresholds, pdf=True) == 0
    return out, thresholds


def test_compare_html_and_pdf_render_with_every_section(compared, tmp_path):
    out, _ = compared
    dom = _dump_dom(out / "compare.html", tmp_path)
    assert dom.returncode == 0 and not _console_errors(dom.stderr), dom.stderr[-2000:]
    for sid, title in R.COMPARE_SECTIONS:
        assert f'id="{sid}"' in dom.stdout and f"<h2>{title}</h2>" in dom.stdout, sid
    lines = {_squash(x) for x in _pdf_text(out / "compare.pdf").splitlines()}
    assert all(title in lines for _, title in R.COMPARE_SECTIONS)
    assert overlapping_words(_pdf_text(out / "compare.pdf", "-bbox")) == []
    assert "&lt;script&gt;x&lt;/script&gt;" in (out / "compare.html").read_text()
    assert "<script" not in (out / "compare.html").read_text().lower()


def test_compare_gives_paired_verdicts_and_the_gates_that_change(compared, capsys):
    out, _ = compared
    paired = R.pd.read_csv(out / "compare_paired.csv")
    spos = paired[paired["method"] == "spos"].iloc[0]
    assert spos["verdict"] == "B worse" and spos["diff_b_minus_a"] < 0 and spos["shared seeds"] == 3
    cells = _parse(out / "compare.html", ["gates"]).cells
    text = _squash((out / "compare.html").read_text())
    # jobs-done gates of spos (pass) and fairnas (one pending: FAIL in both), the two min-tau gates
    assert "1 of 4 gates differ" in text
    assert ("pass",) in cells and ("FAIL",) in cells
    page = _squash(_pdf_text(out / "compare.pdf", "-layout"))
    assert "Gates that pass in one run and fail in the other" in page


def test_compare_thresholds_for_another_suite_is_a_one_line_error(doc_run, tmp_path, capsys):
    bad = tmp_path / "t.toml"
    bad.write_text("[resnet-probe.spos]\nkendall_tau = { min = 0.1 }\n")
    assert cli_main(["compare", str(doc_run), str(doc_run), "--thresholds", str(bad), "--no-pdf",
                     "--out", str(tmp_path / "o")]) == 2
    assert "no [nb201.<method>] tables" in capsys.readouterr().err
