"""The PST reader's lazily parsed transport headers give what parsing them at once gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pstlib.sources.eml import KEPT_HEADERS, header_text, kept_headers, parse_headers
from pstlib.sources.pst import _TransportHeaders

NAMES = ["message-id", "in-reply-to", "references", "from", "to", "cc", "subject", "received"]
VALUE = (
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters=":"),
        min_size=1,
        max_size=30,
    )
    .map(str.strip)
    .filter(bool)
)


def _case(name: str, upper: list[bool]) -> str:
    flags = (upper + [False] * len(name))[: len(name)]
    return "".join(c.upper() if u else c for c, u in zip(name, flags, strict=True))


@given(
    headers=st.lists(
        st.tuples(st.sampled_from(NAMES + list(KEPT_HEADERS)), VALUE, st.lists(st.booleans())),
        max_size=8,
    ),
    folded=st.booleans(),
)
def test_lazy_headers_match_parsing_them_all(
    headers: list[tuple[str, str, list[bool]]], folded: bool
) -> None:
    lines = []
    for name, value, upper in headers:
        # a long value folded onto a continuation line, as mail systems do
        lines.append(f"{_case(name, upper)}: {value}" + ("\r\n\tcontinued" if folded else ""))
    text = "\r\n".join(lines) + "\r\n\r\n"
    lazy, parsed = _TransportHeaders(text), parse_headers(text)
    for name in NAMES + list(KEPT_HEADERS):
        assert lazy.value(name) == header_text(parsed, name)
    assert lazy.kept() == kept_headers(parsed)
    assert lazy  # any text counts as headers, as the reader always took it


def test_headers_the_item_does_not_carry_are_never_parsed() -> None:
    lazy = _TransportHeaders("Received: from a by b\r\nSubject: hi\r\n\r\n")
    # neither a Message-ID nor a list header: answered from the text alone
    assert lazy.value("message-id") is None
    assert lazy.kept() == ()
    assert lazy._parsed is None
    assert lazy.value("subject") == "hi"
    assert lazy._parsed is not None
    assert not _TransportHeaders(None) and _TransportHeaders(None).value("from") is None
