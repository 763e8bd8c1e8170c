"""The session run loop: read every source and record every message's fate in the store.

A scan is an *assess* session: it reads, classifies and records, and writes nowhere but the store.
The Dataverse import builds on the same loop (see :mod:`pstlib.importer.run`).

Files are read by worker processes, one file each at a time (:func:`pstlib.sources.parallel.read_files`),
and this process records what they send: every message and every error exactly once, with its
source. Messages of one file keep their order; files interleave.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pstlib.analytics.imports import SessionSummary, summarize_session
from pstlib.errors import SourceError
from pstlib.models import FolderRole, Message
from pstlib.sources import discover_sources
from pstlib.sources.parallel import FileDone, FileItems, FileOpened, read_files
from pstlib.sources.parallel import file_sha256 as file_sha256  # its home is with the readers
from pstlib.store import MessageWriter, Store, load
from pstlib.store.schema import Outcome, SessionStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Progress:
    """One tick of a running session, for a progress bar (the CLI draws it; the library never
    prints)."""

    source: str
    source_index: int
    source_count: int
    messages: int = 1
    failed: bool = False
    error: str | None = None  # a whole file could not be read: why (names the file)
    total: int | None = None  # messages expected in the whole session, where known
    outcome: str | None = None  # the outcome of these messages (an import's ticks say it)


ProgressCallback = Callable[[Progress], None]


def direction_of(message: Message, owner: str | None) -> str:
    """``outgoing`` when the mailbox owner sent the message, else ``incoming``.

    With no owner known, a message in a sent/outbox/drafts folder counts as outgoing.
    """
    if owner:
        sender = message.sender.address if message.sender else ""
        return "outgoing" if sender == owner.lower() else "incoming"
    if message.folder_role in (FolderRole.SENT, FolderRole.OUTBOX, FolderRole.DRAFTS):
        return "outgoing"
    return "incoming"


def scan(
    paths: Sequence[Path | str],
    store: Store,
    *,
    mailbox_owner: str | None = None,
    on_progress: ProgressCallback | None = None,
    processes: int | None = None,
) -> str:
    """Read every mail file under ``paths`` into a new assess session of ``store``; return its id.

    Bad files and unreadable items are recorded as errors (and failed messages) and the scan goes
    on.
    Interrupted (Ctrl-C) the session is marked ``interrupted`` with what was read so far, and the
    interrupt is re-raised.
    ``processes``: worker processes reading files (default: one per CPU, at most one per file;
    1 reads everything in this process).
    """
    files = discover_sources([Path(p) for p in paths])
    options = {"paths": [str(p) for p in paths], "files": len(files)}
    session_id = store.begin_session("assess", options, mailbox_owner=mailbox_owner)
    status = SessionStatus.FAILED
    try:
        _read_all(files, store, session_id, mailbox_owner, on_progress, processes)
        status = SessionStatus.COMPLETED
    except KeyboardInterrupt:
        status = SessionStatus.INTERRUPTED
        raise
    finally:
        store.end_session(session_id, status, None)
        store.end_session(session_id, status, summarize(store, session_id).to_dict())
    return session_id


def summarize(store: Store, session_id: str) -> SessionSummary:
    """Load one session's rows from ``store`` and summarise them (the session document)."""
    return summarize_session(
        store.get_session(session_id),
        load.load_sources(store, session_id),
        load.load_messages(store, session_id, columns=_SUMMARY_COLUMNS),
        load.load_errors(store, session_id),
        load.load_contacts(store, session_id),
        load.load_batches(store, session_id),
    )


_SUMMARY_COLUMNS = [
    "outcome",
    "message_class",
    "item_kind",
    "folder_role",
    "sent_at_utc",
    "received_at_utc",
    "size_bytes",
]


def _read_all(
    files: Sequence[Path],
    store: Store,
    session_id: str,
    owner: str | None,
    on_progress: ProgressCallback | None,
    processes: int | None,
) -> None:
    """Record the events of :func:`read_files`: a source row per file, a message or error row per
    result, the source finished when its file is. Sources still open when the loop stops early
    (Ctrl-C) are finished with what was read so far."""
    count = len(files)
    open_sources: dict[int, int] = {}  # file index -> source_id, while the file is being read
    found: dict[int, int] = {}
    with store.writer(session_id) as writer:
        try:
            for event in read_files(files, processes=processes):
                index = event.index
                path = files[index]
                if isinstance(event, FileItems):
                    source_id = open_sources[index]
                    found[index] += len(event.results)
                    for result in event.results:
                        failed = isinstance(result, SourceError)
                        if isinstance(result, SourceError):
                            writer.add_error("read", result, source_id=source_id, item=result.item)
                        else:
                            writer.add_message(
                                source_id,
                                result,
                                Outcome.READ,
                                direction=direction_of(result, owner),
                            )
                        if on_progress:
                            on_progress(Progress(str(path), index, count, 1, failed=failed))
                elif isinstance(event, FileOpened):
                    size = path.stat().st_size
                    if event.error is None:
                        open_sources[index] = store.add_source(
                            session_id, str(path), event.kind or "unknown", size, event.sha256
                        )
                        found[index] = 0
                        continue
                    err = event.error
                    log.warning("%s", err)
                    source_id = store.add_source(session_id, str(path), "unknown", size, None)
                    writer.add_error("open", err, source_id=source_id)
                    writer.flush()
                    store.finish_source(source_id, "failed", 0, str(err))
                    if on_progress:
                        on_progress(
                            Progress(str(path), index, count, 0, failed=True, error=str(err))
                        )
                else:
                    _finish(store, writer, open_sources.pop(index, None), event)
                    found.pop(index, None)
        finally:
            for index, source_id in open_sources.items():
                writer.flush()
                store.finish_source(source_id, "read", found[index], None)


def _finish(store: Store, writer: MessageWriter, source_id: int | None, done: FileDone) -> None:
    """A file is read: its reader's warnings and any failure are recorded, its rows flushed,
    then its source row says how it ended."""
    if source_id is None:  # it could not be opened: recorded already
        return
    for warning in done.warnings:  # a bad date, an unknown charset, an unreadable attachment...
        writer.add_error("warning", warning, source_id=source_id, item=warning.item)
    failure = done.failure
    if failure is not None:
        log.warning("%s", failure)
        writer.add_error("source", failure, source_id=source_id)
    writer.flush()
    if failure is None:
        store.finish_source(source_id, "read", done.found, None)
    else:
        store.finish_source(source_id, "failed", done.found, str(failure))
