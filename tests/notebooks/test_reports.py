"""Every registered report, executed with papermill and rendered in every format, then checked:
no error cells, the key figures equal the library's, every file opens, the pages run nothing from
mail and fetch nothing from the internet, and Excel holds no formula from mail."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nbformat
import openpyxl
import pytest

from pstlib.importer.session import summarize
from pstlib.reports import REPORTS, NotebookFailedError, ReportRun, run_reports
from pstlib.reports.pdf import Browser
from pstlib.reports.render import external_references
from pstlib.reports.views import success_rate
from pstlib.store import Store
from tests.notebooks.conftest import HOSTILE

pytestmark = pytest.mark.slow
INJECTED = ("document.querySelectorAll('script').length + ':' + "
            "document.querySelectorAll('[onerror]').length + ':' + "
            "document.querySelectorAll('img:not([src^=\"data:\"])').length")


@pytest.fixture(scope="module")
def demo_run(demo_store: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> ReportRun:
    path, _ = demo_store
    return run_reports("all", path, tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="module")
def browser() -> Browser:
    with Browser() as b:
        yield b


def _png_not_blank(pdf: Path, tmp: Path) -> None:
    subprocess.run(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", str(pdf),
                    str(tmp / pdf.stem)], check=True)
    png = next(tmp.glob(f"{pdf.stem}*.png"))
    from matplotlib.image import imread

    pixels = imread(png)
    assert pixels.std() > 0.01, f"{pdf} first page is blank"


@pytest.mark.parametrize("name", list(REPORTS))
def test_report_renders_every_format(name: str, demo_run: ReportRun, browser: Browser,
                                     tmp_path: Path) -> None:
    out = next(o for o in demo_run.reports if o.name == name)
    assert out.error is None
    assert out.missing_tables == ()
    assert set(out.paths) == set(REPORTS[name].formats)
    page = out.paths["html"][0]
    text = page.read_text(encoding="utf-8")
    assert external_references(text) == []
    assert 'class="pstlib-toc"' in text and "Data freshness" in text
    assert "Traceback" not in text and "jp-OutputArea-error" not in text
    assert text.count("<img ") == text.count('alt="Chart'), "every figure has a text alternative"
    load = browser.load(page.as_uri(), expression=INJECTED)
    assert load.exceptions == [] and load.console_errors == [] and load.dialogs == []
    assert load.external_requests == []
    assert load.result == "0:0:0"
    book = openpyxl.load_workbook(out.paths["xlsx"][0])
    assert set(out.tables) <= set(book.sheetnames)
    doc = json.loads(out.paths["json"][0].read_text(encoding="utf-8"))
    assert set(doc["tables"]) == set(out.tables)
    assert len(out.paths["csv"]) == len(out.tables)
    _png_not_blank(out.paths["pdf"][0], tmp_path)


def test_key_figures_equal_the_library(demo_store: tuple[Path, str], demo_run: ReportRun) -> None:
    path, session = demo_store
    with Store.open(path) as store:
        summary = summarize(store, session)
    out = next(o for o in demo_run.reports if o.name == "executive-summary")
    doc = json.loads(out.paths["json"][0].read_text(encoding="utf-8"))
    figures = {r["metric"]: r["value"] for r in doc["tables"]["key_figures"]}
    assert figures["messages_read"] == summary.messages_read
    assert figures["errors"] == summary.errors_total
    assert figures["success_rate"] == pytest.approx(success_rate(summary))
    assert doc["session_id"] == session


def test_notebooks_are_committed_without_outputs() -> None:
    root = Path(__file__).resolve().parents[2] / "notebooks"
    for report in REPORTS.values():
        nb = nbformat.read(root / f"{report.notebook}.ipynb", as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
                assert "def " not in cell.source and "for " not in cell.source
                assert "groupby" not in cell.source


def test_hostile_mail_is_inert(hostile_store: Path, tmp_path: Path, browser: Browser) -> None:
    run = run_reports(["import-sessions", "senders", "dashboard"], hostile_store, tmp_path,
                      formats=("html", "xlsx", "csv"))
    for out in run.reports:
        page = out.paths["html"][0]
        text = page.read_text(encoding="utf-8")
        assert "<script>alert(1)</script>" not in text
        assert "<img src=x onerror" not in text
        load = browser.load(page.as_uri(), expression=INJECTED)
        assert load.dialogs == [] and load.exceptions == []
        assert load.result == "0:0:0"
        book = openpyxl.load_workbook(out.paths["xlsx"][0])
        for sheet in book.worksheets:
            for row in sheet.iter_rows():
                for cell in row:
                    assert cell.data_type != "f", (sheet.title, cell.coordinate, cell.value)
        for csv in out.paths["csv"]:
            for line in csv.read_text(encoding="utf-8").splitlines():
                assert not any(f",{a[:1]}" in line and a.startswith("=") for a in HOSTILE[2:]) \
                    or "'=HYPERLINK" in line or '"\'=HYPERLINK' in line
    senders = next(o for o in run.reports if o.name == "senders")
    escaped = senders.paths["html"][0].read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in escaped


def test_pseudonymised_outputs_hold_no_address(demo_store: tuple[Path, str],
                                                tmp_path: Path) -> None:
    path, _ = demo_store
    run = run_reports(["senders", "timeline"], path, tmp_path, pseudonymise=True,
                      formats=("html", "xlsx", "json", "csv"))
    with Store.open(path) as store:
        from pstlib.store import load

        senders = set(load.load_messages(store, columns=["sender_address"])["sender_address"]
                      .dropna().astype(str))
    for out in run.reports:
        for files in out.paths.values():
            for file in files:
                data = file.read_bytes()
                leaked = [a for a in senders if a.encode() in data]
                assert leaked == [], (file, leaked[:3])


def test_a_failing_notebook_names_the_cell(tmp_path: Path, demo_store: tuple[Path, str]) -> None:
    with pytest.raises(Exception) as caught:
        run_reports(["executive-summary"], demo_store[0], tmp_path, session_id="no-such-session",
                    formats=("json",))
    failure = caught.value.failures[0]  # type: ignore[attr-defined]
    assert isinstance(failure, NotebookFailedError)
    assert failure.notebook == "50-executive-summary.ipynb" and failure.cell_index is not None
    assert Path(str(failure.output)).exists()


def test_custom_report_from_a_spec(tmp_path: Path, demo_store: tuple[Path, str]) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "board"\ntitle = "Board pack"\nformats = ["html", "json"]\n'
                    'sections = ["Key figures", "Who matters most"]\n[filters]\ntop_n = 5\n',
                    encoding="utf-8")
    run = run_reports([], demo_store[0], tmp_path / "out", spec=spec)
    out = run.reports[0]
    assert out.name == "board" and set(out.paths) == {"html", "json"}
    text = out.paths["html"][0].read_text(encoding="utf-8")
    assert "Board pack" in text and "Who matters most" in text and "What to do next" not in text


@pytest.mark.corpus
def test_reports_on_the_pst_corpus(corpus_store: Path, tmp_path: Path) -> None:
    run = run_reports(["import-sessions", "executive-summary", "operations"], corpus_store,
                      tmp_path, formats=("html", "xlsx", "json"))
    assert all(o.error is None for o in run.reports)
    doc = json.loads((tmp_path / "import-sessions" / "import-sessions.json").read_text())
    assert doc["tables"]["errors"], "the corpus has bad files: errors are reported"
