"""Turn a :class:`~pstlib.models.Message` into the Dataverse payloads that import it (pure).

Every column and navigation property name below is taken from Microsoft's table references
(learn.microsoft.com, "Email table/entity reference", "Attachment (ActivityMimeAttachment)
table/entity reference", "ActivityParty table"):

* ``emails``: ``subject`` (String, max 800), ``description`` (Memo, format *Email*: the body,
  shown as HTML), ``messageid`` (String, max 320), ``directioncode`` (Boolean, True *Outgoing* /
  False *Incoming*), ``actualstart``/``actualend``, ``overriddencreatedon`` ("Date and time that the
  record was migrated": the documented way to keep a migrated record's original date),
  ``activityid`` (the primary key, settable on create).
* Parties go in the ``email_activity_parties`` collection (relationship *email_activity_parties*),
  each with ``participationtypemask`` 1 Sender, 2 ToRecipient, 3 CCRecipient, 4 BccRecipient, and
  either ``partyid_contact@odata.bind`` (as in the "Associate and disassociate table rows using the
  Web API" activity party example) or only ``addressused`` for an unresolved address.
* The regarding contact is bound through ``regardingobjectid_contact_email`` (relationship
  *Contact_Emails*, ReferencingEntityNavigationPropertyName).
* Attachments are ``activitymimeattachments`` rows: ``filename`` (max 255), ``mimetype`` (max 256),
  ``body`` (base64), ``objecttypecode`` ``"email"`` and the email bound through ``objectid_email``
  (relationship *email_activity_mime_attachment*; ``objectid_activitypointer`` would bind the
  activity pointer instead).
* "Completed and canceled email is read-only": attachments are created while the email is open, and
  the state change to ``statecode`` 1 *Completed* with ``statuscode`` 3 *Sent* or 4 *Received* is a
  separate, last operation (:func:`completion_payload`).

Bodies: an HTML body is sent as it is (Dataverse keeps its own sanitised ``safedescription``); a
plain-text body is HTML-escaped and its line breaks become ``<br>``, because ``description`` is
rendered as HTML and text like ``<tag>`` or ``a & b`` must show as written.

Ids are deterministic (UUID5) so a resumed or retried import can never create a second copy:
``activityid`` from :attr:`Message.dedupe_key`, attachment ids from the activity id and the
attachment's position, ``contactid`` from the normalised address.
"""

from __future__ import annotations

import base64
import html
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pstlib.models import FolderRole, Message, RecipientKind

ACTIVITY_NAMESPACE = uuid.UUID(
    "6f0c5a52-3d1e-4f0e-9b4e-7a1c2e5d9b10"
)  # never change: ids depend on it
CONTACT_NAMESPACE = uuid.UUID(
    "b7d3e0a4-91c2-4b8f-a6e5-2f4c8d1e7a36"
)  # never change: ids depend on it

SENDER, TO_RECIPIENT, CC_RECIPIENT, BCC_RECIPIENT = 1, 2, 3, 4
STATE_COMPLETED = 1
STATUS_SENT, STATUS_RECEIVED = 3, 4

SUBJECT_MAX = 800
MESSAGEID_MAX = 320
FILENAME_MAX = 255
MIMETYPE_MAX = 256
DEFAULT_MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024

# Executable and script types. Not read from the environment: Dataverse blocks what its own
# "Block file extensions for attachments" system setting lists; keep this in step with the tenant.
DEFAULT_BLOCKED_EXTENSIONS = frozenset(
    (  # noqa: SIM905 - a word list reads better than 96 quoted strings
        "ade adp app asa ashx asmx asp bas bat cdx cer chm class cmd com config cpl crt csh dll"
        " exe fxp hlp hta htr htw ida idc idq inf ins isp its jar js jse ksh lnk mad maf mag mam"
        " maq mar mas mat mau mav maw mda mdb mde mdt mdw mdz msc msh msh1 msh1xml msh2 msh2xml"
        " mshxml msi msp mst ops pcd pif prf prg printer pst reg rem scf scr sct shb shs shtm shtml"
        " soap stm tmp url vb vbe vbs vsmacros vss vst vsw ws wsc wsf wsh"
    ).split()
)

