"""The report pipeline: papermill → nbconvert HTML → Chromium PDF → Excel, JSON, CSV → index.html.

Everything runs in this process but the kernels and one Chromium for the whole run. Each worker
(two by default: one per core) keeps one warm kernel for the run (:mod:`pstlib.reports.kernels`:
started once, reset between notebooks) and takes the next notebook as soon as it finished the
last; the finished notebook is rendered here meanwhile, by a pool of render threads: nbconvert's
Python API for the HTML, its PDF printed in its own tab of the shared browser, then the workbook,
JSON and CSV. The reports run in :func:`schedule`'s order, so the slow shared analysis (the gap
model) starts first and the reports that reuse it come last, when it is cached. A failing notebook
does not stop the others; :func:`run_reports` raises
:class:`~pstlib.reports.errors.ReportsFailedError` at the end, naming the notebook and cell, with
the failed executed notebook kept beside the outputs.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import os
import queue
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import papermill

from pstlib.reports import excel
from pstlib.reports.context import MANIFEST
from pstlib.reports.errors import NotebookFailedError, ReportError, ReportsFailedError
from pstlib.reports.kernels import WarmKernel
from pstlib.reports.pdf import Browser
from pstlib.reports.pseudonymise import KEY_VARIABLE
from pstlib.reports.registry import FORMATS, Report, load_spec, notebooks_dir, select_reports
from pstlib.reports.render import render_html

log = logging.getLogger(__name__)
WORKERS = 2
RENDERERS = 2


@dataclass(frozen=True)
class ReportOutput:
    """What one report of a run wrote (``paths``: format → files), or why it failed."""

    name: str
    title: str
    paths: Mapping[str, tuple[Path, ...]]
    duration_s: float
    tables: tuple[str, ...] = ()
    missing_tables: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class ReportRun:
    """A run of :func:`run_reports`: its folder, its index page and each report's outputs."""

    out_dir: Path
    index: Path
    reports: tuple[ReportOutput, ...]
    duration_s: float
    failures: tuple[str, ...] = field(default=())

    @property
    def paths(self) -> list[Path]:
        """Every file written, the index first."""
        return [self.index] + [p for r in self.reports for ps in r.paths.values() for p in ps]


def prune_sections(nb: nbformat.NotebookNode, sections: Sequence[str]) -> nbformat.NotebookNode:
    """Keep the cells before the first ``## `` heading and the sections whose heading is listed."""
    wanted = {s.strip().lower() for s in sections}
    kept, keep, started = [], True, False
    for cell in nb.cells:
        source = str(cell.source).lstrip()
        if cell.cell_type == "markdown" and source.startswith("## "):
            started = True
            keep = source.splitlines()[0][3:].strip().lower() in wanted
        if keep or not started:
            kept.append(cell)
    result: nbformat.NotebookNode = nbformat.from_dict(dict(nb))  # type: ignore[no-untyped-call]
    result.cells = kept
    return result


def schedule(reports: Sequence[Report]) -> list[Report]:
    """The order to run ``reports`` in: for each slow shared analysis (``Report.analyses``), the
    first report that uses it (it computes it, while the other workers run the reports that use
    none), then the reports that use none, then the others that use one (they find it cached);
    within the last two groups the reports with the most tables (the most to compute and write)
    first."""
    first: list[Report] = []
    for analysis in dict.fromkeys(a for r in reports for a in r.analyses):
        user = next(r for r in reports if analysis in r.analyses)
        if user not in first:
            first.append(user)
    rest = sorted((r for r in reports if r not in first), key=lambda r: -len(r.tables))
    return first + [r for r in rest if not r.analyses] + [r for r in rest if r.analyses]


def _execute(kernel: WarmKernel, report: Report, notebook: Path, parameters: dict[str, Any],
             work: Path, failed_copy: Path) -> nbformat.NotebookNode:
    source: Any = nbformat.read(str(notebook), as_version=4)  # type: ignore[no-untyped-call]
    if report.sections:
        source = prune_sections(source, report.sections)
    work.mkdir(parents=True, exist_ok=True)
    output = work / f"{report.name}.ipynb"
    try:
        # (no cwd: papermill changes the process's directory for it, which threads share)
        return kernel.execute(source, str(output), parameters)
    except papermill.PapermillExecutionError as err:
        failed_copy.parent.mkdir(parents=True, exist_ok=True)
        if output.exists():
            shutil.copyfile(output, failed_copy)
        raise NotebookFailedError(report.name, notebook.name, err.cell_index, err.ename,
                                  err.evalue, str(failed_copy)) from err


