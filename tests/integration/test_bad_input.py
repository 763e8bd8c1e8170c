"""Broken input, made inside each test: every case gives a SourceError naming the file and the
problem, and whatever can still be read is read."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pstlib.errors import SourceError, UnsupportedSourceError
from pstlib.models import Message
from pstlib.sources import MboxSource, PstSource, open_source

pytestmark = pytest.mark.corpus


def _split(results: list[Message | SourceError]) -> tuple[list[Message], list[SourceError]]:
    return (
        [r for r in results if isinstance(r, Message)],
        [r for r in results if isinstance(r, SourceError)],
    )


def _copy(pst_dir: Path, name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copyfile(pst_dir / name, target)
    return target


def test_truncated_pst_raises_truncated_at_open(pst_dir: Path, tmp_path: Path) -> None:
    path = _copy(pst_dir, "tika_testPST.pst", tmp_path)
    with path.open("r+b") as handle:
        handle.truncate(300_000)  # of 2,302,976 bytes
    with pytest.raises(SourceError) as caught:
        open_source(path)
    assert caught.value.code == "truncated"
    assert str(path) in str(caught.value)
    assert "300000 bytes" in str(caught.value) and "2302976" in str(caught.value)


def test_flipped_bytes_lose_one_item_and_keep_the_rest(pst_dir: Path, tmp_path: Path) -> None:
    path = _copy(pst_dir, "tika_testPST.pst", tmp_path)
    data = bytearray(path.read_bytes())
    for offset in range(0x22400, 0x24400):  # the 8 KiB holding the 4th message's properties
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    messages, errors = _split(list(open_source(path)))
    assert len(messages) == 6  # of 7
    (error,) = errors
    assert error.code == "unreadable_item"
    assert (error.file, error.folder, error.item) == (
        str(path),
        "Début du fichier de données Outlook",
        "#3",
    )
    assert str(path) in str(error) and "unreadable item" in str(error)


def test_corrupt_index_fails_at_open_with_the_reason(pst_dir: Path, tmp_path: Path) -> None:
    path = _copy(pst_dir, "tika_testPST.pst", tmp_path)
    data = bytearray(path.read_bytes())
    for offset in range(0x6400, 0x8400):  # an index node of the b-tree
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError) as caught:
        open_source(path)
    assert caught.value.code == "unreadable"
    assert str(path) in str(caught.value) and "index node" in str(caught.value)


def test_unreadable_item_in_real_file_is_yielded_and_walk_goes_on(pst_dir: Path) -> None:
    path = pst_dir / "asposenet_Chunks_Test_part1.pst"
    results = list(open_source(path))
    messages, errors = _split(results)
    assert (len(messages), len(errors)) == (49, 12)
    assert {e.folder for e in errors} == {"Top of Personal Folders/Contacts"}
    assert all(e.code == "unreadable_item" and e.item and e.item.startswith("#") for e in errors)
    # the readable contacts of the same folder were still read
    same_folder = [m for m in messages if m.folder_path == "Top of Personal Folders/Contacts"]
    assert len(same_folder) == 9


def test_not_a_pst(tmp_path: Path) -> None:
    path = tmp_path / "archive.pst"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)  # a zip-looking file named .pst
    with pytest.raises(UnsupportedSourceError) as caught:
        open_source(path)
    assert "archive.pst" in str(caught.value) and "not a mail file" in str(caught.value)
    with pytest.raises(SourceError) as direct:
        PstSource(path)
    assert direct.value.code == "not_a_pst" and "archive.pst" in str(direct.value)


def test_pst_header_only(tmp_path: Path) -> None:
    path = tmp_path / "tiny.ost"
    path.write_bytes(b"!BDN" + b"\x00" * 60)
    with pytest.raises(SourceError) as caught:
        open_source(path)
    assert caught.value.code == "truncated" and "tiny.ost" in str(caught.value)


MBOX = b"""From a@example.org Mon Jan  1 00:00:00 2024
From: Ann <ann@example.org>
To: bob@example.org
Subject: first
Date: Mon, 1 Jan 2024 10:00:00 +0100
Message-ID: <1@example.org>

