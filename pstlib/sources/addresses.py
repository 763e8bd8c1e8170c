"""Mail address normalisation: the one place that turns a header value or a MAPI property into an
:class:`~pstlib.models.Address`.

Rules: the display name is split off (RFC 2047 encoded-words decoded, surrounding quotes removed),
angle brackets and quotes around the address are stripped, the address is lower-cased, and an
internationalised (IDN) domain is stored in its **ASCII (punycode) form** (``bücher.de``
-> ``xn--bcher-kva.de``), the form SMTP and DNS use, so that the same mailbox written either way
compares equal. The raw value is kept in ``Address.raw``. Exchange legacy DNs (``/O=.../CN=...``)
are not SMTP addresses: they give ``address=''`` with the DN in ``raw`` unless an SMTP address is
known.
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
import re

from pstlib.models import Address

_EXCHANGE_DN = re.compile(r"^(?:EX:)?/o=", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def is_exchange_dn(value: str) -> bool:
    """True for an Exchange legacy DN such as ``/O=ExchangeLabs/OU=.../CN=Recipients/CN=...``."""
    return bool(_EXCHANGE_DN.match(value.strip()))


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words (``=?utf-8?q?...?=``); unknown charsets never raise."""
    if "=?" not in value:
        return value
    try:
        parts = email.header.decode_header(value)
    except (ValueError, email.errors.HeaderParseError):
        return value
    try:
        return str(email.header.make_header(parts))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        pass
    # an unknown or lying charset: decode each piece on its own, replacing what will not decode
    return "".join(
        chunk if isinstance(chunk, str) else decode_bytes(chunk, charset)
        for chunk, charset in parts
    )


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes in a declared charset; unknown or 8-bit: UTF-8, else Latin-1; never raises."""
    name = (charset or "ascii").strip().lower()
    if name in ("unknown-8bit", "x-unknown", "unknown", "ascii", "us-ascii"):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    try:
        return data.decode(name, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def normalize_domain(domain: str) -> str:
    """Lower-case a domain, an IDN in its ASCII (punycode) form; a domain IDNA refuses is kept."""
    domain = domain.strip().strip(".").lower()
    if not domain or domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def normalize_address(address: str) -> str:
    """``' <John.Doe@Bücher.DE> '`` -> ``'john.doe@xn--bcher-kva.de'``; '' for an Exchange DN."""
    value = address.strip()
    if value.lower().startswith("smtp:"):
        value = value[5:]
    value = value.strip().strip("<>\"' \t").strip()
    if value.lower().startswith("mailto:"):
        value = value[7:]
    if not value or is_exchange_dn(value):
        return ""
    value = _SPACE.sub("", value)
    local, at, domain = value.rpartition("@")
    if not at:
        return value.lower()
    return local.strip("\"'").lower() + "@" + normalize_domain(domain)


def clean_name(name: str) -> str:
    """A display name: encoded-words decoded, outer quotes removed, whitespace collapsed."""
    text = _SPACE.sub(" ", decode_words(name)).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def parse_address(raw: str | None) -> Address | None:
    """One address from a header value (``"Name" <a@b>``, ``a@b (Name)``, a bare address)."""
    if raw is None:
        return None
    raw = str(raw)
    if not raw.strip():
        return None
    if is_exchange_dn(raw):
        return Address(address="", name="", raw=raw.strip())
    name, addr = email.utils.parseaddr(raw)
    if not addr and not name:
        addr = raw
    return Address(address=normalize_address(addr), name=clean_name(name), raw=raw)


def parse_address_list(raw: str | None) -> list[Address]:
    """Every address in a header value such as ``To: a@b, "C, D" <c@d>``; groups are flattened."""
    if raw is None or not str(raw).strip():
        return []
    pairs = email.utils.getaddresses([str(raw)])
    result: list[Address] = []
    for name, addr in pairs:
        if not addr and not name:
            continue
        shown = email.utils.formataddr((name, addr)) if name else addr
        result.append(Address(address=normalize_address(addr), name=clean_name(name), raw=shown))
    return result


def address_from_mapi(
    name: str | None, smtp: str | None, email_address: str | None, addrtype: str | None = None
) -> Address:
    """An address from MAPI properties: the SMTP property, else an SMTP-looking email address.

    An Exchange DN (address type ``EX``) without an SMTP property gives ``address=''`` and the DN in
    ``raw``, so that the caller may fill it from the transport headers.
    """
    name = clean_name(name or "")
    raw = (email_address or smtp or "").strip()
    if smtp and "@" in smtp:
        return Address(address=normalize_address(smtp), name=name, raw=raw or smtp)
    if email_address and (addrtype or "SMTP").upper() != "EX" and "@" in email_address:
        return Address(address=normalize_address(email_address), name=name, raw=raw)
    return Address(address="", name=name, raw=raw)
