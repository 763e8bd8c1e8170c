"""pstlib's own records: what every mail source yields, whatever the file format.

Timestamps are timezone-aware UTC. Addresses are normalised (see :mod:`pstlib.sources.addresses`),
with the raw header value kept. Records are frozen: a source builds them once and nothing changes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, Self, TypeVar, overload

T = TypeVar("T")


class _cached(Generic[T]):  # a decorator, named like functools.cached_property
    """``functools.cached_property`` without its per-class lock (Python 3.11 takes an RLock on
    every first access): the value is computed once and stored in the instance's ``__dict__``,
    where later look-ups find it without calling the descriptor."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...
    def __get__(self, instance: object | None, owner: type | None = None) -> T | Self:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value


class RecipientKind(StrEnum):
    TO = "to"
    CC = "cc"
    BCC = "bcc"


class FolderRole(StrEnum):
    """What a folder is for, from its well-known name (any language libpff or the header shows)."""

    INBOX = "inbox"
    SENT = "sent"
    DELETED = "deleted"
    DRAFTS = "drafts"
    OUTBOX = "outbox"
    JUNK = "junk"
    ARCHIVE = "archive"
    CALENDAR = "calendar"
    CONTACTS = "contacts"
    TASKS = "tasks"
    NOTES = "notes"
    JOURNAL = "journal"
    OTHER = "other"


class ItemKind(StrEnum):
    """The broad kind of an item, from its MAPI message class (``IPM.Note`` is mail...)."""

    MAIL = "mail"
    MEETING = "meeting"
    APPOINTMENT = "appointment"
    CONTACT = "contact"
    DISTLIST = "distlist"
    TASK = "task"
    NOTE = "note"
    POST = "post"
    REPORT = "report"
    OTHER = "other"


SENDER_CLASSES = (
    "internal_colleague",
    "key_external",
    "external",
    "vendor",
    "newsletter",
    "automated",
    "one_off",
)
"""The kinds of correspondent: what the synthetic truth plants and what the sender analysis finds."""


def kind_of_class(message_class: str) -> ItemKind:
    """Map a MAPI message class to its :class:`ItemKind` (``IPM.Schedule.Meeting.Request`` -> meeting)."""
    mc = message_class.strip().upper()
    if mc.startswith("REPORT."):
        return ItemKind.REPORT
    table = (
        ("IPM.SCHEDULE.MEETING", ItemKind.MEETING),
        ("IPM.APPOINTMENT", ItemKind.APPOINTMENT),
        ("IPM.CONTACT", ItemKind.CONTACT),
        ("IPM.DISTLIST", ItemKind.DISTLIST),
        ("IPM.TASK", ItemKind.TASK),
        ("IPM.STICKYNOTE", ItemKind.NOTE),
        ("IPM.POST", ItemKind.POST),
        ("IPM.NOTE", ItemKind.MAIL),
    )
    for prefix, kind in table:
        if mc == prefix or mc.startswith(prefix + "."):
            return kind
    return ItemKind.OTHER


@dataclass(frozen=True, slots=True)
class Address:
    """A normalised mail address: ``address`` lower-cased SMTP ('' when none could be found)."""

    address: str
    name: str = ""
    raw: str = ""

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2] if "@" in self.address else ""


