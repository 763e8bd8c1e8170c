"""Executed notebook → one self-contained HTML page (nbconvert's Python API, in-process).

The page uses pstlib's template (``templates/pstlib``: the lab template without any script fetched
from the internet), hides code cells (``exclude_input``), embeds every image, and carries a title,
a table of contents built from the headings, and the A4 print CSS the PDF is printed with.
:func:`external_references` lists anything in a page that would be fetched from the network; the
renderer refuses to write a page that has one.
"""

from __future__ import annotations

import html
import re
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import nbformat
from nbconvert import HTMLExporter

from pstlib.reports.errors import ReportError

TEMPLATES = Path(str(resources.files("pstlib.reports") / "templates"))
HEADING = re.compile(r'<h([1-3])\b[^>]*\bid="([^"]+)"[^>]*>(.*?)</h\1>', re.S)
TAG = re.compile(r"<[^>]+>")
EXTERNAL = re.compile(
    r"""(?:<script[^>]+src\s*=\s*["']?|<link[^>]+href\s*=\s*["']?|@import\s+(?:url\()?["']?"""
    r"""|<img[^>]+src\s*=\s*["']?|<iframe[^>]+src\s*=\s*["']?)(?:https?:)?//""",
    re.I,
)

REPORT_CSS = """
:root { --jp-content-font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif;
        --jp-ui-font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
body.pstlib-report { max-width: 1100px; margin: 0 auto; padding: 0 16px; }
.pstlib-title { border-bottom: 3px solid #1f5f8b; margin: 16px 0 8px; }
.pstlib-report-title { font-size: 26px; margin: 0 0 4px; color: #1f5f8b; }
.pstlib-subtitle { color: #555; margin: 0 0 8px; }
nav.pstlib-toc { background: #f5f7fa; border: 1px solid #dde3ea; padding: 8px 16px; margin: 8px 0; }
nav.pstlib-toc ol { margin: 4px 0; padding-left: 20px; }
nav.pstlib-toc li.pstlib-toc-3 { margin-left: 16px; font-size: 90%; }
.pstlib-meta { display: flex; gap: 24px; flex-wrap: wrap; }
table.pstlib-params { border-collapse: collapse; font-size: 12px; }
table.pstlib-params caption { text-align: left; font-weight: bold; }
table.pstlib-params th { text-align: left; padding: 1px 12px 1px 0; color: #555; }
table.pstlib-params td { padding: 1px 4px; }
table.pstlib-table { border-collapse: collapse; font-size: 12px; margin: 6px 0; }
table.pstlib-table caption { text-align: left; font-weight: bold; padding: 4px 0; }
table.pstlib-table th { background: #1f5f8b; color: white; padding: 3px 6px; text-align: left; }
table.pstlib-table td { border-bottom: 1px solid #e3e3e3; padding: 2px 6px;
                        word-break: break-word; max-width: 420px; }
table.pstlib-table tr:nth-child(even) td { background: #f7f9fb; }
.pstlib-more { font-size: 11px; color: #666; }
.pstlib-generated { color: #555; font-size: 12px; }
.pstlib-cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }
.pstlib-card { border: 1px solid #dde3ea; border-left: 4px solid #1f5f8b; padding: 6px 12px;
               min-width: 140px; background: #fbfcfd; }
.pstlib-card-value { font-size: 20px; font-weight: bold; color: #1f5f8b; }
.pstlib-card-label { font-size: 11px; color: #555; text-transform: capitalize; }
.jp-OutputArea-output img, img.pstlib-figure { max-width: 100%; height: auto; }
.jp-OutputPrompt, .jp-InputPrompt { display: none; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body.pstlib-report { max-width: none; padding: 0; }
  .jp-Cell, table.pstlib-table tr, img, .pstlib-card { break-inside: avoid; page-break-inside: avoid; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  table.pstlib-table { font-size: 9px; }
  nav.pstlib-toc { break-after: page; }
}
"""


_EXPORTERS = threading.local()


def _exporter() -> HTMLExporter:
    """This thread's exporter (built once per thread: its templates load in a tenth of a second,
    and an exporter is not meant to be shared between threads)."""
    exporter: HTMLExporter | None = getattr(_EXPORTERS, "exporter", None)
    if exporter is None:
        exporter = _EXPORTERS.exporter = _new_exporter()
    return exporter


def _new_exporter() -> HTMLExporter:
    exporter = HTMLExporter(  # type: ignore[no-untyped-call]
        template_name="pstlib", extra_template_basedirs=[str(TEMPLATES)])
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.embed_images = True
    return exporter


def table_of_contents(page: str) -> str:
    """A ``<nav>`` listing the page's level-2 and -3 headings (their ids as anchors)."""
    items = []
    for level, anchor, inner in HEADING.findall(page):
        if level == "1":
            continue
        text = html.unescape(TAG.sub("", inner)).replace("¶", "").strip()
        items.append(f'<li class="pstlib-toc-{level}"><a href="#{anchor}">'
                     f"{html.escape(text)}</a></li>")
    if not items:
        return ""
    return f'<nav class="pstlib-toc"><strong>Contents</strong><ol>{"".join(items)}</ol></nav>'


def external_references(page: str) -> list[str]:
    """Every script, stylesheet, image or frame the page would fetch from the network."""
    return [m.group(0) for m in EXTERNAL.finditer(page)]


def render_html(notebook: nbformat.NotebookNode | Path, *, title: str, subtitle: str = "") -> str:
    """The executed ``notebook`` as a self-contained HTML page (see the module docstring)."""
    if isinstance(notebook, Path):
        nb = nbformat.read(str(notebook), as_version=4)  # type: ignore[no-untyped-call]
    else:
        nb = notebook
    # the notebook's own first "# Title" cell repeats the page title: the template shows it
    cells = list(nb.cells)
    if cells and cells[0].cell_type == "markdown" and cells[0].source.lstrip().startswith("# "):
        first = cells[0].copy()
        first.source = "\n".join(first.source.splitlines()[1:]).strip()
        nb = nb.copy()
        nb.cells = [first, *cells[1:]]
    meta: dict[str, Any] = {"pstlib": {"title": title, "subtitle": subtitle, "css": REPORT_CSS}}
    page, _ = _exporter().from_notebook_node(nb, resources=meta)
    page = page.replace("<!--pstlib-toc-->", table_of_contents(page), 1)
    outside = external_references(page)
    if outside:
        raise ReportError(f"report page {title!r} would fetch {', '.join(outside[:3])}")
    return str(page)
