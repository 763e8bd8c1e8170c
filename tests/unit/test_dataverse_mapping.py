"""Message → Dataverse payloads (pstlib.dataverse.mapping)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

from pstlib.dataverse.mapping import (
    ACTIVITY_NAMESPACE,
    MappingOptions,
    activity_id_for,
    body_html,
    contact_id_for,
    map_message,
    normalise_messageid,
)
from pstlib.models import Address, Attachment, FolderRole, Message, Recipient, RecipientKind

OWNER = "owner@example.com"
SENT = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
RECEIVED = datetime(2021, 3, 4, 5, 6, 9, tzinfo=UTC)


def _message(**kw: object) -> Message:
    base: dict[str, object] = {
        "source_path": "a.pst",
        "item_id": "1",
        "internet_message_id": "<abc@host>",
        "subject": "Hello",
        "sender": Address("alice@example.com", "Alice"),
        "recipients": (
            Recipient(RecipientKind.TO, Address(OWNER)),
            Recipient(RecipientKind.CC, Address("bob@example.com")),
            Recipient(RecipientKind.BCC, Address("carol@example.com")),
            Recipient(RecipientKind.TO, Address("")),  # no address: no party
            Recipient(RecipientKind.TO, Address("OWNER@example.com")),  # same party twice
        ),
        "sent_at_utc": SENT,
        "received_at_utc": RECEIVED,
        "body": "a < b & c\nline 2",
    }
    base.update(kw)
    return Message(**base)  # type: ignore[arg-type]


def test_ids_are_deterministic_uuid5() -> None:
    message = _message()
    payload = map_message(message, mailbox_owner=OWNER)
    # The activity id is UUID5(namespace, dedupe key): the same message always gets the same id.
    assert payload.activity_id == str(uuid.uuid5(ACTIVITY_NAMESPACE, "mid:abc@host"))
    assert payload.activity_id == activity_id_for(message.dedupe_key)
    assert payload.email["activityid"] == payload.activity_id
    assert map_message(_message(), mailbox_owner=OWNER).activity_id == payload.activity_id
    assert contact_id_for(" Bob@Example.com ") == contact_id_for("bob@example.com")


def test_incoming_message_fields() -> None:
    payload = map_message(_message(), mailbox_owner=OWNER)
    email = payload.email
    assert email["subject"] == "Hello"
    assert email["messageid"] == "<abc@host>"
    assert email["directioncode"] is False  # Alice sent it, not the owner: Incoming
    assert email["actualstart"] == "2021-03-04T05:06:07Z"
    assert email["actualend"] == "2021-03-04T05:06:09Z"  # received
    assert email["overriddencreatedon"] == "2021-03-04T05:06:07Z"  # the original date is kept
    assert payload.completion == {"statecode": 1, "statuscode": 4}  # Completed / Received
    assert "regardingobjectid_contact_email@odata.bind" not in email


def test_outgoing_when_the_owner_sent_it() -> None:
    payload = map_message(_message(sender=Address(OWNER)), mailbox_owner=OWNER.upper())
    assert payload.email["directioncode"] is True
    assert payload.email["actualend"] == "2021-03-04T05:06:07Z"  # sent
    assert payload.completion == {"statecode": 1, "statuscode": 3}  # Completed / Sent
    # Without a known owner, the Sent Items folder decides.
    assert map_message(_message(folder_role=FolderRole.SENT)).outgoing is True
    assert map_message(_message(folder_role=FolderRole.INBOX)).outgoing is False


def test_parties_bind_resolved_contacts_and_keep_the_rest_as_addresses() -> None:
    bob = "11111111-1111-1111-1111-111111111111"
    payload = map_message(
        _message(), mailbox_owner=OWNER, contacts={"BOB@example.com": bob}, regarding_contact_id=bob
    )
    parties = payload.email["email_activity_parties"]
    assert parties == [
        {"participationtypemask": 1, "addressused": "alice@example.com"},
        {"participationtypemask": 2, "addressused": OWNER},
        {
            "participationtypemask": 3,
            "addressused": "bob@example.com",
            "partyid_contact@odata.bind": f"/contacts({bob})",
        },
        {"participationtypemask": 4, "addressused": "carol@example.com"},
    ]
    assert payload.email["regardingobjectid_contact_email@odata.bind"] == f"/contacts({bob})"


def test_plain_text_is_escaped_html_is_kept() -> None:
    assert body_html(_message()) == "a &lt; b &amp; c<br>\nline 2"
    html = "<p>Hi <b>there</b></p>"
    assert body_html(_message(body=html, body_is_html=True)) == html


def test_long_values_are_cut_to_the_column_sizes() -> None:
    payload = map_message(_message(subject="x" * 900, internet_message_id="y" * 400))
    assert len(payload.email["subject"]) == 800
    assert len(payload.email["messageid"]) == 320
    assert normalise_messageid("  <a@b>  ") == "<a@b>" == normalise_messageid("a@b")
    assert normalise_messageid("") is None and normalise_messageid("<>") is None


def test_attachments_within_limits_others_skipped_with_a_reason() -> None:
    attachments = (
        Attachment("report.pdf", 3, "application/pdf", b"abc"),
        Attachment("setup.EXE", 3, "application/octet-stream", b"MZ!"),
        Attachment("big.bin", 11, "application/octet-stream", b"0123456789a"),
        Attachment("lost.txt", 5, "text/plain", None),
    )
    payload = map_message(_message(attachments=attachments), options=MappingOptions(10))
    assert len(payload.attachments) == 1
    pdf = payload.attachments[0]
    assert pdf["filename"] == "report.pdf"
    assert pdf["mimetype"] == "application/pdf"
    assert base64.b64decode(pdf["body"]) == b"abc"
    assert pdf["objecttypecode"] == "email"
    assert pdf["objectid_email@odata.bind"] == f"/emails({payload.activity_id})"
    # Attachment ids are deterministic too.
    again = map_message(_message(attachments=attachments), options=MappingOptions(10))
    assert again.attachments[0]["activitymimeattachmentid"] == pdf["activitymimeattachmentid"]
    reasons = [(s.filename, s.reason) for s in payload.skipped_attachments]
    assert reasons == [
        ("setup.EXE", "blocked_extension"),
        ("big.bin", "too_large"),
        ("lost.txt", "no_data"),
    ]


def test_message_without_dates_or_message_id() -> None:
    payload = map_message(
        _message(internet_message_id=None, sent_at_utc=None, received_at_utc=None, sender=None)
    )
    assert payload.dedupe_key.startswith("sha:")
    for column in ("messageid", "actualstart", "actualend", "overriddencreatedon"):
        assert column not in payload.email
    assert payload.messageid is None
