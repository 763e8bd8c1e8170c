"""The analytics collector: the import thread hands rows over, a background thread writes them.

The import thread only *enqueues*: one ``deque.append`` per row (no lock, no wake-up; the writer
thread polls every ``poll_s`` and drains the queue in bulk). The queue is bounded (``queue_size``):
if the writer ever falls a whole queue behind, the import waits for it rather than lose a row. The
writer thread owns the session's :class:`~pstlib.store.writer.MessageWriter`: it buffers rows and
commits them at least every ``flush_every_s`` (so a ``kill -9`` loses at most that much, which a
resume then redoes), and on :meth:`Collector.flush` and :meth:`Collector.close` (the end of a
session, or its interruption).

A store error in the writer thread is never swallowed: it is raised in the import thread at its
next call. ``Collector(..., enabled=False)`` records nothing (the overhead benchmark's baseline).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pstlib.dataverse import BatchRecord
from pstlib.errors import SourceError, StoreError
from pstlib.models import Message
from pstlib.store import Store
from pstlib.store.schema import Outcome
from pstlib.store.writer import MessageWriter

log = logging.getLogger(__name__)

_STOP = object()
Task = Callable[[MessageWriter], None]


class Collector:
    """Queue + background writer for one session's rows. Use as a context manager."""

    def __init__(
        self,
        store: Store,
        session_id: str,
        *,
        enabled: bool = True,
        queue_size: int = 20_000,
        flush_every_s: float = 0.5,
        batch_rows: int = 5000,
        poll_s: float = 0.05,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.enabled = enabled
        self.flush_every_s = flush_every_s
        self.batch_rows = batch_rows
        self.waits = 0  # times the import thread found the queue full
        self.poll_s = poll_s
        self._capacity = max(1, queue_size)
        self._tasks: deque[Any] = deque()
        self._wake = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> Collector:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"collector-{self.session_id}", daemon=True
            )
            self._thread.start()
        return self

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Write everything queued, stop the writer thread; raise its error if it had one."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._tasks.append(_STOP)
            self._wake.set()
            self._thread.join()
        self._raise()

    def flush(self) -> None:
        """Block until everything enqueued so far is committed."""
        if not self.enabled or self._thread is None:
            return
        done = threading.Event()

        def task(writer: MessageWriter) -> None:
            writer.flush()
            done.set()

        self._put(task)
        self._wake.set()
        while not done.wait(0.1):
            if not self._thread.is_alive():
                break
        self._raise()

    @property
    def backlog(self) -> int:
        """Tasks waiting in the queue."""
        return len(self._tasks)

    # -- hooks (called on the import thread) ----------------------------------------------------

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
        if not self.enabled:
            return
        self._put(
            lambda w: w.add_message(
                source_id,
                msg,
                outcome,
                detail,
                direction=direction,
                duplicate_of=duplicate_of,
                activity_id=activity_id,
                dataverse_id=dataverse_id,
            )
        )

    def update(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """New outcomes of recorded messages (by ``source_id`` + ``item_id``, or row id)."""
        if not self.enabled or not rows:
            return
        frozen = [dict(r) for r in rows]

        def task(writer: MessageWriter) -> None:
            writer.update_outcomes(frozen)

        self._put(task)

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
        self._put(lambda w: w.add_error(stage, err, source_id=source_id, item=item))

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
        self._put(
            lambda w: w.add_contact(
                address, action, name=name, detail=detail, dataverse_id=dataverse_id
            )
        )

    def batch(self, record: BatchRecord) -> None:
        """One ``$batch`` attempt (the client's ``on_batch`` hook)."""
        if not self.enabled:
            return
        self._put(
            lambda w: w.add_batch(
                record.started_at_utc,
                record.duration_s,
                record.operations,
                record.succeeded,
                record.failed,
                attempt=record.attempt,
                http_status=record.http_status,
                limit_code=record.limit_code,
                retry_after_s=record.retry_after_s,
                request_bytes=record.request_bytes,
            )
        )

    def metric(self, name: str, value: float, labels: Mapping[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        self._put(lambda w: w.add_metric(name, value, labels))

    def finish_source(
        self, source_id: int, status: str, items_found: int | None, error: str | None = None
    ) -> None:
        """Close a source once its rows before this call are committed."""
        if not self.enabled:
            return
        store = self.store

        def task(writer: MessageWriter) -> None:
            writer.flush()
            store.finish_source(source_id, status, items_found, error)

        self._put(task)

    # -- internals ------------------------------------------------------------------------------

    def _put(self, task: Task) -> None:
        """Hand ``task`` to the writer: one append, no lock, no wake-up (the writer polls)."""
        if self._error is not None:
            self._raise()
        if self._thread is None:
            raise StoreError("the collector is not started")
        tasks = self._tasks
        if len(tasks) >= self._capacity:  # the writer is a whole queue behind: wait for it
            self.waits += 1
            self._wake.set()
            while len(tasks) >= self._capacity:
                if not self._thread.is_alive():
                    self._raise()
                    raise StoreError("the collector's writer thread stopped")
                time.sleep(0.005)
        tasks.append(task)

    def _raise(self) -> None:
        error = self._error
        if error is not None:
            if isinstance(error, StoreError):
                raise error
            raise StoreError(f"collector of session {self.session_id} failed: {error}") from error

    def _run(self) -> None:
        tasks = self._tasks
        try:
            with self.store.writer(self.session_id, batch_rows=self.batch_rows) as writer:
                deadline = time.monotonic() + self.flush_every_s
                stopping = False
                while True:
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
                    while tasks:
                        task = tasks.popleft()
                        if task is _STOP:
                            stopping = True
                            continue
                        task(writer)
                    if stopping:
                        break
                    if time.monotonic() >= deadline:
                        writer.flush()
                        deadline = time.monotonic() + self.flush_every_s
        except BaseException as err:  # handed to the import thread, never swallowed
            log.error("collector of session %s failed: %s", self.session_id, err)
            self._error = err
            tasks.clear()
