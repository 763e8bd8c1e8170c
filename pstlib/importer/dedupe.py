"""Deduplication: is this message imported already, and where?

A message's identity is :attr:`Message.dedupe_key` (its Message-ID, else a hash of its content).
It is a duplicate when the same key was

* ``within_session``: seen earlier in this session (another folder, another file);
* ``earlier_session``: imported by an earlier session recorded in the store;
* ``dataverse``: already in Dataverse under another activity id (imported by something else;
  looked up by ``messageid``). A row with *our own* deterministic activity id is not a duplicate
  but our own earlier create (a resumed or retried import), and is sent again harmlessly.

``duplicate_of`` names what matched: ``<how>:<session_id>/<source_id>/<item_id>`` for a message in
the store, ``dataverse:<activityid>`` for a row in Dataverse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sqlalchemy import select

from pstlib.dataverse.mapping import activity_id_for, normalise_messageid
from pstlib.models import Message
from pstlib.store import Store
from pstlib.store.schema import Outcome, messages


class DuplicateKind(StrEnum):
    WITHIN_SESSION = "within_session"
    EARLIER_SESSION = "earlier_session"
    DATAVERSE = "dataverse"


@dataclass(frozen=True, slots=True)
class Duplicate:
    """How a message is a duplicate, and of what."""

    kind: DuplicateKind
    matched: str

    @property
    def duplicate_of(self) -> str:
        return f"{self.kind.value}:{self.matched}"


def item_ref(session_id: str, source_id: int, item_id: str) -> str:
    """How the store names one message: ``<session_id>/<source_id>/<item_id>``."""
    return f"{session_id}/{source_id}/{item_id}"


def earlier_imports(store: Store, exclude_session: str | None = None) -> dict[str, str]:
    """``{dedupe_key: item ref}`` of every message imported by a session (but ``exclude_session``).

    The first import of a key wins (lowest ``message_row_id``).
    """
    table = messages
    query = (
        select(table.c.dedupe_key, table.c.session_id, table.c.source_id, table.c.item_id)
        .where(table.c.outcome == Outcome.IMPORTED.value)
        .order_by(table.c.message_row_id.desc())
    )
    if exclude_session is not None:
        query = query.where(table.c.session_id != exclude_session)
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    # descending order: the earliest row is written last and wins
    return {key: item_ref(session, source, item) for key, session, source, item in rows}


class Deduplicator:
    """Remembers the keys of a session and of earlier sessions; answers per message."""

    def __init__(
        self,
        earlier: Mapping[str, str] | None = None,
        seen: Mapping[str, str] | None = None,
    ) -> None:
        self.earlier = dict(earlier or {})
        self.seen: dict[str, str] = dict(seen or {})  # key -> ref of the first copy this session

    def check(self, key: str, ref: str) -> Duplicate | None:
        """A :class:`Duplicate` if ``key`` was seen (under another ref), else remember it."""
        first = self.seen.get(key)
        if first is not None and first != ref:
            return Duplicate(DuplicateKind.WITHIN_SESSION, first)
        earlier = self.earlier.get(key)
        if earlier is not None:
            return Duplicate(DuplicateKind.EARLIER_SESSION, earlier)
        self.seen[key] = ref
        return None

    def forget(self, key: str, ref: str) -> None:
        """Drop ``key`` (its first copy turned out a duplicate of something else after all)."""
        if self.seen.get(key) == ref:
            del self.seen[key]


class EmailDirectory(Protocol):
    """What :func:`dataverse_duplicates` needs of :class:`~pstlib.dataverse.DataverseClient`."""

    def find_emails_by_messageid(self, message_ids: Iterable[str]) -> dict[str, str]: ...


def dataverse_duplicates(
    client: EmailDirectory, batch: Sequence[Message]
) -> dict[str, Duplicate]:
    """``{dedupe_key: Duplicate}`` for messages of ``batch`` Dataverse holds under another id."""
    wanted = {
        mid: m for m in batch if (mid := normalise_messageid(m.internet_message_id)) is not None
    }
    if not wanted:
        return {}
    found = client.find_emails_by_messageid(wanted)
    duplicates: dict[str, Duplicate] = {}
    for mid, activity_id in found.items():
        message = wanted.get(mid)
        if message is None:
            continue
        if activity_id.lower() != activity_id_for(message.dedupe_key):
            duplicates[message.dedupe_key] = Duplicate(DuplicateKind.DATAVERSE, activity_id)
    return duplicates
