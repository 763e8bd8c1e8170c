"""Every file of the shared corpus read through open_source, against the counts in its README."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pstlib.errors import SourceError, UnsupportedSourceError
from pstlib.models import FolderRole, Message
from pstlib.sources import MailSource, PstSource, discover_sources, open_source

pytestmark = pytest.mark.corpus


def _read(source: MailSource) -> tuple[list[Message], list[SourceError]]:
    messages: list[Message] = []
    errors: list[SourceError] = []
    for result in source:
        (errors if isinstance(result, SourceError) else messages).append(result)
    source.close()
    return messages, errors


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# file, kind, items, per-item errors, classes, earliest / latest delivery (README, to the second)
PST_TABLE = [
    (
        "asposenet_Chunks_Test_part1.pst",
        "pst",
        49,
        12,
        {"IPM.Note": 31, "IPM.Appointment": 9, "IPM.Contact": 9},
        "2011-06-21 23:46:00",
        "2011-06-21 23:54:43",
    ),
    (
        "asposenet_Outlook.pst",
        "pst",
        17,
        0,
        {
            "IPM.Note": 14,
            "IPM.Appointment": 1,
            "IPM.Contact": 1,
            "IPM.Microsoft.ScheduleData.FreeBusy": 1,
        },
        "2011-06-21 23:42:35",
        "2011-06-21 23:54:43",
    ),
    ("asposenet_PersonalStorage.pst", "pst", 0, 0, {}, None, None),
    ("asposenet_SampleContacts.pst", "pst", 6, 0, {"IPM.Contact": 6}, None, None),
    (
        "asposenet_SampleOstFile.ost",
        "ost",
        92,
        0,
        {
            "IPM.Note": 80,
            "IPM.Schedule.Meeting.Request": 6,
            "IPM.Appointment": 5,
            "REPORT.IPM.Note.NotSupportedICal.NDR": 1,
        },
        "2011-03-19 11:19:03",
        "2011-09-20 10:29:16",
    ),
    (
        "gopst_32-bit.pst",
        "pst",
        1,
        0,
        {"IPM.Appointment": 1},
        "2004-08-24 19:42:33",
        "2004-08-24 19:42:33",
    ),
    ("gopst_test-from-aspose.ost", "pst", 18, 0, {"IPM.Contact": 18}, None, None),
    (
        "javalibpst_dist-list.pst",
        "pst",
        4,
        0,
        {
            "IPM.Appointment": 1,
            "IPM.DistList": 1,
            "IPM.Contact": 1,
            "IPM.Microsoft.ScheduleData.FreeBusy": 1,
        },
        "2014-05-25 13:58:28",
        "2016-08-02 00:27:12",
    ),
    (
        "javalibpst_passworded.pst",
        "pst",
        3,
        0,
        {"IPM.DistList": 1, "IPM.Contact": 1, "IPM.Microsoft.ScheduleData.FreeBusy": 1},
        "2014-05-25 13:58:28",
        "2014-05-25 13:58:59",
    ),
    (
        "pstsdk_sample1.pst",
        "pst",
        1,
        0,
        {"IPM.Note": 1},
        "2010-03-15 17:12:07",
        "2010-03-15 17:12:07",
    ),
    (
        "pstsdk_sample2.pst",
        "pst",
        1,
        0,
        {"IPM.Note": 1},
        "2010-03-15 17:12:07",
        "2010-03-15 17:12:07",
    ),
    (
        "pstsdk_submessage.pst",
        "pst",
        1,
        0,
        {"IPM.Note": 1},
        "2010-03-17 23:02:11",
        "2010-03-17 23:02:11",
    ),
    (
        "pstsdk_test_ansi.pst",
        "pst",
        1,
        0,
        {"IPM.Post": 1},
        "2008-07-09 18:11:05",
        "2008-07-09 18:11:05",
    ),
    (
        "pstsdk_test_unicode.pst",
        "pst",
        2,
        0,
        {"IPM.Post": 2},
        "2008-07-09 18:09:06",
        "2008-07-09 18:11:14",
    ),
    (
        "rubymsg_200_recipients.pst",
        "pst",
        1,
        0,
        {"IPM.Note": 1},
        "2021-11-23 00:24:09",
        "2021-11-23 00:24:09",
    ),
    (
        "rubymsg_attachAndInline.pst",
        "pst",
        1,
        0,
        {"IPM.Note": 1},
        "2021-07-27 22:19:50",
        "2021-07-27 22:19:50",
    ),
    (
        "rubymsg_msgInMsg.pst",
        "pst",
        1,
        0,
        {"IPM.Note": 1},
        "2020-09-10 10:18:08",
        "2020-09-10 10:18:08",
    ),
    (
        "tika_testPST.pst",
        "pst",
        7,
        0,
        {"IPM.Note": 7},
        "2014-02-24 21:14:37",
        "2020-11-26 22:18:00",
    ),
    (
        "tika_testPST_variousBodyTypes.pst",
        "pst",
        4,
        0,
        {"IPM.Note": 4},
        "2017-08-30 19:26:04",
        "2017-08-30 19:27:51",
    ),
]


@pytest.mark.parametrize(
    ("name", "kind", "items", "errors", "classes", "earliest", "latest"),
    PST_TABLE,
    ids=[row[0] for row in PST_TABLE],
)
def test_pst_counts_classes_and_delivery_range(
    pst_dir: Path,
    name: str,
    kind: str,
    items: int,
    errors: int,
    classes: dict[str, int],
    earliest: str | None,
    latest: str | None,
) -> None:
    source = open_source(pst_dir / name)
    assert source.kind == kind  # from the header's client magic, not the extension
    messages, failures = _read(source)
    assert len(messages) == items
    assert len(failures) == errors
    assert all(f.code == "unreadable_item" and name in str(f) for f in failures)
    assert Counter(m.message_class for m in messages) == classes
    delivered = sorted(m.received_at_utc for m in messages if m.received_at_utc)
    if earliest is None:
        assert delivered == []
    else:
        assert delivered[0].replace(microsecond=0) == _utc(earliest)
        assert delivered[-1].replace(microsecond=0) == _utc(latest or "")
    stamps = [t for m in messages for t in (m.sent_at_utc, m.received_at_utc) if t]
    assert all(t.tzinfo is UTC for t in stamps)
    assert len({m.item_id for m in messages}) == len(messages)  # ids stable and distinct


def test_tika_first_mail_as_tika_reads_it(pst_dir: Path) -> None:
    messages, _ = _read(open_source(pst_dir / "tika_testPST.pst"))
    first = messages[0]
    assert first.subject == "Re: Feature Generators"
    assert first.sender is not None
    assert (first.sender.name, first.sender.address) == ("Jörn Kottmann", "kottmann@gmail.com")
    assert first.sent_at_utc == _utc("2014-02-26 07:50:04")
    assert first.received_at_utc is not None
    assert first.received_at_utc.replace(microsecond=0) == _utc("2014-02-26 07:51:02")
    assert [(r.kind.value, r.address.address) for r in first.recipients] == [
        ("to", "users@opennlp.apache.org")
    ]
    assert first.folder_path == "Début du fichier de données Outlook"
    assert first.header("list-id") == "<users.opennlp.apache.org>"
    assert first.conversation_topic == "Feature Generators"
    assert first.conversation_index is not None and first.conversation_index.startswith("0101")
    ids = {m.internet_message_id for m in messages}
    assert {
        "<530D9CAC.5080901@gmail.com>",
        "<1393363252.28814.YahooMailNeo@web140906.mail.bf1.yahoo.com>",
    } <= ids
    assert any("Gary Murphy commented on TIKA-1250:" in m.body for m in messages)


def test_tika_exchange_dn_recipient_resolved_from_transport_headers(pst_dir: Path) -> None:
    messages, _ = _read(open_source(pst_dir / "tika_testPST.pst"))
    couchbase = next(m for m in messages if m.sender and m.sender.name == "Couchbase")
    assert couchbase.sender is not None and couchbase.sender.address == "couchbase@couchbase.com"
    (to,) = couchbase.recipients
    assert to.address.name == "Hong-Thai Nguyen"
    assert to.address.raw.startswith("/o=ExchangeLabs/ou=Exchange Administrative Group")
    assert to.address.address == "hong-thai.nguyen@polyspot.com"  # from the To: header


def test_tika_attachment_and_dn_sender_kept_raw(pst_dir: Path) -> None:
    messages, _ = _read(open_source(pst_dir / "tika_testPST.pst"))
    forwarded = next(m for m in messages if m.subject == "FW: First email")
    assert [a.name for a in forwarded.attachments] == ["First email"]
    assert forwarded.attachments[0].data is not None
    assert forwarded.attachments[0].size_bytes == len(forwarded.attachments[0].data)
    # the sender has only an Exchange DN and no SMTP property or transport headers
    assert forwarded.sender is not None and forwarded.sender.address == ""
    assert forwarded.sender.raw.lower().startswith("/o=pf/")


def test_french_folder_names_and_roles(pst_dir: Path) -> None:
    from pstlib.sources.folders import role_of_folder

    assert role_of_folder("Éléments supprimés") is FolderRole.DELETED
    assert role_of_folder("Boîte de réception") is FolderRole.INBOX
    assert role_of_folder("Éléments envoyés") is FolderRole.SENT
    assert role_of_folder("Racine (pour la recherche)") is FolderRole.OTHER
    messages, _ = _read(open_source(pst_dir / "tika_testPST.pst"))
    assert {m.folder_path for m in messages} == {"Début du fichier de données Outlook"}


def test_english_folder_roles_from_the_pst(pst_dir: Path) -> None:
    messages, _ = _read(open_source(pst_dir / "asposenet_SampleOstFile.ost"))
    roles = {m.folder_path: m.folder_role for m in messages}
    base = "Root - Mailbox/IPM_SUBTREE/"
    assert roles[base + "Inbox"] is FolderRole.INBOX
    assert roles[base + "Inbox/sub1"] is FolderRole.INBOX  # below the inbox: still received mail
    assert roles[base + "Sent Items"] is FolderRole.SENT
    assert roles[base + "Deleted Items"] is FolderRole.DELETED
    assert roles[base + "Calendar"] is FolderRole.CALENDAR
    assert roles[base + "Sync Issues"] is FolderRole.OTHER


def test_200_recipients_and_attachment_bytes(pst_dir: Path) -> None:
    (message,), _ = _read(open_source(pst_dir / "rubymsg_200_recipients.pst"))
    assert len(message.recipients) == 200
    (inline,), _ = _read(open_source(pst_dir / "rubymsg_attachAndInline.pst"))
    assert {(a.name, a.size_bytes) for a in inline.attachments} == {
        ("attach.png", 1558),
        ("image001.png", 809),
    }
    assert all(a.data is not None and a.data[:4] == b"\x89PNG" for a in inline.attachments)


def test_password_protected_store_is_flagged_and_read(pst_dir: Path) -> None:
    protected = open_source(pst_dir / "javalibpst_passworded.pst")
    plain = open_source(pst_dir / "javalibpst_dist-list.pst")
    assert isinstance(protected, PstSource) and isinstance(plain, PstSource)
    assert protected.password_protected is True
    assert plain.password_protected is False
    assert len(_read(protected)[0]) == 3


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("derived_header_only_pstsdk_sample1.pst", "truncated"),
        ("derived_truncated_tika_testPST.pst", "truncated"),
    ],
)
def test_truncated_corpus_files_raise_at_open(pst_dir: Path, name: str, code: str) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(pst_dir / name)
    assert caught.value.code == code
    assert name in str(caught.value) and "truncated" in str(caught.value)


# file, messages, with Message-ID, In-Reply-To, References, distinct senders, earliest, latest Date
MAIL_TABLE = [
    (
        "asposenet_EmailWithAttandEmbedded.eml",
        1,
        0,
        0,
        0,
        1,
        "2016-08-05 10:57:20",
        "2016-08-05 10:57:20",
    ),
    ("asposenet_ExampleMbox.mbox", 1, 0, 0, 0, 1, "2016-08-05 10:57:20", "2016-08-05 10:57:20"),
    ("asposenet_TestAppointment.eml", 1, 1, 0, 0, 1, "2019-05-17 03:56:09", "2019-05-17 03:56:09"),
    ("asposenet_emlWithHeaders.eml", 1, 1, 0, 0, 1, "2017-01-09 14:24:34", "2017-01-09 14:24:34"),
    ("asposenet_tnefEml1.eml", 1, 0, 0, 0, 1, "2015-07-25 12:11:10", "2015-07-25 12:11:10"),
    ("iped_test_mbox.mbox", 8, 8, 1, 1, 4, "2014-09-23 02:23:33", "2015-01-14 13:49:24"),
    ("notmuch_default.mbox", 53, 53, 29, 29, 16, "2009-11-17 15:28:37", "2010-12-29 14:07:54"),
    ("notmuch_lkml.mbox", 210, 210, 205, 205, 50, "2009-11-22 00:11:00", "2011-02-14 18:35:37"),
    ("notmuch_threading.mbox", 12, 12, 8, 9, 5, "2016-06-17 02:14:41", "2016-06-26 12:44:24"),
    (
        "perceval_hyperkitty_2016_april.mbox",
        3,
        3,
        2,
        2,
        2,
        "2016-04-14 09:06:56",
        "2016-04-25 22:00:07",
    ),
    ("perceval_mbox_complex.mbox", 2, 2, 1, 1, 2, "2004-09-22 09:03:40", "2008-03-17 09:35:05"),
    (
        "perceval_mbox_iso8859_encoding.mbox",
        1,
        1,
        0,
        0,
        1,
        "2016-11-07 18:44:27",
        "2016-11-07 18:44:27",
    ),
    ("perceval_mbox_multipart.mbox", 2, 2, 0, 0, 2, "2003-01-29 23:02:30", "2009-11-12 02:29:24"),
    ("perceval_mbox_no_fields.mbox", 6, 5, 0, 0, 1, "2010-12-01 13:26:40", "2016-09-21 19:42:07"),
    (
        "perceval_mbox_unixfrom_encoding.mbox",
        1,
        1,
        1,
        1,
        1,
        "2015-01-15 13:22:25",
        "2015-01-15 13:22:25",
    ),
    (
        "perceval_mbox_unknown_encoding.mbox",
        1,
        1,
        0,
        0,
        1,
        "2002-08-23 17:24:49",
        "2002-08-23 17:24:49",
    ),
    (
        "perceval_pipermail_2015_november.mbox",
        4,
        4,
        3,
        3,
        2,
        "2015-11-14 20:29:28",
        "2015-11-28 20:25:30",
    ),
    (
        "spamassassin_easy_ham_1.mbox",
        2500,
        2500,
        1019,
        786,
        445,
        "2002-02-01 05:44:14",
        "2028-10-04 16:05:01",
    ),
    (
        "spamassassin_hard_ham_1.mbox",
        250,
        250,
        1,
        4,
        188,
        "2002-01-02 18:55:00",
        "2002-12-03 00:04:49",
    ),
    ("spamassassin_spam_1.mbox", 500, 500, 0, 0, 436, "0102-07-18 20:51:35", "2020-10-08 18:01:36"),
    ("tika_complex.mbox", 3, 3, 3, 1, 2, "2009-06-01 04:26:31", "2009-06-01 06:03:13"),
    ("tika_single_mail.mbox", 1, 0, 0, 0, 1, None, None),
    ("tika_testMBOX_complex.mbox", 1, 1, 0, 0, 1, "2015-07-20 07:01:07", "2015-07-20 07:01:07"),
    (
        "tika_testMBOX_lengthy_x-headers.mbox",
        1,
        1,
        0,
        0,
        1,
        "2002-01-30 23:07:01",
        "2002-01-30 23:07:01",
    ),
]


@pytest.mark.parametrize(
    ("name", "count", "mids", "replies", "refs", "senders", "earliest", "latest"),
    MAIL_TABLE,
    ids=[row[0] for row in MAIL_TABLE],
)
def test_mail_file_counts_and_date_range(
    mail_dir: Path,
    name: str,
    count: int,
    mids: int,
    replies: int,
    refs: int,
    senders: int,
    earliest: str | None,
    latest: str | None,
) -> None:
    source = open_source(mail_dir / name)
    assert source.kind == ("eml" if name.endswith(".eml") else "mbox")
    messages, failures = _read(source)
    assert failures == []
    assert len(messages) == count
    assert sum(1 for m in messages if m.internet_message_id) == mids
    assert sum(1 for m in messages if m.in_reply_to) == replies
    assert sum(1 for m in messages if m.references) == refs
    # as the README counts them: distinct From addresses, a missing From counting as one
    assert len({m.sender.address if m.sender else "" for m in messages}) == senders
    dates = sorted(m.sent_at_utc for m in messages if m.sent_at_utc)
    if earliest is None:
        assert dates == []
    else:
        assert (dates[0], dates[-1]) == (_utc(earliest), _utc(latest or ""))
    if name.endswith(".mbox"):
        assert [m.item_id for m in messages] == [str(i) for i in range(count)]


def test_mbox_bad_dates_are_none_and_warned(mail_dir: Path) -> None:
    source = open_source(mail_dir / "perceval_mbox_no_fields.mbox")
    messages, _ = _read(source)
    assert sum(1 for m in messages if m.sent_at_utc is None) == 2  # README: 2 bad dates
    warnings = source.warnings  # type: ignore[attr-defined]
    assert any(w.code == "bad_date" and "perceval_mbox_no_fields.mbox" in str(w) for w in warnings)


def test_folder_of_eml_files_is_one_source(mail_dir: Path) -> None:
    messages, failures = _read(open_source(mail_dir))
    assert failures == []
    assert sorted(m.item_id for m in messages) == sorted(p.name for p in mail_dir.glob("*.eml"))


def test_discover_sources_lists_the_corpus_sorted(corpus_dir: Path) -> None:
    found = discover_sources([corpus_dir / "pst", corpus_dir / "mail"])
    assert found == sorted(found)
    assert len(found) == 45  # 21 PST/OST + 24 mail files
    assert (
        discover_sources(
            [corpus_dir / "mail", corpus_dir / "pst" / "tika_testPST.pst", corpus_dir / "pst"]
        )
        == found
    )  # order of the arguments is irrelevant
    # a folder expands to every file, whatever its kind: open_source is what refuses the README
    everything = discover_sources([corpus_dir])
    assert set(everything) - set(found) == {corpus_dir / "README.md"}
    with pytest.raises(UnsupportedSourceError, match=r"README\.md"):
        open_source(corpus_dir / "README.md")
