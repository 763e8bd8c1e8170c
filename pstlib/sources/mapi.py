"""What pstlib knows about MAPI properties (MS-OXPROPS): ids, value types and their decoding.

Every property id the PST reader uses is named here and nowhere else. pypff exposes a few named
accessors; everything else is read from an item's record sets, whose entries are collected once per
record set into a ``dict`` keyed by property id (:func:`read_properties`), then decoded with the
``as_*`` helpers. Raw pypff objects never leave :mod:`pstlib.sources`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

# --- message (item) properties --------------------------------------------------------------------
PR_IMPORTANCE = 0x0017
PR_MESSAGE_CLASS = 0x001A
PR_SUBJECT = 0x0037
PR_CLIENT_SUBMIT_TIME = 0x0039
PR_SENT_REPRESENTING_NAME = 0x0042
PR_SENT_REPRESENTING_EMAIL_ADDRESS = 0x0065
PR_CONVERSATION_TOPIC = 0x0070
PR_CONVERSATION_INDEX = 0x0071
PR_TRANSPORT_MESSAGE_HEADERS = 0x007D
PR_SENDER_NAME = 0x0C1A
PR_SENDER_ADDRTYPE = 0x0C1E
PR_SENDER_EMAIL_ADDRESS = 0x0C1F
PR_MESSAGE_DELIVERY_TIME = 0x0E06
PR_MESSAGE_SIZE = 0x0E08
PR_BODY = 0x1000
PR_INTERNET_MESSAGE_ID = 0x1035
PR_INTERNET_REFERENCES = 0x1039
PR_IN_REPLY_TO_ID = 0x1042
PR_CREATION_TIME = 0x3007
PR_INTERNET_CPID = 0x3FDE
PR_MESSAGE_CODEPAGE = 0x3FFD
PR_SENDER_SMTP_ADDRESS = 0x5D01
PR_SENT_REPRESENTING_SMTP_ADDRESS = 0x5D02

# --- recipient properties ----------------------------------------------------------------------
PR_RECIPIENT_TYPE = 0x0C15
PR_DISPLAY_NAME = 0x3001
PR_ADDRTYPE = 0x3002
PR_EMAIL_ADDRESS = 0x3003
PR_SMTP_ADDRESS = 0x39FE

# PR_RECIPIENT_TYPE values (MAPI_TO, MAPI_CC, MAPI_BCC); the high bits carry flags.
RECIPIENT_TO = 1
RECIPIENT_CC = 2
RECIPIENT_BCC = 3

# --- attachment properties ---------------------------------------------------------------------
PR_ATTACH_SIZE = 0x0E20
PR_ATTACH_FILENAME = 0x3704
PR_ATTACH_METHOD = 0x3705
PR_ATTACH_LONG_FILENAME = 0x3707
PR_ATTACH_MIME_TAG = 0x370E
ATTACH_EMBEDDED_MSG = 5

# --- message store properties ------------------------------------------------------------------
PR_PST_PASSWORD = 0x67FF  # a CRC-32 of the password; 0 or absent when the store has none

# --- property value types ----------------------------------------------------------------------
PT_SHORT = 0x0002
PT_LONG = 0x0003
PT_BOOLEAN = 0x000B
PT_LONGLONG = 0x0014
PT_STRING8 = 0x001E
PT_UNICODE = 0x001F
PT_SYSTIME = 0x0040
PT_BINARY = 0x0102

MESSAGE_PROPERTIES = frozenset(
    {
        PR_IMPORTANCE,
        PR_MESSAGE_CLASS,
        PR_SUBJECT,
        PR_CLIENT_SUBMIT_TIME,
        PR_SENT_REPRESENTING_NAME,
        PR_SENT_REPRESENTING_EMAIL_ADDRESS,
        PR_CONVERSATION_TOPIC,
        PR_CONVERSATION_INDEX,
        PR_SENDER_NAME,
        PR_SENDER_ADDRTYPE,
        PR_SENDER_EMAIL_ADDRESS,
        PR_MESSAGE_DELIVERY_TIME,
        PR_MESSAGE_SIZE,
        PR_INTERNET_MESSAGE_ID,
        PR_INTERNET_REFERENCES,
        PR_IN_REPLY_TO_ID,
        PR_CREATION_TIME,
        PR_INTERNET_CPID,
        PR_MESSAGE_CODEPAGE,
        PR_SENDER_SMTP_ADDRESS,
        PR_SENT_REPRESENTING_SMTP_ADDRESS,
    }
)
RECIPIENT_PROPERTIES = frozenset(
    {PR_RECIPIENT_TYPE, PR_DISPLAY_NAME, PR_ADDRTYPE, PR_EMAIL_ADDRESS, PR_SMTP_ADDRESS}
)
ATTACHMENT_PROPERTIES = frozenset(
    {
        PR_ATTACH_SIZE,
        PR_DISPLAY_NAME,
        PR_ATTACH_FILENAME,
        PR_ATTACH_METHOD,
        PR_ATTACH_LONG_FILENAME,
        PR_ATTACH_MIME_TAG,
    }
)

# Property entries as pypff gives them (``pypff.record_entry``), keyed by property id.
Properties = dict[int, Any]

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


def read_properties(record_set: Any, wanted: frozenset[int]) -> Properties:
    """The entries of one pypff record set whose property id is in ``wanted``, read in one pass."""
    found: Properties = {}
    for entry in record_set.entries:
        prop_id = entry.entry_type
        if prop_id in wanted and prop_id not in found:
            found[prop_id] = entry
    return found


def read_first_record_set(item: Any, wanted: frozenset[int]) -> Properties:
    """The wanted properties of an item (its first record set holds an item's own properties)."""
    if item.number_of_record_sets < 1:
        return {}
    return read_properties(item.get_record_set(0), wanted)


def as_str(props: Properties, prop_id: int) -> str | None:
    """A string property (PT_UNICODE, or PT_STRING8 in the file's code page); ``None`` if absent."""
    entry = props.get(prop_id)
    if entry is None:
        return None
    value_type = entry.value_type
    if value_type == PT_UNICODE:
        data = entry.data
        if not data:
            return ""
        return bytes(data).decode("utf-16-le", "replace").rstrip("\x00")
    if value_type == PT_STRING8:
        try:
            text = entry.data_as_string
        except Exception:  # pypff raises OSError on code pages it cannot convert
            data = entry.data or b""
            text = bytes(data).decode("latin-1")
        return (text or "").rstrip("\x00")
    if value_type == PT_BINARY:  # a few ids (PR_SEARCH_KEY-like "SMTP:..." values) are binary
        return bytes(entry.data or b"").decode("latin-1").rstrip("\x00")
    return None


def as_int(props: Properties, prop_id: int) -> int | None:
    """An integer property (PT_SHORT, PT_LONG, PT_LONGLONG, PT_BOOLEAN); ``None`` if absent."""
    entry = props.get(prop_id)
    if entry is None:
        return None
    data = entry.data
    if not data or entry.value_type not in (PT_SHORT, PT_LONG, PT_LONGLONG, PT_BOOLEAN):
        return None
    return int.from_bytes(bytes(data), "little", signed=entry.value_type != PT_BOOLEAN)


def as_bytes(props: Properties, prop_id: int) -> bytes | None:
    entry = props.get(prop_id)
    if entry is None or entry.data is None:
        return None
    return bytes(entry.data)


def as_datetime(props: Properties, prop_id: int) -> datetime | None:
    """A PT_SYSTIME property as an aware UTC datetime; ``None`` if absent, zero or out of range."""
    entry = props.get(prop_id)
    if entry is None or entry.value_type != PT_SYSTIME:
        return None
    data = entry.data
    if not data or len(data) != 8:
        return None
    return filetime_to_utc(int.from_bytes(bytes(data), "little"))


def filetime_to_utc(filetime: int) -> datetime | None:
    """A Windows FILETIME (100 ns ticks since 1601-01-01 UTC) as an aware UTC datetime."""
    if filetime <= 0 or filetime >= 0x7FFFFFFFFFFFFFFF:
        return None
    try:
        return _FILETIME_EPOCH + timedelta(microseconds=filetime // 10)
    except OverflowError:
        return None


def strip_subject_prefix(subject: str) -> str:
    """Drop the 2-character control prefix (``\\x01`` + prefix length) PSTs put before a subject."""
    if subject.startswith("\x01") and len(subject) >= 2:
        return subject[2:]
    return subject


def password_crc(store: Any) -> int:
    """The message store's PR_PST_PASSWORD (an unsigned CRC-32), 0 when there is none.

    ``0xFFFFFFFF`` (seen in OST files) is taken as "no password" too.
    """
    if store is None:
        return 0
    wanted = frozenset({PR_PST_PASSWORD})
    for index in range(store.number_of_record_sets):
        data = as_bytes(read_properties(store.get_record_set(index), wanted), PR_PST_PASSWORD)
        if data and len(data) == 4:
            value = int.from_bytes(data, "little")
            return 0 if value == 0xFFFFFFFF else value
    return 0
