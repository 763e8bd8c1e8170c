"""OData pieces of the stand-in: replies, the documented error bodies, and query options.

Error codes and messages are the ones Microsoft documents (each constructor names its page):

- "Troubleshoot Dataverse Web API client errors" (learn.microsoft.com, web-api-client-errors):
  ``0x8006088a`` resource not found, ``Could not find a property named ...``,
  ``Invalid property ...``,
  ``0x80048d19`` undeclared navigation property in ``@odata.bind``.
- "Compose HTTP requests and handle errors": the ``{"error":{"code","message"}}`` body; 412 for
  ``DuplicateRecord``; 429 for service protection limits.
- "Files and images overview" / attachment files: ``0x80043e09`` AttachmentBlocked,
  ``0x80044a02`` attachment file size is too big.
- "Execute batch operations using the Web API": the Content-ID reference error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

JSON_TYPE = "application/json; odata.metadata=minimal"


@dataclass
class Reply:
    """One HTTP answer: a status, headers in order, and a body."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def reason(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "Unknown"

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def json_reply(status: int, payload: Any, extra: Sequence[tuple[str, str]] = ()) -> Reply:
    """A JSON reply with the OData headers Dataverse sends."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = [("Content-Type", JSON_TYPE), ("OData-Version", "4.0"), *extra]
    return Reply(status, headers, body)


class ODataError(Exception):
    """An error the Web API answers with ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def payload(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}

    def reply(self, extra: Sequence[tuple[str, str]] = ()) -> Reply:
        return json_reply(self.status, self.payload(), extra)


# -- documented errors ----------------------------------------------------------------------------
def resource_not_found(segment: str) -> ODataError:
    """404 for an unknown entity set (web-api-client-errors: "Resource not found ...")."""
    return ODataError(404, "0x8006088a", f"Resource not found for the segment '{segment}'.")


def property_not_found(name: str, logical_name: str) -> ODataError:
    """400 for an unknown property in a query (web-api-client-errors, code as documented)."""
    return ODataError(
        400,
        "0x0",
        f"Could not find a property named '{name}' on type "
        f"'Microsoft.Dynamics.CRM.{logical_name}'.",
    )


def invalid_property(name: str, logical_name: str) -> ODataError:
    """400 for an unknown attribute in a create/update payload (web-api-client-errors)."""
    return ODataError(
        400,
        "0x0",
        "An error occurred while validating input parameters: Microsoft.Crm.CrmException: "
        f"Invalid property '{name}' was found in entity 'Microsoft.Dynamics.CRM.{logical_name}'. "
        "---> Microsoft.OData.ODataException: Does not support untyped value in non-open type.",
    )


def undeclared_navigation(name: str, entity_set: str) -> ODataError:
    """400 for an unknown ``<nav>@odata.bind`` (web-api-client-errors, undeclared property)."""
    return ODataError(
        400,
        "0x80048d19",
        f"Error identified in Payload provided by the user for Entity :'{entity_set}'  ---->  "
        f"InnerException : Microsoft.OData.ODataException: An undeclared property '{name}' "
        "which only has property annotations in the payload but no property value was found "
        "in the payload. In OData, only declared navigation properties and declared named "
        "streams can be represented as properties without values.",
    )


def record_not_found(logical_name: str, key: str) -> ODataError:
    """404 for a missing row (ObjectDoesNotExist, 0x80040217)."""
    return ODataError(404, "0x80040217", f"{logical_name} With Id = {key} Does Not Exist")


def duplicate_record() -> ODataError:
    """412 for a create whose key exists ("Compose HTTP requests": 412 is DuplicateRecord)."""
    return ODataError(412, "0x80040237", "A record with matching key values already exists.")


def read_only_record() -> ODataError:
    """400 for an update of a completed or canceled activity (email.statecode: read-only)."""
    return ODataError(400, "0x8004022e", "The object cannot be updated because it is read-only.")


def attachment_too_big() -> ODataError:
    """400 unManagedidsattachmentinvalidfilesize (files and images: "File size limits")."""
    return ODataError(400, "0x80044a02", "Attachment file size is too big.")


def attachment_blocked() -> ODataError:
    """400 AttachmentBlocked (files and images: "Block certain types of files")."""
    return ODataError(
        400,
        "0x80043e09",
        "The attachment is either not a valid type or is too large. "
        "It cannot be uploaded or downloaded.",
    )


def party_mask_not_found(mask: object) -> ODataError:
    """400 ActivityPartyParticipationTypeMaskNotFound (web service error codes)."""
    return ODataError(400, "0x80094006", f"The Activity Party type Mask '{mask}' not found.")


def bad_request(message: str) -> ODataError:
    """400 BadRequest (0x8005F100) with a specific message."""
    return ODataError(400, "0x8005F100", message)


