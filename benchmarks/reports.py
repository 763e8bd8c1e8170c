"""Benchmark: the whole report suite, every format, on a ~100,000-message store.

Builds the store with pstlib.synth + scan (or reuses ``--store``), then times ``run_reports("all")``
(each report and the whole suite) beside the floor: papermill executing an empty notebook and
nbconvert converting it, in this process. The last line is JSON: ``suite_s``, ``floor_s``,
``messages`` (and the per-report times).

    .venv/bin/python benchmarks/reports.py                      # 540 contacts x 2 years ~ 107k
    .venv/bin/python benchmarks/reports.py --contacts 60 --years 1 --formats html,xlsx
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import nbformat
import papermill
from nbconvert import HTMLExporter

from pstlib.importer.session import scan
from pstlib.reports import run_reports
from pstlib.reports.registry import FORMATS
from pstlib.store import Store, load
from pstlib.synth import synthesize


def build_store(root: Path, seed: int, contacts: int, years: float) -> Path:
    result = synthesize(root / "mail", seed=seed, contacts=contacts, years=years,
                        formats=("mbox",))
    path = root / "store.sqlite"
    with Store.open(path) as store:
        scan([result.mbox_path], store, mailbox_owner=result.owner_address)
    return path


def floor_s(root: Path) -> float:
    """papermill on an empty notebook (kernel start, one empty cell, shutdown) + nbconvert."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("")]
    source = root / "empty.ipynb"
    nbformat.write(nb, source)
    started = time.perf_counter()
    executed = papermill.execute_notebook(str(source), str(root / "empty-out.ipynb"),
                                          kernel_name="python3", progress_bar=False)
    HTMLExporter().from_notebook_node(executed)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="Reuse this store instead of building one.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--contacts", type=int, default=540)
    parser.add_argument("--years", type=float, default=2.0)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--out", type=Path, help="Keep the reports here (default: a temp dir).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="pstlib-bench-reports-") as tmp:
        root = Path(tmp)
        store = args.store or build_store(root, args.seed, args.contacts, args.years)
        with Store.open(store) as st:
            messages = len(load.load_messages(st, columns=["message_row_id"]))
        floor = floor_s(root)
        started = time.perf_counter()
        run = run_reports("all", store, args.out or root / "reports",
                          formats=tuple(args.formats.split(",")))
        suite = time.perf_counter() - started
        for report in run.reports:
            print(f"{report.name:<20} {report.duration_s:6.1f} s")
        print(f"{'suite':<20} {suite:6.1f} s   ({messages:,} messages, floor {floor:.1f} s "
              "per notebook)")
        print(json.dumps({"suite_s": round(suite, 2), "floor_s": round(floor, 2),
                          "messages": messages,
                          "reports_s": {r.name: round(r.duration_s, 2) for r in run.reports}}))


if __name__ == "__main__":
    main()
