"""Analytics benchmark: every analysis of one session on a large store, loading included.

The store is built once from a seeded synthetic mailbox (``pstlib.synth``) whose messages are
written straight through the store's batched writer (no mbox: scanning is benchmarked in
``benchmarks/scan.py``), ends as a completed session (which writes its columnar snapshot), and is
cached under ``--workdir``. Each measured run is a fresh child process, so that its peak RSS is its
own:

* ``pipeline``: load the session (from the snapshot when fresh, else SQL), then every analysis in
  the order a report runs them, one line each with the seconds and the peak RSS so far. With
  ``--parallel process`` (the default: this is a 2-core machine) the timeline branch (contact
  events, gap detection, completeness) runs in a second process beside the rest, as the report
  suite runs the gap model in one kernel while another renders: a fork once the session is
  loaded, which holds the frames as a kernel would hold its own copy (shared until written). The
  total is then the wall time of both branches, and the peak RSS the sum of both processes'
  peaks (an upper bound: the pages they share count twice); ``sum of the steps`` beside it is what
  one process would take. ``--parallel thread`` runs the branch in a second thread instead (the
  two then share the GIL), ``--parallel none`` runs every step one after another;
* ``baseline``: the same load through SQL only (the loaders with the snapshot turned off), and
  ``pandas.read_sql`` of the same rows, for comparison.

Usage: python benchmarks/analytics.py [--messages 1000000] [--seed 1] [--workdir DIR]
       [--repeat 1] [--no-baseline] [--parallel process|thread|none]
The last line is JSON with keys total_s, peak_rss_mb, messages (and the per-step seconds, wall
and CPU: the CPU seconds hold steady when other work shares the machine).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MESSAGES_PER_CONTACT = 1_195_176 / 4000  # seed 1, 3 years: messages per configured contact
YEARS = 3.0


def peak_rss_mb() -> float:
    """This process's peak resident set so far (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------ the store


def write_synth_session(store: Any, messages: Any, owner: str, owner_name: str) -> str:
    """Write a synthetic mailbox's ``messages`` frame as one completed assess session.

    One :class:`~pstlib.models.Message` per row through :class:`~pstlib.store.MessageWriter`, as a
    scan of the mailbox's mbox would record it (Inbox / Sent Items folders, list and automation
    headers, ``To`` and ``Cc`` recipients). Returns the session id.
    """
    from pstlib.models import Address, FolderRole, Message, Recipient, RecipientKind
    from pstlib.store.schema import Outcome, SessionStatus

    session_id = store.begin_session("assess", {"synth": True}, mailbox_owner=owner)
    source_id = store.add_source(session_id, "synth/mailbox.mbox", "mbox", 0, None)
    names: dict[str, Address] = {}

    def address(value: str, name: str = "") -> Address:
        found = names.get(value)
        if found is None:
            found = names[value] = Address(value, name)
        return found

    roles = {"Inbox": FolderRole.INBOX, "Sent Items": FolderRole.SENT}
    frame = messages.reset_index(drop=True)
    columns = [
        "message_id", "in_reply_to", "references", "subject", "body", "sender_address",
        "sender_name", "to_addresses", "cc_addresses", "sent_at_utc", "direction", "folder",
        "list_id", "list_unsubscribe", "precedence", "auto_submitted",
    ]  # fmt: skip
    values = [frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in columns]
    values[columns.index("sent_at_utc")] = [
        t.to_pydatetime().astimezone(UTC) for t in frame["sent_at_utc"]
    ]
    with store.writer(session_id, batch_rows=20_000) as writer:
        for i, row in enumerate(zip(*values, strict=True)):
            (mid, irt, refs, subject, body, sender, sender_name, to, cc, sent, direction,
             folder, list_id, unsubscribe, precedence, auto) = row  # fmt: skip
            headers = tuple(
                (k, v)
                for k, v in (
                    ("list-id", list_id),
                    ("list-unsubscribe", unsubscribe),
                    ("precedence", precedence),
                    ("auto-submitted", auto),
                )
                if v
            )
            recipients = tuple(Recipient(RecipientKind.TO, address(a)) for a in to) + tuple(
                Recipient(RecipientKind.CC, address(a)) for a in cc
            )
            msg = Message(
                source_path="synth/mailbox.mbox",
                item_id=str(i),
                folder_path=folder,
                folder_role=roles.get(folder, FolderRole.OTHER),
                internet_message_id=mid,
                in_reply_to=irt,
                references=tuple(refs.split()) if refs else (),
                subject=subject or "",
                sender=address(sender, sender_name or ""),
                recipients=recipients,
                sent_at_utc=sent,
                size_bytes=len(body or "") + 600,
                body=body or "",
                headers=headers,
            )
            writer.add_message(source_id, msg, Outcome.READ, direction=direction)
    store.finish_source(source_id, "read", len(frame))
    store.end_session(session_id, SessionStatus.COMPLETED, {"messages_read": len(frame)})
    del owner_name
    return session_id