_MASK = {
    RecipientKind.TO: TO_RECIPIENT,
    RecipientKind.CC: CC_RECIPIENT,
    RecipientKind.BCC: BCC_RECIPIENT,
}


@dataclass(frozen=True, slots=True)
class MappingOptions:
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES
    blocked_extensions: frozenset[str] = DEFAULT_BLOCKED_EXTENSIONS


@dataclass(frozen=True, slots=True)
class SkippedAttachment:
    filename: str
    reason: str  # too_large | blocked_extension | no_data
    detail: str


@dataclass(frozen=True, slots=True)
class EmailPayload:
    """Everything needed to import one message: the email, its attachments, its final state."""

    activity_id: str
    dedupe_key: str
    messageid: str | None
    outgoing: bool
    email: Mapping[str, Any]
    attachments: tuple[Mapping[str, Any], ...] = ()
    skipped_attachments: tuple[SkippedAttachment, ...] = ()
    completion: Mapping[str, Any] = field(default_factory=dict)


def activity_id_for(dedupe_key: str) -> str:
    """The email's ``activityid``: UUID5 of the dedupe key in :data:`ACTIVITY_NAMESPACE`."""
    return str(uuid.uuid5(ACTIVITY_NAMESPACE, dedupe_key))


def contact_id_for(address: str) -> str:
    """A new contact's ``contactid``: UUID5 of the lower-cased, stripped address."""
    return str(uuid.uuid5(CONTACT_NAMESPACE, address.strip().lower()))


def attachment_id_for(activity_id: str, index: int) -> str:
    """An attachment's ``activitymimeattachmentid``: UUID5 of its email's id and its position."""
    return str(uuid.uuid5(ACTIVITY_NAMESPACE, f"{activity_id}/attachment/{index}"))


def normalise_messageid(value: str | None) -> str | None:
    """``<id>`` as stored in ``messageid``: stripped, one pair of angle brackets, at most 320
    characters (longer ids are cut, consistently here and in lookups)."""
    if not value:
        return None
    core = value.strip().strip("<>").strip()
    return f"<{core}>"[:MESSAGEID_MAX] if core else None


def is_outgoing(message: Message, mailbox_owner: str | None) -> bool:
    """Sent by the mailbox owner (when known), else filed in Sent Items or the Outbox."""
    if mailbox_owner:
        sender = message.sender.address if message.sender else ""
        return bool(sender) and sender.lower() == mailbox_owner.strip().lower()
    return message.folder_role in (FolderRole.SENT, FolderRole.OUTBOX)


def body_html(message: Message) -> str:
    """The ``description``: HTML as it is, plain text escaped with line breaks as ``<br>``."""
    if message.body_is_html:
        return message.body
    text = html.escape(message.body.replace("\r\n", "\n").replace("\r", "\n"), quote=False)
    return text.replace("\n", "<br>\n")


def odata_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, the form the Web API takes for DateTime columns."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def contact_bind(contact_id: str) -> str:
    return f"/contacts({contact_id})"


def activity_parties(message: Message, contacts: Mapping[str, str]) -> list[dict[str, Any]]:
    """Sender and recipients as activity parties: each (address, role) once, no empty addresses."""
    parties: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    entries: list[tuple[str, int]] = []
    if message.sender and message.sender.address:
        entries.append((message.sender.address, SENDER))
    entries.extend(
        (r.address.address, _MASK[r.kind]) for r in message.recipients if r.address.address
    )
    for address, mask in entries:
        norm = address.strip().lower()
        if (norm, mask) in seen:
            continue
        seen.add((norm, mask))
        party: dict[str, Any] = {"participationtypemask": mask, "addressused": address.strip()}
        contact_id = contacts.get(norm)
        if contact_id:
            party["partyid_contact@odata.bind"] = contact_bind(contact_id)
        parties.append(party)
    return parties


