"""``$batch`` encode/decode against the examples of "Execute batch operations using the Web API".

The request and response texts below are quoted from that page (learn.microsoft.com, Dataverse
developer guide). Requests are compared part by part after reading both sides with the standard
library's MIME parser, so the comparison does not depend on line endings or JSON whitespace.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from typing import Any

import pytest

from pstlib.dataverse.batch import (
    MAX_BATCH_OPERATIONS,
    ChangeSet,
    Operation,
    OperationResponse,
    boundary_of,
    encode_batch,
    match_responses,
    parse_batch_response,
)
from tests.msdocs import DOC_BATCH_REQUEST

ACCOUNT = "accounts(00000000-0000-0000-0000-000000000001)"

DOC_BATCH_RESPONSE = """--batchresponse_01346794-f2e2-4d45-8cc2-f97e09fe8916
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: [Organization Uri]/api/data/v9.2/tasks(d31ba648-c592-ed11-aad1-000d3a993550)
OData-EntityId: [Organization Uri]/api/data/v9.2/tasks(d31ba648-c592-ed11-aad1-000d3a993550)


--batchresponse_01346794-f2e2-4d45-8cc2-f97e09fe8916
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: [Organization Uri]/api/data/v9.2/tasks(d41ba648-c592-ed11-aad1-000d3a993550)
OData-EntityId: [Organization Uri]/api/data/v9.2/tasks(d41ba648-c592-ed11-aad1-000d3a993550)


--batchresponse_01346794-f2e2-4d45-8cc2-f97e09fe8916
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: [Organization Uri]/api/data/v9.2/tasks(d51ba648-c592-ed11-aad1-000d3a993550)
OData-EntityId: [Organization Uri]/api/data/v9.2/tasks(d51ba648-c592-ed11-aad1-000d3a993550)


--batchresponse_01346794-f2e2-4d45-8cc2-f97e09fe8916
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 200 OK
Content-Type: application/json; odata.metadata=minimal; odata.streaming=true
OData-Version: 4.0

{
  "@odata.context": "[Organization Uri]/api/data/v9.2/$metadata#tasks(subject)",
  "value": [
    {
      "@odata.etag": "W/\\"77180907\\"",
      "subject": "Task 1 in batch",
      "activityid": "d31ba648-c592-ed11-aad1-000d3a993550"
    },
    {
      "@odata.etag": "W/\\"77180910\\"",
      "subject": "Task 2 in batch",
      "activityid": "d41ba648-c592-ed11-aad1-000d3a993550"
    },
    {
      "@odata.etag": "W/\\"77180913\\"",
      "subject": "Task 3 in batch",
      "activityid": "d51ba648-c592-ed11-aad1-000d3a993550"
    }
  ]
}
--batchresponse_01346794-f2e2-4d45-8cc2-f97e09fe8916--
"""

# "The following example shows the use of a change set" (request body and response).
DOC_CHANGESET_REQUEST = """--batch_22975cad-7f57-410d-be15-6363209367ea
Content-Type: multipart/mixed; boundary="changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a"

--changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

POST /api/data/v9.2/tasks HTTP/1.1
Content-Type: application/json; type=entry

{
  "subject": "Task 1 in batch",
  "regardingobjectid_account_task@odata.bind": "accounts(00000000-0000-0000-0000-000000000001)"
}
--changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 2

POST /api/data/v9.2/tasks HTTP/1.1
Content-Type: application/json; type=entry

{
  "subject": "Task 2 in batch",
  "regardingobjectid_account_task@odata.bind": "accounts(00000000-0000-0000-0000-000000000001)"
}
--changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 3

POST /api/data/v9.2/tasks HTTP/1.1
Content-Type: application/json; type=entry

{
  "subject": "Task 3 in batch",
  "regardingobjectid_account_task@odata.bind": "accounts(00000000-0000-0000-0000-000000000001)"
}
--changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a--

--batch_22975cad-7f57-410d-be15-6363209367ea
Content-Type: application/http
Content-Transfer-Encoding: binary

