"""The analytics collector: the import thread hands rows over, a writer *process* writes them.

Why a process. On two cores a writer *thread* cannot overlap the import: building rows, buffering
them in the :class:`~pstlib.store.writer.MessageWriter` and binding SQL parameters are Python work
under the same GIL, and cost the import 35-65 % of its time even with the SQL switched off. So the
import process keeps only what it must. Per message, :meth:`Collector.message` builds one tuple
of plain values (:func:`~pstlib.store.writer.message_values`, inlined: the record's fields through
a C-level ``attrgetter``, sender and recipients as tuples of strings, UTC times as their 10-byte
pickle state, the hashes the record has cached, else its body), marshals it at once and appends
the bytes to a deque. Why plain values and not the record: an entry that held the ``Message``
would keep its address, recipient and dict objects alive until shipped, and those survivors drive
the garbage collector into full collections of the whole heap (measured: 0.5 s of a 20k-message
import); every plain value is one :mod:`marshal` writes, at half the cost of pickling. Why
marshalled at once: queued tuples are such survivors too (60-90 ms of full collections in a
20k-message import), bytes are not tracked by the garbage collector at all. Once ``chunk_rows``
entries wait, the import thread joins them into one chunk (:func:`pack_entries`: the marshalled
rows make one marshal list, without being looked at one by one) and sends it through a pipe wide
enough to take it in one write (:meth:`Collector._ship_own` says why not a helper thread); a
helper thread ships what has waited ``poll_s`` when the import is quiet. The writer process
(:func:`serve`) owns the ``MessageWriter`` and the store connection and hands the rows to
:meth:`~pstlib.store.writer.MessageWriter.add_message_values` as they came, without rebuilding
records (which cost it about 6 us per message). It commits as soon as nothing more waits on its
pipe (else at least every ``flush_every_s``), so that the importer's wait at the end of a session
is the last chunk's work. Measured alone on the benchmark's mailbox (20k messages of
``benchmarks/import.py``): about 3.4 us per message for the hook (1 of it marshal) and 0.1 for
the chunk on the import side, against some 25 us per message for the import thread's own work
and 95 for its reader process (the pace of an assess import), and 12-17 us per message in the
writer process (SQLite's inserts and commits about 8 of them).

Why a fresh interpreter (``subprocess``, the pipes passed as file descriptors) rather than
``multiprocessing.Process``: spawn would re-run the caller's ``__main__`` (pytest, the CLI) in the
writer, and a forkserver's state does not survive a ``fork`` of the importer (the resume test forks
its importers). Its start costs about a second of CPU (SQLAlchemy, Alembic, pandas), so a writer
that ended its session cleanly waits (at most :data:`IDLE_EXIT_S`) for the next session of the
same importer thread. A direct child also dies with its importer: on Linux it asks for
``SIGKILL`` when its parent thread ends (``PR_SET_PDEATHSIG``), and everywhere it stops without
writing when its pipe reaches end-of-file without a ``stop``. Its first commit records its pid
(metric ``collector_pid``), so that a resumed session first waits until a killed run's writer is
gone (:func:`wait_for_collectors`). A store no other process can open (SQLite in memory), or a
platform without POSIX pipes, gets the same writer loop in a thread.

Guarantees, as with the thread it replaces: order is kept (rows, outcome updates, errors, source
ends and flushes are applied in the order the import made them); the writer commits at least every
``flush_every_s`` (a ``kill -9`` loses at most that much plus what was not yet shipped: the
last ``chunk_rows``, or rows of a quiet import up to twice ``poll_s`` old, by default 0.1 s or
half of ``flush_every_s`` if less; a resume redoes it);
:meth:`Collector.flush` and :meth:`Collector.close` return once everything before them is
committed. A store error in
the writer is never swallowed: it is raised in the import thread at its next call.
``Collector(..., enabled=False)`` records nothing (the overhead benchmark's baseline).

Every ``sample_every_s`` (and once more at the end) the helper thread also records the import
process's resources (``rss_bytes``, ``cpu_s``, ``cpu_percent``) and whatever the ``probe``
callable returns (the importer's cumulative seconds per stage, metric ``stage_s`` labelled
``stage`` and the ``probe_labels``); the writer process records its own as
``collector_rss_bytes``, ``collector_cpu_s`` and ``collector_cpu_percent``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import marshal
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pstlib.errors import SourceError, StoreError
from pstlib.models import Message
from pstlib.sources.parallel import die_with_parent, widen_pipe
from pstlib.store import Store
from pstlib.store.schema import Outcome
from pstlib.store.writer import attachment_size as _attachment_size
from pstlib.store.writer import message_fields as _message_fields
from pstlib.store.writer import recipient_parts as _recipient_parts
from pstlib.store.writer import sender_parts as _sender_parts

if TYPE_CHECKING:
    from pstlib.dataverse import BatchRecord
    from pstlib.store.writer import MessageWriter

_datetime, _UTC = datetime, UTC
_dumps = marshal.dumps

log = logging.getLogger(__name__)

Probe = Callable[[], Mapping[str, float]]

# -- the wire format: what crosses the pipe --------------------------------------------------------
# A message entry is the plain-values tuple of pstlib.store.writer.message_values (built inline by
# Collector.message); any other entry is an operation, a tuple whose first item is its name.
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_MARSHAL, _PICKLE = b"M", b"P"
# marshal's format 2, not the default 4: from format 3 on, marshal looks every object up in a
# table to write repeats as references, which costs the import thread more (measured: 2.1 against
# 3.0 us per message) than the larger chunk costs the pipe and the writer
_MARSHAL_VERSION = 2


def _marshal_list_header(count: int) -> bytes:
    """The bytes :func:`marshal.dumps` (format 2) writes before the items of a list of ``count``."""
    return b"[" + count.to_bytes(4, "little")


# In format 2 (no back-references) a list is its header then each item as marshal writes it
# alone: the rows the hook marshalled one by one join into the list the writer loads at once.
_JOINS = marshal.dumps([(1, "a"), None], 2) == b"".join(
    (_marshal_list_header(2), marshal.dumps((1, "a"), 2), marshal.dumps(None, 2))
)


def pack_entries(entries: Sequence[tuple[Any, ...] | bytes]) -> bytes:
    """Entries (message rows and operations, in order) as one chunk of bytes.

    A message row is its plain values (see :func:`~pstlib.store.writer.message_values`), either
    as a tuple or already marshalled (``bytes``: what :meth:`Collector.message` queues); the rows
    travel as one :mod:`marshal` list (pickle if a source ever puts something marshal cannot
    write in a record), the few operations by :mod:`pickle`. Each operation carries the number
    of message rows before it in the chunk, so the writer applies it at its place.
    """
    entries = list(entries)
    rows: list[Any] = []
    ops: list[tuple[int, tuple[Any, ...]]] = []
    values = False  # a row given as a tuple
    # the tuples (operations, rows marshal could not write) found by C-level searches: the
    # thousands of marshalled rows between them are never looked at one by one
    classes = list(map(type, entries))
    done = 0
    while True:
        try:
            at = classes.index(tuple, done)
        except ValueError:
            break
        rows.extend(entries[done:at])
        entry = entries[at]
        if entry[0].__class__ is str:
            ops.append((len(rows), entry))  # type: ignore[arg-type]
        else:
            rows.append(entry)
            values = True
        done = at + 1
    rows.extend(entries[done:] if done else entries)
    kind = _MARSHAL
    if values:
        try:
            rows = [r if r.__class__ is bytes else marshal.dumps(r, _MARSHAL_VERSION) for r in rows]
        except ValueError:  # a value marshal does not write
            kind = _PICKLE
    if kind is _PICKLE:
        data = pickle.dumps(
            [marshal.loads(r) if r.__class__ is bytes else r for r in rows], _PROTOCOL
        )
    elif _JOINS:
        rows.insert(0, _marshal_list_header(len(rows)))
        data = b"".join(rows)
    else:  # a marshal whose lists are not their items joined: the slow, sure way
        data = marshal.dumps([marshal.loads(r) for r in rows], _MARSHAL_VERSION)
    return b"".join((kind, len(data).to_bytes(8, "little"), data, pickle.dumps(ops, _PROTOCOL)))


def unpack_chunk(data: bytes) -> tuple[list[tuple[Any, ...]], list[tuple[int, tuple[Any, ...]]]]:
    """A chunk's message rows (plain values, as :meth:`MessageWriter.add_message_values` takes
    them) and its operations, each with the number of rows that come before it."""
    size = int.from_bytes(data[1:9], "little")
    rows_data, ops = data[9 : 9 + size], pickle.loads(data[9 + size :])
    rows = marshal.loads(rows_data) if data[:1] == _MARSHAL else pickle.loads(rows_data)
    return rows, ops


def unpack_entries(data: bytes) -> list[tuple[Any, ...]]:
    """The entries of a chunk in the order they were packed (message rows as plain values)."""
    rows, ops = unpack_chunk(data)
    entries: list[tuple[Any, ...]] = []
    done = 0
    for at, op in ops:
        entries.extend(rows[done:at])
        entries.append(op)
        done = at
    entries.extend(rows[done:])
    return entries


# -- resources ------------------------------------------------------------------------------------


def read_rss_bytes() -> float | None:
    """This process's resident set size now (Linux ``/proc/self/status``), None elsewhere."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        return None
    return None