@dataclass(frozen=True, slots=True)
class Recipient:
    kind: RecipientKind
    address: Address


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    size_bytes: int
    mime_type: str = "application/octet-stream"
    data: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Message:
    """One item read from a mail source.

    ``item_id`` is stable within its source file (the PST node id, the mbox message index, the EML
    path relative to the scanned folder). ``body`` is plain text where the item has it, else HTML
    (``body_is_html``). ``headers`` keeps the few list/automation headers the analytics use
    (lower-case names: ``list-id``, ``list-unsubscribe``, ``auto-submitted``, ``precedence``,
    ``x-auto-response-suppress``...). The hashes and the dedupe key are computed once, on first use
    (the record has no ``__slots__`` so that they can be cached).
    """

    source_path: str
    item_id: str
    folder_path: str = ""
    folder_role: FolderRole = FolderRole.OTHER
    message_class: str = "IPM.Note"
    internet_message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    conversation_topic: str | None = None
    conversation_index: str | None = None
    subject: str = ""
    sender: Address | None = None
    recipients: tuple[Recipient, ...] = ()
    sent_at_utc: datetime | None = None
    received_at_utc: datetime | None = None
    size_bytes: int = 0
    attachments: tuple[Attachment, ...] = ()
    body: str = field(default="", repr=False)
    body_is_html: bool = False
    importance: int = 1
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def kind(self) -> ItemKind:
        return kind_of_class(self.message_class)

    @property
    def attachment_count(self) -> int:
        return len(self.attachments)

    @property
    def attachment_bytes(self) -> int:
        return sum(a.size_bytes for a in self.attachments)

    @_cached
    def body_sha256(self) -> str:
        return body_sha256_of(self.body)

    @_cached
    def content_sha256(self) -> str:
        """A hash of what makes two copies of a message the same, for items with no Message-ID."""
        state = self.__dict__
        body = state.get("body_sha256")
        if body is None:  # computed here, not through the descriptor: one call fewer
            body = state["body_sha256"] = body_sha256_of(self.body)
        sender, sent = self.sender, self.sent_at_utc
        return content_sha256_of(
            sender.address if sender else "",
            sent.isoformat() if sent else "",
            [r.address.address for r in self.recipients],
            self.subject,
            body,
        )

    @_cached
    def dedupe_key(self) -> str:
        """``mid:<message-id>`` where the item has one, else ``sha:<content hash>``."""
        return dedupe_key_of(self.internet_message_id, self)

    def hashes(self) -> tuple[str, str, str]:
        """``(dedupe_key, content_sha256, body_sha256)``, each computed once and cached.

        Why one method: the store writes all three for every message, and three descriptor
        calls on a fresh record cost about as much as the hashing itself.
        """
        state = self.__dict__
        try:
            return state["dedupe_key"], state["content_sha256"], state["body_sha256"]
        except KeyError:
            pass
        content = state.get("content_sha256")
        if content is None:
            content = self.content_sha256
        key = state.get("dedupe_key")
        if key is None:
            key = state["dedupe_key"] = dedupe_key_of(self.internet_message_id, content)
        return key, content, state["body_sha256"]

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k == lname), None)


_sha256 = hashlib.sha256


def body_sha256_of(body: str) -> str:
    """The hex SHA-256 of a body's text (UTF-8; lone surrogates kept, as a hostile body has them)."""
    return _sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


def content_sha256_of(
    sender_address: str,
    sent_iso: str,
    recipient_addresses: list[str],
    subject: str,
    body_sha256: str,
) -> str:
    """:attr:`Message.content_sha256` from plain values (the one home of its definition).

    ``sent_iso`` is the sent time's ``isoformat()`` ('' when none), ``recipient_addresses`` the
    recipients' SMTP addresses in any order (a list of the caller's: it is sorted in place). The store's writer process calls it on
    the values shipped to it, without rebuilding the record.
    """
    if len(recipient_addresses) > 1:
        recipient_addresses.sort()
        rcpts = ",".join(recipient_addresses)
    else:
        rcpts = recipient_addresses[0] if recipient_addresses else ""
    key = "\x1f".join((sender_address, sent_iso, rcpts, subject, body_sha256))
    return _sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def dedupe_key_of(internet_message_id: str | None, content: str | Message) -> str:
    """:attr:`Message.dedupe_key` from a Message-ID and the content hash (or the record, whose
    content hash is then computed only when there is no Message-ID)."""
    if internet_message_id:
        return "mid:" + internet_message_id.strip().strip("<>").lower()
    return "sha:" + (content if isinstance(content, str) else content.content_sha256)
