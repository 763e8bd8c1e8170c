"""The tables the stand-in serves and what the Web API does with them.

Attribute and navigation-property names come from the Dataverse table references (``email``,
``contact``, ``activityparty``, ``activitymimeattachment``): e.g.
``regardingobjectid_contact_email`` (relationship Contact_Emails), ``objectid_activitypointer``
(relationship activity_pointer_activity_mime_attachment),
email ``statecode`` 0 Open / 1 Completed / 2 Canceled with ``statuscode`` 1 Draft, 8 Failed (Open);
2 Completed, 3 Sent, 4 Received, 6 Pending Send, 7 Sending (Completed); 5 Canceled. "Completed and
canceled email is read-only and can't be edited."
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pstlib.standin import odata
from pstlib.standin.db import Row, StandinDB
from pstlib.standin.odata import ODataError, QueryOptions, Reply

API_PATH = "/api/data/v9.2/"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_KEYED = re.compile(r"^(\w+)\(([^)]*)\)$")
_BIND = re.compile(r"^(?:.*?/api/data/v9\.\d/|/)?(\w+)\(([0-9a-fA-F-]{36})\)$")


@dataclass(frozen=True)
class Table:
    """One entity set: key, declared attributes, lookups (binds), collections (deep insert)."""

    entity_set: str
    logical_name: str
    key: str
    attributes: frozenset[str]
    binds: Mapping[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    collections: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # nav -> (set, fk)
    creatable: bool = True

    def knows(self, name: str) -> bool:
        return name in self.attributes or name in {lookup for lookup, _ in self.binds.values()}


_COMMON = frozenset(
    {
        "createdon",
        "modifiedon",
        "versionnumber",
        "statecode",
        "statuscode",
        "overriddencreatedon",
        "importsequencenumber",
    }
)
TABLES: dict[str, Table] = {
    "contacts": Table(
        "contacts",
        "contact",
        "contactid",
        _COMMON
        | {
            "contactid",
            "emailaddress1",
            "emailaddress2",
            "emailaddress3",
            "firstname",
            "lastname",
            "middlename",
            "fullname",
            "jobtitle",
            "telephone1",
            "mobilephone",
            "description",
            "nickname",
            "salutation",
        },
        binds={
            "parentcustomerid_account": ("_parentcustomerid_value", ("accounts",)),
            "parentcustomerid_contact": ("_parentcustomerid_value", ("contacts",)),
        },
    ),
    "emails": Table(
        "emails",
        "email",
        "activityid",
        _COMMON
        | {
            "activityid",
            "subject",
            "description",
            "directioncode",
            "messageid",
            "sender",
            "torecipients",
            "senton",
            "actualstart",
            "actualend",
            "actualdurationminutes",
            "scheduledstart",
            "scheduledend",
            "prioritycode",
            "category",
            "subcategory",
            "conversationindex",
            "inreplyto",
            "trackingtoken",
            "mimetype",
            "submittedby",
            "internetmessageheaders",
            "readreceiptrequested",
            "deliveryreceiptrequested",
            "attachmentcount",
            "activitytypecode",
            "baseconversationindexhash",
            "sortdate",
        },
        binds={
            "regardingobjectid_contact_email": ("_regardingobjectid_value", ("contacts",)),
            "regardingobjectid_account_email": ("_regardingobjectid_value", ("accounts",)),
            "parentactivityid_email": ("_parentactivityid_value", ("emails",)),
        },
        collections={
            "email_activity_parties": ("activityparties", "_activityid_value"),
            "email_activity_mime_attachment": ("activitymimeattachments", "_objectid_value"),
        },
    ),
    "activityparties": Table(
        "activityparties",
        "activityparty",
        "activitypartyid",
        frozenset(
            {
                "activitypartyid",
                "participationtypemask",
                "addressused",
                "ispartydeleted",
                "_activityid_value",
                "versionnumber",
            }
        ),
        binds={
            "partyid_contact": ("_partyid_value", ("contacts",)),
            "partyid_account": ("_partyid_value", ("accounts",)),
            "partyid_systemuser": ("_partyid_value", ("systemusers",)),
        },
        creatable=False,
    ),
    "activitymimeattachments": Table(
        "activitymimeattachments",
        "activitymimeattachment",
        "activitymimeattachmentid",
        frozenset(
            {
                "activitymimeattachmentid",
                "filename",
                "mimetype",
                "body",
                "subject",
                "objecttypecode",
                "attachmentnumber",
                "attachmentcontentid",
                "filesize",
                "createdon",
                "modifiedon",
                "versionnumber",
            }
        ),
        binds={
            "objectid_activitypointer": ("_objectid_value", ("activitypointers", "emails")),
            "objectid_email": ("_objectid_value", ("emails",)),
        },
    ),
}
# Entity sets a bind may name, and the table holding their rows (emails are activitypointers).
_BIND_TARGETS = {"contacts": "contacts", "emails": "emails", "activitypointers": "emails"}
EMAIL_STATUS_BY_STATE = {0: {1, 8}, 1: {2, 3, 4, 6, 7}, 2: {5}}
EMAIL_DEFAULT_STATUS = {0: 1, 1: 2, 2: 5}
PARTY_MASKS = frozenset(range(1, 12))  # 1 From ... 4 Bcc ... 11 Customer (activityparty table)
_STATE_FIELDS = frozenset({"statecode", "statuscode"})
DEFAULT_BLOCKED_EXTENSIONS = frozenset(
    [
        "ade",
        "adp",
        "app",
        "asa",
        "ashx",
        "asmx",
        "asp",
        "bas",
        "bat",
        "cdx",
        "cer",
        "chm",
        "class",
        "cmd",
        "com",
        "config",
        "cpl",
        "crt",
        "csh",
        "dll",
        "exe",
        "fxp",
        "hlp",
        "hta",
        "htr",
        "htw",
        "ida",
        "idc",
        "idq",
        "inf",
        "ins",
        "isp",
        "its",
        "jar",
        "js",
        "jse",
        "ksh",
        "lnk",
        "mad",
        "maf",
        "mag",
        "mam",
        "maq",
        "mar",
        "mas",
        "mat",
        "mau",
        "mav",
        "maw",
        "mda",
        "mdb",
        "mde",
        "mdt",
        "mdw",
        "mdz",
        "msc",
        "msh",
        "msh1",
        "msh1xml",
        "msh2",
        "msh2xml",
        "mshxml",
        "msi",
        "msp",
        "mst",
        "ops",
        "pcd",
        "pif",
        "prf",
        "prg",
        "printer",
        "pst",
        "reg",
        "rem",
        "scf",
        "scr",
        "sct",
        "shb",
        "shs",
        "shtm",
        "shtml",
        "soap",
        "stm",
        "tmp",
        "url",
        "vb",
        "vbe",
        "vbs",
        "vsmacros",
        "vss",
        "vst",
        "vsw",
        "ws",
        "wsc",
        "wsf",
        "wsh",
        "svg",
    ]
)  # Organization.BlockedAttachments default, quoted from "Files and images overview"


@dataclass(frozen=True)
class Request:
    """One Web API operation, from a plain request or one part of a $batch."""

    method: str
    path: str  # below /api/data/v9.2/, e.g. "emails(…)"
    query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def prefers(self, preference: str) -> bool:
        prefer = self.headers.get("prefer", "")
        return preference in {item.strip() for item in prefer.split(",")}


@dataclass
class Created:
    """What a successful create returns besides the reply: the new row's URL (for Content-ID)."""

    reply: Reply
    location: str | None = None