GET /api/data/v9.2/accounts(00000000-0000-0000-0000-000000000001)/Account_Tasks?$select=subject HTTP/1.1


--batch_22975cad-7f57-410d-be15-6363209367ea--
"""

DOC_CHANGESET_RESPONSE = """--batchresponse_f27ef42d-51b0-4685-bac9-f468f844de2f
Content-Type: multipart/mixed; boundary=changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15

--changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: [Organization Uri]/api/data/v9.2/tasks(e73ffc82-e292-ed11-aad1-000d3a9933c9)
OData-EntityId: [Organization Uri]/api/data/v9.2/tasks(e73ffc82-e292-ed11-aad1-000d3a9933c9)


--changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 2

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: [Organization Uri]/api/data/v9.2/tasks(e83ffc82-e292-ed11-aad1-000d3a9933c9)
OData-EntityId: [Organization Uri]/api/data/v9.2/tasks(e83ffc82-e292-ed11-aad1-000d3a9933c9)


--changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 3

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: [Organization Uri]/api/data/v9.2/tasks(e93ffc82-e292-ed11-aad1-000d3a9933c9)
OData-EntityId: [Organization Uri]/api/data/v9.2/tasks(e93ffc82-e292-ed11-aad1-000d3a9933c9)


--changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15--
--batchresponse_f27ef42d-51b0-4685-bac9-f468f844de2f
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 200 OK
Content-Type: application/json; odata.metadata=minimal; odata.streaming=true
OData-Version: 4.0

{
  "@odata.context": "[Organization Uri]/api/data/v9.2/$metadata#tasks(subject)",
  "value": []
}
--batchresponse_f27ef42d-51b0-4685-bac9-f468f844de2f--
"""

# "Handling errors": without Prefer: odata.continue-on-error the batch stops at the first failure.
DOC_STOPPED_RESPONSE = """--batchresponse_156da4b8-cd2c-4862-a911-4aaab97c001a
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 400 Bad Request
REQ_ID: 5ecd1cb3-1730-4ffc-909c-d44c22270026
Content-Type: application/json; odata.metadata=minimal
OData-Version: 4.0

{"error":{"code":"0x80044331","message":"A validation error occurred.  The length of the 'subject' attribute of the 'task' entity exceeded the maximum allowed length of '200'."}}
--batchresponse_156da4b8-cd2c-4862-a911-4aaab97c001a--
"""

# ... and with it the batch answers 200 and every response.
DOC_CONTINUED_RESPONSE = """--batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 400 Bad Request
REQ_ID: de4c5227-4a28-4ebd-8ced-3392ece1697b
Content-Type: application/json; odata.metadata=minimal
OData-Version: 4.0

{"error":{"code":"0x80044331","message":"A validation error occurred.  The length of the 'subject' attribute of the 'task' entity exceeded the maximum allowed length of '200'."}}
--batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: [Organization Uri]/api/data/v9.2/tasks(aed2ae8b-3c94-ed11-aad1-000d3a9933c9)
OData-EntityId: [Organization Uri]/api/data/v9.2/tasks(aed2ae8b-3c94-ed11-aad1-000d3a9933c9)


--batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: [Organization Uri]/api/data/v9.2/tasks(b181a991-3c94-ed11-aad1-000d3a9933c9)
OData-EntityId: [Organization Uri]/api/data/v9.2/tasks(b181a991-3c94-ed11-aad1-000d3a9933c9)


