"""EML files (one RFC 5322 message per file, or a folder of them) read with the standard library.

This module also holds what every RFC 5322 reader shares (the mbox reader and the PST reader's
transport headers use it): turning an :class:`email.message.Message` into pstlib's
:class:`~pstlib.models.Message`, dates, Message-ID lists and the list/automation headers kept in
``Message.headers``.

Parsing uses the ``compat32`` policy, which never raises on a broken header (``policy.default`` was
measured ten times slower here and its structured headers are not needed: addresses, dates and
Message-IDs are parsed by pstlib itself); RFC 2047 words and raw 8-bit headers are decoded by
:mod:`pstlib.sources.addresses`. Problems that do not stop an item from being read (a malformed
header, a bad date, an unknown charset) are recorded as :class:`~pstlib.errors.SourceError`
instances in the source's ``warnings`` list (code ``malformed_header``, ``bad_date``,
``unknown_charset``), and logged; they are not yielded, so counts of items stay exact.

A folder given to :class:`EmlSource` is one source: every ``*.eml`` file below it, sorted, with
``item_id`` the path relative to the folder. A single file is a source of one item whose ``item_id``
is the file name.
"""

from __future__ import annotations

import email.errors
import email.policy
import email.utils
import logging
import mimetypes
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.header import Header, decode_header
from email.message import Message as EmailMessage
from email.parser import BytesParser, HeaderParser
from pathlib import Path
from typing import Any

from pstlib.errors import SourceError
from pstlib.models import Address, Attachment, FolderRole, Message, Recipient, RecipientKind
from pstlib.sources.addresses import decode_bytes, decode_words, parse_address, parse_address_list
from pstlib.sources.base import ReadResult
from pstlib.sources.folders import role_of_folder, role_of_path

logger = logging.getLogger(__name__)

#: Headers kept in ``Message.headers`` (lower-case), for list and automated-mail classification.
KEPT_HEADERS = (
    "list-id",
    "list-unsubscribe",
    "list-post",
    "list-help",
    "auto-submitted",
    "precedence",
    "x-auto-response-suppress",
    "x-autoreply",
    "x-autorespond",
    "x-mailer",
    "user-agent",
    "x-ms-exchange-generated-message-source",
)
_KEPT = frozenset(KEPT_HEADERS)
#: Most warnings a source keeps (later ones are only counted in ``warning_count``).
MAX_WARNINGS = 1000

_MSG_ID = re.compile(r"<[^<>]+>")
_WHITESPACE = re.compile(r"\s+")
_PARSER = BytesParser(policy=email.policy.compat32)
_HEADER_PARSER = HeaderParser(policy=email.policy.compat32)


