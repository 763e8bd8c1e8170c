"""``$batch``: the multipart/mixed format of "Execute batch operations using the Web API".

- The body is ``multipart/mixed; boundary=batch_…``; each part is ``Content-Type: application/http``
  with ``Content-Transfer-Encoding: binary`` and holds one HTTP request, or is a change set
  (``multipart/mixed; boundary=changeset_…``) whose requests succeed or fail together.
- Inside a change set a part may carry ``Content-ID: n``; ``$n`` then stands for the URI of the row
  it created, in a later request's URL or in an ``@odata.bind`` value. An undeclared reference is
  a 400 "Content-ID Reference: '$n' does not exist in the batch context."
- GET is not allowed in a change set. A batch holds at most 1000 requests and no nested batch.
- Without ``Prefer: odata.continue-on-error`` processing stops at the first failed request and the
  batch answers with that request's status; with it the batch answers 200 and every response.
- The answer is ``multipart/mixed; boundary=batchresponse_…`` with ``changesetresponse_…`` parts
  for change sets, in the order of the requests, Content-IDs echoed.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pstlib.standin import odata
from pstlib.standin.db import StandinDB
from pstlib.standin.entities import API_PATH, Request, Service
from pstlib.standin.odata import ODataError, Reply

_BOUNDARY = re.compile(r'boundary\s*=\s*"?([^";]+)"?', re.IGNORECASE)
_REFERENCE = re.compile(r"^\$(\w+)(.*)$")


@dataclass
class Part:
    """One request inside a batch."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    """Requests that succeed or fail together."""

    parts: list[Part] = field(default_factory=list)


@dataclass
class ChangeSetReply:
    """The answers of a change set that succeeded, with their Content-IDs."""

    replies: list[tuple[str | None, Reply]]


Item = Part | ChangeSet
Answer = Reply | ChangeSetReply


# -- parsing --------------------------------------------------------------------------------------
def boundary_of(content_type: str) -> str | None:
    if not content_type.lower().startswith("multipart/mixed"):
        return None
    match = _BOUNDARY.search(content_type)
    return match.group(1).strip() if match else None


def parse_batch(body: bytes, content_type: str, *, require_crlf: bool = True) -> list[Item]:
    """Split a $batch body into requests and change sets."""
    boundary = boundary_of(content_type)
    if boundary is None:
        raise odata.bad_request(
            "The Content-Type of a $batch request must be multipart/mixed with a boundary."
        )
    if require_crlf and b"\n" in body.replace(b"\r\n", b""):
        raise ODataError(
            400,
            "0x80048d19",
            "Error identified in Payload provided by the user for Entity :'$batch'  ---->  "
            "InnerException : System.ArgumentException: Stream was not readable.",
        )
    items: list[Item] = []
    for headers, content in _split(body, boundary):
        inner = boundary_of(headers.get("content-type", ""))
        if inner is not None:
            change_set = ChangeSet()
            for part_headers, part_content in _split(content, inner):
                change_set.parts.append(_request_of(part_headers, part_content))
            items.append(change_set)
        else:
            items.append(_request_of(headers, content))
    return items


def _split(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    parts: list[tuple[dict[str, str], bytes]] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk.lstrip(b"\n")
        if chunk.endswith(b"\r\n"):
            chunk = chunk[:-2]
        headers, content = _headers_and_body(chunk)
        parts.append((headers, content))
    return parts


def _headers_and_body(chunk: bytes) -> tuple[dict[str, str], bytes]:
    normal = chunk.replace(b"\r\n", b"\n")
    head, _, content = normal.partition(b"\n\n")
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").split("\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers, content.replace(b"\n", b"\r\n")


def _request_of(headers: Mapping[str, str], content: bytes) -> Part:
    if not headers.get("content-type", "").lower().startswith("application/http"):
        raise odata.bad_request("Each part of a $batch must have Content-Type: application/http.")
    request_line, _, rest = content.partition(b"\r\n")
    words = request_line.decode("utf-8", "replace").split()
    if len(words) < 2:
        raise odata.bad_request(f"Invalid request line in $batch: '{request_line!r}'.")
    inner_headers, body = _headers_and_body(rest)
    return Part(words[0].upper(), words[1], inner_headers, body.strip(), headers.get("content-id"))


def count_requests(items: list[Item]) -> int:
    return sum(len(item.parts) if isinstance(item, ChangeSet) else 1 for item in items)


# -- running --------------------------------------------------------------------------------------
class BatchRunner:
    """Run parsed batch items against a :class:`Service`."""

    def __init__(self, service: Service, db: StandinDB) -> None:
        self.service = service
        self.db = db

    def run(
        self, items: list[Item], *, continue_on_error: bool, outer: Mapping[str, str]
    ) -> tuple[int, list[Answer]]:
        """The answers in order, and the batch status: 200, or the first failure's (no continue)."""
        answers: list[Answer] = []
        for item in items:
            answer = (
                self._change_set(item, outer)
                if isinstance(item, ChangeSet)
                else (self._single(item, outer, {}))
            )
            answers.append(answer)
            if isinstance(answer, Reply) and not answer.ok and not continue_on_error:
                return answer.status, answers
        return 200, answers

    def _single(self, part: Part, outer: Mapping[str, str], references: dict[str, str]) -> Reply:
        try:
            request = self._request(part, outer, references)
        except ODataError as error:
            return error.reply()
        created = self.service.handle(request)
        if part.content_id and created.location:
            references[part.content_id] = created.location
        return created.reply

    def _change_set(self, change_set: ChangeSet, outer: Mapping[str, str]) -> Answer:
        references: dict[str, str] = {}
        replies: list[tuple[str | None, Reply]] = []
        try:
            with self.db.transaction():
                for part in change_set.parts:
                    if part.method == "GET":
                        reply = odata.bad_request(
                            "GET requests are not allowed within a change set."
                        ).reply()
                    else:
                        reply = self._single(part, outer, references)
                    if not reply.ok:
                        raise _ChangeSetFailed(part.content_id, reply)
                    replies.append((part.content_id, reply))
        except _ChangeSetFailed as failure:
            if failure.content_id:
                failure.reply.headers.append(("Content-ID", failure.content_id))
            return failure.reply
        return ChangeSetReply(replies)

    def _request(self, part: Part, outer: Mapping[str, str], references: dict[str, str]) -> Request:
        url = part.url
        reference = _REFERENCE.match(url)
        if reference:
            url = _resolve(reference.group(1), references) + reference.group(2)
        marker = url.find("/api/data/v9.")
        if marker >= 0:
            url = url[marker:].split("/", 4)[-1]
        path, _, query = url.partition("?")
        if path.strip("/") == "$batch":
            raise odata.bad_request("Batch requests can't contain other batch requests.")
        body = part.body
        if body and b'"$' in body:
            body = _substitute(body, references)
        headers = {
            **{k: v for k, v in outer.items() if k in {"authorization", "x-standin-user"}},
            **part.headers,
        }
        return Request(part.method, path, query, headers, body)


