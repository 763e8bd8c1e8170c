"""Outlook PST and OST files, read with libpff (``pypff``), one item at a time.

Every folder is walked recursively and its items are yielded as they are read: nothing is collected,
so memory does not grow with the file. An item's own MAPI properties are read from its first record
set in one pass (:func:`pstlib.sources.mapi.read_properties`); pypff's named accessors are used only
for the bodies, which libpff decodes. ``item_id`` is the item's node id in the PST (stable).

Open failures raise :class:`~pstlib.errors.SourceError` (``not_a_pst``, ``truncated``,
``unreadable``); an item that cannot be read is yielded as a ``SourceError`` with code
``unreadable_item`` and the walk goes on.

Several files are read at once, one worker process each, by :mod:`pstlib.sources.parallel`.
"""

from __future__ import annotations

import codecs
import logging
import mimetypes
from collections.abc import Iterator
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

import pypff

from pstlib.errors import SourceError
from pstlib.models import (
    Address,
    Attachment,
    FolderRole,
    Message,
    Recipient,
    RecipientKind,
)
from pstlib.sources import mapi
from pstlib.sources.addresses import address_from_mapi, is_exchange_dn, parse_address_list
from pstlib.sources.base import ReadResult
from pstlib.sources.eml import (
    KEPT_HEADERS,
    WarningLog,
    header_text,
    kept_headers,
    message_ids,
    parse_headers,
)
from pstlib.sources.folders import role_of_path

logger = logging.getLogger(__name__)

PST_MAGIC = b"!BDN"
# what pypff raises on a damaged file: IOError mostly, MemoryError when it cannot build an object
_PFF_ERRORS = (OSError, MemoryError, ValueError, RuntimeError, TypeError)
_CLIENT_KIND = {b"SM": "pst", b"SO": "ost", b"SA": "pst"}  # SA: PAB files, read like a PST
_ANSI_VERSIONS = (14, 15)
_CODEPAGES = {
    65001: "utf-8",
    20127: "ascii",
    1200: "utf-16-le",
    50220: "iso2022_jp",
    51932: "euc_jp",
    20936: "gb2312",
    52936: "hz",
}
_RECIPIENT_KINDS = {
    mapi.RECIPIENT_TO: RecipientKind.TO,
    mapi.RECIPIENT_CC: RecipientKind.CC,
    mapi.RECIPIENT_BCC: RecipientKind.BCC,
}
_HEADER_PROPERTIES = mapi.MESSAGE_PROPERTIES | {mapi.PR_TRANSPORT_MESSAGE_HEADERS}