class ResourceSampler:
    """Resident memory, CPU seconds and CPU percent since the last sample, of this process.

    Uses ``/proc/self/status`` and :func:`os.times` (psutil is only a dev extra): a sample costs a
    few tens of microseconds, taken once a second.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._last: tuple[float, float] | None = None

    def sample(self) -> list[tuple[str, float]]:
        times = os.times()
        cpu_s = times.user + times.system
        now = time.monotonic()
        out = [(f"{self.prefix}cpu_s", cpu_s)]
        if self._last is not None and now > self._last[0]:
            percent = 100.0 * (cpu_s - self._last[1]) / (now - self._last[0])
            out.append((f"{self.prefix}cpu_percent", percent))
        self._last = (now, cpu_s)
        rss = read_rss_bytes()
        if rss is not None:
            out.append((f"{self.prefix}rss_bytes", rss))
        return out


# -- the writer side ------------------------------------------------------------------------------


def _error_parts(err: BaseException) -> tuple[Any, ...]:
    """An error as picklable parts: a SourceError whole, any other its type name and text."""
    if isinstance(err, SourceError):
        return ("source", err)
    return ("other", type(err).__name__, str(err) or repr(err))


def _error_of(parts: tuple[Any, ...]) -> BaseException:
    if parts[0] == "source":
        error: BaseException = parts[1]
        return error
    # the same type name and text as the original, which is what the errors table keeps
    kind: type[Exception] = type(str(parts[1]), (Exception,), {})
    return kind(parts[2])


def _apply(writer: MessageWriter, store: Store, entry: tuple[Any, ...], outbox: Connection) -> bool:
    """Apply one operation to the writer; True when it was the ``stop``."""
    name = entry[0]
    if name == "update":
        writer.update_outcomes(entry[1])
    elif name == "metric":
        writer.add_metric(entry[1], entry[2], entry[3])
    elif name == "error":
        writer.add_error(entry[1], _error_of(entry[2]), source_id=entry[3], item=entry[4])
    elif name == "contact":
        _, address, action, contact_name, detail, dataverse_id = entry
        writer.add_contact(
            address, action, name=contact_name, detail=detail, dataverse_id=dataverse_id
        )
    elif name == "batch":
        _, started, duration, operations, succeeded, failed, attempt, status, code, retry, size = (
            entry
        )
        writer.add_batch(
            started,
            duration,
            operations,
            succeeded,
            failed,
            attempt=attempt,
            http_status=status,
            limit_code=code,
            retry_after_s=retry,
            request_bytes=size,
        )
    elif name == "finish_source":
        writer.flush()
        store.finish_source(entry[1], entry[2], entry[3], entry[4])
    elif name == "flush":
        writer.flush()
        outbox.send(("ack", entry[1]))
    elif name == "stop":
        return True
    else:
        raise StoreError(f"the collector received an unknown operation {name!r}")
    return False


def serve(
    inbox: Connection,
    outbox: Connection,
    store: Store,
    session_id: str,
    *,
    batch_rows: int,
    flush_every_s: float,
    sample_every_s: float | None,
) -> bool:
    """The writer loop: apply chunks from ``inbox``, commit every ``flush_every_s``, until stop.

    End-of-file on ``inbox`` without a ``stop`` means the importer died: what is buffered is
    dropped, not written (the resumed session redoes it; writing it now could race the resume).
    A store error is sent to ``outbox`` and ends the loop. Returns True after a ``stop`` (the
    process may serve another session), False otherwise.
    """
    try:
        writer = store.writer(session_id, batch_rows=batch_rows)
        sampler = ResourceSampler("collector_") if sample_every_s else None
        # first commit: who writes this session (a resume waits for this process to be gone)
        writer.add_metric("collector_pid", os.getpid(), {"host": socket.gethostname()})
        writer.flush()
        now = time.monotonic()
        deadline = now + flush_every_s
        next_sample = now
        while True:
            if inbox.poll(max(0.0, deadline - time.monotonic())):
                try:
                    data = inbox.recv_bytes()
                except (EOFError, OSError):  # gone, or gone part-way through a chunk
                    log.warning("the importer of session %s is gone; stopping", session_id)
                    return False
                rows, ops = unpack_chunk(data)
                done = 0
                for at, op in ops:  # each operation after the rows before it
                    if at > done:
                        writer.add_message_values(rows[done:at])
                        done = at
                    if _apply(writer, store, op, outbox):
                        if sampler is not None:  # the last word on this session's resources
                            for name, value in sampler.sample():
                                writer.add_metric(name, value)
                        writer.flush()
                        outbox.send(("stopped", writer.rows_written))
                        return True
                if done < len(rows):
                    writer.add_message_values(rows[done:] if done else rows)
                caught_up = not inbox.poll(0)
            else:
                caught_up = True
            now = time.monotonic()
            if sampler is not None and sample_every_s and now >= next_sample:
                for name, value in sampler.sample():
                    writer.add_metric(name, value)
                next_sample = now + sample_every_s
            # Commit as soon as nothing more waits (the import's final wait for its last rows is
            # then one chunk's work, not up to flush_every_s of buffered rows), else at the
            # deadline: a writer that falls behind commits less often, in bigger transactions.
            if now >= deadline or (caught_up and writer.pending_rows):
                writer.flush()
                deadline = time.monotonic() + flush_every_s
    except BaseException as err:  # handed to the import thread, never swallowed
        log.error("collector of session %s failed: %s", session_id, err)
        with contextlib.suppress(OSError, ValueError):
            try:
                outbox.send(("error", err))
            except (pickle.PicklingError, TypeError, AttributeError):
                outbox.send(("error", StoreError(f"{type(err).__name__}: {err}")))
        if not isinstance(err, Exception):
            raise
        return False


WRITER_NICE = 5
"""How much lower the writer process's scheduling priority is than the importer's: on a machine
with no idle core, the import and its readers go first, and the writer catches up in the gaps
(the pipe's back-pressure stops the import only when it is a pipe's worth behind)."""

IDLE_EXIT_S = 120.0
"""A writer process left idle this long (no session handed to it) exits."""


def main(argv: Sequence[str] | None = None) -> None:
    """The writer process: ``main([inbox_fd, outbox_fd, parent_pid])``; the rest from the pipe.

    Serves one session after another (each starts with its configuration on the pipe), so that
    an importer running several sessions pays the interpreter's start (about a second of CPU
    importing SQLAlchemy, Alembic and pandas) once.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    inbox_fd, outbox_fd, parent = (int(a) for a in args[:3])
    die_with_parent(parent)
    with contextlib.suppress(OSError, AttributeError):  # the import's work first (see WRITER_NICE)
        os.nice(WRITER_NICE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the importer, which stops us
    inbox, outbox = Connection(inbox_fd, writable=False), Connection(outbox_fd, readable=False)
    stores: dict[str, Store] = {}
    try:
        while inbox.poll(IDLE_EXIT_S):
            try:
                config = inbox.recv()
            except EOFError:
                return
            if not isinstance(config, dict):  # a protocol error: end, the importer starts anew
                log.error("the collector received %s while idle; stopping", type(config).__name__)
                return
            url = config["url"]
            try:
                store = stores.get(url) or stores.setdefault(url, Store.open(url))
            except BaseException as err:
                outbox.send(("error", StoreError(f"the collector cannot open the store: {err}")))
                return
            for other in [u for u in stores if u != url]:  # one store open at a time
                stores.pop(other).close()
            outbox.send(("ready", os.getpid()))
            clean = serve(
                inbox,
                outbox,
                store,
                config["session_id"],
                batch_rows=config["batch_rows"],
                flush_every_s=config["flush_every_s"],
                sample_every_s=config["sample_every_s"],
            )
            if not clean:
                return
    finally:
        for store in stores.values():
            store.close()


PIPE_BYTES = 1 << 20
"""What the pipe to the writer holds (Linux; the default 64 KiB elsewhere): a chunk of
``chunk_rows`` rows (about 0.5 KB each) goes down it in one write, without waiting for the writer
to read, which would hand the interpreter lock back and forth on every 64 KiB."""


class _WriterProcess:
    """One writer process and our ends of its two pipes."""

    def __init__(self) -> None:
        to_writer_r, to_writer_w = os.pipe()
        from_writer_r, from_writer_w = os.pipe()
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            self.popen = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from pstlib.importer.collector import main; main()",
                    str(to_writer_r),
                    str(from_writer_w),
                    str(os.getpid()),
                ],
                pass_fds=(to_writer_r, from_writer_w),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            os.close(to_writer_w)
            os.close(from_writer_r)
            raise
        finally:
            os.close(to_writer_r)
            os.close(from_writer_w)
        widen_pipe(to_writer_w, PIPE_BYTES)
        self.outbox = Connection(to_writer_w, readable=False)
        self.inbox = Connection(from_writer_r, writable=False)
        self.idle_since = time.monotonic()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def end(self) -> None:
        """Close our ends (end-of-file: the writer stops without writing) and reap it."""
        self.outbox.close()
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.inbox.close()


