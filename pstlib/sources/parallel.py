"""Reading many mail files at once: one worker process per file, results streamed back in order.

A migration has many PSTs, and libpff spends most of a scan's time: :func:`read_files` reads
several files at once, one worker process each (see its docstring for the order, memory and
crash guarantees). It reads mbox and EML files too.

Why not :mod:`concurrent.futures`: a worker killed by libpff on a hostile file breaks a
``ProcessPoolExecutor`` for every file, where here it costs only its own file; results must stream
with back-pressure (memory flat whatever the file size), not arrive as one return value; and a
worker must not re-run the caller's ``__main__`` (spawn, forkserver) or fork a threaded parent.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from pstlib.errors import SourceError
from pstlib.models import Message
from pstlib.sources.base import ReadResult
from pstlib.sources.eml import WarningLog
from pstlib.sources.pst import PstSource, _last_reason

logger = logging.getLogger(__name__)

#: Results a worker sends at a time: large enough that pickling and the pipe cost little per
#: item, small enough (with :data:`CHUNK_BYTES`) that memory stays flat whatever the file size.
CHUNK_ITEMS = 64
CHUNK_BYTES = 4 << 20  # bodies and headers of one chunk, roughly
RESULT_PIPE_BYTES = 1 << 20
_TASKS_PER_WORKER = 2  # files handed to a worker ahead, so that it never waits for the next
_HASH_CHUNK = 1 << 20
_READY = "ready"  # a worker's first message: it started, so a death from now on is a file's


def file_sha256(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB chunks (chain of custody: which exact file was read)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class FileOpened:
    """File ``index`` of the list was opened (``kind``, ``sha256``), or could not be (``error``)."""

    index: int
    kind: str | None
    sha256: str | None = None
    error: SourceError | None = None


@dataclass(frozen=True, slots=True)
class FileItems:
    """The next results of file ``index``, in the order its reader yielded them."""

    index: int
    results: list[ReadResult]


@dataclass(frozen=True, slots=True)
class FileDone:
    """File ``index`` is finished: ``found`` results in all. ``failure`` says why reading stopped
    early (the reader raised, or its process died); ``warnings`` are the reader's non-fatal
    problems."""

    index: int
    found: int
    warnings: list[SourceError] = field(default_factory=list)
    failure: SourceError | None = None


FileEvent = FileOpened | FileItems | FileDone


def default_processes(files: int) -> int:
    """Worker processes for ``files`` files: one per CPU this process may use, at most one a file."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, files))


def read_files(
    paths: Sequence[Path],
    *,
    processes: int | None = None,
    attachment_data: bool = False,
    background: bool = False,
    ordered: bool = False,
) -> Generator[FileEvent, None, None]:
    """Read every file of ``paths``: for each, a :class:`FileOpened`, its results in
    :class:`FileItems` chunks, then a :class:`FileDone`.

    ``processes`` worker processes read one file each at a time (default
    :func:`default_processes`; 1 reads in this process, as does a single file, unless
    ``background``: then even one file is read by a worker, for a caller with work of its own
    to do beside the reading, such as an import). Guarantees:

    * every result of every file arrives exactly once, tagged with its file's index, and the
      results of one file arrive in its reader's order; files interleave (a large file does not
      hold the others back), so the order *across* files varies from run to run, unless
      ``ordered``: then files are read and their events arrive in the order of ``paths``, one
      file after another (a worker reads ahead into its pipe while it waits for its turn), as
      a caller needs whose outcome depends on the order, such as deduplication;
    * memory stays flat: a worker blocks on its pipe once it holds :data:`RESULT_PIPE_BYTES`
      that this generator has not taken, so at most that and one chunk per worker are in
      flight;
    * a worker that dies (libpff crashing on a hostile file) costs only the file it was reading:
      that file ends with a ``failure`` naming the exit code and what was read before, and is
      not read again; the files it had been handed go to a fresh worker. A worker that dies
      before it is ready (a broken environment) costs no file: what is left is read here;
    * leaving the loop early (an exception, Ctrl-C) stops the workers.

    ``attachment_data=False`` (the default: a scan records attachment names and sizes only)
    spares reading and shipping attachment bytes. Each message's hashes (``content_sha256``,
    ``dedupe_key``) are computed by the worker, in parallel, and travel with the record.
    """
    files = [Path(p) for p in paths]
    count = default_processes(len(files)) if processes is None else max(1, processes)
    if not files:
        return
    if not background and (count == 1 or len(files) <= 1):
        for index, path in enumerate(files):
            yield from _read_file(index, path, attachment_data, hash_messages=False)
        return
    yield from _Pool(files, min(count, len(files)), attachment_data, ordered=ordered).events()


def _open_for_scan(path: Path, attachment_data: bool) -> Any:
    from pstlib.sources import detect_kind, open_source

    if detect_kind(path) in ("pst", "ost"):
        return PstSource(path, read_attachment_data=attachment_data)
    return open_source(path)


