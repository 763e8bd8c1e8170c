"""Scan benchmark: how fast pstlib reads PSTs and mbox, against Debian's readpst, and how fast the store writes.

Each phase runs in its own child process so that its peak RSS is its own. Figures:

* PST messages/s: every corpus PST/OST read the way ``pstlib scan`` reads them
  (:func:`pstlib.sources.parallel.read_files`), the list repeated until at least ``--min-items`` items
  were read (each file is small). Twice: with one worker process per CPU (``pst_processes``, the
  headline ``pst_messages_per_s``), and in one process (``pst_messages_per_s_1proc``).
* readpst messages/s: Debian's ``readpst -r`` converting the same files the same number of times (a peer
  doing similar work: it decodes every item and writes it out), rated by the same item count.
  readpst is single-threaded: compare it with the 1-process rate for the per-core figure.
* mbox messages/s: a synthetic mbox of ``--mbox-messages`` messages read with pstlib's mbox reader.
* store rows/s: the same mbox's messages written to a fresh SQLite store through the batched writer.
* peak RSS: the largest peak resident set of any reading process (phases and reader workers), in MB.

Usage: python benchmarks/scan.py [--corpus ../shared/corpus] [--min-items 10000] [--mbox-messages 100000] [--seed 1]
[--parts pst,readpst,mbox,store] [--repeat 3]
The last line is JSON with keys pst_messages_per_s, readpst_messages_per_s, mbox_messages_per_s,
peak_rss_mb, store_rows_per_s, and pst_processes, pst_messages_per_s_1proc (with ``--parts``, only
the keys of the parts run, and ``store_cpu_s_per_row`` for the store; ``readpst`` needs ``pst``).
``--repeat N`` (3 by default) runs the store phase N times (each in a fresh process and store) and
reports the best wall rate, every run printed: the first run after the mbox is written often
shares the disk with that file's write-back (seen: 30 CPU us/row against 18 in the runs after).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _pst_files(corpus: Path) -> list[Path]:
    from pstlib.errors import SourceError
    from pstlib.sources import open_source

    readable = []
    for path in sorted((corpus / "pst").iterdir()):
        try:
            open_source(path).close()
        except SourceError:
            continue  # the truncated copies: nothing to rate
        readable.append(path)
    return readable


def _read_psts(files: list[str], passes: int, processes: int) -> dict[str, Any]:
    from pstlib.sources.parallel import FileItems, read_files

    items = 0
    cpu_start = time.process_time() + _children_cpu_s()
    start = time.perf_counter()
    for event in read_files([Path(n) for n in files] * passes, processes=processes):
        if isinstance(event, FileItems):
            items += len(event.results)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() + _children_cpu_s() - cpu_start
    # the workers' peak (ru_maxrss of waited-for children; an upper bound: it counts the
    # parent's resident set at fork, before the exec)
    workers_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"items": items, "seconds": elapsed, "cpu_s": cpu, "workers_rss_mb": workers_mb}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _read_mbox(path: str) -> dict[str, Any]:
    from pstlib.sources import open_source

    start = time.perf_counter()
    source = open_source(Path(path))
    items = sum(1 for _ in source)
    source.close()
    return {"items": items, "seconds": time.perf_counter() - start}


def _write_store(path: str, store_path: str) -> dict[str, Any]:
    from pstlib.models import Message
    from pstlib.sources import open_source
    from pstlib.store import Store
    from pstlib.store.schema import Outcome

    source = open_source(Path(path))
    messages = [m for m in source if isinstance(m, Message)]
    source.close()
    with Store.open(store_path) as store:
        session_id = store.begin_session("assess", {"benchmark": "scan"})
        source_id = store.add_source(session_id, path, "mbox", Path(path).stat().st_size, None)
        cpu_start = time.process_time()
        start = time.perf_counter()
        with store.writer(session_id) as writer:
            for message in messages:
                writer.add_message(source_id, message, Outcome.READ)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    return {"items": len(messages), "seconds": elapsed, "cpu_s": cpu}


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(target: Any, args: tuple[Any, ...], queue: Any) -> None:
    result = target(*args)
    result["peak_rss_mb"] = _peak_rss_mb()
    queue.put(result)


def _in_child(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, args, queue))
    proc.start()
    result: dict[str, Any] = queue.get()
    proc.join()
    return result


def _readpst(files: list[Path], passes: int) -> tuple[float, float] | None:
    """readpst's wall seconds and CPU seconds (its processes' user + system time)."""
    if shutil.which("readpst") is None:
        print(
            "readpst not found (apt-get install pst-utils): peer rate not measured", file=sys.stderr
        )
        return None
    with tempfile.TemporaryDirectory() as out:
        cpu_start = _children_cpu_s()
        start = time.perf_counter()
        for _ in range(passes):
            for path in files:
                subprocess.run(
                    ["readpst", "-q", "-r", "-o", out, str(path)],
                    check=False,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        return time.perf_counter() - start, _children_cpu_s() - cpu_start


PARTS = ("pst", "readpst", "mbox", "store")


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"parts are among {', '.join(PARTS)}, not {text!r}")
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--min-items", type=int, default=10_000)
    parser.add_argument("--mbox-messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--processes", type=int, default=0, help="PST reader processes (default: one per CPU)"
    )
    parser.add_argument(
        "--parts",
        type=_parts,
        default=PARTS,
        help="comma-separated phases to run (default: all): " + ",".join(PARTS),
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="store phase runs (the best wall rate is reported)"
    )
    args = parser.parse_args()
    parts: tuple[str, ...] = args.parts
    figures: dict[str, Any] = {}
    peaks: list[float] = []

    if "pst" in parts:
        from pstlib.sources.parallel import default_processes

        files = _pst_files(args.corpus)
        names = [str(f) for f in files]
        one_pass = _in_child(_read_psts, names, 1, 1)["items"]
        passes = max(1, -(-args.min_items // max(one_pass, 1)))
        processes = args.processes or default_processes(len(files) * passes)
        pst1 = _in_child(_read_psts, names, passes, 1)
        pst = _in_child(_read_psts, names, passes, processes) if processes > 1 else pst1
        pst1_rate = pst1["items"] / pst1["seconds"]
        pst_rate = pst["items"] / pst["seconds"]
        print(
            f"PST     {pst1['items']:>8} items ({len(files)} files x {passes}) "
            f"in {pst1['seconds']:.2f} s = {pst1_rate:,.0f}/s with 1 process, "
            f"{pst1['cpu_s'] / pst1['items'] * 1e3:.2f} CPU ms/item, "
            f"peak RSS {pst1['peak_rss_mb']:.0f} MB"
        )
        print(
            f"PST     {pst['items']:>8} items in {pst['seconds']:.2f} s = {pst_rate:,.0f}/s "
            f"with {processes} reader processes (one file each at a time), "
            f"{pst['cpu_s'] / pst['items'] * 1e3:.2f} CPU ms/item in all processes, peak RSS "
            f"{max(pst['peak_rss_mb'], pst['workers_rss_mb']):.0f} MB"
        )
        figures["pst_messages_per_s"] = round(pst_rate, 1)
        peaks += [pst1["peak_rss_mb"], pst["peak_rss_mb"], pst["workers_rss_mb"]]

        if "readpst" in parts:
            readpst = _readpst(files, passes)
            readpst_rate = pst["items"] / readpst[0] if readpst else None
            if readpst:
                print(
                    f"readpst {pst['items']:>8} items in {readpst[0]:.2f} s = "
                    f"{readpst_rate:,.0f}/s (1 process: readpst is single-threaded), "
                    f"{readpst[1] / pst['items'] * 1e3:.2f} CPU ms/item"
                )
            figures["readpst_messages_per_s"] = round(readpst_rate, 1) if readpst_rate else None

    if "mbox" in parts or "store" in parts:
        from pstlib.synth import synthesize

        with tempfile.TemporaryDirectory() as tmp:
            # about 83 messages per contact-year at the generator's defaults (400 x 3 years ~ 100k)
            contacts = max(10, round(args.mbox_messages / 250))
            made = synthesize(
                Path(tmp) / "mail", seed=args.seed, contacts=contacts, years=3.0, formats=("mbox",)
            )
            if "mbox" in parts:
                mbox = _in_child(_read_mbox, str(made.mbox_path))
                mbox_rate = mbox["items"] / mbox["seconds"]
                print(
                    f"mbox    {mbox['items']:>8} items in {mbox['seconds']:.2f} s = "
                    f"{mbox_rate:,.0f}/s, peak RSS {mbox['peak_rss_mb']:.0f} MB"
                )
                figures["mbox_messages_per_s"] = round(mbox_rate, 1)
                peaks.append(mbox["peak_rss_mb"])
            if "store" in parts:
                best: dict[str, Any] | None = None
                for run in range(max(1, args.repeat)):
                    db = Path(tmp) / f"bench{run}.sqlite"
                    store = _in_child(_write_store, str(made.mbox_path), str(db))
                    rate = store["items"] / store["seconds"]
                    print(
                        f"store   {store['items']:>8} rows  in {store['seconds']:.2f} s = "
                        f"{rate:,.0f}/s ({store['items'] / store['cpu_s']:,.0f} per CPU "
                        f"second, {store['cpu_s'] / store['items'] * 1e6:.1f} CPU us/row)"
                    )
                    if best is None or rate > best["items"] / best["seconds"]:
                        best = store
                assert best is not None
                figures["store_rows_per_s"] = round(best["items"] / best["seconds"], 1)
                figures["store_cpu_s_per_row"] = best["cpu_s"] / best["items"]

    if parts != PARTS:
        print(json.dumps(figures))
        return
    # the reading phases (the store phase holds every message in memory on purpose: it times the
    # writer alone)
    print(
        json.dumps(
            {
                "pst_messages_per_s": figures["pst_messages_per_s"],
                "readpst_messages_per_s": figures["readpst_messages_per_s"],
                "mbox_messages_per_s": figures["mbox_messages_per_s"],
                "peak_rss_mb": round(max(peaks), 1),
                "store_rows_per_s": figures["store_rows_per_s"],
                "pst_processes": processes,
                "pst_messages_per_s_1proc": round(pst1_rate, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
