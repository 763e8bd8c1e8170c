"""The session run loop: read every source and record every message's fate in the store.

A scan is an *assess* session: it reads, classifies and records, and writes nowhere but the store.
The Dataverse import builds on the same loop (see :mod:`pstlib.importer.run`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pstlib.analytics.imports import SessionSummary, summarize_session
from pstlib.errors import SourceError
from pstlib.models import FolderRole, Message
from pstlib.sources import discover_sources, open_source
from pstlib.store import Store, load
from pstlib.store.schema import Outcome, SessionStatus

log = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 20


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


def file_sha256(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB chunks (chain of custody: which exact file was read)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
) -> str:
    """Read every mail file under ``paths`` into a new assess session of ``store``; return its id.

    Bad files and unreadable items are recorded as errors (and failed messages) and the scan goes
    on.
    Interrupted (Ctrl-C) the session is marked ``interrupted`` with what was read so far, and the
    interrupt is re-raised.
    """
    files = discover_sources([Path(p) for p in paths])
    options = {"paths": [str(p) for p in paths], "files": len(files)}
    session_id = store.begin_session("assess", options, mailbox_owner=mailbox_owner)
    status = SessionStatus.FAILED
    try:
        _read_all(files, store, session_id, mailbox_owner, on_progress)
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
) -> None:
    with store.writer(session_id) as writer:
        for index, path in enumerate(files):
            size = path.stat().st_size
            try:
                source = open_source(path)
            except SourceError as err:
                log.warning("%s", err)
                source_id = store.add_source(session_id, str(path), "unknown", size, None)
                writer.add_error("open", err, source_id=source_id)
                writer.flush()
                store.finish_source(source_id, "failed", 0, str(err))
                if on_progress:
                    on_progress(
                        Progress(str(path), index, len(files), 0, failed=True, error=str(err))
                    )
                continue
            digest = file_sha256(path)
            source_id = store.add_source(session_id, str(path), source.kind, size, digest)
            found = 0
            try:
                for result in _tick(source, on_progress, str(path), index, len(files)):
                    found += 1
                    if isinstance(result, SourceError):
                        writer.add_error("read", result, source_id=source_id, item=result.item)
                        continue
                    writer.add_message(
                        source_id, result, Outcome.READ, direction=direction_of(result, owner)
                    )
            finally:
                source.close()
                writer.flush()
                store.finish_source(source_id, "read", found, None)


def _tick(
    results: Iterable[Message | SourceError],
    on_progress: ProgressCallback | None,
    source: str,
    index: int,
    count: int,
) -> Iterable[Message | SourceError]:
    for result in results:
        yield result
        if on_progress:
            on_progress(Progress(source, index, count, 1, failed=isinstance(result, SourceError)))