def _read_file(
    index: int, path: Path, attachment_data: bool, *, hash_messages: bool
) -> Iterator[FileEvent]:
    """One file's events. Any error reading it ends the file, never the caller's loop."""
    try:
        source = _open_for_scan(path, attachment_data)
    except SourceError as err:
        yield FileOpened(index, None, error=err)
        yield FileDone(index, 0)
        return
    except Exception as err:  # a reader bug must not stop the other files
        yield FileOpened(index, None, error=SourceError(str(path), f"cannot open: {err!r}"))
        yield FileDone(index, 0)
        return
    try:
        sha256 = file_sha256(path)
    except OSError as err:  # an I/O error on a flaky share: this file fails, not the caller
        source.close()
        yield FileOpened(index, None, error=SourceError(str(path), f"cannot read: {err}"))
        yield FileDone(index, 0)
        return
    found = 0
    failure: SourceError | None = None
    try:
        yield FileOpened(index, source.kind, sha256=sha256)
        chunk: list[ReadResult] = []
        size = 0
        for result in source:
            found += 1
            chunk.append(result)
            if isinstance(result, Message):
                size += len(result.body)
                if attachment_data:
                    size += sum(len(a.data or b"") for a in result.attachments)
                if hash_messages:  # cached on the record, pickled with it
                    _ = result.content_sha256, result.dedupe_key
            if len(chunk) >= CHUNK_ITEMS or size >= CHUNK_BYTES:
                yield FileItems(index, chunk)
                chunk, size = [], 0
        if chunk:
            yield FileItems(index, chunk)
    except SourceError as err:
        failure = err
    except (OSError, ValueError, RuntimeError, MemoryError, TypeError) as err:
        failure = SourceError(str(path), f"reading stopped: {_last_reason(err)}")
    finally:
        warnings = _warnings_of(source, path)
        source.close()
    yield FileDone(index, found, warnings, failure)


def _warnings_of(source: Any, path: Path) -> list[SourceError]:
    """The source's non-fatal problems, and one more saying how many it counted but did not keep."""
    warnings = list(getattr(source, "warnings", []))
    log = getattr(source, "_log", None)
    dropped = (log.warning_count - len(warnings)) if isinstance(log, WarningLog) else 0
    if dropped > 0:
        warnings.append(
            SourceError(
                str(path),
                f"{dropped} more warning(s) like the above were counted but not kept",
                code="warnings_not_kept",
            )
        )
    return warnings