class WarningLog:
    """The non-fatal problems met while reading a source (bounded), each a :class:`SourceError`."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.warnings: list[SourceError] = []
        self.warning_count = 0

    def warn(
        self, cause: str, *, code: str, folder: str | None = None, item: str | None = None
    ) -> None:
        error = SourceError(self.file, cause, code=code, folder=folder, item=item)
        self.warning_count += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(error)
        logger.debug("%s", error)


def parse_date(value: str | None) -> datetime | None:
    """An RFC 5322 date as aware UTC; ``None`` when missing or malformed (naive dates are UTC)."""
    if not value or not value.strip():
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    try:
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def message_ids(value: str | None) -> tuple[str, ...]:
    """The ``<id>`` tokens of a Message-ID, In-Reply-To or References value, in order.

    Folding whitespace inside a token is removed (``<a@b.c om>`` -> ``<a@b.com>``). A value with no
    ``<id>`` token at all (``PM2000``, ``"Ann"'s message of ...``) is kept whole, whitespace
    collapsed, so that a message with the header is never taken for one without it.
    """
    if not value:
        return ()
    found = _MSG_ID.findall(value)
    if found:
        return tuple(_WHITESPACE.sub("", token) for token in found)
    bare = " ".join(value.split())
    return (bare,) if bare else ()


def kept_headers(msg: EmailMessage) -> tuple[tuple[str, str], ...]:
    """The :data:`KEPT_HEADERS` a parsed message carries: lower-case names, first value of each,
    folding whitespace collapsed, in the order they appear."""
    found: dict[str, str] = {}
    for key, value in msg.raw_items():
        name = key.lower()
        if name in _KEPT and name not in found:
            found[name] = " ".join(_text(value).split())
    return tuple(found.items())


def header_text(msg: EmailMessage, name: str) -> str | None:
    """A header as text, RFC 2047 decoded, raw 8-bit bytes read as UTF-8 (else Latin-1)."""
    value = msg.get(name)
    return None if value is None else _text(value)


class _Headers:
    """A parsed message's headers by lower-case name, indexed in one pass.

    :meth:`EmailMessage.get` scans every header and lower-cases each name on every call; the
    dozen look-ups a message needs made a tenth of reading an mbox. Values are what ``get`` and
    ``get_all`` return (the message's policy applied), so the text is the same."""

    __slots__ = ("_fetch", "_values")

    def __init__(self, msg: EmailMessage) -> None:
        values: dict[str, list[tuple[str, Any]]] = {}
        for name, value in msg.raw_items():
            values.setdefault(name.lower(), []).append((name, value))
        self._values = values
        self._fetch = msg.policy.header_fetch_parse

    def text(self, name: str) -> str | None:
        """The first ``name`` header as :func:`header_text` gives it."""
        found = self._values.get(name)
        return None if found is None else _text(self._fetch(*found[0]))

    def texts(self, name: str) -> list[str]:
        """Every ``name`` header, in order."""
        fetch = self._fetch
        return [_text(fetch(*item)) for item in self._values.get(name, ())]


def _text(value: object) -> str:
    if isinstance(value, Header):  # compat32 gives a Header for raw 8-bit header bytes
        return "".join(
            chunk if isinstance(chunk, str) else decode_bytes(chunk, charset)
            for chunk, charset in decode_header(value)
        )
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # raw 8-bit bytes kept as surrogate escapes
        text = decode_bytes(text.encode("ascii", "surrogateescape"), None)
    return decode_words(text) if "=?" in text else text


def _decode_payload(part: EmailMessage, log: WarningLog, item: str) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        log.warn(
            f"unknown charset {charset!r}; text decoded as UTF-8 with replacements",
            code="unknown_charset",
            item=item,
        )
        return payload.decode("utf-8", "replace")


def _parts(msg: EmailMessage, log: WarningLog, item: str) -> tuple[str, bool, list[Attachment]]:
    """The body (plain text preferred, else HTML) and the attachments of a message."""
    plain: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        filename = part.get_filename()
        inline_text = ctype in ("text/plain", "text/html") and not filename
        if not inline_text or disposition == "attachment":
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            name = decode_words(str(filename)) if filename else ""
            if not name:
                name = f"part{len(attachments) + 1}{mimetypes.guess_extension(ctype) or ''}"
            attachments.append(Attachment(name, len(data), ctype, data))
            continue
        if ctype == "text/plain" and plain is None:
            plain = _decode_payload(part, log, item)
        elif ctype == "text/html" and html is None:
            html = _decode_payload(part, log, item)
    if plain is not None and (plain.strip() or html is None):
        return plain, False, attachments
    if html is not None:
        return html, True, attachments
    return "", False, attachments


def _recipients(headers: _Headers) -> tuple[Recipient, ...]:
    result: list[Recipient] = []
    for name, kind in (
        ("to", RecipientKind.TO),
        ("cc", RecipientKind.CC),
        ("bcc", RecipientKind.BCC),
    ):
        for value in headers.texts(name):
            result.extend(Recipient(kind, addr) for addr in parse_address_list(value))
    return tuple(result)


def parse_bytes(data: bytes) -> EmailMessage:
    """Parse a message with the ``compat32`` policy, which never raises on a broken header.

    ``policy.default`` was measured ten times slower on the corpus (its structured header objects
    are built on every access), and pstlib parses addresses, dates and Message-IDs itself; problems
    it meets are recorded in ``msg.defects`` and reported as ``malformed_header`` warnings.
    """
    return _PARSER.parsebytes(data)


def parse_headers(text: str) -> EmailMessage:
    """Parse a block of header lines (a PST's transport headers) with ``compat32``."""
    return _HEADER_PARSER.parsestr(text)


def message_from_email(
    msg: EmailMessage,
    *,
    source_path: str,
    item_id: str,
    log: WarningLog,
    folder_path: str = "",
    folder_role: FolderRole = FolderRole.OTHER,
    size_bytes: int = 0,
) -> Message:
    """pstlib's :class:`Message` from a parsed RFC 5322 message; problems go to ``log``."""
    for defect in msg.defects:
        log.warn(
            f"malformed message: {type(defect).__name__}", code="malformed_header", item=item_id
        )
    headers = _Headers(msg)
    date_text = headers.text("date")
    sent = parse_date(date_text)
    if date_text is not None and sent is None:
        log.warn(
            f"bad date {date_text[:80]!r}; sent time left empty", code="bad_date", item=item_id
        )
    sender_text = headers.text("from") or headers.text("sender")
    sender: Address | None = parse_address(sender_text) if sender_text else None
    if sender is None:
        sender = _unix_from_sender(msg)
    body, is_html, attachments = _parts(msg, log, item_id)
    mids = message_ids(headers.text("message-id"))
    reply_ids = message_ids(headers.text("in-reply-to"))
    references = message_ids(headers.text("references"))
    return Message(
        source_path=source_path,
        item_id=item_id,
        folder_path=folder_path,
        folder_role=folder_role,
        message_class="IPM.Note",
        internet_message_id=mids[0] if mids else None,
        in_reply_to=reply_ids[0] if reply_ids else None,
        references=tuple(r for r in references if r.startswith("<")),
        conversation_topic=None,
        conversation_index=None,
        subject=_one_line(headers.text("subject") or ""),
        sender=sender,
        recipients=_recipients(headers),
        sent_at_utc=sent,
        received_at_utc=_received_time(headers),
        size_bytes=size_bytes,
        attachments=tuple(attachments),
        body=body,
        body_is_html=is_html,
        importance=_importance(headers),
        headers=kept_headers(msg),
    )


def _one_line(text: str) -> str:
    return " ".join(text.split()) if ("\n" in text or "\r" in text) else text.strip()


def _unix_from_sender(msg: EmailMessage) -> Address | None:
    unixfrom = msg.get_unixfrom()
    if not unixfrom:
        return None
    parts = unixfrom.split()
    return parse_address(parts[1]) if len(parts) > 1 else None


def _received_time(headers: _Headers) -> datetime | None:
    """The time in the newest (first) Received header, after its ``;``."""
    value = headers.text("received")
    if value is None:
        return None
    _, _, when = value.rpartition(";")
    return parse_date(when)


def _importance(headers: _Headers) -> int:
    value = (headers.text("importance") or headers.text("x-priority") or "").strip().lower()
    if value.startswith(("high", "urgent", "1", "2")):
        return 2
    if value.startswith(("low", "non-urgent", "5", "4")):
        return 0
    return 1


def looks_like_rfc5322(head: bytes) -> bool:
    """True when ``head`` (a file's first bytes) starts with mail header lines."""
    text = head.lstrip(b"\r\n\t ")
    lines = text.split(b"\n", 40)[:40]
    known = 0
    for line in lines:
        line = line.rstrip(b"\r")
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            continue  # a folded continuation
        name, colon, _ = line.partition(b":")
        if not colon or not re.fullmatch(rb"[!-9;-~]+", name):
            return False
        if name.lower() in _KNOWN:
            known += 1
    return known > 0


_KNOWN = {
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"received",
    b"return-path",
    b"mime-version",
    b"content-type",
    b"delivered-to",
    b"x-mailer",
    b"cc",
    b"sender",
    b"reply-to",
    b"x-originating-ip",
    b"thread-topic",
    b"dkim-signature",
}


class EmlSource:
    """An EML file, or a folder of ``*.eml`` files, as one mail source."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.kind = "eml"
        if not self.path.exists():
            raise SourceError(str(self.path), "no such file or folder", code="not_found")
        self._log = WarningLog(str(self.path))

    @property
    def warnings(self) -> list[SourceError]:
        return self._log.warnings

    def _files(self) -> Iterable[tuple[Path, str]]:
        if self.path.is_dir():
            for file in sorted(
                p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() == ".eml"
            ):
                yield file, file.relative_to(self.path).as_posix()
        else:
            yield self.path, self.path.name

    def __iter__(self) -> Iterator[ReadResult]:
        role = role_of_folder(self.path.stem) if self.path.is_dir() else FolderRole.OTHER
        for file, item_id in self._files():
            folder = "" if not self.path.is_dir() else Path(item_id).parent.as_posix().strip(".")
            try:
                data = file.read_bytes()
            except OSError as exc:
                yield SourceError(
                    str(self.path),
                    f"cannot read: {exc}",
                    code="unreadable_item",
                    folder=folder or None,
                    item=item_id,
                )
                continue
            try:
                msg = parse_bytes(data)
                yield message_from_email(
                    msg,
                    source_path=str(self.path),
                    item_id=item_id,
                    log=self._log,
                    folder_path=folder,
                    folder_role=role_of_path(folder) if folder else role,
                    size_bytes=len(data),
                )
            except Exception as exc:  # one broken message never stops the rest
                yield SourceError(
                    str(self.path),
                    f"unreadable message: {exc}",
                    code="unreadable_item",
                    folder=folder or None,
                    item=item_id,
                )

    def close(self) -> None:
        """Nothing to release: each file is read whole and closed at once."""

    def __enter__(self) -> EmlSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