one
%(middle)s
From c@example.org Mon Jan  1 00:00:00 2024
From: Cy <cy@example.org>
Subject: last
Date: Tue, 2 Jan 2024 10:00:00 +0000
Message-ID: <3@example.org>

three
"""


def _mbox(tmp_path: Path, middle: bytes) -> Path:
    path = tmp_path / "box.mbox"
    path.write_bytes(MBOX % {b"middle": middle})
    return path


def _read_mbox(path: Path) -> tuple[list[Message], list[SourceError], MboxSource]:
    source = open_source(path)
    assert isinstance(source, MboxSource)
    messages, errors = _split(list(source))
    return messages, errors, source


def test_garbled_headers_are_read_and_reported(tmp_path: Path) -> None:
    middle = (
        b"From b@example.org Mon Jan  1 00:00:00 2024\n"
        b"From: =?utf-8?q?Bro=ken?= <B@Example.ORG\n"
        b"Subject: \xff\xfe garbage \x00 =?utf-8?b?!!!?=\n"
        b"this line is no header at all\n"
        b"Message-ID: <2@example.org>\n\n"
        b"two\n"
    )
    messages, errors, source = _read_mbox(_mbox(tmp_path, middle))
    assert errors == []
    assert [m.subject for m in (messages[0], messages[2])] == ["first", "last"]
    garbled = messages[1]
    assert garbled.item_id == "1" and garbled.sender is not None
    assert garbled.sender.address == "b@example.org"
    problems = [w for w in source.warnings if w.item == "1"]
    assert any(w.code == "malformed_header" for w in problems)
    assert all(str(tmp_path / "box.mbox") in str(w) for w in problems)


def test_bad_date_gives_none_and_a_warning(tmp_path: Path) -> None:
    middle = (
        b"From b@example.org Mon Jan  1 00:00:00 2024\n"
        b"From: bob@example.org\nSubject: middle\nDate: the day after tomorrow\n\ntwo\n"
    )
    messages, errors, source = _read_mbox(_mbox(tmp_path, middle))
    assert errors == [] and len(messages) == 3
    assert messages[1].sent_at_utc is None
    assert messages[0].sent_at_utc is not None and messages[0].sent_at_utc.hour == 9  # +0100 -> UTC
    (warning,) = [w for w in source.warnings if w.code == "bad_date"]
    assert warning.item == "1"
    assert "box.mbox" in str(warning) and "the day after tomorrow" in str(warning)


def test_unknown_charset_is_replaced_and_reported(tmp_path: Path) -> None:
    middle = (
        b"From b@example.org Mon Jan  1 00:00:00 2024\n"
        b"From: =?x-klingon?q?B=C3=B6b?= <bob@example.org>\n"
        b"Subject: =?x-klingon?q?caf=C3=A9?=\n"
        b"Content-Type: text/plain; charset=x-klingon\n\n"
        b"caf\xc3\xa9 \xff\n"
    )
    messages, errors, source = _read_mbox(_mbox(tmp_path, middle))
    assert errors == [] and len(messages) == 3
    middle_message = messages[1]
    assert middle_message.subject == "café"
    assert middle_message.sender is not None and middle_message.sender.name == "Böb"
    assert middle_message.body.startswith("café")  # undecodable byte replaced, not fatal
    (warning,) = [w for w in source.warnings if w.code == "unknown_charset"]
    assert "box.mbox" in str(warning) and "x-klingon" in str(warning) and warning.item == "1"


def test_empty_and_random_files_are_unsupported(tmp_path: Path) -> None:
    for name, data in (("empty.eml", b""), ("noise.mbox", bytes(range(256)))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(UnsupportedSourceError, match=re.escape(name)):
            open_source(path)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nowhere\.pst") as caught:
        open_source(tmp_path / "nowhere.pst")
    assert caught.value.code == "not_found"