def _ensure_snapshot(store_path: Path, session_id: str) -> None:
    """Write the session's snapshot if it has none (as the end of an import does)."""
    from pstlib.store import Store
    from pstlib.store.snapshot import refresh_snapshot, snapshot_path

    with Store.open(store_path) as store:
        path = snapshot_path(store, "messages", session_id)
        if path is not None and not path.exists():
            began = time.perf_counter()
            refresh_snapshot(store, session_id)
            print(f"snapshot written in {time.perf_counter() - began:.1f} s")


def build_store(workdir: Path, messages: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """The cached store of ``messages`` synthetic messages (built when missing)."""
    store_path = workdir / f"store-{messages}-s{seed}.sqlite"
    info_path = store_path.with_suffix(".json")
    if store_path.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
        _ensure_snapshot(store_path, info["session_id"])
        return store_path, info
    from pstlib.store import Store
    from pstlib.synth import SynthConfig, generate_mailbox

    for stale in workdir.glob(f"{store_path.name}*"):
        if stale.is_file():
            stale.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    contacts = max(20, math.ceil(messages / MESSAGES_PER_CONTACT * 1.05))
    config = SynthConfig(seed=seed, contacts=contacts, years=YEARS)
    mailbox = generate_mailbox(config)
    frame = mailbox.messages.iloc[:messages]
    generated = time.perf_counter() - began
    with Store.open(store_path) as store:
        session_id = write_synth_session(
            store, frame, config.owner_address_normalised, config.owner_name
        )
    written = len(frame)
    del mailbox, frame
    _ensure_snapshot(store_path, session_id)
    info = {
        "session_id": session_id,
        "owner": config.owner_address_normalised,
        "country": config.holiday_country,
        "messages": written,
        "contacts": contacts,
        "generate_s": round(generated, 1),
        "build_s": round(time.perf_counter() - began, 1),
    }
    info_path.write_text(json.dumps(info))
    return store_path, info


# ------------------------------------------------------------------------------------ the runs


class Steps:
    """Times steps and prints one line each: seconds, CPU seconds (this process, all its threads:
    steady when other work shares the machine, where wall-clock seconds are not) and the peak RSS
    so far."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.cpu_clock = time.process_time  # the thread's own once two branches run

    def run(self, name: str, work: Callable[[], Any]) -> Any:
        began, cpu = time.perf_counter(), self.cpu_clock()
        result = work()
        elapsed = time.perf_counter() - began
        self.seconds[name] = elapsed
        self.cpu_seconds[name] = self.cpu_clock() - cpu
        print(
            f"{name:24}{elapsed:8.2f} s  cpu {self.cpu_seconds[name]:6.2f} s"
            f"   peak RSS {peak_rss_mb():8.0f} MB",
            flush=True,
        )
        return result


def _pipeline(store_path: str, info: dict[str, Any], queue: Any) -> None:
    import networkx as nx

    from pstlib.analytics.imports import summarize_session
    from pstlib.analytics.network import (
        build_graph,
        find_communities,
        find_hubs,
        relationship_strength,
    )
    from pstlib.analytics.senders import profile_senders
    from pstlib.analytics.threading import reply_pairs, thread_messages
    from pstlib.analytics.timeline import contact_events, detect_gaps, score_completeness
    from pstlib.store import Store, load
    from pstlib.views import mail_frames

    session_id, owner = info["session_id"], info["owner"]
    steps = Steps()
    began = time.perf_counter()
    with Store.open(store_path) as store:

        def load_all() -> tuple[Any, ...]:
            frames = mail_frames(store, session_id)
            session = store.get_session(session_id)
            sources = load.load_sources(store, session_id)
            errors = load.load_errors(store, session_id)
            contacts = load.load_contacts(store, session_id)
            batches = load.load_batches(store, session_id)
            return frames, session, sources, errors, contacts, batches

        frames, session, sources, errors, contacts, batches = steps.run("load", load_all)
    messages, recipients = frames.messages, frames.recipients

    def timeline() -> None:
        events = steps.run("contact_events", lambda: contact_events(messages, recipients, owner))
        gaps = steps.run("detect_gaps", lambda: detect_gaps(events, country=info["country"]))
        steps.run("score_completeness", lambda: score_completeness(events, gaps))

    # The timeline branch beside the rest, as the report suite runs them (two kernels)
    parallel = info["parallel"]
    branch: Any = None
    if parallel == "process":
        fork = mp.get_context("fork")
        answer = fork.SimpleQueue()

        def in_fork() -> None:
            timeline()
            answer.put((steps.seconds, steps.cpu_seconds, peak_rss_mb()))

        branch = fork.Process(target=in_fork, name="timeline")
        branch.start()
    elif parallel == "thread":
        steps.cpu_clock = time.thread_time
        branch = threading.Thread(target=timeline, name="timeline")
        branch.start()
    else:
        timeline()
    threads = steps.run("thread_messages", lambda: thread_messages(messages))
    pairs = steps.run("reply_pairs", lambda: reply_pairs(messages, threads))
    steps.run(
        "profile_senders",
        lambda: profile_senders(messages, recipients, pairs, owner_address=owner, threads=threads),
    )
    graph: nx.DiGraph = steps.run("build_graph", lambda: build_graph(messages, recipients))
    steps.run("find_hubs", lambda: find_hubs(graph))
    steps.run("find_communities", lambda: find_communities(graph))
    steps.run("relationship_strength", lambda: relationship_strength(graph))
    steps.run(
        "summarize_session",
        lambda: summarize_session(session, sources, messages, errors, contacts, batches),
    )
    peak = peak_rss_mb()
    if parallel == "process":
        seconds, cpu_seconds, branch_peak = answer.get()
        branch.join()
        if branch.exitcode:
            raise SystemExit(f"the timeline branch failed with exit code {branch.exitcode}")
        steps.seconds.update(seconds)
        steps.cpu_seconds.update(cpu_seconds)
        peak += branch_peak
    elif parallel == "thread":
        branch.join()
    total = time.perf_counter() - began
    queue.put(
        {
            "steps": steps.seconds,
            "steps_cpu": steps.cpu_seconds,
            "total_s": total,
            "peak_rss_mb": peak,
            "messages": len(messages),
            "nodes": graph.number_of_nodes(),
            "edges": graph.number_of_edges(),
        }
    )


def _baseline(store_path: str, info: dict[str, Any], queue: Any) -> None:
    import pandas as pd

    from pstlib.store import Store, load_sources
    from pstlib.views import MESSAGE_COLUMNS, mail_frames

    session_id = info["session_id"]
    steps = Steps()
    with Store.open(store_path) as store:
        quoted = ", ".join(f'"{c}"' for c in MESSAGE_COLUMNS)
        steps.run(
            "pandas.read_sql",
            lambda: pd.read_sql(
                f"SELECT {quoted} FROM messages WHERE session_id = ? ORDER BY message_row_id",
                store.engine.raw_connection().driver_connection,
                params=(session_id,),
            ),
        )
        store.use_snapshots = False
        steps.run(
            "pstlib SQL load",
            lambda: (
                mail_frames(store, session_id).messages,
                load_sources(store, session_id),
            ),
        )
    queue.put({"steps": steps.seconds, "peak_rss_mb": peak_rss_mb()})


def in_child(target: Callable[..., None], *args: Any) -> dict[str, Any]:
    """Run ``target(*args, queue)`` in a fresh process; return what it put on the queue."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result: dict[str, Any] = queue.get()
    process.join()
    if process.exitcode:
        raise SystemExit(f"{target.__name__} failed with exit code {process.exitcode}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pstlib-bench"
    )
    parser.add_argument("--repeat", type=int, default=1, help="pipeline runs (medians reported)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the SQL-only load")
    parser.add_argument(
        "--parallel",
        choices=("process", "thread", "none"),
        default="process",
        help="the timeline branch in a second process (default) or thread beside the rest, or "
        "every step one after another",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))

    store_path, info = build_store(args.workdir, args.messages, args.seed)
    info = {**info, "parallel": args.parallel}
    print(f"store {store_path}: {info['messages']} messages, session {info['session_id']}")
    if not args.no_baseline:
        print("-- baseline: SQL only")
        in_child(_baseline, str(store_path), info)
    runs = []
    for i in range(args.repeat):
        print(f"-- pipeline run {i + 1} of {args.repeat}")
        runs.append(in_child(_pipeline, str(store_path), info))
    steps = {
        name: round(statistics.median(r["steps"][name] for r in runs), 3)
        for name in runs[0]["steps"]
    }
    steps_cpu = {
        name: round(statistics.median(r["steps_cpu"][name] for r in runs), 3)
        for name in runs[0]["steps_cpu"]
    }
    total = statistics.median(r["total_s"] for r in runs)
    total_cpu = statistics.median(sum(r["steps_cpu"].values()) for r in runs)
    steps_sum = statistics.median(sum(r["steps"].values()) for r in runs)
    peak = max(r["peak_rss_mb"] for r in runs)
    if args.repeat > 1:
        print(f"-- medians of {args.repeat} runs")
        for name, seconds in steps.items():
            print(f"{name:24}{seconds:8.2f} s  cpu {steps_cpu[name]:6.2f} s")
    print(f"{'total':24}{total:8.2f} s  cpu {total_cpu:6.2f} s   peak RSS {peak:8.0f} MB")
    print(f"{'sum of the steps':24}{steps_sum:8.2f} s  (parallel: {args.parallel})")
    print(
        json.dumps(
            {
                "total_s": round(total, 2),
                "peak_rss_mb": round(peak),
                "messages": runs[0]["messages"],
                "total_cpu_s": round(total_cpu, 2),
                "steps_sum_s": round(steps_sum, 2),
                "parallel": args.parallel,
                "steps_s": steps,
                "steps_cpu_s": steps_cpu,
                "graph_nodes": runs[0]["nodes"],
                "graph_edges": runs[0]["edges"],
            }
        )
    )


if __name__ == "__main__":
    main()
