"""Build ``$batch`` request bodies; read ``$batch`` responses back to the operations that sent them.

Pure functions, no I/O. The format is the one Microsoft documents in "Execute batch operations using
the Web API" (learn.microsoft.com, Dataverse developer guide), itself the OData v4 "11.7 Batch
Requests" format:

* ``POST [Organization Uri]/api/data/v9.2/$batch`` with
  ``Content-Type: multipart/mixed; boundary="batch_<unique identifier>"``; up to 1000 operations,
  no nested batches (:data:`MAX_BATCH_OPERATIONS`).
* Each item is preceded by ``--batch_<id>`` and carries ``Content-Type: application/http`` and
  ``Content-Transfer-Encoding: binary``, then the request line, its headers, a blank line, the body.
  The batch ends with ``--batch_<id>--``.
* A change set (``Content-Type: multipart/mixed; boundary="changeset_<id>"``) groups operations that
  succeed or fail as one transaction; ``GET`` is not allowed in it. Its operations may carry a
  ``Content-ID``; ``$<Content-ID>`` then stands for the URI of the entity that operation created,
  usable later in the same change set (in a URL or in an ``@odata.bind`` value). Referencing a
  Content-ID before it is declared is a 400.
* The response is ``multipart/mixed`` with ``--batchresponse_<id>`` parts, in request order; a
  change set answers with a nested ``changesetresponse_<id>`` multipart whose parts echo the
  Content-IDs, or with one error response when the transaction failed. Created entities are named
  by the ``OData-EntityId`` header; errors are ``{"error": {"code": ..., "message": ...}}`` bodies.
* ``Prefer: odata.continue-on-error`` (sent by :mod:`pstlib.dataverse.client`) makes the batch go on
  after a failed operation and answer ``200 OK`` with each failure in the body; without it the batch
  stops at the first error, so later operations get no response at all (``None`` here).

Lines are written with CRLF (MIME); both CRLF and LF are read.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pstlib.dataverse.throttle import parse_odata_error

MAX_BATCH_OPERATIONS = 1000  # "Batch requests can contain up to 1000 individual requests"
CRLF = "\r\n"

_ENTITY_ID = re.compile(
    r"\(([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\)\s*$"
)


@dataclass(frozen=True, slots=True)
class Operation:
    """One HTTP request inside a batch.

    ``url`` is what goes on the request line: an absolute URL (``https://org/api/data/v9.2/emails``),
    an absolute path, or a ``$<Content-ID>`` reference. ``key`` is the caller's own tag, carried
    through to the matching response. ``content_id`` is sent only inside change sets.
    """

    method: str
    url: str
    body: Mapping[str, Any] | None = None
    key: str = ""
    content_id: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """Operations that succeed or fail together (one transaction). No ``GET`` inside."""

    operations: tuple[Operation, ...]

    def __post_init__(self) -> None:
        if not self.operations:
            raise ValueError("a change set needs at least one operation")
        if any(op.method.upper() == "GET" for op in self.operations):
            raise ValueError("GET requests are not allowed within change sets")


BatchItem = Operation | ChangeSet


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A ready ``$batch`` body and the ``Content-Type`` header that names its boundary."""

    body: bytes
    content_type: str
    boundary: str
    operation_count: int


@dataclass(frozen=True, slots=True)
class OperationResponse:
    """One response read from a batch response: status, headers (lower-case names), body text."""

    status: int
    reason: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    content_id: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def entity_url(self) -> str | None:
        """The ``OData-EntityId`` (or ``Location``) of a created or updated entity."""
        return self.headers.get("odata-entityid") or self.headers.get("location")

    @property
    def entity_id(self) -> str | None:
        """The GUID in parentheses at the end of :attr:`entity_url`, lower-cased."""
        url = self.entity_url
        match = _ENTITY_ID.search(url) if url else None
        return match.group(1).lower() if match else None

    def json(self) -> Any:
        """The body parsed as JSON, or ``None`` when there is no (JSON) body."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def error_code(self) -> str:
        return "" if self.ok else parse_odata_error(self.body)[0]

    @property
    def error_message(self) -> str:
        return "" if self.ok else parse_odata_error(self.body)[1]


ResponsePart = OperationResponse | list[OperationResponse]


def count_operations(items: Iterable[BatchItem]) -> int:
    """Operations in ``items``, change set operations counted one by one, as the 1000 limit is."""
    return sum(len(i.operations) if isinstance(i, ChangeSet) else 1 for i in items)


def new_boundary(kind: str) -> str:
    """``batch_<uuid>`` or ``changeset_<uuid>``: unique, as the documentation asks."""
    return f"{kind}_{uuid.uuid4()}"


def encode_batch(
    items: Sequence[BatchItem],
    *,
    boundary: str | None = None,
    changeset_boundaries: Sequence[str] | None = None,
) -> EncodedBatch:
    """Write the ``$batch`` body for ``items`` (operations and change sets, in order).

    Operations in change sets without a ``content_id`` are numbered ``1, 2, ...`` in batch order,
    skipping numbers used explicitly. ``boundary``/``changeset_boundaries`` fix the identifiers
    (tests); by default they are fresh UUIDs.
    """
    total = count_operations(items)
    if total == 0:
        raise ValueError("a batch needs at least one operation")
    if total > MAX_BATCH_OPERATIONS:
        raise ValueError(f"{total} operations: a batch holds at most {MAX_BATCH_OPERATIONS}")
    boundary = boundary or new_boundary("batch")
    cs_names = iter(changeset_boundaries or ())
    explicit = {
        op.content_id
        for item in items
        if isinstance(item, ChangeSet)
        for op in item.operations
        if op.content_id
    }
    next_id = 0

    def auto_id() -> str:
        nonlocal next_id
        while True:
            next_id += 1
            if str(next_id) not in explicit:
                return str(next_id)

    out: list[str] = []
    for item in items:
        out.append(f"--{boundary}")
        if isinstance(item, Operation):
            out.append("Content-Type: application/http")
            out.append("Content-Transfer-Encoding: binary")
            out.append("")
            out.append(_encode_request(item))
            continue
        cs = next(cs_names, None) or new_boundary("changeset")
        out.append(f'Content-Type: multipart/mixed; boundary="{cs}"')
        out.append("")
        for op in item.operations:
            out.append(f"--{cs}")
            out.append("Content-Type: application/http")
            out.append("Content-Transfer-Encoding: binary")
            out.append(f"Content-ID: {op.content_id or auto_id()}")
            out.append("")
            out.append(_encode_request(op))
        out.append(f"--{cs}--")
        out.append("")
    out.append(f"--{boundary}--")
    out.append("")
    body = CRLF.join(out).encode("utf-8")
    return EncodedBatch(body, f'multipart/mixed; boundary="{boundary}"', boundary, total)


def _encode_request(op: Operation) -> str:
    """Request line, headers, blank line, body (the body may be empty)."""
    method = op.method.upper()
    lines = [f"{method} {op.url} HTTP/1.1"]
    names = {name.lower() for name, _ in op.headers}
    if op.body is not None and "content-type" not in names:
        kind = "application/json; type=entry" if method == "POST" else "application/json"
        lines.append(f"Content-Type: {kind}")
    lines.extend(f"{name}: {value}" for name, value in op.headers)
    lines.append("")
    lines.append("" if op.body is None else json.dumps(op.body, ensure_ascii=False))
    return CRLF.join(lines)


# --- reading responses --------------------------------------------------------------------------

_BOUNDARY_PARAM = re.compile(r'boundary\s*=\s*"?([^";\s]+)"?', re.IGNORECASE)


def boundary_of(content_type: str | None, body: bytes | None = None) -> str | None:
    """The boundary a ``multipart/mixed`` Content-Type names, else the body's first ``--`` line."""
    if content_type:
        match = _BOUNDARY_PARAM.search(content_type)
        if match:
            return match.group(1)
    if body:
        for raw in body.splitlines():
            line = raw.strip()
            if line.startswith(b"--"):
                return line[2:].decode("ascii", "replace").removesuffix("--")
            if line:
                break
    return None


def parse_batch_response(body: bytes | str, content_type: str | None = None) -> list[ResponsePart]:
    """Read a ``$batch`` response body into its top-level parts, in order.

    A part is an :class:`OperationResponse`, or a list of them for a change set that answered with a
    ``changesetresponse`` multipart.
    """
    data = body.encode("utf-8") if isinstance(body, str) else body
    boundary = boundary_of(content_type, data)
    if boundary is None:
        raise ValueError("batch response: no multipart boundary found")
    parts: list[ResponsePart] = []
    for part in _split_multipart(data, boundary):
        headers, payload = _split_head(part)
        ctype = headers.get("content-type", "")
        if ctype.lower().startswith("multipart/mixed"):
            inner = boundary_of(ctype, payload)
            if inner is None:
                raise ValueError("batch response: change set part without a boundary")
            parts.append([_read_http_part(p) for p in _split_multipart(payload, inner)])
        else:
            parts.append(_parse_http_response(payload, headers.get("content-id")))
    return parts


def match_responses(
    items: Sequence[BatchItem], parts: Sequence[ResponsePart]
) -> list[tuple[Operation, OperationResponse | None]]:
    """Pair every operation of ``items`` with its response (``None`` when it got none).

    Responses follow request order. Inside a change set responses are matched by Content-ID where
    both sides have one, else by position; a change set answered by a single response (its
    transaction failed) gives that response to each of its operations.
    """
    pairs: list[tuple[Operation, OperationResponse | None]] = []
    for index, item in enumerate(items):
        part = parts[index] if index < len(parts) else None
        if isinstance(item, Operation):
            single = part[0] if isinstance(part, list) and part else part
            pairs.append((item, single if isinstance(single, OperationResponse) else None))
            continue
        if isinstance(part, OperationResponse) or part is None:
            pairs.extend((op, part) for op in item.operations)
            continue
        by_id = {r.content_id: r for r in part if r.content_id}
        for position, op in enumerate(item.operations):
            found = by_id.get(op.content_id) if op.content_id else None
            if found is None and position < len(part):
                found = part[position]
            pairs.append((op, found))
    return pairs


def _split_multipart(data: bytes, boundary: str) -> list[bytes]:
    """The bodies between ``--boundary`` delimiter lines, up to ``--boundary--``.

    The line break before a delimiter belongs to the delimiter (RFC 2046).
    """
    delimiter = re.compile(
        rb"(?:^|\r?\n)--" + re.escape(boundary.encode("ascii")) + rb"(--)?[ \t]*(?=\r?\n|$)"
    )
    pieces: list[bytes] = []
    start: int | None = None
    for match in delimiter.finditer(data):
        if start is not None:
            pieces.append(data[start : match.start()])
        if match.group(1):
            break
        end = match.end()
        if data.startswith(b"\r\n", end):
            end += 2
        elif data.startswith(b"\n", end):
            end += 1
        start = end
    return pieces


def _split_head(part: bytes) -> tuple[dict[str, str], bytes]:
    """Headers (lower-case names) and what follows the first blank line."""
    match = re.search(rb"\r?\n\r?\n", part)
    if part.startswith((b"\r\n", b"\n")):
        head, rest = b"", part.lstrip(b"\r\n")
    elif match:
        head, rest = part[: match.start()], part[match.end() :]
    else:
        head, rest = part, b""
    headers: dict[str, str] = {}
    for raw in head.splitlines():
        name, sep, value = raw.decode("utf-8", "replace").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _read_http_part(part: bytes) -> OperationResponse:
    headers, payload = _split_head(part)
    return _parse_http_response(payload, headers.get("content-id"))


def _parse_http_response(payload: bytes, content_id: str | None) -> OperationResponse:
    """``HTTP/1.1 204 No Content`` + headers + blank line + body, as found inside a part."""
    text = payload.lstrip(b"\r\n")
    line_end = re.search(rb"\r?\n", text)
    status_line = (text[: line_end.start()] if line_end else text).decode("utf-8", "replace")
    rest = text[line_end.end() :] if line_end else b""
    match = re.match(r"HTTP/\d(?:\.\d)?\s+(\d{3})\s*(.*)", status_line.strip())
    if not match:
        raise ValueError(f"batch response: not an HTTP status line: {status_line[:80]!r}")
    if rest.startswith((b"\r\n", b"\n")):  # no headers at all
        headers: dict[str, str] = {}
        body = rest
    else:
        headers, body = _split_head(rest)
    return OperationResponse(
        status=int(match.group(1)),
        reason=match.group(2).strip(),
        headers=headers,
        body=body.decode("utf-8", "replace").strip(),
        content_id=content_id,
    )