class Service:
    """The entity operations of the Web API over a :class:`StandinDB`."""

    def __init__(
        self,
        db: StandinDB,
        base_url: str,
        *,
        max_upload_bytes: int,
        blocked_extensions: frozenset[str],
    ) -> None:
        self.db = db
        self.base_url = base_url
        self.max_upload_bytes = max_upload_bytes
        self.blocked_extensions = frozenset(ext.lower().lstrip(".") for ext in blocked_extensions)
        self._version = 1000
        self._version_lock = threading.Lock()

    # -- dispatch -------------------------------------------------------------------------------
    def handle(self, request: Request) -> Created:
        """Run one operation; errors come back as their documented replies. (Its simulated
        execution time is the server's: :meth:`pstlib.standin.server.StandinServer.handle_api`.)"""
        try:
            return self._route(request)
        except ODataError as error:
            return Created(error.reply())

    def _route(self, request: Request) -> Created:
        segments = request.path.strip("/").split("/")
        head = segments[0]
        match = _KEYED.match(head)
        set_name, key = (match.group(1), match.group(2)) if match else (head, None)
        if set_name == "WhoAmI" and request.method == "GET":
            return Created(self._who_am_i(request))
        table = TABLES.get(set_name)
        if table is None:
            raise odata.resource_not_found(set_name)
        if key is not None:
            key = key.split("=", 1)[-1].strip("'")
            if not _GUID.match(key):
                raise odata.bad_request(f"Invalid key value '{key}' for {table.entity_set}.")
            key = key.lower()
        if len(segments) > 2 or (len(segments) == 2 and key is None):
            raise odata.resource_not_found(segments[-1])
        method = request.method
        if len(segments) == 2 and key is not None:
            if method != "GET" or segments[1] not in table.collections:
                raise odata.resource_not_found(segments[1])
            return Created(self._related(table, key, segments[1], request))
        if key is None and method == "GET":
            return Created(self._query(table, odata.parse_query(request.query)))
        if key is None and method == "POST":
            return self._create_reply(table, request)
        if key is not None and method == "GET":
            return Created(self._retrieve(table, key, odata.parse_query(request.query)))
        if key is not None and method == "PATCH":
            return self._update_reply(table, key, request)
        if key is not None and method == "DELETE":
            return Created(self._delete(table, key))
        raise ODataError(405, "0x80060888", f"The HTTP method '{method}' is not allowed here.")

    # -- create ---------------------------------------------------------------------------------
    def _create_reply(self, table: Table, request: Request, key: str | None = None) -> Created:
        if not table.creatable:
            raise ODataError(
                405, "0x80060888", f"The Create message is not supported for {table.logical_name}."
            )
        body = _json_body(request.body)
        with self.db.transaction():
            row = self.create(table, body, key=key)
        location = self._url(table, row[table.key])
        if request.prefers("return=representation"):
            payload = self._shape(table, row, None)
            payload["@odata.context"] = (
                f"{self.base_url}{API_PATH}$metadata#{table.entity_set}/$entity"
            )
            return Created(odata.json_reply(201, payload, [("OData-EntityId", location)]), location)
        headers = [("OData-Version", "4.0"), ("Location", location), ("OData-EntityId", location)]
        return Created(Reply(204, headers), location)

    def create(
        self,
        table: Table,
        body: Mapping[str, Any],
        *,
        key: str | None = None,
        parent: tuple[str, str] | None = None,
    ) -> Row:
        """Validate and insert one row and its deep-inserted children, inside a transaction."""
        row, children = self._fields(table, body, creating=True)
        if parent is not None:
            row[parent[0]] = parent[1]
        given = row.get(table.key)
        if key is not None and given is not None and str(given).lower() != key:
            raise odata.bad_request("The key in the URL and the key in the body differ.")
        key = (key or str(given or uuid.uuid4())).lower()
        if not _GUID.match(key):
            raise odata.bad_request(f"Invalid value '{key}' for {table.key}.")
        if self.db.exists(table.entity_set, key):
            raise odata.duplicate_record()
        row[table.key] = key
        now = _now()
        row.setdefault("createdon", now)
        row["modifiedon"] = now
        row["versionnumber"] = self._next_version()
        self._table_rules(table, row, None)
        self.db.insert(table.entity_set, key, row)
        for nav, items in children:
            child_set, foreign_key = table.collections[nav]
            if not isinstance(items, list):
                raise odata.bad_request(f"The value of '{nav}' must be an array.")
            for item in items:
                if not isinstance(item, dict):
                    raise odata.bad_request(f"Every item of '{nav}' must be an object.")
                self.create(TABLES[child_set], item, parent=(foreign_key, key))
        if table.entity_set == "activitymimeattachments":
            self._count_attachments(row.get("_objectid_value"))
        return row

    def _fields(
        self, table: Table, body: Mapping[str, Any], *, creating: bool
    ) -> tuple[Row, list[tuple[str, Any]]]:
        """Split a payload into row values and deep-insert collections, rejecting unknown names."""
        row: Row = {}
        children: list[tuple[str, Any]] = []
        for name, value in body.items():
            if name.endswith("@odata.bind"):
                nav = name[: -len("@odata.bind")]
                if nav not in table.binds:
                    raise odata.undeclared_navigation(nav, table.entity_set)
                lookup, targets = table.binds[nav]
                row[lookup] = None if value is None else self._resolve_bind(nav, value, targets)
            elif "@" in name:
                continue  # instance annotations such as @odata.type are not data
            elif name in table.collections and creating:
                children.append((name, value))
            elif name in table.attributes and not name.startswith("_"):
                row[name] = value
            else:
                raise odata.invalid_property(name, table.logical_name)
        return row, children

    def _resolve_bind(self, nav: str, value: Any, targets: tuple[str, ...]) -> str:
        match = _BIND.match(str(value)) if isinstance(value, str) else None
        if match is None:
            raise odata.bad_request(
                f"The value '{value}' of '{nav}@odata.bind' is not a valid entity reference."
            )
        target_set, target_key = match.group(1), match.group(2).lower()
        if target_set not in targets:
            raise odata.bad_request(
                f"The entity set '{target_set}' does not match the navigation property '{nav}'."
            )
        holder = _BIND_TARGETS.get(target_set)
        if holder is None or not self.db.exists(holder, target_key):
            logical = "activitypointer" if target_set == "activitypointers" else target_set[:-1]
            raise odata.record_not_found(logical, target_key)
        return target_key

    def _table_rules(self, table: Table, row: Row, before: Row | None) -> None:
        """The checks particular to one table, on the row as it will be stored."""
        if table.entity_set == "emails":
            _email_state(row, before)
            row.setdefault("activitytypecode", "email")
        elif table.entity_set == "contacts":
            if "fullname" not in row or before is not None:
                names = [str(row.get(part) or "") for part in ("firstname", "lastname")]
                row.setdefault("fullname", " ".join(name for name in names if name) or None)
            row.setdefault("statecode", 0)
            row.setdefault("statuscode", 1)
        elif table.entity_set == "activityparties":
            mask = row.get("participationtypemask")
            if mask not in PARTY_MASKS:
                raise odata.party_mask_not_found(mask)
            row.setdefault("ispartydeleted", False)
            row.setdefault("_partyid_value", None)
            row.setdefault("addressused", None)
        elif table.entity_set == "activitymimeattachments":
            self._attachment_rules(row)

    def _attachment_rules(self, row: Row) -> None:
        if not row.get("_objectid_value"):
            raise odata.bad_request("objectid is required for an activitymimeattachment.")
        filename = str(row.get("filename") or "")
        extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if extension and extension in self.blocked_extensions:
            raise odata.attachment_blocked()
        body = row.get("body") or ""
        if not isinstance(body, str):
            raise odata.bad_request("The attachment body must be a Base64 string.")
        if len(body) > self.max_upload_bytes:  # the limit applies to the Base64 text
            raise odata.attachment_too_big()
        try:
            row["filesize"] = len(base64.b64decode(body, validate=True))
        except (binascii.Error, ValueError) as error:
            raise odata.bad_request("The attachment body is not valid Base64.") from error
        row.setdefault("objecttypecode", "email")
        row.setdefault("mimetype", "application/octet-stream")
        siblings = self.db.attachments(str(row["_objectid_value"]))
        row.setdefault("attachmentnumber", len(siblings) + 1)

    def _count_attachments(self, activityid: Any) -> None:
        email = self.db.get("emails", str(activityid)) if activityid else None
        if email is not None:
            email["attachmentcount"] = len(self.db.attachments(str(activityid)))
            self.db.replace("emails", str(activityid), email)

    # -- update / delete ------------------------------------------------------------------------
    def _update_reply(self, table: Table, key: str, request: Request) -> Created:
        body = _json_body(request.body)
        before = self.db.get(table.entity_set, key)
        if before is None:
            if request.headers.get("if-match", "").strip() == "*":
                raise odata.record_not_found(table.logical_name, key)
            return self._create_reply(table, request, key=key)  # PATCH is an upsert
        if table.entity_set == "activityparties" or not table.creatable:
            raise ODataError(405, "0x80060888", f"{table.logical_name} rows are read-only here.")
        with self.db.transaction():
            row = self.update(table, key, body)
        location = self._url(table, key)
        if request.prefers("return=representation"):
            payload = self._shape(table, row, None)
            payload["@odata.context"] = (
                f"{self.base_url}{API_PATH}$metadata#{table.entity_set}/$entity"
            )
            return Created(odata.json_reply(200, payload, [("OData-EntityId", location)]), location)
        return Created(
            Reply(204, [("OData-Version", "4.0"), ("OData-EntityId", location)]), location
        )

    def update(self, table: Table, key: str, body: Mapping[str, Any]) -> Row:
        """Validate and apply a PATCH to an existing row. Call inside a transaction."""
        before = self.db.get(table.entity_set, key)
        if before is None:
            raise odata.record_not_found(table.logical_name, key)
        changes, _ = self._fields(table, body, creating=False)
        if table.key in changes and str(changes[table.key]).lower() != key:
            raise odata.bad_request("The primary key of a row cannot be changed.")
        if (
            table.entity_set == "emails"
            and before.get("statecode") in (1, 2)
            and set(changes) - _STATE_FIELDS - {table.key}
        ):
            raise odata.read_only_record()
        row = {**before, **changes}
        row["modifiedon"] = _now()
        row["versionnumber"] = self._next_version()
        self._table_rules(table, row, before)
        self.db.replace(table.entity_set, key, row)
        return row

    def _delete(self, table: Table, key: str) -> Reply:
        if not table.creatable:
            raise ODataError(405, "0x80060888", f"{table.logical_name} rows are read-only here.")
        with self.db.transaction():
            if self.db.get(table.entity_set, key) is None:
                raise odata.record_not_found(table.logical_name, key)
            for child_set, foreign_key in table.collections.values():
                for child in self.db.select(
                    child_set, f"json_extract(data, '$.{foreign_key}') = ?", (key,)
                ):
                    self.db.delete(child_set, str(child[TABLES[child_set].key]))
            self.db.delete(table.entity_set, key)
        return Reply(204, [("OData-Version", "4.0")])

    # -- reads ----------------------------------------------------------------------------------
    def _retrieve(self, table: Table, key: str, options: QueryOptions) -> Reply:
        row = self.db.get(table.entity_set, key)
        if row is None:
            raise odata.record_not_found(table.logical_name, key)
        payload = self._shape(table, row, options)
        payload = {"@odata.context": self._context(table, options, entity=True), **payload}
        return odata.json_reply(200, payload)

    def _query(
        self,
        table: Table,
        options: QueryOptions,
        extra_where: str = "",
        extra_params: tuple[Any, ...] = (),
    ) -> Reply:
        _check_names(table, options)
        where, params = extra_where, list(extra_params)
        if options.filter:
            compiler = odata.FilterCompiler(table.knows, table.logical_name)
            condition = compiler.compile(options.filter)
            where = f"({where}) AND ({condition})" if where else condition
            params += compiler.params
        rows = self.db.select(table.entity_set, where, params)
        for name, descending in reversed(options.orderby):
            rows.sort(key=functools.partial(_row_sort_key, name), reverse=descending)
        total = len(rows)
        if options.top is not None:
            rows = rows[: options.top]
        payload: dict[str, Any] = {"@odata.context": self._context(table, options, entity=False)}
        if options.count:
            payload["@odata.count"] = total
        payload["value"] = [self._shape(table, row, options) for row in rows]
        return odata.json_reply(200, payload)

    def _related(self, table: Table, key: str, nav: str, request: Request) -> Reply:
        if self.db.get(table.entity_set, key) is None:
            raise odata.record_not_found(table.logical_name, key)
        child_set, foreign_key = table.collections[nav]
        return self._query(
            TABLES[child_set],
            odata.parse_query(request.query),
            f"json_extract(data, '$.{foreign_key}') = ?",
            (key,),
        )

    def _shape(self, table: Table, row: Row, options: QueryOptions | None) -> dict[str, Any]:
        """A row as the Web API shows it: etag first, $select applied, $expand added."""
        selected = options.select if options else None
        if selected is not None:
            for name in selected:
                if not table.knows(name):
                    raise odata.property_not_found(name, table.logical_name)
            names = [*selected, table.key]
            shown = {name: row.get(name) for name in dict.fromkeys(names)}
        else:
            shown = dict(row)
        payload: dict[str, Any] = {"@odata.etag": f'W/"{row.get("versionnumber", 0)}"', **shown}
        for nav, nested in (options.expand if options else {}).items():
            if nav not in table.collections:
                raise odata.property_not_found(nav, table.logical_name)
            child_set, foreign_key = table.collections[nav]
            child_table = TABLES[child_set]
            children = self.db.select(
                child_set, f"json_extract(data, '$.{foreign_key}') = ?", (row[table.key],)
            )
            child_options = QueryOptions(select=nested)
            payload[nav] = [self._shape(child_table, child, child_options) for child in children]
        return payload

    def _context(self, table: Table, options: QueryOptions, *, entity: bool) -> str:
        context = f"{self.base_url}{API_PATH}$metadata#{table.entity_set}"
        if options.select:
            context += "(" + ",".join(options.select) + ")"
        return context + ("/$entity" if entity else "")

    def _who_am_i(self, request: Request) -> Reply:
        user = request.headers.get("x-standin-user", "anonymous")
        return odata.json_reply(
            200,
            {
                "@odata.context": f"{self.base_url}{API_PATH}$metadata"
                "#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.base_url + "/bu")),
                "UserId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.base_url + "/user/" + user)),
                "OrganizationId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.base_url + "/org")),
            },
        )

    # -- helpers --------------------------------------------------------------------------------
    def _url(self, table: Table, key: str) -> str:
        return f"{self.base_url}{API_PATH}{table.entity_set}({key})"

    def _next_version(self) -> int:
        with self._version_lock:
            self._version += 1
            return self._version


