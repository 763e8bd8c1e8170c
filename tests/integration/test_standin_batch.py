"""$batch against the stand-in: change sets, Content-ID references, errors, the 1000 cap.

The contract tests quote the examples of "Execute batch operations using the Web API"
(learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api)
and check that the stand-in answers in the same shape.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from pstlib.standin import StandinServer
from tests.msdocs import DOC_BATCH_REQUEST

# -- documented examples, quoted ---------------------------------------------------------------
# "Change sets" response: the shape a successful change set answers with.
DOC_CHANGE_SET_RESPONSE = """\
--batchresponse_f27ef42d-51b0-4685-bac9-f468f844de2f
Content-Type: multipart/mixed; boundary=changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15

--changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

HTTP/1.1 204 No Content
OData-Version: 4.0
Location: [Organization Uri]/api/data/v9.2/tasks(e73ffc82-e292-ed11-aad1-000d3a9933c9)
OData-EntityId: [Organization Uri]/api/data/v9.2/tasks(e73ffc82-e292-ed11-aad1-000d3a9933c9)


--changesetresponse_64cc3fff-023a-45b0-b29d-df21583ffa15--
--batchresponse_f27ef42d-51b0-4685-bac9-f468f844de2f--
"""

# "Handling errors": without Prefer: odata.continue-on-error the batch fails on the first request.
DOC_ERROR_RESPONSE = """\
HTTP/1.1 400 BadRequest
OData-Version: 4.0

--batchresponse_156da4b8-cd2c-4862-a911-4aaab97c001a
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 400 Bad Request
REQ_ID: 5ecd1cb3-1730-4ffc-909c-d44c22270026
Content-Type: application/json; odata.metadata=minimal
OData-Version: 4.0