def attachment_payloads(
    message: Message, activity_id: str, options: MappingOptions
) -> tuple[list[dict[str, Any]], list[SkippedAttachment]]:
    """``activitymimeattachment`` payloads under the size limit, not blocked; the rest skipped."""
    payloads: list[dict[str, Any]] = []
    skipped: list[SkippedAttachment] = []
    for index, att in enumerate(message.attachments):
        name = att.name or f"attachment-{index + 1}"
        ext = name.rpartition(".")[2].lower() if "." in name else ""
        size = len(att.data) if att.data is not None else att.size_bytes
        if ext and ext in options.blocked_extensions:
            skipped.append(SkippedAttachment(name, "blocked_extension", f".{ext} is blocked"))
        elif size > options.max_attachment_bytes:
            skipped.append(
                SkippedAttachment(
                    name, "too_large", f"{size} bytes > limit {options.max_attachment_bytes}"
                )
            )
        elif att.data is None:
            skipped.append(SkippedAttachment(name, "no_data", "the source gave no content"))
        else:
            payloads.append(
                {
                    "activitymimeattachmentid": attachment_id_for(activity_id, index),
                    "filename": name[:FILENAME_MAX],
                    "mimetype": (att.mime_type or "application/octet-stream")[:MIMETYPE_MAX],
                    "body": base64.b64encode(att.data).decode("ascii"),
                    "objecttypecode": "email",
                    "objectid_email@odata.bind": f"/emails({activity_id})",
                }
            )
    return payloads, skipped


def completion_payload(outgoing: bool) -> dict[str, int]:
    """The last operation: Completed, with status Sent (outgoing) or Received (incoming)."""
    return {
        "statecode": STATE_COMPLETED,
        "statuscode": STATUS_SENT if outgoing else STATUS_RECEIVED,
    }


def map_message(
    message: Message,
    *,
    mailbox_owner: str | None = None,
    contacts: Mapping[str, str] | None = None,
    regarding_contact_id: str | None = None,
    options: MappingOptions | None = None,
) -> EmailPayload:
    """Build the payloads that import ``message``.

    ``contacts`` maps lower-cased addresses to resolved ``contactid`` values (what
    :meth:`DataverseClient.find_contacts_by_email` and ``create_contact`` give); unresolved
    addresses become ``addressused``-only parties. ``regarding_contact_id`` sets the email's
    Regarding to that contact.
    """
    options = options or MappingOptions()
    contacts = {k.strip().lower(): v for k, v in (contacts or {}).items()}
    activity_id = activity_id_for(message.dedupe_key)
    outgoing = is_outgoing(message, mailbox_owner)
    messageid = normalise_messageid(message.internet_message_id)

    email: dict[str, Any] = {
        "activityid": activity_id,
        "subject": message.subject[:SUBJECT_MAX],
        "description": body_html(message),
        "directioncode": outgoing,
        "email_activity_parties": activity_parties(message, contacts),
    }
    if messageid:
        email["messageid"] = messageid
    start = message.sent_at_utc or message.received_at_utc
    end = (message.sent_at_utc if outgoing else message.received_at_utc) or start
    if start is not None:
        email["actualstart"] = odata_datetime(start)
        email["overriddencreatedon"] = odata_datetime(start)
    if end is not None:
        email["actualend"] = odata_datetime(end)
    if regarding_contact_id:
        email["regardingobjectid_contact_email@odata.bind"] = contact_bind(regarding_contact_id)

    attachments, skipped = attachment_payloads(message, activity_id, options)
    return EmailPayload(
        activity_id=activity_id,
        dedupe_key=message.dedupe_key,
        messageid=messageid,
        outgoing=outgoing,
        email=email,
        attachments=tuple(attachments),
        skipped_attachments=tuple(skipped),
        completion=completion_payload(outgoing),
    )
