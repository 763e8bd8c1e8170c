"""pstlib's own records: what every mail source yields, whatever the file format.

Timestamps are timezone-aware UTC. Addresses are normalised (see :mod:`pstlib.sources.addresses`),
with the raw header value kept. Records are frozen: a source builds them once and nothing changes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from operator import attrgetter
from typing import Any, Generic, Self, TypeVar, overload

T = TypeVar("T")


_set_attribute = object.__setattr__  # past a frozen dataclass's __setattr__


class _cached(Generic[T]):  # a decorator, named like functools.cached_property
    """``functools.cached_property`` without its per-class lock (Python 3.11 takes an RLock on
    every first access): the value is computed once and stored as an instance attribute, which
    later look-ups find without calling the descriptor.

    Stored with ``object.__setattr__``, not through ``instance.__dict__``: reading ``__dict__``
    makes the record a dict object of its own (CPython keeps a plain instance's attributes in an
    inline array until then), one more container for the garbage collector to count and
    traverse. See :func:`_reserve_cache_slots`.
    """

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
        value = self.func(instance)
        _set_attribute(instance, self.name, value)
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


_T = TypeVar("_T")


def _pickled_by_fields(cls: type[_T]) -> type[_T]:
    """Pickle a frozen, slotted dataclass as a call of its constructor with its field values.

    Why: the ``__getstate__``/``__setstate__`` that :func:`dataclasses.dataclass` gives a slotted
    class look its fields up again on every call (:func:`dataclasses.fields`, in Python): three
    such records a message made up two thirds of unpickling the messages a reader process sends
    an import (0.33 of 0.43 s for 20k messages). A constructor call with a tuple is several
    times cheaper, both ways.
    """
    values = attrgetter(*(f.name for f in fields(cls)))  # type: ignore[arg-type]

    def __reduce__(self: _T) -> tuple[type[_T], tuple[Any, ...]]:
        return cls, values(self)

    cls.__reduce__ = __reduce__  # type: ignore[assignment,method-assign]
    return cls


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Address:
    """A normalised mail address: ``address`` lower-cased SMTP ('' when none could be found)."""

    address: str
    name: str = ""
    raw: str = ""

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2] if "@" in self.address else ""


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Recipient:
    kind: RecipientKind
    address: Address


@_pickled_by_fields
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
        """A hash of what makes two copies of a message the same, for items with no Message-ID.

        The body's hash and the dedupe key are cached with it (the store wants all three: one
        descriptor call, not three, for a fresh record).
        """
        body = body_sha256_of(self.body)
        sender, sent = self.sender, self.sent_at_utc
        content = content_sha256_of(
            sender.address if sender else "",
            sent.isoformat() if sent else "",
            [r.address.address for r in self.recipients],
            self.subject,
            body,
        )
        _set_attribute(self, "body_sha256", body)
        _set_attribute(self, "dedupe_key", dedupe_key_of(self.internet_message_id, content))
        return content

    @_cached
    def dedupe_key(self) -> str:
        """``mid:<message-id>`` where the item has one, else ``sha:<content hash>``."""
        return dedupe_key_of(self.internet_message_id, self)

    def hashes(self) -> tuple[str, str, str]:
        """``(dedupe_key, content_sha256, body_sha256)``, each computed once and cached.

        Each is an attribute look-up once cached (never ``self.__dict__``: see :class:`_cached`).
        """
        content = self.content_sha256  # a fresh record: computes (and caches) all three
        return self.dedupe_key, content, self.body_sha256

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k == lname), None)


def _reserve_cache_slots(cls: type, *args: Any) -> None:
    """Make room for the cached hashes in every record's inline attribute array (CPython).

    Why: CPython keeps a plain instance's attributes in an inline array keyed by its class's
    shared keys, and sizes each new instance's array from the keys known when it is made, plus
    one. A name not among them (a hash cached after the record was built) makes the record a
    dict object of its own: one more container per record for the garbage collector, whose
    full collections then traverse every record held (a writer hashing 123,000 records held in
    memory spent 1.5 s in them, over a third of its time). Setting the cached names once on a
    throw-away first instance adds them to the shared keys, so every later record has slots for
    them. Elsewhere (another Python, or shared keys given up) records just get their dicts.
    """
    first = cls(*args)
    for name, value in vars(cls).items():
        if isinstance(value, _cached):
            _set_attribute(first, name, "")


_reserve_cache_slots(Message, "", "")

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
