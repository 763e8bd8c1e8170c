"""Import benchmark: what the analytics collector costs, and how close an import gets to Dataverse's
service protection limits.

Figures, in one run:

* (a) collector overhead: the same mbox imported to the *assess* target with collection on and off
  (``ImportOptions.collect``), in ``--repeats`` pairs of one run each (which goes first
  alternates); the figure is the median over the pairs of ``(on - off) / off`` in percent
  (target: under 2 %). Pairs, because this machine's speed drifts by tens of percent over
  seconds: two runs side by side share the drift, two medians taken over minutes need not.
  Printed beside it: the medians' comparison, the same comparison of the CPU seconds of the
  import process and its reader process (less sensitive than wall time to other load on the
  machine) and the CPU seconds of the collector's writer process (from its own samples in the
  store), and all three processes' CPU against the import's and reader's alone (what the
  wall-time overhead tends to when no core is idle for the writer). Then one more run with a fresh writer process: the timed runs
  reuse the writer the warm-up started (an importer keeps its idle writer for its next session),
  so its start-up is in none of them; a one-shot import (the CLI) pays it.
* (b) throughput against the limits: the stand-in (in its own process) configured with Microsoft's
  published limits (6000 requests, 1200 s of execution and 52 concurrent requests per 300-second
  window), time-scaled by ``--time-scale``, every operation taking ``--operation-time`` Dataverse
  seconds of server execution. Each email costs two operations (create, complete), so the most
  the limits allow is ``min(4 s of execution per second / (2 x operation time), 20 requests per
  second x 500 emails per request, 52 concurrent / (2 x operation time))`` emails per (scaled)
  second. The rate achieved is counted from the store's batches: the operations acknowledged by
  requests that ended after the first window (whose fresh budget would allow a burst above the
  steady rate), over the time from that window's end to the last acknowledgement; the figure is
  its fraction of that most (target: at least 90 %). Lookups (Message-IDs, contacts) are part
  of the import and count against it. Printed beside it: what an operation cost as the client
  measured it (the stand-in charges what a request really took, as Dataverse does: its
  operations' configured time, its own processing included; the client sees that plus the
  round trip) and the fraction of the most the limits allow at that cost, which is the share of
  the budget the client used.
* (c) assess messages/s: the collection-on runs of (a).

Usage: python benchmarks/import.py [--messages 20000] [--repeats 5] [--dv-messages 6000]
       [--time-scale 0.02] [--operation-time 0.5] [--batch-messages 1000] [--seed 1]
       [--parts abc]
``--parts a`` measures (a) and (c) only, ``--parts b`` (b) only. The last line is JSON with keys
collector_overhead_pct, throughput_fraction_of_limit, assess_messages_per_s (null when not
measured).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OWNER = "owner@contoso.com"
SECRET_ENV = "PSTLIB_BENCH_SECRET"


def write_mbox(path: Path, count: int, seed: int) -> Path:
    """``count`` plain messages between the owner and 50 correspondents, a unique Message-ID each."""
    rng = random.Random(seed)
    with path.open("w") as out:
        for n in range(count):
            other = f"person{rng.randrange(50)}@fabrikam.com"
            incoming = rng.random() < 0.6
            sender, to = (other, OWNER) if incoming else (OWNER, other)
            out.write(
                f"From {sender} Mon Jan  1 00:00:00 2024\n"
                f"From: {sender}\nTo: {to}\nSubject: message {n} about {rng.randrange(1000)}\n"
                f"Date: Mon, 1 Jan 2024 {n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d} +0000\n"
                f"Message-ID: <bench{seed}.{n}@fabrikam.com>\n\n"
                + "Some words of a body line.\n" * rng.randrange(2, 12)
                + "\n"
            )
    return path


def assess_run(mbox: Path, store_path: Path, collect: bool) -> float:
    """Wall seconds of one assess import of ``mbox`` into a fresh store."""
    return assess_run_timed(mbox, store_path, collect)[0]


def _writer_cpu_s(store: Any, session_id: str) -> float:
    """CPU seconds the collector's writer process spent on the session, from its own samples
    (it serves the next session too, so it is not reaped after each)."""
    from pstlib.store import load

    metrics = load.load_metrics(store, session_id)
    cpu = metrics.loc[metrics["name"].astype(str) == "collector_cpu_s", "value"]
    return float(cpu.max() - cpu.min()) if len(cpu) else 0.0


def _writer_start_cpu_s(store: Any, session_id: str) -> float:
    """CPU seconds a *fresh* writer process had spent at its first sample: its start-up
    (interpreter, imports, opening the store), for a session that started the writer."""
    from pstlib.store import load

    metrics = load.load_metrics(store, session_id)
    cpu = metrics.loc[metrics["name"].astype(str) == "collector_cpu_s", "value"]
    return float(cpu.min()) if len(cpu) else 0.0


def _own_and_readers_cpu_s() -> float:
    """CPU seconds of this process and of its reaped children: the reader processes, which an
    import ends before it returns (the collector's writer lives on for the next session)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def assess_run_timed(
    mbox: Path, store_path: Path, collect: bool, *, cold: bool = False
) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds of this process and its reader, CPU seconds of the collector's
    writer; with
    ``cold``, the last is the writer's start-up CPU instead (its first sample)."""
    from pstlib.importer.contacts import ContactPolicy, CreateContacts
    from pstlib.importer.run import ImportOptions, import_mail
    from pstlib.store import Store

    options = ImportOptions(
        target="assess",
        mailbox_owner=OWNER,
        collect=collect,
        auto_resume=False,
        contacts=ContactPolicy(create=CreateContacts.EXTERNAL),
    )
    with Store.open(store_path) as store:
        cpu = _own_and_readers_cpu_s()
        started = time.perf_counter()
        session_id = import_mail([mbox], store, options, client=None)
        elapsed = time.perf_counter() - started
        cpu = _own_and_readers_cpu_s() - cpu
        if cold:
            return elapsed, cpu, _writer_start_cpu_s(store, session_id)
        return elapsed, cpu, _writer_cpu_s(store, session_id)