# -- $filter --------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<string>'(?:[^']|'')*')"
    r"|(?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w-])"
    r"|(?P<number>-?\d+(?:\.\d+)?)(?![\w.])"
    r"|(?P<name>[A-Za-z_][\w.]*)"
    r"|(?P<punct>[(),])"
    r")"
)
_COMPARE = {"eq": "=", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_FUNCTIONS = {"contains": "%{}%", "startswith": "{}%", "endswith": "%{}"}


@dataclass
class _Token:
    kind: str
    text: str


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise bad_request(f"Syntax error at position {position} in '{text}'.")
        kind = match.lastgroup or "punct"
        tokens.append(_Token(kind, match.group(kind)))
        position = match.end()
    return tokens


class FilterCompiler:
    """Compile the ``$filter`` subset pstlib uses into a SQL condition on ``data`` JSON.

    Supported: ``eq ne gt ge lt le`` between a property and a literal (string with ``''`` escape,
    number, GUID, true/false/null), ``and``/``or``/``not``, parentheses, and ``contains``/
    ``startswith``/``endswith``. String comparison ignores case, as Dataverse's collation does.
    """

    def __init__(self, known: Callable[[str], bool], logical_name: str) -> None:
        self._known = known
        self._logical_name = logical_name
        self._tokens: list[_Token] = []
        self._index = 0
        self.params: list[Any] = []

    def compile(self, text: str) -> str:
        self._tokens = _tokenize(text)
        self._index = 0
        self.params = []
        sql = self._or()
        if self._index != len(self._tokens):
            raise bad_request(f"Syntax error at '{self._tokens[self._index].text}' in '{text}'.")
        return sql

    def _peek(self) -> _Token | None:
        return self._tokens[self._index] if self._index < len(self._tokens) else None

    def _take(self) -> _Token:
        token = self._peek()
        if token is None:
            raise bad_request("Unexpected end of $filter expression.")
        self._index += 1
        return token

    def _expect(self, text: str) -> None:
        token = self._take()
        if token.text != text:
            raise bad_request(f"Expected '{text}' but found '{token.text}' in $filter.")

    def _or(self) -> str:
        parts = [self._and()]
        while (token := self._peek()) is not None and token.text == "or":
            self._take()
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def _and(self) -> str:
        parts = [self._unary()]
        while (token := self._peek()) is not None and token.text == "and":
            self._take()
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def _unary(self) -> str:
        token = self._peek()
        if token is not None and token.text == "not":
            self._take()
            return f"(NOT {self._unary()})"
        if token is not None and token.text == "(":
            self._take()
            inner = self._or()
            self._expect(")")
            return inner
        return self._comparison()

    def _column(self, name: str) -> str:
        if not self._known(name):
            raise property_not_found(name, self._logical_name)
        return f"json_extract(data, '$.\"{name}\"')"

    def _comparison(self) -> str:
        first = self._take()
        if first.kind != "name":
            raise bad_request(f"Expected a property name but found '{first.text}' in $filter.")
        if first.text in _FUNCTIONS:
            self._expect("(")
            column = self._column(self._take().text)
            self._expect(",")
            literal = self._take()
            if literal.kind != "string":
                raise bad_request(f"{first.text} needs a string literal.")
            self._expect(")")
            value = literal.text[1:-1].replace("''", "'")
            escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            self.params.append(_FUNCTIONS[first.text].format(escaped))
            return f"{column} LIKE ? ESCAPE '\\'"
        column = self._column(first.text)
        operator = self._take().text
        if operator not in _COMPARE:
            raise bad_request(f"Unsupported operator '{operator}' in $filter.")
        literal = self._take()
        sql_op = _COMPARE[operator]
        if literal.kind == "name" and literal.text == "null":
            return f"{column} IS {'NOT ' if operator == 'ne' else ''}NULL"
        if literal.kind == "name" and literal.text in ("true", "false"):
            self.params.append(1 if literal.text == "true" else 0)
            return f"{column} {sql_op} ?"
        if literal.kind == "string":
            self.params.append(literal.text[1:-1].replace("''", "'"))
            return f"{column} {sql_op} ? COLLATE NOCASE"
        if literal.kind == "guid":
            self.params.append(literal.text.lower())
            return f"lower({column}) {sql_op} ?"
        if literal.kind == "number":
            number = float(literal.text) if "." in literal.text else int(literal.text)
            self.params.append(number)
            return f"{column} {sql_op} ?"
        raise bad_request(f"Unsupported literal '{literal.text}' in $filter.")


# -- query options --------------------------------------------------------------------------------
@dataclass
class QueryOptions:
    """The system query options of one GET."""

    select: list[str] | None = None
    filter: str | None = None
    top: int | None = None
    orderby: list[tuple[str, bool]] = field(default_factory=list)  # (property, descending)
    expand: dict[str, list[str] | None] = field(default_factory=dict)  # nav -> nested $select
    count: bool = False


def parse_query(query_string: str) -> QueryOptions:
    """Parse ``$select``, ``$filter``, ``$top``, ``$orderby``, ``$expand`` and ``$count``."""
    options = QueryOptions()
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        if key == "$select":
            options.select = [name.strip() for name in value.split(",") if name.strip()]
        elif key == "$filter":
            options.filter = value
        elif key == "$top":
            if not value.isdigit():
                raise bad_request(f"Invalid value '{value}' for $top query option found.")
            options.top = int(value)
        elif key == "$orderby":
            for item in value.split(","):
                name, _, direction = item.strip().partition(" ")
                options.orderby.append((name, direction.strip().lower() == "desc"))
        elif key == "$expand":
            options.expand = _parse_expand(value)
        elif key == "$count":
            options.count = value.lower() == "true"
        elif key.startswith("$"):
            raise bad_request(f"The query parameter {key} is not supported by the stand-in.")
    return options


def _parse_expand(value: str) -> dict[str, list[str] | None]:
    expand: dict[str, list[str] | None] = {}
    for match in re.finditer(r"(\w+)(?:\(([^)]*)\))?", value):
        nested: list[str] | None = None
        for option in (match.group(2) or "").split(";"):
            key, _, option_value = option.partition("=")
            if key.strip() == "$select":
                nested = [name.strip() for name in option_value.split(",") if name.strip()]
        expand[match.group(1)] = nested
    return expand
