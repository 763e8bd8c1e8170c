"""The mbox splitter finds exactly the messages the standard library's mailbox.mbox finds."""

from __future__ import annotations

import io
import mailbox
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pstlib.sources.mbox import split_mbox

# lines an mbox may hold: From_ lines (well-formed or not), empty lines, quoted and ordinary text,
# CRLF endings, a last line without its newline
_line = st.sampled_from(
    [
        b"From a@b.c Mon Jan  1 00:00:00 2024\n",
        b"From \n",
        b"From:header@x.org\n",
        b">From quoted\n",
        b"\n",
        b"\r\n",
        b"Subject: s\n",
        b"body text \xe9\xff\n",
        b" From indented\n",
    ]
)


def _stdlib_messages(path: Path) -> list[bytes]:
    box = mailbox.mbox(path, create=False)
    try:
        return [box.get_bytes(key, from_=True) for key in box.iterkeys()]
    finally:
        box.close()


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line, max_size=40), tail=st.sampled_from([b"", b"no newline at the end"]))
def test_split_mbox_finds_what_mailbox_finds(
    tmp_path: Path, lines: list[bytes], tail: bytes
) -> None:
    content = b"".join(lines) + tail
    path = tmp_path / "box.mbox"
    path.write_bytes(content)
    assert list(split_mbox(io.BytesIO(content))) == _stdlib_messages(path)
