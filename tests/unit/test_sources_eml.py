"""The RFC 5322 readers and the factory, on tiny messages written inline."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pstlib.models import FolderRole, Message, RecipientKind
from pstlib.sources import EmlSource, detect_kind, discover_sources, open_source
from pstlib.sources.eml import message_ids, parse_date
from pstlib.sources.folders import role_of_folder, role_of_path
from pstlib.sources.mapi import filetime_to_utc, strip_subject_prefix

EML = b"""From: "=?iso-8859-1?q?J=F6rn?=" <Jorn@Example.ORG>
To: a@example.org, "Doe, Jane" <jane@example.org>
Cc: c@example.org
Bcc: d@example.org
Subject: =?utf-8?q?R=C3=A9union?= du lundi
Date: Mon, 01 Jan 2024 10:00:00 +0200
Message-ID: <m1@example.org>
In-Reply-To: <m0@example.org>
References: <r1@example.org>
 <m0@example.org>
List-Id: Team <team.example.org>
Auto-Submitted: auto-generated
Importance: high
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="B"

--B
Content-Type: multipart/alternative; boundary="A"

--A
Content-Type: text/html; charset=utf-8

<p>Bonjour</p>
--A
Content-Type: text/plain; charset=utf-8

Bonjour
--A--
--B
Content-Type: application/pdf
Content-Disposition: attachment; filename="notes.pdf"
Content-Transfer-Encoding: base64

JVBERi0=
--B--
"""


def _only(path: Path) -> Message:
    (message,) = list(open_source(path))
    assert isinstance(message, Message)
    return message


def test_eml_fields(tmp_path: Path) -> None:
    path = tmp_path / "one.eml"
    path.write_bytes(EML)
    message = _only(path)
    assert message.item_id == "one.eml"
    assert message.subject == "Réunion du lundi"
    assert message.sender is not None
    assert (message.sender.name, message.sender.address) == ("Jörn", "jorn@example.org")
    assert [(r.kind, r.address.address) for r in message.recipients] == [
        (RecipientKind.TO, "a@example.org"),
        (RecipientKind.TO, "jane@example.org"),
        (RecipientKind.CC, "c@example.org"),
        (RecipientKind.BCC, "d@example.org"),
    ]
    assert message.sent_at_utc == datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
    assert (message.internet_message_id, message.in_reply_to) == (
        "<m1@example.org>",
        "<m0@example.org>",
    )
    assert message.references == ("<r1@example.org>", "<m0@example.org>")
    assert message.body.strip() == "Bonjour" and not message.body_is_html  # plain preferred
    (attachment,) = message.attachments
    assert (attachment.name, attachment.mime_type, attachment.data) == (
        "notes.pdf",
        "application/pdf",
        b"%PDF-",
    )
    assert message.header("list-id") == "Team <team.example.org>"
    assert message.header("auto-submitted") == "auto-generated"
    assert message.importance == 2


def test_html_only_body(tmp_path: Path) -> None:
    path = tmp_path / "h.eml"
    path.write_bytes(b"From: a@b.c\nSubject: h\nContent-Type: text/html\n\n<b>hi</b>\n")
    message = _only(path)
    assert message.body_is_html and message.body.strip() == "<b>hi</b>"


def test_detection_from_content_not_name(tmp_path: Path) -> None:
    (tmp_path / "mail.pst").write_bytes(b"From x@y Mon Jan  1 00:00:00 2024\nFrom: x@y\n\nhi\n")
    (tmp_path / "mail.mbox").write_bytes(EML)
    (tmp_path / "a.ost").write_bytes(b"!BDN\x00\x00\x00\x00SM" + b"\x00" * 500)
    (tmp_path / "b.pst").write_bytes(b"!BDN\x00\x00\x00\x00SO" + b"\x00" * 500)
    assert detect_kind(tmp_path / "mail.pst") == "mbox"
    assert detect_kind(tmp_path / "mail.mbox") == "eml"
    assert detect_kind(tmp_path / "a.ost") == "pst"
    assert detect_kind(tmp_path / "b.pst") == "ost"
    assert detect_kind(tmp_path) == "eml"


def test_folder_of_eml_is_one_source_with_relative_ids(tmp_path: Path) -> None:
    (tmp_path / "Inbox" / "2024").mkdir(parents=True)
    (tmp_path / "Inbox" / "2024" / "b.eml").write_bytes(EML)
    (tmp_path / "Inbox" / "a.eml").write_bytes(EML)
    (tmp_path / "readme.txt").write_bytes(b"not mail")
    source = open_source(tmp_path)
    assert isinstance(source, EmlSource)
    messages = [m for m in source if isinstance(m, Message)]
    assert [m.item_id for m in messages] == ["Inbox/2024/b.eml", "Inbox/a.eml"]
    assert {m.folder_role for m in messages} == {FolderRole.INBOX}
    assert discover_sources([tmp_path]) == sorted(p for p in tmp_path.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 1 Jan 2024 10:00:00 +0100", datetime(2024, 1, 1, 9, tzinfo=UTC)),
        ("Mon, 1 Jan 2024 10:00:00 -0000", datetime(2024, 1, 1, 10, tzinfo=UTC)),  # naive: UTC
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_date(value: str | None, expected: datetime | None) -> None:
    assert parse_date(value) == expected


def test_message_ids_keep_unbracketed_values() -> None:
    assert message_ids("<a@b> <c@d.e f>") == ("<a@b>", "<c@d.ef>")  # folding space removed
    assert message_ids("Ann's message of Mon") == ("Ann's message of Mon",)
    assert message_ids("") == ()


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("Éléments supprimés", FolderRole.DELETED),
        ("ELEMENTS SUPPRIMES", FolderRole.DELETED),
        ("Boîte de réception", FolderRole.INBOX),
        ("Éléments envoyés", FolderRole.SENT),
        ("Posteingang", FolderRole.INBOX),
        ("Gesendete Elemente", FolderRole.SENT),
        ("Bandeja de entrada", FolderRole.INBOX),
        ("Elementos eliminados", FolderRole.DELETED),
        ("Sent Items", FolderRole.SENT),
        ("Junk E-mail", FolderRole.JUNK),
        ("Projects", FolderRole.OTHER),
    ],
)
def test_folder_roles(name: str, role: FolderRole) -> None:
    assert role_of_folder(name) is role


def test_role_of_path_uses_innermost_known_folder() -> None:
    assert role_of_path("Top of Personal Folders/Inbox/Project X") is FolderRole.INBOX
    assert role_of_path("Top of Personal Folders") is FolderRole.OTHER


def test_mapi_helpers() -> None:
    # 130378746040000000 ticks since 1601 is tika's first mail's submit time
    assert filetime_to_utc(130378746040000000) == datetime(2014, 2, 26, 7, 50, 4, tzinfo=UTC)
    assert filetime_to_utc(0) is None
    assert strip_subject_prefix("\x01\x05FW: original email") == "FW: original email"
    assert strip_subject_prefix("plain") == "plain"