def read_pst_header(path: Path) -> tuple[str, int, int]:
    """``(kind, version, declared_size)`` from a PST/OST file header (MS-PST 2.2.2.6).

    ``kind`` is ``pst`` or ``ost`` from the client magic (``SM``/``SO``), never from the file
    name. Raises ``SourceError`` ``not_a_pst`` or ``truncated`` (shorter than its header says).
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(512)
    except _PFF_ERRORS as exc:
        raise SourceError(str(path), f"cannot read: {exc}", code="unreadable") from exc
    if head[:4] != PST_MAGIC:
        raise SourceError(str(path), "not a PST/OST file (no !BDN signature)", code="not_a_pst")
    if len(head) < 200:
        raise SourceError(
            str(path), f"truncated: {len(head)}-byte file has no full PST header", code="truncated"
        )
    kind = _CLIENT_KIND.get(head[8:10])
    if kind is None:
        raise SourceError(str(path), f"unknown PST client magic {head[8:10]!r}", code="not_a_pst")
    version = int.from_bytes(head[10:12], "little")
    if version in _ANSI_VERSIONS:
        declared = int.from_bytes(head[168:172], "little")  # ROOT.ibFileEof, 32-bit
    else:
        declared = int.from_bytes(head[184:192], "little")  # ROOT.ibFileEof, 64-bit
    return kind, version, declared


class PstSource:
    """A PST or OST file as a mail source.

    ``password_protected`` is True when the message store carries a password CRC
    (PR_PST_PASSWORD); libpff reads such files anyway, so they are read.
    ``read_attachment_data=False`` keeps attachment names and sizes but not their bytes.
    """

    def __init__(self, path: str | Path, *, read_attachment_data: bool = True) -> None:
        self.path = Path(path)
        self.read_attachment_data = read_attachment_data
        kind, self.format_version, declared = read_pst_header(self.path)
        self.kind = kind
        size = self.path.stat().st_size
        if declared and size < declared:
            raise SourceError(
                str(self.path),
                f"truncated: file has {size} bytes, its header says {declared}",
                code="truncated",
            )
        self._file: Any = pypff.file()
        try:
            self._file.open(str(self.path))
        except _PFF_ERRORS as exc:
            raise SourceError(
                str(self.path), f"libpff cannot open it: {_last_reason(exc)}", code="unreadable"
            ) from exc
        try:
            self.password_protected = mapi.password_crc(self._file.get_message_store()) != 0
        except _PFF_ERRORS:
            self.password_protected = False
        self._log = WarningLog(str(self.path))

    @property
    def warnings(self) -> list[SourceError]:
        return self._log.warnings

    def __iter__(self) -> Iterator[ReadResult]:
        if self._file is None:
            raise SourceError(str(self.path), "source is closed", code="closed")
        try:
            root = self._file.get_root_folder()
        except _PFF_ERRORS as exc:
            raise SourceError(
                str(self.path), f"no root folder: {_last_reason(exc)}", code="unreadable"
            ) from exc
        yield from self._walk(root, "")

    def _walk(self, folder: Any, folder_path: str) -> Iterator[ReadResult]:
        source = str(self.path)
        role = role_of_path(folder_path)
        try:
            count = folder.number_of_sub_messages
        except _PFF_ERRORS as exc:
            yield SourceError(
                source,
                f"unreadable folder: {_last_reason(exc)}",
                code="unreadable_folder",
                folder=folder_path or "/",
            )
            count = 0
        for index in range(count):
            try:
                item = folder.get_sub_message(index)
            except _PFF_ERRORS as exc:
                yield SourceError(
                    source,
                    f"unreadable item: {_last_reason(exc)}",
                    code="unreadable_item",
                    folder=folder_path or "/",
                    item=f"#{index}",
                )
                continue
            try:
                yield self._message(item, folder_path, role)
            except Exception as exc:  # one broken item never stops the rest
                yield SourceError(
                    source,
                    f"unreadable item: {_last_reason(exc)}",
                    code="unreadable_item",
                    folder=folder_path or "/",
                    item=str(_identifier(item, index)),
                )
        try:
            sub_count = folder.number_of_sub_folders
        except _PFF_ERRORS:
            sub_count = 0
        for index in range(sub_count):
            try:
                sub = folder.get_sub_folder(index)
                name = sub.name or ""
            except _PFF_ERRORS as exc:
                yield SourceError(
                    source,
                    f"unreadable folder: {_last_reason(exc)}",
                    code="unreadable_folder",
                    folder=folder_path or "/",
                    item=f"folder #{index}",
                )
                continue
            yield from self._walk(sub, f"{folder_path}/{name}" if folder_path else name)

    def _message(self, item: Any, folder_path: str, role: FolderRole) -> Message:
        props = mapi.read_first_record_set(item, _HEADER_PROPERTIES)
        item_id = str(item.identifier)
        is_message = isinstance(item, pypff.message)
        headers = _TransportHeaders(mapi.as_str(props, mapi.PR_TRANSPORT_MESSAGE_HEADERS))

        mid = mapi.as_str(props, mapi.PR_INTERNET_MESSAGE_ID) or headers.value("message-id")
        reply = mapi.as_str(props, mapi.PR_IN_REPLY_TO_ID) or headers.value("in-reply-to")
        refs = mapi.as_str(props, mapi.PR_INTERNET_REFERENCES) or headers.value("references")
        mids, reply_ids = message_ids(mid), message_ids(reply)
        conv_index = mapi.as_bytes(props, mapi.PR_CONVERSATION_INDEX)
        importance = mapi.as_int(props, mapi.PR_IMPORTANCE)
        recipients = self._recipients(item, headers, item_id) if is_message else ()
        body, is_html = self._body(item, props) if is_message else ("", False)
        attachments = self._attachments(item, item_id, folder_path) if is_message else ()
        return Message(
            source_path=str(self.path),
            item_id=item_id,
            folder_path=folder_path,
            folder_role=role,
            message_class=mapi.as_str(props, mapi.PR_MESSAGE_CLASS) or "IPM",
            internet_message_id=mids[0] if mids else None,
            in_reply_to=reply_ids[0] if reply_ids else None,
            references=tuple(r for r in message_ids(refs) if r.startswith("<")),
            conversation_topic=mapi.as_str(props, mapi.PR_CONVERSATION_TOPIC),
            conversation_index=conv_index.hex() if conv_index else None,
            subject=mapi.strip_subject_prefix(mapi.as_str(props, mapi.PR_SUBJECT) or ""),
            sender=self._sender(props, headers),
            recipients=recipients,
            sent_at_utc=mapi.as_datetime(props, mapi.PR_CLIENT_SUBMIT_TIME),
            received_at_utc=mapi.as_datetime(props, mapi.PR_MESSAGE_DELIVERY_TIME),
            size_bytes=mapi.as_int(props, mapi.PR_MESSAGE_SIZE) or 0,
            attachments=attachments,
            body=body,
            body_is_html=is_html,
            importance=min(max(importance, 0), 2) if importance is not None else 1,
            headers=headers.kept(),
        )

    def _sender(self, props: mapi.Properties, headers: _TransportHeaders) -> Address | None:
        name = mapi.as_str(props, mapi.PR_SENDER_NAME) or mapi.as_str(
            props, mapi.PR_SENT_REPRESENTING_NAME
        )
        smtp = mapi.as_str(props, mapi.PR_SENDER_SMTP_ADDRESS) or mapi.as_str(
            props, mapi.PR_SENT_REPRESENTING_SMTP_ADDRESS
        )
        email_address = mapi.as_str(props, mapi.PR_SENDER_EMAIL_ADDRESS) or mapi.as_str(
            props, mapi.PR_SENT_REPRESENTING_EMAIL_ADDRESS
        )
        addrtype = mapi.as_str(props, mapi.PR_SENDER_ADDRTYPE)
        if not (name or smtp or email_address):
            from_header = headers.value("from")
            found = parse_address_list(from_header) if from_header else []
            return found[0] if found else None
        sender = address_from_mapi(name, smtp, email_address, addrtype)
        if not sender.address and headers:
            found = parse_address_list(headers.value("from"))
            if found and found[0].address:
                return Address(found[0].address, sender.name or found[0].name, sender.raw)
        return sender

    def _recipients(
        self, item: Any, headers: _TransportHeaders, item_id: str
    ) -> tuple[Recipient, ...]:
        try:
            table = item.recipients
        except _PFF_ERRORS as exc:
            self._log.warn(
                f"unreadable recipients: {_last_reason(exc)}",
                code="unreadable_recipients",
                item=item_id,
            )
            return ()
        if table is None:
            return ()
        by_name: dict[str, str] | None = None
        result: list[Recipient] = []
        for index in range(table.number_of_record_sets):
            props = mapi.read_properties(table.get_record_set(index), mapi.RECIPIENT_PROPERTIES)
            kind_code = (mapi.as_int(props, mapi.PR_RECIPIENT_TYPE) or 1) & 0x0F
            address = address_from_mapi(
                mapi.as_str(props, mapi.PR_DISPLAY_NAME),
                mapi.as_str(props, mapi.PR_SMTP_ADDRESS),
                mapi.as_str(props, mapi.PR_EMAIL_ADDRESS),
                mapi.as_str(props, mapi.PR_ADDRTYPE),
            )
            if not address.address and headers:
                if by_name is None:
                    by_name = _addresses_by_name(headers)
                smtp = by_name.get(address.name.casefold())
                if smtp:
                    address = Address(smtp, address.name, address.raw)
            result.append(Recipient(_RECIPIENT_KINDS.get(kind_code, RecipientKind.TO), address))
        return tuple(result)

    def _body(self, item: Any, props: mapi.Properties) -> tuple[str, bool]:
        plain = item.plain_text_body  # libpff gives UTF-8, whatever the file's code page
        if plain:
            return bytes(plain).decode("utf-8", "replace").rstrip("\x00"), False
        html = item.html_body
        if html:
            codepage = mapi.as_int(props, mapi.PR_INTERNET_CPID) or 65001
            return bytes(html).decode(_codec(codepage), "replace").rstrip("\x00"), True
        return "", False

    def _attachments(self, item: Any, item_id: str, folder: str) -> tuple[Attachment, ...]:
        count = item.number_of_attachments
        if not count:
            return ()
        result: list[Attachment] = []
        for index in range(count):
            try:
                attachment = item.get_attachment(index)
                props = mapi.read_first_record_set(attachment, mapi.ATTACHMENT_PROPERTIES)
                name = (
                    mapi.as_str(props, mapi.PR_ATTACH_LONG_FILENAME)
                    or mapi.as_str(props, mapi.PR_ATTACH_FILENAME)
                    or mapi.as_str(props, mapi.PR_DISPLAY_NAME)
                    or f"attachment{index + 1}"
                )
                size = attachment.size or 0
                if mapi.as_int(props, mapi.PR_ATTACH_METHOD) == mapi.ATTACH_EMBEDDED_MSG:
                    mime = "application/vnd.ms-outlook"
                else:
                    mime = (
                        mapi.as_str(props, mapi.PR_ATTACH_MIME_TAG)
                        or mimetypes.guess_type(name)[0]
                        or "application/octet-stream"
                    )
                data = None
                if self.read_attachment_data and size:
                    data = bytes(attachment.read_buffer(size))
                if not size:
                    size = mapi.as_int(props, mapi.PR_ATTACH_SIZE) or 0
                result.append(Attachment(name, size, mime, data))
            except _PFF_ERRORS as exc:
                self._log.warn(
                    f"unreadable attachment {index}: {_last_reason(exc)}",
                    code="unreadable_attachment",
                    folder=folder,
                    item=item_id,
                )
        return tuple(result)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> PstSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TransportHeaders:
    """An item's transport headers (PR_TRANSPORT_MESSAGE_HEADERS), parsed only when needed.

    Why: the email package's parser is the costliest Python step of reading an item, and most
    items need none of the headers (their MAPI properties say it all). A header is looked for
    only if ``name:`` occurs in the text at all (the parser reads no other header of that name),
    and the text is parsed at the first such look-up.
    """

    __slots__ = ("_lowered", "_parsed", "_text")

    def __init__(self, text: str | None) -> None:
        self._text = text or ""
        self._lowered = self._text.lower()
        self._parsed: EmailMessage | None = None

    def __bool__(self) -> bool:
        return bool(self._text)

    def _message(self) -> EmailMessage:
        if self._parsed is None:
            self._parsed = parse_headers(self._text)
        return self._parsed

    def value(self, name: str) -> str | None:
        """The decoded value of header ``name`` (lower-case), ``None`` when absent."""
        if name + ":" not in self._lowered:
            return None
        return header_text(self._message(), name)

    def kept(self) -> tuple[tuple[str, str], ...]:
        """The list/automation headers the analytics use (:data:`KEPT_HEADERS`)."""
        if not any(name + ":" in self._lowered for name in KEPT_HEADERS):
            return ()
        return kept_headers(self._message())


def _addresses_by_name(headers: _TransportHeaders) -> dict[str, str]:
    """Display name (case-folded) -> SMTP address from the To/Cc/Bcc transport headers."""
    found: dict[str, str] = {}
    for name in ("to", "cc", "bcc"):
        for address in parse_address_list(headers.value(name)):
            if address.name and address.address and not is_exchange_dn(address.address):
                found.setdefault(address.name.casefold(), address.address)
    return found


def _codec(codepage: int) -> str:
    """The Python codec of a Windows code page (``1252`` -> ``cp1252``); UTF-8 when unknown."""
    if 28591 <= codepage <= 28606:
        return f"iso8859-{codepage - 28590}"
    name = _CODEPAGES.get(codepage, f"cp{codepage}")
    try:
        codecs.lookup(name)
    except LookupError:
        return "utf-8"
    return name


def _identifier(item: Any, index: int) -> int | str:
    try:
        return int(item.identifier)
    except _PFF_ERRORS:
        return f"#{index}"


def _last_reason(exc: BaseException) -> str:
    """libpff's error text (``function: reason.`` sentences) without the function names."""
    reasons: list[str] = []
    for sentence in str(exc).split(". "):
        _, _, reason = sentence.strip().rstrip(".").partition(": ")
        reason = reason or sentence.strip().rstrip(".")
        if reason and reason not in reasons:
            reasons.append(reason)
    text = "; ".join(reasons[:3])
    return text or type(exc).__name__