def _tables(tables_dir: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    manifest = tables_dir / MANIFEST
    entries = json.loads(manifest.read_text(encoding="utf-8")) if manifest.exists() else []
    tables = {e["name"]: pd.read_pickle(tables_dir / f"{e['name']}.pkl") for e in entries}
    meta_path = tables_dir / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    return tables, meta


@dataclass(frozen=True)
class _Job:
    """One report of a run: where its notebook, parameters, work files and outputs are."""

    report: Report
    notebook: Path
    parameters: dict[str, Any]
    work: Path
    target: Path
    formats: tuple[str, ...]

    @classmethod
    def of(cls, report: Report, parameters: Mapping[str, Any], nb_dir: Path, out_dir: Path,
           work: Path, formats: Sequence[str]) -> _Job:
        params = {**report.parameters, **parameters,
                  "tables_dir": str(work / report.name / "tables"),
                  "cache_dir": str(work / "cache")}
        return cls(report, nb_dir / f"{report.notebook}.ipynb", params, work / report.name,
                   out_dir / report.name, tuple(f for f in formats if f in report.formats))

    def execute(self, kernel: WarmKernel) -> nbformat.NotebookNode:
        return _execute(kernel, self.report, self.notebook, self.parameters, self.work,
                        self.target / f"{self.report.name}.failed.ipynb")

    def render(self, nb: nbformat.NotebookNode, browser: Browser | None,
               started: float) -> ReportOutput:
        """Write the executed notebook's outputs in every format asked for."""
        report, target, formats = self.report, self.target, self.formats
        tables, meta = _tables(self.work / "tables")
        about = {"report": report.name, "title": report.title, **meta}
        paths: dict[str, tuple[Path, ...]] = {}
        target.mkdir(parents=True, exist_ok=True)
        subtitle = f"{report.description} Session {meta.get('session_id', '')}."
        if "html" in formats or "pdf" in formats:
            page = target / f"{report.name}.html"
            page.write_text(render_html(nb, title=report.title, subtitle=subtitle),
                            encoding="utf-8")
            if "html" in formats:
                paths["html"] = (page,)
            if "pdf" in formats and browser is not None:
                paths["pdf"] = (browser.print_pdf(page, target / f"{report.name}.pdf"),)
            if "html" not in formats:
                page.unlink()
        if "xlsx" in formats:
            paths["xlsx"] = (excel.write_workbook(tables, target / f"{report.name}.xlsx",
                                                  about=about),)
        if "json" in formats:
            paths["json"] = (excel.write_json(tables, target / f"{report.name}.json",
                                              about=about),)
        if "csv" in formats:
            paths["csv"] = tuple(excel.write_csv(frame, target / "csv" / f"{name}.csv")
                                 for name, frame in tables.items())
        missing = tuple(t for t in report.tables if t not in tables)
        if missing:
            log.warning("report %s recorded no table(s) %s", report.name, ", ".join(missing))
        return ReportOutput(report.name, report.title, paths, time.perf_counter() - started,
                            tuple(tables), missing)


def _run_jobs(jobs: Sequence[_Job], workers: int,
              browser: Browser | None) -> list[Future[ReportOutput]]:
    """Execute ``jobs`` in order on ``workers`` warm kernels, rendering each as it finishes; the
    futures of their outputs, in the order of ``jobs``."""
    pending: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(jobs)):
        pending.put(index)
    results: list[Future[ReportOutput]] = [Future() for _ in jobs]

    def relay(index: int, rendered: Future[ReportOutput]) -> None:
        error = rendered.exception()
        if error is None:
            results[index].set_result(rendered.result())
        else:
            results[index].set_exception(error)

    def work(render: ThreadPoolExecutor) -> None:
        kernel: WarmKernel | None = None
        try:
            while True:
                try:
                    index = pending.get_nowait()
                except queue.Empty:
                    return
                job, started = jobs[index], time.perf_counter()
                try:
                    if kernel is None:
                        kernel = WarmKernel()
                    nb = job.execute(kernel)
                except Exception as err:
                    results[index].set_exception(err)
                    continue
                rendered = render.submit(job.render, nb, browser, started)
                rendered.add_done_callback(functools.partial(relay, index))
        finally:
            if kernel is not None:
                kernel.shutdown()

    count = max(1, min(workers, len(jobs)))
    with ThreadPoolExecutor(max_workers=RENDERERS, thread_name_prefix="render") as render, \
            ThreadPoolExecutor(max_workers=count, thread_name_prefix="kernel") as pool:
        for future in [pool.submit(work, render) for _ in range(count)]:
            future.result()
    return results