--batchresponse_f44bd09d-573f-4a30-bca0-2e500ee7e139--
"""


def _task(n: int, key: str = "") -> Operation:
    body = {"subject": f"Task {n} in batch", "regardingobjectid_account_task@odata.bind": ACCOUNT}
    return Operation("POST", "/api/data/v9.2/tasks", body=body, key=key or f"task{n}")


GET_TASKS = Operation("GET", f"/api/data/v9.2/{ACCOUNT}/Account_Tasks?$select=subject", key="get")


def _mime(body: bytes | str, boundary: str) -> list[Any]:
    """A multipart body read by the standard library, as a tree of (headers, request) tuples."""
    raw = body.encode() if isinstance(body, str) else body
    head = f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    return [_describe(part) for part in message.iter_parts()]


def _describe(part: Any) -> Any:
    headers = {k.lower(): v for k, v in part.items() if k.lower() != "content-type"}
    if part.is_multipart():
        return ("changeset", [_describe(p) for p in part.iter_parts()])
    text = part.get_payload().replace("\r\n", "\n")
    request, _, body = text.partition("\n\n")
    lines = request.split("\n")
    inner = sorted(line.lower() for line in lines[1:] if line)
    payload = json.loads(body) if body.strip() else None
    return (part.get_content_type(), headers, lines[0], inner, payload)


def test_encode_matches_the_documented_batch_without_change_sets() -> None:
    encoded = encode_batch(
        [_task(1), _task(2), _task(3), GET_TASKS],
        boundary="batch_80dd1615-2a10-428a-bb6f-0e559792721f",
    )
    assert encoded.content_type == (
        'multipart/mixed; boundary="batch_80dd1615-2a10-428a-bb6f-0e559792721f"'
    )
    assert encoded.operation_count == 4
    boundary = encoded.boundary
    assert _mime(encoded.body, boundary) == _mime(DOC_BATCH_REQUEST, boundary)
    # MIME line endings are CRLF; the closing delimiter ends the body.
    assert b"\r\nContent-Transfer-Encoding: binary\r\n" in encoded.body
    assert encoded.body.rstrip().endswith(b"--batch_80dd1615-2a10-428a-bb6f-0e559792721f--")


def test_encode_matches_the_documented_change_set() -> None:
    encoded = encode_batch(
        [ChangeSet((_task(1), _task(2), _task(3))), GET_TASKS],
        boundary="batch_22975cad-7f57-410d-be15-6363209367ea",
        changeset_boundaries=["changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a"],
    )
    boundary = encoded.boundary
    mine = _mime(encoded.body, boundary)
    assert mine == _mime(DOC_CHANGESET_REQUEST, boundary)
    # Content-IDs 1, 2, 3 were numbered automatically, as in the documented request.
    assert [p[1]["content-id"] for p in mine[0][1]] == ["1", "2", "3"]


def test_content_id_reference_goes_on_the_request_line_and_in_binds() -> None:
    # "Reference URIs in request body" / "in request URL": $1 stands for the row created by part 1.
    lead = Operation("POST", "leads", {"firstname": "first name"}, content_id="1")
    account = Operation("POST", "accounts", {"originatingleadid@odata.bind": "$1"}, content_id="2")
    patch = Operation("PATCH", "$1", {"lastname": "BBBBB"})
    encoded = encode_batch([ChangeSet((lead, account, patch))], boundary="batch_AAA123")
    parts = _mime(encoded.body, "batch_AAA123")[0][1]
    assert [p[1]["content-id"] for p in parts] == ["1", "2", "3"]  # auto ids skip explicit ones
    assert parts[1][4] == {"originatingleadid@odata.bind": "$1"}
    assert parts[2][2] == "PATCH $1 HTTP/1.1"
    assert "content-type: application/json" in parts[2][3]  # not "type=entry" for a PATCH


def test_encode_refuses_what_the_documentation_forbids() -> None:
    with pytest.raises(ValueError, match="GET"):
        ChangeSet((GET_TASKS,))
    with pytest.raises(ValueError, match="1000"):
        encode_batch([_task(i) for i in range(MAX_BATCH_OPERATIONS + 1)])
    with pytest.raises(ValueError):
        encode_batch([])
    assert encode_batch([_task(i) for i in range(MAX_BATCH_OPERATIONS)]).operation_count == 1000


def test_parse_the_documented_batch_response() -> None:
    parts = parse_batch_response(DOC_BATCH_RESPONSE)  # the doc shows no Content-Type: read the body
    assert len(parts) == 4
    first = parts[0]
    assert isinstance(first, OperationResponse)
    assert (first.status, first.reason, first.body) == (204, "No Content", "")
    assert first.entity_id == "d31ba648-c592-ed11-aad1-000d3a993550"
    last = parts[3]
    assert isinstance(last, OperationResponse) and last.ok
    rows = last.json()["value"]
    assert [r["subject"] for r in rows] == ["Task 1 in batch", "Task 2 in batch", "Task 3 in batch"]
    assert rows[0]["@odata.etag"] == 'W/"77180907"'
    pairs = match_responses([_task(1), _task(2), _task(3), GET_TASKS], parts)
    assert [op.key for op, _ in pairs] == ["task1", "task2", "task3", "get"]
    ids = [r.entity_id for _, r in pairs if r is not None]
    assert ids[:3] == [
        "d31ba648-c592-ed11-aad1-000d3a993550",
        "d41ba648-c592-ed11-aad1-000d3a993550",
        "d51ba648-c592-ed11-aad1-000d3a993550",
    ]


def test_parse_the_documented_change_set_response_with_crlf() -> None:
    body = DOC_CHANGESET_RESPONSE.replace("\n", "\r\n").encode()
    ctype = "multipart/mixed; boundary=batchresponse_f27ef42d-51b0-4685-bac9-f468f844de2f"
    parts = parse_batch_response(body, ctype)
    assert len(parts) == 2
    changeset = parts[0]
    assert isinstance(changeset, list)
    assert [r.content_id for r in changeset] == ["1", "2", "3"]
    assert [r.status for r in changeset] == [204, 204, 204]
    items = [ChangeSet((_task(1), _task(2), _task(3))), GET_TASKS]
    pairs = match_responses(items, parts)
    assert [r.entity_id for _, r in pairs[:3] if r] == [
        "e73ffc82-e292-ed11-aad1-000d3a9933c9",
        "e83ffc82-e292-ed11-aad1-000d3a9933c9",
        "e93ffc82-e292-ed11-aad1-000d3a9933c9",
    ]
    assert pairs[3][1] is not None and pairs[3][1].json() == {
        "@odata.context": "[Organization Uri]/api/data/v9.2/$metadata#tasks(subject)",
        "value": [],
    }


def test_continue_on_error_gives_each_operation_its_own_answer() -> None:
    pairs = match_responses(
        [_task(1), _task(2), _task(3)], parse_batch_response(DOC_CONTINUED_RESPONSE)
    )
    first = pairs[0][1]
    assert first is not None and first.status == 400
    assert first.error_code == "0x80044331"
    assert "maximum allowed length of '200'" in first.error_message
    assert [r.status for _, r in pairs[1:] if r] == [204, 204]


def test_a_stopped_batch_leaves_later_operations_without_answer() -> None:
    pairs = match_responses(
        [_task(1), _task(2), _task(3)], parse_batch_response(DOC_STOPPED_RESPONSE)
    )
    assert pairs[0][1] is not None and pairs[0][1].status == 400
    assert [r for _, r in pairs[1:]] == [None, None]


def test_a_failed_change_set_answers_every_operation_with_its_error() -> None:
    # A change set whose transaction failed answers with one response, not a changesetresponse.
    body = (
        "--batchresponse_x\r\nContent-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n\r\n"
        "HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/json\r\n\r\n"
        '{"error":{"code":"0x80040237",'
        '"message":"A record with matching key values already exists."}}'
        "\r\n--batchresponse_x--\r\n"
    )
    items = [ChangeSet((_task(1), _task(2)))]
    pairs = match_responses(items, parse_batch_response(body))
    assert [(r.status, r.error_code) for _, r in pairs if r] == [(412, "0x80040237")] * 2


def test_boundary_is_read_from_quoted_or_bare_content_type() -> None:
    assert boundary_of('multipart/mixed; boundary="batch_1"') == "batch_1"
    assert boundary_of("multipart/mixed;boundary=batchresponse_2") == "batchresponse_2"
    assert boundary_of(None, b"\r\n--batchresponse_3\r\nContent-Type: x") == "batchresponse_3"
