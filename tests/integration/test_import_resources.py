"""The collector's writer process on a real SQLite store: what an import records about its resources
and stages, errors surfacing in the importer, flushes, and a writer that dies with its importer."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pstlib.analytics import operations as ops
from pstlib.errors import StoreError
from pstlib.importer import run as importer_run
from pstlib.importer.collector import (
    PIPE_BYTES,
    WRITER_NICE,
    Collector,
    wait_for_collectors,
)
from pstlib.importer.contacts import ContactPolicy, CreateContacts
from pstlib.importer.run import ImportOptions, import_mail
from pstlib.models import Address, Message
from pstlib.store import Store, load
from pstlib.store.schema import Outcome

OWNER = "owner@contoso.com"


def write_mbox(path: Path, count: int) -> Path:
    parts = []
    for n in range(count):
        sender, to = (f"person{n % 9}@fabrikam.com", OWNER) if n % 2 else (OWNER, "x@fabrikam.com")
        parts.append(
            f"From {sender} Mon Jan  1 00:00:00 2024\nFrom: {sender}\nTo: {to}\n"
            f"Subject: message {n}\nDate: Mon, 1 Jan 2024 00:{n // 60 % 60:02d}:{n % 60:02d} +0000\n"
            f"Message-ID: <r{n}@fabrikam.com>\n\nBody {n}.\n\n"
        )
    path.write_text("".join(parts))
    return path


def assess(paths: list[Path], store: Store, *, collect: bool = True) -> str:
    options = ImportOptions(
        target="assess",
        mailbox_owner=OWNER,
        contacts=ContactPolicy(create=CreateContacts.EXTERNAL),
        collect=collect,
    )
    return import_mail(paths, store, options, client=None)


def test_an_import_records_its_resources_and_stage_timings(tmp_path: Path) -> None:
    mbox = write_mbox(tmp_path / "a.mbox", 400)
    with Store.open(tmp_path / "store.sqlite") as store:
        session_id = assess([mbox], store)
        metrics = load.load_metrics(store, session_id)
        sessions = load.load_sessions(store)
        batches = load.load_batches(store, session_id)
        messages = load.load_messages(store, session_id)
        summary = json.loads(str(sessions["summary_json"].iloc[0]))
    assert len(messages) == 400 and set(messages["outcome"]) == {"read"}
    assert summary["totals"]["messages"] == summary["totals"]["successful"] == 400
    names = set(metrics["name"].astype(str))
    # the importer's and the writer process's resources, its pid, the stages
    assert {
        "rss_bytes",
        "cpu_s",
        "collector_rss_bytes",
        "collector_cpu_s",
        "collector_pid",
        "stage_s",
    } <= names
    pid = metrics.loc[metrics["name"] == "collector_pid", "value"].iloc[0]
    assert int(pid) != os.getpid()  # a process of its own
    stages = {
        json.loads(str(labels))["stage"]
        for labels in metrics.loc[metrics["name"] == "stage_s", "labels_json"]
    }
    assert {"read", "dedupe", "contacts", "network", "store", "run"} <= stages

    use = ops.resource_use(metrics)
    assert len(use) >= 1
    assert (use["rss_mb"].dropna() > 10).all() and (use["collector_rss_mb"].dropna() > 10).all()
    assert use["cpu_s"].max() > 0

    where = ops.find_bottleneck(sessions, batches, metrics).iloc[0]
    assert where["method"] == "stage timings"
    assert where["read_s"] > 0 and where["dedupe_s"] > 0 and where["network_s"] == 0
    wall = (sessions["ended_at_utc"] - sessions["started_at_utc"]).dt.total_seconds().iloc[0]
    assert 0 < where["total_s"] <= wall + 0.5
    assert where["bottleneck"] in ops.BOTTLENECK_STAGES


def test_each_message_is_recorded_with_its_direction(tmp_path: Path) -> None:
    # write_mbox: odd messages come from a correspondent to the owner, even ones from the owner
    mbox = write_mbox(tmp_path / "a.mbox", 40)
    with Store.open(tmp_path / "store.sqlite") as store:
        messages = load.load_messages(store, assess([mbox], store))
    direction = messages.set_index("item_id")["direction"].astype(str)
    expected = {str(n): "incoming" if n % 2 else "outgoing" for n in range(40)}
    assert len(direction) == 40 and direction.to_dict() == expected


def test_a_run_with_collection_off_does_no_collection_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The overhead benchmark's baseline: no rows, no metrics, and no per-message clock reads for
    # stage timings nobody records (a clock read costs ~0.2 us on these machines, three a message)
    mbox = write_mbox(tmp_path / "a.mbox", 300)
    reads = {"on": 0, "off": 0}
    mode = "off"

    def counting() -> float:
        reads[mode] += 1
        return time.perf_counter()

    clock = SimpleNamespace(
        perf_counter=counting, monotonic=time.monotonic, time=time.time, time_ns=time.time_ns
    )
    monkeypatch.setattr(importer_run, "time", clock)
    with Store.open(tmp_path / "store.sqlite") as store:
        off = assess([mbox], store, collect=False)
        mode = "on"
        on = assess([mbox], store, collect=True)
        assert load.load_messages(store, off).empty and load.load_metrics(store, off).empty
        assert len(load.load_messages(store, on)) == 300  # duplicates of nothing: collect off
        stages = load.load_metrics(store, on)
    assert reads["off"] < 10 <= 300 * 3 <= reads["on"]  # dedupe, contacts: per message
    assert (stages.loc[stages["name"].astype(str) == "stage_s", "value"] > 0).any()


def test_a_caught_up_writer_commits_without_waiting_for_its_deadline(tmp_path: Path) -> None:
    # The importer's final wait for its last rows is then one chunk's work, not up to
    # flush_every_s of buffered rows: rows handed over are committed as soon as the writer has
    # nothing more waiting, long before the 60-second deadline
    with Store.open(tmp_path / "store.sqlite") as store:
        session_id, source_id = new_session(store)
        with Collector(store, session_id, flush_every_s=60.0, poll_s=0.02) as collector:
            for n in range(50):
                collector.message(source_id, message(n), Outcome.READ, direction="incoming")
            wait_for_rows(store, session_id, 50, "not committed before the deadline")


def test_a_busy_import_thread_ships_its_own_chunks(tmp_path: Path) -> None:
    # A helper thread that shipped the rows waited for the interpreter lock on every system
    # call while the import thread ran: chunks left late, seconds' worth at once, and the
    # import waited at its close. The import thread ships each full chunk itself: with the
    # helper told to ship only what waited a minute, full chunks still reach the writer.
    with Store.open(tmp_path / "store.sqlite") as store:
        session_id, source_id = new_session(store)
        with Collector(store, session_id, chunk_rows=100, poll_s=60.0) as collector:
            for n in range(250):
                collector.message(source_id, message(n), Outcome.READ, direction="incoming")
            assert collector.backlog == 50  # two chunks gone, half a chunk waits
            wait_for_rows(store, session_id, 200, "the shipped chunks were not committed")
            if collector.writer_pid is not None:  # background work: the import goes first
                ours = os.getpriority(os.PRIO_PROCESS, 0)
                writer = os.getpriority(os.PRIO_PROCESS, collector.writer_pid)
                assert writer == min(19, ours + WRITER_NICE)
            if collector.writer_pid is not None and hasattr(fcntl, "F_GETPIPE_SZ"):
                assert collector._outbox is not None  # a chunk goes down in one write
                pipe_bytes = fcntl.fcntl(collector._outbox.fileno(), fcntl.F_GETPIPE_SZ)
                most = int(Path("/proc/sys/fs/pipe-max-size").read_text())
                assert pipe_bytes >= min(PIPE_BYTES, most)
        assert len(load.load_messages(store, session_id)) == 250  # close ships the rest


def wait_for_rows(store: Store, session_id: str, count: int, failure: str) -> None:
    """Until ``count`` message rows of the session are committed (at most 20 s)."""
    deadline = time.monotonic() + 20.0
    while len(load.load_messages(store, session_id)) < count:
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


def message(n: int) -> Message:
    return Message(
        source_path="x.mbox",
        item_id=str(n),
        internet_message_id=f"<{n}@x>",
        sender=Address("a@x.com"),
        subject=f"m{n}",
    )


def new_session(store: Store) -> tuple[str, int]:
    session_id = store.begin_session("assess", {})
    return session_id, store.add_source(session_id, "x.mbox", "mbox", 0, None)


def test_flush_commits_everything_handed_over(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store.sqlite") as store:
        session_id, source_id = new_session(store)
        with Collector(store, session_id, flush_every_s=60.0) as collector:
            for n in range(50):
                collector.message(source_id, message(n), Outcome.READ, direction="incoming")
            collector.update([{"source_id": source_id, "item_id": "3", "outcome": "skipped"}])
            collector.flush()  # nothing waits for the 60-second flush
            rows = load.load_messages(store, session_id)
            assert len(rows) == 50
            assert rows.set_index("item_id").loc["3", "outcome"] == "skipped"
            collector.message(source_id, message(50), Outcome.READ)
        # closing commits the rest
        assert len(load.load_messages(store, session_id)) == 51


def test_a_store_error_in_the_writer_is_raised_in_the_importer(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store.sqlite") as store:
        session_id, source_id = new_session(store)
        collector = Collector(store, session_id).start()
        collector.message(source_id, message(1), Outcome.READ)
        # an outcome update of a message nobody recorded: the writer's flush fails
        collector.update([{"source_id": source_id, "item_id": "nope", "outcome": "read"}])
        with pytest.raises(StoreError, match="matched no message"):
            collector.flush()
        with pytest.raises(StoreError, match="matched no message"):  # and at every later call
            collector.message(source_id, message(2), Outcome.READ)
        with pytest.raises(StoreError):
            collector.close()


def test_an_in_memory_store_gets_a_writer_thread() -> None:
    with Store.open("sqlite:///:memory:") as store:
        session_id, source_id = new_session(store)
        with Collector(store, session_id) as collector:
            assert collector.in_process and collector.writer_pid is None
            for n in range(10):
                collector.message(source_id, message(n), Outcome.READ)
        assert len(load.load_messages(store, session_id)) == 10


def import_forever(store_path: str, mbox: str) -> None:
    """The child: an assess import of a mailbox big enough to be killed in the middle of it."""
    with Store.open(store_path) as store:
        assess([Path(mbox)], store)


@pytest.mark.slow
def test_the_writer_dies_with_its_importer(tmp_path: Path) -> None:
    mbox = write_mbox(tmp_path / "big.mbox", 30_000)
    store_path = tmp_path / "store.sqlite"
    # the store is made (and migrated) first: two processes creating one file at once race
    # (one of them fails with "database is locked" and the child then never starts a session)
    Store.open(store_path).close()
    child = multiprocessing.get_context("fork").Process(
        target=import_forever, args=(str(store_path), str(mbox))
    )
    child.start()
    deadline = time.monotonic() + 60
    with Store.open(store_path) as store:
        while time.monotonic() < deadline:  # until the writer has committed some messages
            sessions = load.load_sessions(store)
            if len(sessions) and len(load.load_messages(store, sessions["session_id"][0])):
                break
            time.sleep(0.05)
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join()
        session_id = str(load.load_sessions(store)["session_id"].iloc[0])
        metrics = load.load_metrics(store, session_id)
        pid = int(metrics.loc[metrics["name"] == "collector_pid", "value"].iloc[0])
        assert wait_for_collectors([pid], timeout_s=5.0) == []  # gone with its importer
        # and nothing was written after: the count stays what it was when the writer died
        count = len(load.load_messages(store, session_id))
        time.sleep(0.5)
        assert len(load.load_messages(store, session_id)) == count < 30_000
        assert load.load_sessions(store)["status"].iloc[0] == "running"  # resumable


def test_a_pid_reused_by_another_program_is_not_waited_for() -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        started = time.monotonic()
        assert wait_for_collectors([other.pid], timeout_s=5.0) == []
        assert time.monotonic() - started < 1.0
    finally:
        other.kill()
        other.wait()


def test_sessions_one_after_another_reuse_one_writer(tmp_path: Path) -> None:
    pids = set()
    with Store.open(tmp_path / "store.sqlite") as store:
        for round_ in range(4):
            session_id, source_id = new_session(store)
            # samples every millisecond: some are taken while the session stops, and must not
            # reach the writer after its stop
            with Collector(store, session_id, sample_every_s=0.001, poll_s=0.001) as collector:
                for n in range(200):
                    collector.message(source_id, message(n), Outcome.READ)
                pids.add(collector.writer_pid)
            assert len(load.load_messages(store, session_id)) == 200, round_
    assert len(pids) == 1  # started once, then handed the next sessions


def test_an_interrupted_write_to_the_writer_ends_it_without_a_hang(tmp_path: Path) -> None:
    # Ctrl-C part-way through a chunk's write leaves part of a frame in the pipe: the writer
    # would read what came next into it, and close() waited for an answer that never came.
    # Now nothing more goes down that pipe: close() ends the writer, which drops what it had
    # not committed (a resume redoes it), and returns.
    with Store.open(tmp_path / "store.sqlite") as store:
        session_id, source_id = new_session(store)
        collector = Collector(store, session_id, chunk_rows=100, poll_s=60.0).start()
        for n in range(100):  # one whole chunk, committed
            collector.message(source_id, message(n), Outcome.READ)
        collector.flush()
        assert collector._outbox is not None
        outbox = collector._outbox

        def torn(data: bytes) -> None:
            os.write(outbox.fileno(), len(data).to_bytes(4, "big", signed=True) + data[:10])
            raise KeyboardInterrupt

        outbox.send_bytes = torn  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            for n in range(100, 200):
                collector.message(source_id, message(n), Outcome.READ)
        began = time.monotonic()
        collector.close()  # no hang, and no error of its own in place of the interrupt
        assert time.monotonic() - began < 10.0
        assert len(load.load_messages(store, session_id)) == 100


def test_rows_lost_by_the_helper_are_an_error_not_a_silence(tmp_path: Path) -> None:
    # Anything but an interrupt that stops a chunk's write loses its rows: close() says so
    # (before, the helper thread died quietly and close() returned as if all were written)
    import threading

    with Store.open(tmp_path / "store.sqlite") as store:
        session_id, source_id = new_session(store)
        collector = Collector(store, session_id, poll_s=0.02).start()
        assert collector._outbox is not None
        outbox = collector._outbox
        send = outbox.send_bytes

        def failing(data: bytes) -> None:
            if threading.current_thread() is collector._helper:
                raise MemoryError("no room")
            send(data)

        outbox.send_bytes = failing  # type: ignore[method-assign]
        for n in range(5):  # under a chunk: the helper ships them
            collector.message(source_id, message(n), Outcome.READ)
        with pytest.raises(StoreError, match="lost rows"):
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline:
                time.sleep(0.05)
                collector._raise()
        with pytest.raises(StoreError):
            collector.close()
