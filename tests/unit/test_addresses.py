"""Address normalisation: known examples, then properties that hold for any address."""

from __future__ import annotations

import email.utils

from hypothesis import given
from hypothesis import strategies as st

from pstlib.models import Address
from pstlib.sources.addresses import (
    address_from_mapi,
    decode_words,
    is_exchange_dn,
    normalize_address,
    parse_address,
    parse_address_list,
)

DN = "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=x"


def test_display_name_split_and_lower_cased() -> None:
    got = parse_address('"Jörn Kottmann" <Kottmann@GMail.COM>')
    assert got == Address(
        "kottmann@gmail.com", "Jörn Kottmann", '"Jörn Kottmann" <Kottmann@GMail.COM>'
    )


def test_rfc2047_name_is_decoded() -> None:
    got = parse_address("=?utf-8?q?J=C3=B6rn?= <a@b.org>")
    assert got is not None and got.name == "Jörn" and got.address == "a@b.org"


def test_unknown_charset_in_encoded_word_does_not_raise() -> None:
    # x-bogus is no codec: the bytes are read as UTF-8 and the rest of the value kept
    assert decode_words("=?x-bogus?q?J=C3=B6rn?= Kottmann") == "Jörn Kottmann"


def test_idn_domain_in_ascii_form() -> None:
    assert normalize_address("<Info@Bücher.DE>") == "info@xn--bcher-kva.de"


def test_smtp_prefix_and_mailto_stripped() -> None:
    assert normalize_address("SMTP:KOTTMANN@GMAIL.COM") == "kottmann@gmail.com"
    assert normalize_address("<mailto:A@B.C>") == "a@b.c"


def test_exchange_dn_has_no_address_and_keeps_raw() -> None:
    assert is_exchange_dn(DN) and is_exchange_dn("EX:" + DN.upper())
    got = parse_address(DN)
    assert got == Address("", "", DN)


def test_mapi_prefers_smtp_property_over_dn() -> None:
    got = address_from_mapi("Hong-Thai", "Hong-Thai@PolySpot.com", DN, "EX")
    assert got.address == "hong-thai@polyspot.com" and got.raw == DN
    assert address_from_mapi("Hong-Thai", None, DN, "EX").address == ""


def test_address_list_with_quoted_comma_and_group() -> None:
    got = parse_address_list('a@b.c, "Doe, Jane" <J@D.E>, team: x@y.z;')
    assert [a.address for a in got] == ["a@b.c", "j@d.e", "x@y.z"]
    assert got[1].name == "Doe, Jane"


_local = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,15}", fullmatch=True)
_label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
_domain = st.lists(_label, min_size=2, max_size=4).map(".".join)
_name = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20
)


@given(local=_local, domain=_domain, name=_name)
def test_formatted_address_round_trips(local: str, domain: str, name: str) -> None:
    raw = email.utils.formataddr((name, f"{local}@{domain}"))
    got = parse_address(raw)
    assert got is not None
    assert got.address == f"{local}@{domain}".lower()
    assert got.raw == raw


@given(local=_local, domain=_domain)
def test_normalisation_is_idempotent_and_lower(local: str, domain: str) -> None:
    once = normalize_address(f" <{local}@{domain.upper()}> ")
    assert once == normalize_address(once)
    assert once == once.lower() and "<" not in once and " " not in once


@given(st.text(max_size=60))
def test_parse_never_raises_and_keeps_raw(value: str) -> None:
    got = parse_address(value)
    if got is not None:
        assert got.raw == value or got.raw == value.strip()
        assert got.address == got.address.lower()