def write_index(run_dir: Path, outputs: Sequence[ReportOutput], *, store: str,
                parameters: Mapping[str, Any]) -> Path:
    """``index.html``: one row per report with links to its files (escaped, self-contained)."""
    rows = []
    for out in outputs:
        links = " ".join(
            f'<a href="{html.escape(p.relative_to(run_dir).as_posix())}">'
            f"{html.escape(fmt if len(ps) == 1 else p.stem)}</a>"
            for fmt, ps in out.paths.items() for p in ps)
        status = (f'<span class="failed">failed: {html.escape(out.error)}</span>' if out.error
                  else "ok")
        rows.append(f"<tr><td>{html.escape(out.title)}</td><td>{status}</td>"
                    f"<td>{out.duration_s:.1f} s</td><td>{links}</td></tr>")
    shown = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in parameters.items())
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/><title>pstlib reports'
        "</title><style>body{font-family:'DejaVu Sans',Arial,sans-serif;margin:24px;}"
        "table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd;"
        "text-align:left}th{color:#555}.failed{color:#c23b3b}</style></head><body>"
        f"<h1>pstlib reports</h1><p>Generated {html.escape(generated)} from the store "
        f"{html.escape(Path(store).name if '://' not in store else 'database')}.</p>"
        f"<table>{shown}</table><h2>Reports</h2><table><tr><th>Report</th><th>Status</th>"
        f"<th>Time</th><th>Files</th></tr>{''.join(rows)}</table></body></html>"
    )
    index = run_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def run_reports(
    names: list[str] | str,
    store: str | Path,
    out_dir: str | Path,
    *,
    session_id: str | None = None,
    formats: Sequence[str] = FORMATS,
    pseudonymise: bool = False,
    spec: str | Path | Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    notebooks: str | Path | None = None,
    workers: int = WORKERS,
) -> ReportRun:
    """Run the named reports (``"all"``: every registered one; with ``spec``, also the custom
    report it describes) on ``store`` into ``out_dir``; return what was written.

    ``parameters`` are extra notebook parameters (``start_date``, ``contacts``...). A report
    produces the ``formats`` asked for that it supports. Raises ReportsFailedError (after writing
    everything else and the index) when a notebook fails.
    """
    started = time.perf_counter()
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ReportError(f"unknown format(s) {', '.join(unknown)} (known: {', '.join(FORMATS)})")
    reports = select_reports(names) if names else []
    if spec is not None:
        reports.append(load_spec(spec))
    if not reports:
        raise ReportError("no report to run")
    nb_dir = notebooks_dir(notebooks)
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    store_text = str(store)
    if "://" not in store_text:
        store_text = str(Path(store_text).resolve())
    params: dict[str, Any] = {"store": store_text, "session_id": session_id,
                              "pseudonymise": pseudonymise, **(parameters or {})}
    if pseudonymise:
        # one key for every kernel of the run (inherited from this process), never a parameter
        os.environ.setdefault(KEY_VARIABLE, secrets.token_hex(16))
    outputs: list[ReportOutput] = []
    failures: list[NotebookFailedError | ReportError] = []
    needs_pdf = any("pdf" in formats and "pdf" in r.formats for r in reports)
    with tempfile.TemporaryDirectory(prefix="pstlib-reports-") as tmp:
        work = Path(tmp)
        jobs = [_Job.of(r, params, nb_dir, run_dir, work, formats) for r in schedule(reports)]
        browser = Browser() if needs_pdf else None
        try:
            done = dict(zip((j.report.name for j in jobs), _run_jobs(jobs, workers, browser),
                            strict=True))
        finally:
            if browser is not None:
                browser.close()
        for report in reports:  # (outputs in the order asked for)
            try:
                outputs.append(done[report.name].result())
            except Exception as err:
                failure = err if isinstance(err, ReportError) else ReportError(
                    f"report {report.name}: {type(err).__name__}: {err}")
                failures.append(failure)
                outputs.append(ReportOutput(report.name, report.title, {}, 0.0,
                                            error=str(failure)))
    shown = {k: v for k, v in params.items() if k != "store"}
    index = write_index(run_dir, outputs, store=store_text, parameters=shown)
    run = ReportRun(run_dir, index, tuple(outputs), time.perf_counter() - started,
                    tuple(str(f) for f in failures))
    if failures:
        raise ReportsFailedError(run, failures)
    return run
