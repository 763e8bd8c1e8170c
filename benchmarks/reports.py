"""Benchmark: the whole report suite, every format, on a ~100,000-message store.

Builds the store with pstlib.synth + scan (or reuses ``--store``), then times ``run_reports("all")``
(each report and the whole suite; ``--repeat`` runs it several times and reports the medians)
beside the floor: ``papermill`` executing an empty notebook and ``jupyter nbconvert`` converting it,
each as its own process, the way a notebook costs when every step is a command. It also prints
the CPU seconds the suite used (this process; the kernels and Chromium) and the machine's load, as
the machine may be shared. The last line is JSON: ``suite_s``, ``floor_s``, ``messages`` (and the
per-report times, the floor's two parts, the CPU and every suite time measured).

    .venv/bin/python benchmarks/reports.py                      # 540 contacts x 2 years ~ 107k
    .venv/bin/python benchmarks/reports.py --store /tmp/store.sqlite --repeat 3
    .venv/bin/python benchmarks/reports.py --contacts 60 --years 1 --formats html,xlsx
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

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


def floor_s(root: Path) -> tuple[float, float]:
    """Seconds for ``papermill`` on an empty notebook (kernel start, one empty cell, shutdown) and
    for ``jupyter nbconvert --to html`` on the result, each a process of its own."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("")]
    source, executed = root / "empty.ipynb", root / "empty-out.ipynb"
    nbformat.write(nb, source)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "papermill", "--no-progress-bar", "-k", "python3",
                    str(source), str(executed)], check=True, capture_output=True)
    papermill_s = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", str(executed)],
                   check=True, capture_output=True)
    return papermill_s, time.perf_counter() - started


def run_suite(store: Path, out: Path, formats: tuple[str, ...]) -> tuple[float, float, float,
                                                                          dict[str, float]]:
    """One run of every report: wall seconds, CPU seconds of this process and of its children
    (kernels, Chromium), and each report's seconds."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    run = run_reports("all", store, out, formats=formats)
    wall = time.perf_counter() - started
    own_after, children_after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)

    def cpu(before: resource.struct_rusage, after: resource.struct_rusage) -> float:
        return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime

    return (wall, cpu(own, own_after), cpu(children, children_after),
            {r.name: r.duration_s for r in run.reports})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="Reuse this store instead of building one.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--contacts", type=int, default=540)
    parser.add_argument("--years", type=float, default=2.0)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--out", type=Path, help="Keep the reports here (default: a temp dir).")
    parser.add_argument("--repeat", type=int, default=1, help="Runs of the suite (median shown).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="pstlib-bench-reports-") as tmp:
        root = Path(tmp)
        store = args.store or build_store(root, args.seed, args.contacts, args.years)
        with Store.open(store) as st:
            messages = len(load.load_messages(st, columns=["message_row_id"]))
        papermill_s, nbconvert_s = floor_s(root)
        machine_load = os.getloadavg()[0]
        runs = [run_suite(store, (args.out or root / "reports") / f"run-{i}",
                          tuple(args.formats.split(","))) for i in range(args.repeat)]
        suite = statistics.median(r[0] for r in runs)
        reports = {name: statistics.median(r[3][name] for r in runs) for name in runs[0][3]}
        own_cpu = statistics.median(r[1] for r in runs)
        kernel_cpu = statistics.median(r[2] for r in runs)
        for name, seconds in reports.items():
            print(f"{name:<20} {seconds:6.1f} s")
        print(f"{'suite':<20} {suite:6.1f} s   ({messages:,} messages; median of "
              f"{len(runs)}: {', '.join(f'{r[0]:.1f}' for r in runs)} s)")
        print(f"{'floor':<20} {papermill_s + nbconvert_s:6.1f} s   (papermill {papermill_s:.1f} s + "
              f"nbconvert {nbconvert_s:.1f} s, each a process)")
        print(f"{'cpu':<20} {own_cpu + kernel_cpu:6.1f} s   (this process {own_cpu:.1f} s, kernels "
              f"and Chromium {kernel_cpu:.1f} s; {os.cpu_count()} cores, load {machine_load:.1f})")
        print(json.dumps({"suite_s": round(suite, 2),
                          "floor_s": round(papermill_s + nbconvert_s, 2),
                          "messages": messages,
                          "reports_s": {k: round(v, 2) for k, v in reports.items()},
                          "floor_papermill_s": round(papermill_s, 2),
                          "floor_nbconvert_s": round(nbconvert_s, 2),
                          "cpu_s": round(own_cpu + kernel_cpu, 2),
                          "suite_runs_s": [round(r[0], 2) for r in runs],
                          "load": round(machine_load, 2)}))


if __name__ == "__main__":
    main()