def measure_overhead(work: Path, messages: int, repeats: int, seed: int) -> dict[str, Any]:
    mbox = write_mbox(work / "assess.mbox", messages, seed)
    assess_run(mbox, work / "warmup.sqlite", True)  # warm the page cache and the imports
    on: list[tuple[float, float, float]] = []
    off: list[tuple[float, float, float]] = []
    for index in range(repeats):
        for collect, times in (
            ((True, on), (False, off)) if index % 2 == 0 else ((False, off), (True, on))
        ):
            times.append(assess_run_timed(mbox, work / f"assess-{index}-{collect}.sqlite", collect))
    on_s, off_s = (statistics.median(t[0] for t in runs) for runs in (on, off))
    paired = statistics.median((a[0] - b[0]) / b[0] for a, b in zip(on, off, strict=True))
    on_cpu, off_cpu = (statistics.median(t[1] for t in runs) for runs in (on, off))
    writer_cpu = statistics.median(t[2] for t in on)
    # The timed runs above reuse the writer process the warm-up started (an importer keeps an
    # idle writer for its next session): its start-up is in none of them. A one-shot import
    # (the CLI) pays it: one more run with a fresh writer says what that costs.
    from pstlib.importer.collector import end_idle_writers

    end_idle_writers()
    cold_s, _, cold_writer_start_cpu = assess_run_timed(
        mbox, work / "assess-cold.sqlite", True, cold=True
    )
    return {
        "messages": messages,
        "collect_on_s": on_s,
        "collect_off_s": off_s,
        "collect_on_runs_s": [round(t[0], 3) for t in on],
        "collect_off_runs_s": [round(t[0], 3) for t in off],
        # CPU of the import process alone (less sensitive to other load than wall time), and
        # of the collector's writer process
        "medians_overhead_pct": 100.0 * (on_s - off_s) / off_s,
        "import_cpu_overhead_pct": 100.0 * (on_cpu - off_cpu) / off_cpu,
        "writer_cpu_s": writer_cpu,
        # what the wall-time overhead tends to when no core is idle for the writer
        "total_cpu_overhead_pct": 100.0 * (on_cpu + writer_cpu - off_cpu) / off_cpu,
        "cold_on_s": cold_s,
        "cold_writer_start_cpu_s": cold_writer_start_cpu,
        "collector_overhead_pct": 100.0 * paired,
        "assess_messages_per_s": messages / on_s,
    }