# Idle writer processes, by the (process, thread) that started them: Linux kills a child when
# the *thread* that started it ends (PR_SET_PDEATHSIG), so only that thread may reuse it.
_IDLE: dict[tuple[int, int], list[_WriterProcess]] = {}
_IDLE_LOCK = threading.Lock()


def _forget_writers() -> None:
    """In a forked child: the parent's idle writers are not ours (and the lock may be held)."""
    global _IDLE_LOCK
    _IDLE_LOCK = threading.Lock()
    _IDLE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writers)


def _take_writer() -> _WriterProcess:
    key = (os.getpid(), threading.get_ident())
    with _IDLE_LOCK:
        idle = _IDLE.get(key, [])
        while idle:
            process = idle.pop()
            # one idle for less than half its patience cannot be leaving as we hand it work
            if process.alive() and time.monotonic() - process.idle_since < IDLE_EXIT_S / 2:
                return process
            process.end()
    return _WriterProcess()


def _give_back(process: _WriterProcess) -> None:
    process.idle_since = time.monotonic()
    with _IDLE_LOCK:
        _IDLE.setdefault((os.getpid(), threading.get_ident()), []).append(process)


def end_idle_writers() -> int:
    """End this thread's idle writer processes (the next session starts a fresh one, paying the
    interpreter's start again); return how many ended. For measuring a first session."""
    with _IDLE_LOCK:
        idle = _IDLE.pop((os.getpid(), threading.get_ident()), [])
    for process in idle:
        process.end()
    return len(idle)