def die_with_parent(parent: int) -> None:
    """In a child process: ask Linux for SIGKILL when the parent (pid ``parent``) dies, so that a
    ``kill -9`` of an import takes its readers and its writer with it; exit now if it is gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before we asked
        os._exit(1)


def widen_pipe(fd: int, size: int) -> None:
    """Let the pipe of ``fd`` hold ``size`` bytes (Linux; elsewhere, or over the system's
    ``pipe-max-size``, it keeps its default of 64 KiB)."""
    import fcntl  # POSIX: pipes are handed to children only there

    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)


def _worker(task_fd: int, result_fd: int, attachment_data: bool, parent: int) -> None:
    """A worker process: read each ``(index, path)`` sent on ``task_fd``, send its events back.

    SIGINT is ignored: Ctrl-C reaches the whole process group, and the parent decides. A parent
    that is gone (its end of a pipe closed) ends the worker quietly.
    """
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tasks, results = Connection(task_fd, writable=False), Connection(result_fd, readable=False)
    try:
        results.send(_READY)
        while True:
            task = tasks.recv()
            if task is None:
                break
            index, name = task
            for event in _read_file(index, Path(name), attachment_data, hash_messages=True):
                results.send(event)
    except (BrokenPipeError, EOFError):
        return
    results.close()


# A worker is a fresh interpreter that imports this module and nothing else: not the parent's
# __main__ (which multiprocessing's spawn and forkserver re-run in every child: a script's
# imports, or worse its unguarded work), and no fork of a parent that may hold threads.
_WORKER_CODE = (
    "import sys; sys.path[:0] = {path!r}; "
    "from pstlib.sources.parallel import _worker; _worker({task}, {result}, {data}, {parent})"
)


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    tasks: Connection
    results: Connection
    assigned: deque[int]  # file indexes handed to it, oldest (the one being read) first
    stopped: bool = False
    ready: bool = False


class _Pool:
    """The worker processes of one :func:`read_files` call, and the parent's side of them."""

    def __init__(
        self, files: list[Path], count: int, attachment_data: bool, *, ordered: bool = False
    ) -> None:
        self.files = files
        self.attachment_data = attachment_data
        self.ordered = ordered
        # largest first: the big files start early and the small ones fill the gaps at the end
        order = range(len(files))
        self.pending = deque(order if ordered else sorted(order, key=lambda i: -_size_of(files[i])))
        self.opened: set[int] = set()
        self.found: dict[int, int] = {}
        self.broken = False  # a worker died before it was ready: start no more
        self.workers = [self._start() for _ in range(count)]
        for _ in range(_TASKS_PER_WORKER):  # round robin, so that each starts on a large file
            for worker in self.workers:
                self._hand(worker)

    def _start(self) -> _Worker:
        task_read, task_write = os.pipe()
        result_read, result_write = os.pipe()
        # room for a few chunks: a reader goes on while its consumer pauses (a garbage
        # collection, a commit, its own writer's back-pressure) instead of waiting on it
        widen_pipe(result_write, RESULT_PIPE_BYTES)
        code = _WORKER_CODE.format(
            path=sys.path,
            task=task_read,
            result=result_write,
            data=self.attachment_data,
            parent=os.getpid(),
        )
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", code], pass_fds=(task_read, result_write)
            )
        finally:
            os.close(task_read)  # the child's ends: closing ours lets EOF say that it is gone
            os.close(result_write)
        return _Worker(
            process,
            Connection(task_write, readable=False),
            Connection(result_read, writable=False),
            deque(),
        )

    def _hand(self, worker: _Worker) -> None:
        """Give ``worker`` the next file, or tell it to stop when there is none left."""
        if worker.stopped:
            return
        try:
            if self.pending and not self.broken:
                index = self.pending.popleft()
                worker.assigned.append(index)
                worker.tasks.send((index, str(self.files[index])))
            elif not worker.assigned:
                worker.stopped = True
                worker.tasks.send(None)
        except OSError:  # the worker is gone: its results pipe says so next
            pass

    def events(self) -> Iterator[FileEvent]:
        try:
            while self.workers:
                first = self._first_pending()
                if first is not None:  # its turn, and no worker will read it: read it here
                    yield from _read_file(
                        first, self.files[first], self.attachment_data, hash_messages=False
                    )
                    continue
                by_pipe = {w.results: w for w in self._turn()}
                for pipe in wait(list(by_pipe)):
                    worker = by_pipe[pipe]  # type: ignore[index]
                    try:
                        event = worker.results.recv()
                    except (EOFError, OSError):
                        yield from self._retire(worker)
                        continue
                    if event == _READY:
                        worker.ready = True
                        continue
                    if isinstance(event, FileOpened):
                        self.opened.add(event.index)
                    elif isinstance(event, FileItems):
                        self.found[event.index] = self.found.get(event.index, 0) + len(
                            event.results
                        )
                    else:
                        worker.assigned.popleft()
                        self.found.pop(event.index, None)
                        self._hand(worker)
                    yield event
            # left by workers that could not start
            for index in sorted(self.pending) if self.ordered else self.pending:
                yield from _read_file(
                    index, self.files[index], self.attachment_data, hash_messages=False
                )
        finally:
            for worker in self.workers:
                _stop(worker)

    def _first_pending(self) -> int | None:
        """When ``ordered`` and workers failed to start (no more are handed files): the earliest
        file left pending, if it comes before every file a worker holds (read it now, here)."""
        if not (self.ordered and self.broken and self.pending):
            return None
        first = min(self.pending)
        held = [w.assigned[0] for w in self.workers if w.assigned]
        if held and min(held) < first:
            return None
        self.pending.remove(first)
        return first

    def _turn(self) -> list[_Worker]:
        """The workers whose events may be taken now: all, or when ``ordered`` the one reading
        the earliest file (the others wait, blocked on their pipes once these are full)."""
        if not self.ordered:
            return self.workers
        busy = [w for w in self.workers if w.assigned]
        if not busy:  # only workers with nothing to read: their end of file comes next
            return self.workers
        return [min(busy, key=lambda w: w.assigned[0])]

    def _retire(self, worker: _Worker) -> Iterator[FileEvent]:
        """A worker's pipe closed: it stopped, or it died with files still handed to it."""
        self.workers.remove(worker)
        worker.process.wait()
        worker.tasks.close()
        worker.results.close()
        if not worker.ready:  # it never started: no file's fault, and the next would fare alike
            logger.warning(
                "a reader process failed to start (exit code %s): reading in this process",
                worker.process.returncode,
            )
            self.broken = True
            self.pending.extendleft(reversed(worker.assigned))
            return
        if not worker.assigned:
            return
        index = worker.assigned.popleft()
        self.pending.extendleft(reversed(worker.assigned))  # never begun: read by someone else
        path = str(self.files[index])
        found = self.found.pop(index, 0)
        cause = (
            f"the reader process died (exit code {worker.process.returncode}) "
            f"after {found} item(s); the rest of the file was not read"
        )
        logger.warning("%s: %s", path, cause)
        failure = SourceError(path, cause, code="reader_died")
        if index not in self.opened:
            yield FileOpened(index, None, error=failure)
            yield FileDone(index, 0)
        else:
            yield FileDone(index, found, failure=failure)
        if self.pending and not self.broken:
            replacement = self._start()
            self.workers.append(replacement)
            for _ in range(_TASKS_PER_WORKER):
                self._hand(replacement)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _stop(worker: _Worker) -> None:
    if worker.process.poll() is None:
        worker.process.terminate()
    worker.process.wait()
    worker.tasks.close()
    worker.results.close()