def start_standin(time_scale: float, operation_time: float, seed: int) -> tuple[Any, str]:
    code = (
        "from pstlib.standin import StandinConfig, run_standin\n"
        f"run_standin(config=StandinConfig(time_scale={time_scale}, "
        f"operation_time_s={operation_time}, seed={seed}))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def measure_throughput(
    work: Path,
    messages: int,
    time_scale: float,
    operation_time: float,
    seed: int,
    batch_messages: int = 1000,
) -> dict[str, Any]:
    import pandas as pd

    from pstlib.config import DataverseSettings
    from pstlib.dataverse import ClientCredentialsTokenProvider, DataverseClient
    from pstlib.dataverse.throttle import AdaptiveLimits
    from pstlib.importer.contacts import ContactPolicy, CreateContacts
    from pstlib.importer.run import ImportOptions, import_mail
    from pstlib.store import Store, load

    mbox = write_mbox(work / "dataverse.mbox", messages, seed + 1)
    window_s = 300.0 * time_scale
    op_s = operation_time * time_scale
    most_per_s = min(
        (1200.0 / 300.0) / (2 * op_s),  # execution time
        (6000.0 / window_s) * 500,  # requests, 1000 operations each
        52 / (2 * op_s),  # concurrency
    )
    proc, url = start_standin(time_scale, operation_time, seed)
    os.environ[SECRET_ENV] = "standin-secret"
    settings = DataverseSettings(
        url=url, tenant_id="standin-tenant", client_id="standin-client", secret_env=SECRET_ENV
    )
    tokens = ClientCredentialsTokenProvider.for_settings(
        settings, f"{url}/standin-tenant/oauth2/v2.0/token"
    )
    options = ImportOptions(
        mailbox_owner=OWNER,
        batch_messages=batch_messages,
        contacts=ContactPolicy(create=CreateContacts.NEVER),
        auto_resume=False,
    )
    limits = AdaptiveLimits(concurrency=8, max_concurrency=48, batch_size=20, max_batch_size=200)
    try:
        with (
            Store.open(work / "dataverse.sqlite") as store,
            DataverseClient(
                settings, token_provider=tokens, max_concurrency=48, limits=limits
            ) as client,
        ):
            started = time.monotonic()
            session_id = import_mail([mbox], store, options, client=client)
            ended = time.monotonic()
            batches = load.load_batches(store, session_id)
            imported = int((load.load_messages(store, session_id)["outcome"] == "imported").sum())
            session_start = (
                load.load_sessions(store).set_index("session_id").loc[session_id, "started_at_utc"]
            )
    finally:
        proc.kill()
        proc.wait()
    # The steady state: operations acknowledged by requests that ended after the first window
    # (whose budget is free), over the time from the window's end to the last acknowledgement.
    # Two operations per email (create, then mark completed); lookups count as work too, which
    # flatters the rate by at most the share of lookups.
    acked = batches["started_at_utc"] + pd.to_timedelta(batches["duration_s"], unit="s")
    steady_from = session_start + pd.Timedelta(seconds=window_s)
    after = batches[acked >= steady_from]
    steady_s = (acked.max() - steady_from).total_seconds() if len(after) else 0.0
    rate = after["succeeded"].sum() / 2 / steady_s if steady_s > 0 else 0.0
    # what an operation really cost the budget (the stand-in charges its measured time, which
    # is the configured operation time plus its own processing), and the rate that cost allows
    measured_op_s = after["duration_s"].sum() / max(int(after["operations"].sum()), 1)
    return {
        "messages": messages,
        "imported": imported,
        "elapsed_s": ended - started,
        "window_s": window_s,
        "most_emails_per_s": most_per_s,
        "steady_emails_per_s": rate,
        "throttled_batches": int((batches["http_status"] == 429).sum()),
        "throughput_fraction_of_limit": rate / most_per_s,
        "measured_operation_s": measured_op_s,
        "configured_operation_ms": 1000 * op_s,
        "fraction_of_measured_cost_limit": rate / min(most_per_s, 4.0 / (2 * measured_op_s)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="assess mailbox size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dv-messages", type=int, default=6000, help="dataverse mailbox size")
    parser.add_argument("--time-scale", type=float, default=0.02)
    parser.add_argument("--operation-time", type=float, default=0.5, help="Dataverse seconds")
    parser.add_argument("--batch-messages", type=int, default=1000, help="messages per round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--parts",
        default="abc",
        help="which figures to measure: any of a (collector overhead) and c (assess rate, "
        "from a's runs), b (throughput); the JSON has null for the others",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    overhead: dict[str, Any] | None = None
    throughput: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="pstlib-bench-") as tmp:
        work = Path(tmp)
        if "a" in args.parts or "c" in args.parts:
            overhead = measure_overhead(work, args.messages, args.repeats, args.seed)
            print(
                f"(a) assess, {overhead['messages']} messages: collection on "
                f"{overhead['collect_on_s']:.2f} s {overhead['collect_on_runs_s']}, off "
                f"{overhead['collect_off_s']:.2f} s {overhead['collect_off_runs_s']} "
                f"-> overhead {overhead['collector_overhead_pct']:.2f} % (median of the pairs; "
                f"of the medians {overhead['medians_overhead_pct']:.2f} %; import and reader "
                f"CPU {overhead['import_cpu_overhead_pct']:+.2f} %, writer process "
                f"{overhead['writer_cpu_s']:.2f} CPU s, both {overhead['total_cpu_overhead_pct']:+.2f} "
                "% CPU)"
            )
            print(
                f"(a) first session of a process (fresh writer, start-up "
                f"{overhead['cold_writer_start_cpu_s']:.2f} CPU s, not in the figures above): "
                f"collection on {overhead['cold_on_s']:.2f} s"
            )
            print(f"(c) assess: {overhead['assess_messages_per_s']:.0f} messages/s")
        if "b" in args.parts:
            throughput = measure_throughput(
                work,
                args.dv_messages,
                args.time_scale,
                args.operation_time,
                args.seed,
                args.batch_messages,
            )
            print(
                f"(b) dataverse, {throughput['imported']}/{throughput['messages']} imported "
                f"in {throughput['elapsed_s']:.1f} s (window {throughput['window_s']:.1f} s): "
                f"steady {throughput['steady_emails_per_s']:.1f} emails/s of at most "
                f"{throughput['most_emails_per_s']:.1f} -> "
                f"{100 * throughput['throughput_fraction_of_limit']:.1f} % "
                f"({throughput['throttled_batches']} throttled batches); an operation took "
                f"{1000 * throughput['measured_operation_s']:.1f} ms as the client measured it, "
                f"against {throughput['configured_operation_ms']:.1f} configured: "
                f"{100 * throughput['fraction_of_measured_cost_limit']:.1f} % of what the limits "
                "allow at that cost"
            )
    print(
        json.dumps(
            {
                "collector_overhead_pct": (
                    round(overhead["collector_overhead_pct"], 3) if overhead else None
                ),
                "throughput_fraction_of_limit": (
                    round(throughput["throughput_fraction_of_limit"], 4) if throughput else None
                ),
                "assess_messages_per_s": (
                    round(overhead["assess_messages_per_s"], 1) if overhead else None
                ),
                "fraction_of_measured_cost_limit": (
                    round(throughput["fraction_of_measured_cost_limit"], 4) if throughput else None
                ),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