{"error":{"code":"0x80044331","message":"A validation error occurred.  The length of the \
'subject' attribute of the 'task' entity exceeded the maximum allowed length of '200'."}}
--batchresponse_156da4b8-cd2c-4862-a911-4aaab97c001a--
"""


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def shape(text: str) -> list[str]:
    """The structural lines of a multipart body: boundaries, part headers, status lines."""
    keep = re.compile(
        r"^(--(batchresponse|changesetresponse)|Content-Type: (application/http|multipart/mixed)"
        r"|Content-Transfer-Encoding|Content-ID|HTTP/1.1 \d{3})"
    )
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if keep.match(line):
            line = re.sub(r"_[0-9a-f-]{36}", "_<id>", line)
            line = re.sub(r"^(HTTP/1.1 \d{3}).*", r"\1", line)
            lines.append(line)
    return lines


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def server() -> Iterator[StandinServer]:
    with StandinServer() as running:
        yield running


@pytest.fixture
def api(server: StandinServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.issue_token()}", "OData-Version": "4.0"}
    with httpx.Client(base_url=server.api_url, headers=headers, timeout=30) as client:
        yield client


def post_batch(
    api: httpx.Client, body: str, boundary: str, prefer: str | None = None
) -> httpx.Response:
    headers = {"Content-Type": f'multipart/mixed; boundary="{boundary}"'}
    if prefer:
        headers["Prefer"] = prefer
    return api.post("$batch", content=crlf(body), headers=headers)


def part(
    method: str,
    url: str,
    body: object | None = None,
    content_id: str | None = None,
    boundary: str = "batch_T",
) -> str:
    lines = [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"{method} {url} HTTP/1.1"]
    if body is not None:
        lines += ["Content-Type: application/json; type=entry", "", json.dumps(body)]
    else:
        lines += ["", ""]
    return "\n".join(lines) + "\n"


def change_set(parts: list[str], name: str = "changeset_C") -> str:
    return (
        f"--batch_T\nContent-Type: multipart/mixed; boundary={name}\n\n"
        + "".join(parts).replace("--batch_T\n", f"--{name}\n")
        + f"--{name}--\n"
    )


def response_parts(answer: httpx.Response) -> list[tuple[int, str]]:
    """(status, text) of every inner response, change-set responses flattened."""
    found = re.findall(r"HTTP/1\.1 (\d{3})[^\r\n]*\r\n(.*?)(?=\r\n--)", answer.text, re.S)
    return [(int(status), rest) for status, rest in found]


# -- contract tests ----------------------------------------------------------------------------
def test_documented_batch_request_parses_and_stops_at_first_failure(
    server: StandinServer, api: httpx.Client
) -> None:
    # The stand-in serves no `tasks`, so the documented request fails on its first POST; without
    # continue-on-error the answer has the documented error shape: the batch takes the status of
    # the failed request and holds only its response.
    answer = post_batch(api, DOC_BATCH_REQUEST, "batch_80dd1615-2a10-428a-bb6f-0e559792721f")
    assert answer.status_code == 404
    assert answer.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    assert answer.headers["OData-Version"] == "4.0"
    documented = shape(DOC_ERROR_RESPONSE.split("\n\n", 1)[1])
    assert shape(answer.text) == [line.replace("400", "404") for line in documented]
    ((_, text),) = response_parts(answer)
    assert json.loads(text.split("\r\n\r\n", 1)[1])["error"]["code"] == "0x8006088a"

    continued = post_batch(
        api,
        DOC_BATCH_REQUEST,
        "batch_80dd1615-2a10-428a-bb6f-0e559792721f",
        prefer="odata.continue-on-error",
    )
    assert continued.status_code == 200  # "the batch request succeeds with a status of 200 OK"
    assert [status for status, _ in response_parts(continued)] == [404, 404, 404, 404]


def test_change_set_answers_in_the_documented_shape(
    server: StandinServer, api: httpx.Client
) -> None:
    body = change_set([part("POST", "/api/data/v9.2/contacts", {"firstname": "A"}, "1")]) + (
        "--batch_T--\n"
    )
    answer = post_batch(api, body, "batch_T")
    assert answer.status_code == 200
    assert shape(answer.text) == shape(DOC_CHANGE_SET_RESPONSE)
    contactid = server.db.rows("contacts")[0]["contactid"]
    assert f"OData-EntityId: {server.api_url}contacts({contactid})" in answer.text
    assert f"Location: {server.api_url}contacts({contactid})" in answer.text


# -- behaviour ---------------------------------------------------------------------------------
def test_content_id_references_in_body_and_url(server: StandinServer, api: httpx.Client) -> None:
    # Like the documented "Reference URIs in request body" and "... in URL" examples.
    parts = [
        part("POST", f"{server.url}/api/data/v9.2/contacts", {"emailaddress1": "c@x.com"}, "1"),
        part(
            "POST",
            "/api/data/v9.2/emails",
            {
                "subject": "hello",
                "regardingobjectid_contact_email@odata.bind": "$1",
                "email_activity_parties": [
                    {"participationtypemask": 1, "partyid_contact@odata.bind": "$1"}
                ],
            },
            "2",
        ),
        part("PATCH", "$2", {"statecode": 1, "statuscode": 4}, "3"),
    ]
    answer = post_batch(api, change_set(parts) + "--batch_T--\n", "batch_T")
    assert answer.status_code == 200
    assert [status for status, _ in response_parts(answer)] == [204, 204, 204]
    contactid = server.db.rows("contacts")[0]["contactid"]
    email = server.db.rows("emails")[0]
    assert email["_regardingobjectid_value"] == contactid and email["statuscode"] == 4
    assert server.db.parties(email["activityid"])[0]["_partyid_value"] == contactid


def test_undeclared_content_id_is_the_documented_400(
    server: StandinServer, api: httpx.Client
) -> None:
    parts = [
        part(
            "POST",
            "/api/data/v9.2/emails",
            {"regardingobjectid_contact_email@odata.bind": "$1"},
            "2",
        )
    ]
    answer = post_batch(api, change_set(parts) + "--batch_T--\n", "batch_T")
    assert answer.status_code == 400
    assert "Content-ID Reference: '$1' does not exist in the batch context." in answer.text
    assert server.db.count("emails") == 0


def test_failed_change_set_rolls_back_everything(server: StandinServer, api: httpx.Client) -> None:
    existing = str(uuid.uuid4())
    api.post("emails", json={"activityid": existing})
    parts = [
        part("POST", "/api/data/v9.2/contacts", {"firstname": "kept?"}, "1"),
        part("POST", "/api/data/v9.2/emails", {"subject": "new"}, "2"),
        part("POST", "/api/data/v9.2/emails", {"activityid": existing}, "3"),  # duplicate: 412
    ]
    answer = post_batch(api, change_set(parts) + "--batch_T--\n", "batch_T")
    assert answer.status_code == 412
    assert "Content-ID: 3" in answer.text and "0x80040237" in answer.text
    assert server.db.count("contacts") == 0 and server.db.count("emails") == 1


def test_continue_on_error_runs_the_rest(server: StandinServer, api: httpx.Client) -> None:
    body = (
        part("POST", "/api/data/v9.2/emails", {"Subject": "bad"})
        + part("POST", "/api/data/v9.2/emails", {"subject": "good 1"})
        + change_set([part("POST", "/api/data/v9.2/emails", {"subject": "good 2"}, "1")])
        + part("GET", "/api/data/v9.2/emails?$select=subject&$filter=subject%20eq%20'good%201'")
        + "--batch_T--\n"
    )
    stopped = post_batch(api, body, "batch_T")
    assert stopped.status_code == 400 and len(response_parts(stopped)) == 1
    assert server.db.count("emails") == 0

    answer = post_batch(api, body, "batch_T", prefer="odata.continue-on-error")
    assert answer.status_code == 200
    statuses = [status for status, _ in response_parts(answer)]
    assert statuses == [400, 204, 204, 200]
    assert server.db.count("emails") == 2
    last = response_parts(answer)[-1][1]
    assert json.loads(last.split("\r\n\r\n", 1)[1])["value"][0]["subject"] == "good 1"


def test_get_is_not_allowed_in_a_change_set(server: StandinServer, api: httpx.Client) -> None:
    parts = [
        part("POST", "/api/data/v9.2/contacts", {"firstname": "x"}, "1"),
        part("GET", "/api/data/v9.2/contacts", None, "2"),
    ]
    answer = post_batch(api, change_set(parts) + "--batch_T--\n", "batch_T")
    assert answer.status_code == 400 and server.db.count("contacts") == 0


def test_at_most_1000_requests_per_batch(server: StandinServer, api: httpx.Client) -> None:
    one = part("POST", "/api/data/v9.2/contacts", {"firstname": "n"})
    full = post_batch(api, one * 1000 + "--batch_T--\n", "batch_T")
    assert full.status_code == 200 and server.db.count("contacts") == 1000
    over = post_batch(api, one * 1001 + "--batch_T--\n", "batch_T")
    assert over.status_code == 400
    assert over.json()["error"]["message"] == (
        "The number of requests in the batch (1001) exceeds the limit of 1000."
    )
    assert server.db.count("contacts") == 1000