class _ChangeSetFailed(Exception):
    def __init__(self, content_id: str | None, reply: Reply) -> None:
        super().__init__(reply.status)
        self.content_id = content_id
        self.reply = reply


def _resolve(name: str, references: Mapping[str, str]) -> str:
    if name not in references:
        raise odata.bad_request(
            f"Content-ID Reference: '${name}' does not exist in the batch context."
        )
    return references[name]


def _substitute(body: bytes, references: Mapping[str, str]) -> bytes:
    """Replace ``"$n"`` in ``@odata.bind``/``@odata.id`` values by the row's URI."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if (key.endswith("@odata.bind") or key == "@odata.id") and isinstance(item, str):
                    match = _REFERENCE.match(item)
                    if match:
                        item = _resolve(match.group(1), references) + match.group(2)
                out[key] = walk(item)
            return out
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    return json.dumps(walk(payload)).encode()


# -- rendering ------------------------------------------------------------------------------------
def render(answers: list[Answer]) -> tuple[str, bytes]:
    """The multipart/mixed body of a batch response and its Content-Type."""
    boundary = f"batchresponse_{uuid.uuid4()}"
    out = bytearray()
    for answer in answers:
        out += f"--{boundary}\r\n".encode()
        if isinstance(answer, ChangeSetReply):
            inner = f"changesetresponse_{uuid.uuid4()}"
            out += f"Content-Type: multipart/mixed; boundary={inner}\r\n\r\n".encode()
            for content_id, reply in answer.replies:
                out += f"--{inner}\r\n".encode()
                out += _http_part(reply, content_id)
            out += f"--{inner}--\r\n".encode()
        else:
            out += _http_part(answer, answer.header("Content-ID"))
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/mixed; boundary={boundary}", bytes(out)


def _http_part(reply: Reply, content_id: str | None) -> bytes:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"HTTP/1.1 {reply.status} {reply.reason}"]
    lines += [f"{name}: {value}" for name, value in reply.headers if name != "Content-ID"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head + reply.body + b"\r\n"


def api_path(path: str) -> str | None:
    """The part of a request path below ``/api/data/v9.2/``, or None."""
    return path[len(API_PATH) :] if path.startswith(API_PATH) else None
