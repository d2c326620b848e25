"""HTML to PDF: the report's PDF is the report's HTML, printed by headless Chromium.

Why Chromium and not WeasyPrint
    The PDF must be the *same document* as the HTML (same template, same CSS, the print rules in
    ``@media print`` / ``@page``). Both engines can do that. WeasyPrint needs Pango and its font
    stack from the system (Debian ``libpango-1.0-0``, ``libpangoft2-1.0-0``, ``libharfbuzz``...) plus
    a pip package; Chromium is one Debian package (``chromium``) that CI already installs to render
    the HTML in tests (``.ci/run``), lays the page out exactly as a browser shows it, supports CSS
    paged media (``@page`` size and margin boxes with ``counter(page)``, since Chromium 131),
    repeats table headers on every page and keeps table rows whole (``break-inside: avoid``). So
    one engine serves the browser check and the PDF, and nothing else is installed.

The command (headless, no sandbox for CI containers running as root, a fresh throw-away profile,
no network, no default header/footer: the page numbers come from the document's own ``@page``
margin boxes)::

    chromium --headless --no-sandbox --disable-gpu ... --no-pdf-header-footer --print-to-pdf=OUT file:///page.html

``--disable-pdf-tagging``: Chromium tags PDFs (an accessibility structure tree) by default, and for
a report's tables the tree is most of the file: the nb201-study report's text pages are 1.0 MB
tagged and 0.12 MB untagged, and committed baselines must stay under 1 MiB per file. (Chromium's
PDF outline, ``--generate-pdf-document-outline``, needs the tags, so the PDF has no bookmarks; its
table of contents links to the sections.)

When no Chromium is found, :func:`find_chromium` raises :class:`PdfEngineMissing` (a
``ConfigError``: one line, exit 2) naming the missing piece and how to install it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.core.errors import ConfigError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
ENGINE_ENV = "HARNESS_CHROMIUM"  # an explicit browser binary (overrides the search on PATH)
PRINT_TIMEOUT_S = 300
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio", "--hide-scrollbars")


class PdfEngineMissing(ConfigError):
    """No HTML-to-PDF engine on this machine: the message names it and how to install it."""


def find_chromium() -> str:
    """Path of the headless browser that prints the PDF, or PdfEngineMissing."""
    explicit = os.environ.get(ENGINE_ENV)
    if explicit:
        if shutil.which(explicit) or Path(explicit).is_file():
            return shutil.which(explicit) or explicit
        raise PdfEngineMissing(f"{ENGINE_ENV}={explicit} is not an executable; point it at a chromium binary "
                               "or unset it")
    for name in CHROMIUM_NAMES:
        exe = shutil.which(name)
        if exe:
            return exe
    raise PdfEngineMissing("report.pdf needs headless Chromium to print the HTML, and no chromium is on PATH; "
                           "install it (Debian: apt-get install chromium) or set HARNESS_CHROMIUM=/path/to/chromium")


def chromium_command(exe: str, profile: Path, *extra: str) -> list[str]:
    return [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra]


def html_to_pdf(html: Path, pdf: Path, *, timeout: float = PRINT_TIMEOUT_S) -> Path:
    """Print ``html`` (a file: relative links such as ``figures/x.png`` resolve beside it) to ``pdf``.

    Written through a temporary file and renamed, so a failed print leaves no half PDF. Any
    failure is a ConfigError with Chromium's last line of output."""
    exe = find_chromium()
    html, pdf = Path(html).resolve(), Path(pdf)
    tmp = pdf.with_name(pdf.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="harness-chromium-") as profile:
        cmd = chromium_command(exe, Path(profile), "--no-pdf-header-footer", "--disable-pdf-tagging",
                               f"--print-to-pdf={tmp.resolve()}", html.as_uri())
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            tmp.unlink(missing_ok=True)
            raise ConfigError(f"chromium did not print {html.name} within {timeout:.0f} s") from None
    if res.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tail = next((ln for ln in reversed((res.stderr or "").splitlines()) if ln.strip()), "no output")
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"chromium could not print {html.name} to PDF (exit {res.returncode}): {tail[:300]}")
    tmp.replace(pdf)
    return pdf