def _needs_thread(store: Store) -> bool:
    """The writer runs as a thread: a store another process cannot open (SQLite in memory), or
    no POSIX pipes to hand to a child (Windows)."""
    url = store.engine.url
    in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
    return in_memory or os.name != "posix"


def wait_for_collectors(pids: Sequence[int], *, timeout_s: float = 10.0) -> list[int]:
    """Wait until these writer processes (of a killed run, on this host) are gone.

    Their parent died, so each is being killed (``PR_SET_PDEATHSIG``) or stops at end-of-file; a
    resume must not read the store while one could still commit. Returns those still alive at
    the timeout (a reused pid, most likely).
    """
    deadline = time.monotonic() + timeout_s
    with _IDLE_LOCK:  # this process's idle writers are alive, and idle
        ours = {w.popen.pid for (pid, _), idle in _IDLE.items() if pid == os.getpid() for w in idle}
    alive = [p for p in pids if p != os.getpid() and p not in ours and process_alive(p, _ENTRY)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [p for p in alive if process_alive(p, _ENTRY)]
    return alive


_ENTRY = b"pstlib.importer.collector"


def process_alive(pid: int, command: bytes | None = None) -> bool:
    """Is ``pid`` a live process (not a zombie), and, given ``command``, one whose command line
    holds it? Where ``/proc`` cannot tell, a process that exists counts as alive: a pid reused by
    another program then makes a resume wait, never a write land twice."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        line = (proc / "cmdline").read_bytes() if command is not None else b""
    except (OSError, IndexError):
        return True
    return state != "Z" and (command is None or command in line)


# -- the import side ------------------------------------------------------------------------------


class Collector:
    """Deque + writer process for one session's rows. Use as a context manager."""

    def __init__(
        self,
        store: Store,
        session_id: str,
        *,
        enabled: bool = True,
        chunk_rows: int = 512,
        flush_every_s: float = 0.5,
        batch_rows: int = 5000,
        poll_s: float | None = None,
        sample_every_s: float | None = 1.0,
        probe: Probe | None = None,
        probe_labels: Mapping[str, str] | None = None,
        in_process: bool | None = None,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.enabled = enabled
        self.flush_every_s = flush_every_s
        self.batch_rows = batch_rows
        # Shipping every 0.1 s (at most every half flush interval) keeps the importer's wait for
        # its last rows at the end of a session to about 0.1 s of the writer's work (its chunk
        # of about 1,000 rows). The helper's share is a join and a pipe write per chunk, the
        # rows being marshalled already; with tuples packed here, 0.05 s had cost the import 7 %
        # more CPU than 0.25 s.
        self.poll_s = min(flush_every_s / 2, 0.1) if poll_s is None else poll_s
        self.sample_every_s = sample_every_s
        self.probe = probe
        self.probe_labels = dict(probe_labels or {})
        self.in_process = _needs_thread(store) if in_process is None else in_process
        self.wait_s = 0.0  # seconds the import thread spent shipping (and waiting for the writer)
        self._capacity = max(1, chunk_rows)
        self._shipped_at = 0.0  # monotonic time of the last chunk sent
        self._entries: deque[tuple[Any, ...] | bytes] = deque()
        self._send_lock = threading.Lock()
        # until start(), the hooks raise this (the hot path checks one attribute, not two)
        self._error: BaseException | None = StoreError("the collector is not started")
        self._acks: dict[int, threading.Event] = {}
        self._tokens = itertools.count(1)
        self._stopped = threading.Event()
        self._closing = threading.Event()
        self._helper: threading.Thread | None = None
        self._writer_thread: threading.Thread | None = None
        self._process: _WriterProcess | None = None
        self._inbox: Connection | None = None  # the writer's answers
        self._outbox: Connection | None = None  # our chunks
        self._sampler = ResourceSampler()
        self._closed = False
        self._started = False
        self._stop_sent = False
        self._torn = False  # a write to the writer was interrupted part-way: its stream is lost

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> Collector:
        if not self.enabled or self._started:
            return self
        self._started = True
        self._error = None
        self._shipped_at = time.monotonic()  # the helper's clock for rows left waiting
        config = {
            "url": self.store.engine.url.render_as_string(hide_password=False),
            "session_id": self.session_id,
            "batch_rows": self.batch_rows,
            "flush_every_s": self.flush_every_s,
            "sample_every_s": None if self.in_process else self.sample_every_s,
        }
        if self.in_process:
            self._start_thread(config)
        else:
            self._start_process(config)
        self._helper = threading.Thread(
            target=self._help, name=f"collector-{self.session_id}", daemon=True
        )
        self._helper.start()
        return self

    def _start_process(self, config: dict[str, Any]) -> None:
        process = _take_writer()
        try:
            process.outbox.send(config)  # its "ready" comes to the helper: nobody waits for it
        except OSError:  # it ended meanwhile: a fresh one
            process.end()
            process = _WriterProcess()
            process.outbox.send(config)
        self._process = process
        self._outbox, self._inbox = process.outbox, process.inbox

    def _start_thread(self, config: dict[str, Any]) -> None:
        from multiprocessing import Pipe

        writer_inbox, outbox = Pipe(duplex=False)
        inbox, writer_outbox = Pipe(duplex=False)
        self._outbox, self._inbox = outbox, inbox

        def run() -> None:
            try:
                serve(
                    writer_inbox,
                    writer_outbox,
                    self.store,
                    self.session_id,
                    batch_rows=config["batch_rows"],
                    flush_every_s=config["flush_every_s"],
                    sample_every_s=None,
                )
            finally:
                writer_outbox.close()

        self._writer_thread = threading.Thread(
            target=run, name=f"collector-writer-{self.session_id}", daemon=True
        )
        self._writer_thread.start()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Write everything handed over, stop the writer; raise its error if it had one."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        try:
            if self._error is None and not self._torn:
                with self._send_lock:  # nothing may follow the stop down the pipe
                    if self.sample_every_s:
                        self._sample()  # the session's final figures, however short it was
                    self._entries.append(("stop",))
                    self._send_waiting()
                    self._stop_sent = True
                self._wait(self._stopped)
        finally:
            self._closing.set()
            if self._helper is not None:
                self._helper.join()
            self._end_writer()
        self._raise()

    def _end_writer(self) -> None:
        process = self._process
        if process is not None:
            if self._stopped.is_set() and self._error is None and process.alive():
                _give_back(process)  # stopped cleanly: the next session of this thread reuses it
            else:
                process.end()
            return
        if self._outbox is not None:
            self._outbox.close()  # end-of-file: a writer still running stops without writing
        if self._writer_thread is not None:
            self._writer_thread.join()
        if self._inbox is not None:
            self._inbox.close()

    def flush(self) -> None:
        """Block until everything handed over so far is committed."""
        if not self.enabled or not self._started or self._closed:
            return
        token = next(self._tokens)
        done = self._acks[token] = threading.Event()
        self._entries.append(("flush", token))
        self._ship()
        self._wait(done)
        self._acks.pop(token, None)
        self._raise()

    def _wait(self, done: threading.Event) -> None:
        """Until the helper sets ``done`` (it read the writer's answer), checking meanwhile that
        the writer lives and has not failed."""
        while not done.wait(0.02):
            self._raise()
            if not self._writer_alive():
                # its last answers may still be on their way: the helper reads them, then ends
                if self._helper is not None:
                    self._helper.join(5.0)
                if done.is_set():
                    return
                self._raise()
                raise StoreError(f"the collector of session {self.session_id} stopped")

    def _writer_alive(self) -> bool:
        if self._process is not None:
            return self._process.alive()
        return self._writer_thread is not None and self._writer_thread.is_alive()

    @property
    def backlog(self) -> int:
        """Entries waiting to be shipped to the writer."""
        return len(self._entries)

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid (None when the writer runs as a thread, or not at all)."""
        return self._process.popen.pid if self._process is not None else None

    # -- hooks (called on the import thread; contacts, batches and metrics from any thread) ------

    def message(
        self,
        source_id: int,
        msg: Message,
        outcome: Outcome,
        detail: str | None = None,
        *,
        direction: str | None = None,
        duplicate_of: str | None = None,
        activity_id: str | None = None,
        dataverse_id: str | None = None,
    ) -> None:
        """One message's row, as plain values (:func:`~pstlib.store.writer.message_values`,
        inlined: the hot path)."""
        if not self.enabled:
            return
        if self._error is not None:
            self._raise()
        state = msg.__dict__
        body_sha256 = state.get("body_sha256")
        attachments = msg.attachments
        sender = msg.sender
        sent, received = msg.sent_at_utc, msg.received_at_utc
        if sent is not None:  # shipped_time(), inlined
            sent = (
                sent.__reduce__()[1][0]  # type: ignore[assignment]
                if sent.__class__ is _datetime and sent.tzinfo is _UTC
                else sent.isoformat()
            )
        if received is not None:
            received = (
                received.__reduce__()[1][0]  # type: ignore[assignment]
                if received.__class__ is _datetime and received.tzinfo is _UTC
                else received.isoformat()
            )
        row: tuple[Any, ...] = (
            source_id,
            outcome._value_,
            detail,
            direction,
            duplicate_of,
            activity_id,
            dataverse_id,
            _message_fields(msg),
            msg.folder_role._value_,
            sent,
            received,
            None if sender is None else _sender_parts(sender),
            tuple(map(_recipient_parts, msg.recipients)),
            tuple(map(_attachment_size, attachments)) if attachments else (),
            state.get("dedupe_key"),
            state.get("content_sha256"),
            body_sha256,
            msg.body if body_sha256 is None else None,
        )
        # marshalled now, while its tuples are young: queued as bytes, which the garbage
        # collector does not track (queued tuples survived into older generations and set off
        # full collections of the whole heap: 60-90 ms of a 20k-message import)
        try:
            entry: tuple[Any, ...] | bytes = _dumps(row, _MARSHAL_VERSION)
        except ValueError:  # a value marshal does not write: the chunk is pickled
            entry = row
        entries = self._entries
        entries.append(entry)
        if len(entries) >= self._capacity:
            self._ship_own()

    def update(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """New outcomes of recorded messages (by ``source_id`` + ``item_id``, or row id)."""
        if not self.enabled or not rows:
            return
        self._put(("update", [dict(r) for r in rows]))

    def error(
        self,
        stage: str,
        err: SourceError | BaseException,
        *,
        source_id: int | None = None,
        item: str | None = None,
    ) -> None:
        if not self.enabled:
            return
        self._put(("error", stage, _error_parts(err), source_id, item))

    def contact(
        self,
        address: str,
        action: str,
        *,
        name: str | None = None,
        detail: str | None = None,
        dataverse_id: str | None = None,
    ) -> None:
        if not self.enabled:
            return
        self._put(("contact", address, action, name, detail, dataverse_id))

    def batch(self, record: BatchRecord) -> None:
        """One ``$batch`` attempt (the client's ``on_batch`` hook)."""
        if not self.enabled:
            return
        self._put(
            (
                "batch",
                record.started_at_utc,
                record.duration_s,
                record.operations,
                record.succeeded,
                record.failed,
                record.attempt,
                record.http_status,
                record.limit_code,
                record.retry_after_s,
                record.request_bytes,
            )
        )

    def metric(self, name: str, value: float, labels: Mapping[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        self._put(("metric", name, float(value), dict(labels) if labels else None))

    def finish_source(
        self, source_id: int, status: str, items_found: int | None, error: str | None = None
    ) -> None:
        """Close a source once its rows before this call are committed."""
        if not self.enabled:
            return
        self._put(("finish_source", source_id, status, items_found, error))

    # -- internals ------------------------------------------------------------------------------

    def _put(self, entry: tuple[Any, ...]) -> None:
        if self._error is not None:
            self._raise()
        self._entries.append(entry)
        if len(self._entries) >= self._capacity:
            self._ship_own()

    def _ship_own(self) -> None:
        """The import thread ships a full chunk itself. Shipping from the helper thread instead
        cost the import a third of its time: every system call of the helper's (its poll, each
        64 KiB of a chunk's write) handed the interpreter lock back to it only after the import
        thread's switch interval (5 ms), so chunks left late, in the end seconds' worth at once,
        and the import waited at its close for the writer to work through them. Here a chunk is
        one join and, the pipe being wide enough, one write that does not wait for the writer
        (unless it is a pipe's worth behind: the back-pressure)."""
        began = time.perf_counter()
        self._ship()
        self.wait_s += time.perf_counter() - began

    def _ship(self, *, blocking: bool = True) -> None:
        """Send everything waiting, in order, as one chunk (only one thread sends at a time).
        Not ``blocking``: leave it to the thread sending now (the helper must go on reading the
        writer's answers, its error among them, while the import thread waits on a full pipe)."""
        if not self._send_lock.acquire(blocking):
            return
        try:
            if self._stop_sent or self._torn:  # the session is over, or its stream is lost
                self._entries.clear()
                return
            self._send_waiting()
        finally:
            self._send_lock.release()

    def _send_waiting(self) -> None:
        """:meth:`_ship`'s work; the caller holds ``_send_lock``."""
        entries = self._entries
        count = len(entries)
        if not count or self._outbox is None:
            return
        popleft = entries.popleft
        chunk = [popleft() for _ in range(count)]
        self._shipped_at = time.monotonic()
        data = pack_entries(chunk)
        try:
            self._outbox.send_bytes(data)
        except OSError as err:  # the writer is gone: its own error says why, if it sent one
            if threading.current_thread() is self._helper:
                self._read_answers(0.5)
            elif self._helper is not None:
                self._helper.join(1.0)  # the helper reads the writer's last answers
            if self._error is None:
                self._error = StoreError(
                    f"the collector of session {self.session_id} stopped: {err}"
                )
            self._raise()
        except BaseException as exc:
            # Interrupted part-way (Ctrl-C on the import thread): the pipe may hold part of a
            # chunk, into which the writer would read whatever came next. Nothing more goes down
            # it: close() ends the writer, which drops what it had not committed (a resume
            # redoes it), and the interrupt goes on. Anything else lost the chunk's rows: an
            # error of the collector's, raised by close() too.
            self._torn = True
            if not isinstance(exc, KeyboardInterrupt) and self._error is None:
                self._error = StoreError(
                    f"the collector of session {self.session_id} lost rows: {exc!r}"
                )
            raise

    def _read_answers(self, timeout: float) -> None:
        inbox = self._inbox
        if inbox is None:
            return
        try:
            while inbox.poll(timeout):
                timeout = 0.0
                kind, value = inbox.recv()
                if kind == "ack":
                    event = self._acks.get(value)
                    if event is not None:
                        event.set()
                elif kind == "stopped":
                    self._stopped.set()
                elif kind == "ready":
                    pass  # the writer has the store open: nothing waits for that
                elif kind == "error" and self._error is None:
                    self._error = value
        except (EOFError, OSError):
            if self._error is None and not self._stopped.is_set():
                self._error = StoreError(
                    f"the collector of session {self.session_id} stopped unexpectedly"
                )

    def _help(self) -> None:
        """Read the writer's answers, sample resources, and ship what has waited ``poll_s``
        (a quiet import thread's last rows: a busy one ships its own chunks)."""
        next_sample = time.monotonic()
        tick = min(self.poll_s, 0.1)  # close() waits for the helper up to one tick
        while not self._closing.is_set():
            self._read_answers(tick)
            if self._error is not None or self._stopped.is_set():
                break
            try:
                if self._entries and time.monotonic() - self._shipped_at >= self.poll_s:
                    self._ship(blocking=False)
                if self.sample_every_s and time.monotonic() >= next_sample:
                    self._sample()
                    next_sample = time.monotonic() + self.sample_every_s
            except Exception as err:  # kept in self._error, raised on the import thread
                if self._error is None:
                    self._error = (
                        err
                        if isinstance(err, StoreError)
                        else StoreError(f"the collector of session {self.session_id}: {err!r}")
                    )
                break
        if not self._stopped.is_set() and self._error is None:
            self._read_answers(0.0)

    def _sample(self) -> None:
        entries = self._entries
        for name, value in self._sampler.sample():
            entries.append(("metric", name, value, None))
        if self.probe is not None:
            labels = self.probe_labels
            for stage, seconds in self.probe().items():
                entries.append(("metric", "stage_s", float(seconds), {**labels, "stage": stage}))

    def _raise(self) -> None:
        error = self._error
        if error is not None:
            if isinstance(error, StoreError):
                raise error
            raise StoreError(f"collector of session {self.session_id} failed: {error}") from error


if __name__ == "__main__":
    main()