def _email_state(row: Row, before: Row | None) -> None:
    """Default and check an email's statecode/statuscode pair."""
    state = row.get("statecode")
    if state is None:
        state = row["statecode"] = 0
    if state not in EMAIL_STATUS_BY_STATE:
        raise odata.bad_request(f"{state} is not a valid state code on email.")
    status = row.get("statuscode")
    state_changed = before is None or before.get("statecode") != state
    if status is None or (
        state_changed
        and status not in EMAIL_STATUS_BY_STATE[state]
        and before is not None
        and status == before.get("statuscode")
    ):
        status = row["statuscode"] = EMAIL_DEFAULT_STATUS[state]
    if status not in EMAIL_STATUS_BY_STATE[state]:
        raise ODataError(
            400,
            "0x80040203",
            f"{status} is not a valid status code for state code EmailState."
            f"{['Open', 'Completed', 'Canceled'][state]} on email.",
        )


def _check_names(table: Table, options: QueryOptions) -> None:
    """Reject unknown $select/$orderby names even when no row comes back."""
    for name in [*(options.select or []), *(name for name, _ in options.orderby)]:
        if not table.knows(name):
            raise odata.property_not_found(name, table.logical_name)


def _json_body(body: bytes) -> Mapping[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise odata.bad_request(f"The request body is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise odata.bad_request("The request body must be a JSON object.")
    return value


def _row_sort_key(name: str, row: Row) -> tuple[int, Any]:
    return _sort_key(row.get(name))


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, str):
        return (1, value.lower())
    return (1, value)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
