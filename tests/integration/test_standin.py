"""The stand-in Dataverse over real HTTP: tokens, create/query, deep insert, errors, read-only."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import httpx
import pytest

from pstlib.standin import StandinConfig, StandinServer


@pytest.fixture
def server() -> Iterator[StandinServer]:
    with StandinServer(StandinConfig(max_upload_bytes=1000)) as running:
        yield running


@pytest.fixture
def api(server: StandinServer) -> Iterator[httpx.Client]:
    headers = {
        "Authorization": f"Bearer {server.issue_token()}",
        "Accept": "application/json",
        "OData-MaxVersion": "4.0",
        "OData-Version": "4.0",
    }
    with httpx.Client(base_url=server.api_url, headers=headers, timeout=10) as client:
        yield client


def _id_of(response: httpx.Response) -> str:
    return response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def test_token_endpoint_client_credentials(server: StandinServer) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": "standin-client",
        "client_secret": "standin-secret",
        "scope": server.scope,
    }
    answer = httpx.post(server.token_url, data=form)
    assert answer.status_code == 200
    token = answer.json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3599
    who = httpx.get(
        server.api_url + "WhoAmI", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert who.status_code == 200 and "UserId" in who.json()

    wrong = httpx.post(server.token_url, data={**form, "client_secret": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    scope = httpx.post(server.token_url, data={**form, "scope": "https://other/.default"})
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"


def test_api_requires_a_bearer_token(server: StandinServer) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        answer = httpx.get(server.api_url + "contacts", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")
        assert set(answer.json()["error"]) == {"code", "message"}
    assert server.db.count("contacts") == 0


def test_create_retrieve_and_filter_contacts(server: StandinServer, api: httpx.Client) -> None:
    created = api.post(
        "contacts",
        json={"emailaddress1": "ann.o'hara@example.com", "firstname": "Ann", "lastname": "O'Hara"},
    )
    # "Create a table row": 204 No Content with the OData-EntityId header.
    assert created.status_code == 204 and created.content == b""
    contactid = _id_of(created)
    assert created.headers["OData-EntityId"] == f"{server.api_url}contacts({contactid})"

    one = api.get(f"contacts({contactid})", params={"$select": "fullname,emailaddress1"})
    assert one.status_code == 200
    assert one.json()["fullname"] == "Ann O'Hara" and one.json()["contactid"] == contactid
    assert one.json()["@odata.etag"].startswith('W/"')

    query = api.get(
        "contacts",
        params={
            "$filter": "emailaddress1 eq 'ANN.O''HARA@example.com' or emailaddress1 eq 'x@y'",
            "$select": "emailaddress1",
            "$top": "1",
        },
    )
    assert query.status_code == 200
    assert [row["contactid"] for row in query.json()["value"]] == [contactid]
    assert query.json()["@odata.context"].endswith("$metadata#contacts(emailaddress1)")
    missing = api.get("contacts", params={"$filter": "emailaddress1 eq 'nobody@x'"})
    assert missing.json()["value"] == []
    assert server.db.count("contacts") == 1


def test_return_representation_gives_201_with_the_row(api: httpx.Client) -> None:
    answer = api.post(
        "contacts", json={"firstname": "Bo"}, headers={"Prefer": "return=representation"}
    )
    assert answer.status_code == 201
    assert answer.json()["firstname"] == "Bo" and "OData-EntityId" in answer.headers


def test_deep_insert_email_with_parties_and_regarding(
    server: StandinServer, api: httpx.Client
) -> None:
    contactid = _id_of(api.post("contacts", json={"emailaddress1": "c@example.com"}))
    activityid = str(uuid.uuid4())
    email = {
        "activityid": activityid,  # a client-supplied primary key is honoured
        "subject": "Quarterly numbers",
        "messageid": "<abc'1@example.com>",
        "directioncode": False,
        "regardingobjectid_contact_email@odata.bind": f"/contacts({contactid})",
        "email_activity_parties": [
            {"participationtypemask": 1, "partyid_contact@odata.bind": f"/contacts({contactid})"},
            {"participationtypemask": 2, "addressused": "to@example.com"},
            {"participationtypemask": 3, "addressused": "cc@example.com"},
            {"participationtypemask": 4, "addressused": "bcc@example.com"},
        ],
    }
    created = api.post("emails", json=email)
    assert created.status_code == 204 and _id_of(created) == activityid

    row = server.db.rows("emails")[0]
    assert row["_regardingobjectid_value"] == contactid and row["statecode"] == 0
    parties = server.db.parties(activityid)
    assert [p["participationtypemask"] for p in parties] == [1, 2, 3, 4]
    assert (
        parties[0]["_partyid_value"] == contactid and parties[1]["addressused"] == "to@example.com"
    )

    by_message = api.get(
        "emails", params={"$filter": "messageid eq '<abc''1@example.com>'", "$select": "subject"}
    )
    assert [r["activityid"] for r in by_message.json()["value"]] == [activityid]
    read = api.get("activityparties", params={"$filter": f"_activityid_value eq {activityid}"})
    assert len(read.json()["value"]) == 4
    expanded = api.get(f"emails({activityid})", params={"$expand": "email_activity_parties"})
    assert len(expanded.json()["email_activity_parties"]) == 4


def test_duplicate_primary_key_is_412_duplicate_record(
    server: StandinServer, api: httpx.Client
) -> None:
    activityid = str(uuid.uuid4())
    assert api.post("emails", json={"activityid": activityid}).status_code == 204
    again = api.post("emails", json={"activityid": activityid, "subject": "again"})
    assert again.status_code == 412
    assert again.json() == {
        "error": {
            "code": "0x80040237",
            "message": "A record with matching key values already exists.",
        }
    }
    assert server.db.count("emails") == 1


def test_unknown_bind_and_unknown_attribute_are_documented_400s(
    server: StandinServer, api: httpx.Client
) -> None:
    contactid = _id_of(api.post("contacts", json={"firstname": "C"}))
    # Request and response quoted from "Troubleshoot Dataverse Web API client errors".
    bad_bind = api.post(
        "contacts",
        json={
            "firstname": "test",
            "lastname": "contact",
            "parentcustomerid@odata.bind": "accounts(a779956b-d748-ed11-bb44-6045bd01152a)",
        },
    )
    assert bad_bind.status_code == 400
    error = bad_bind.json()["error"]
    assert error["code"] == "0x80048d19"
    assert error["message"].startswith(
        "Error identified in Payload provided by the user for Entity :'contacts'  ---->  "
        "InnerException : Microsoft.OData.ODataException: An undeclared property "
        "'parentcustomerid' which only has property annotations in the payload but no property "
        "value was found in the payload. In OData, only declared navigation properties and "
        "declared named streams can be represented as properties without values"
    )
    party_bind = api.post(
        "emails",
        json={
            "email_activity_parties": [
                {"participationtypemask": 1, "partyid@odata.bind": f"/contacts({contactid})"}
            ]
        },
    )
    assert party_bind.status_code == 400 and "'partyid'" in party_bind.json()["error"]["message"]

    bad_name = api.post("emails", json={"Subject": "x"})
    assert bad_name.status_code == 400
    assert bad_name.json()["error"]["message"].startswith(
        "An error occurred while validating input parameters: Microsoft.Crm.CrmException: "
        "Invalid property 'Subject' was found in entity 'Microsoft.Dynamics.CRM.email'."
    )
    bad_select = api.get("emails", params={"$select": "Subject"})
    assert bad_select.status_code == 400
    assert bad_select.json()["error"]["message"] == (
        "Could not find a property named 'Subject' on type 'Microsoft.Dynamics.CRM.email'."
    )
    bad_set = api.get("Email")
    assert bad_set.status_code == 404
    assert bad_set.json() == {
        "error": {"code": "0x8006088a", "message": "Resource not found for the segment 'Email'."}
    }
    assert server.db.count("emails") == 0 and server.db.count("activityparties") == 0


def test_bind_to_a_missing_contact_fails_and_writes_nothing(
    server: StandinServer, api: httpx.Client
) -> None:
    ghost = str(uuid.uuid4())
    answer = api.post(
        "emails",
        json={
            "subject": "x",
            "email_activity_parties": [
                {"participationtypemask": 2, "partyid_contact@odata.bind": f"/contacts({ghost})"}
            ],
        },
    )
    assert answer.status_code == 404
    assert answer.json()["error"] == {
        "code": "0x80040217",
        "message": f"contact With Id = {ghost} Does Not Exist",
    }
    assert server.db.count("emails") == 0  # the deep insert is one transaction


def test_completed_email_is_read_only(server: StandinServer, api: httpx.Client) -> None:
    activityid = _id_of(api.post("emails", json={"subject": "draft"}))
    assert api.patch(f"emails({activityid})", json={"subject": "edited"}).status_code == 204
    received = api.patch(f"emails({activityid})", json={"statecode": 1, "statuscode": 4})
    assert received.status_code == 204
    assert server.db.rows("emails")[0]["statuscode"] == 4

    edit = api.patch(f"emails({activityid})", json={"subject": "too late"})
    assert edit.status_code == 400
    assert edit.json()["error"] == {
        "code": "0x8004022e",
        "message": "The object cannot be updated because it is read-only.",
    }
    assert server.db.rows("emails")[0]["subject"] == "edited"
    # state changes stay allowed: 3 Sent is a Completed status too
    assert (
        api.patch(f"emails({activityid})", json={"statecode": 1, "statuscode": 3}).status_code
        == 204
    )
    wrong = api.patch(f"emails({activityid})", json={"statecode": 1, "statuscode": 1})
    assert wrong.status_code == 400


def test_patch_is_an_upsert_unless_if_match(server: StandinServer, api: httpx.Client) -> None:
    key = str(uuid.uuid4())
    refused = api.patch(f"contacts({key})", json={"firstname": "U"}, headers={"If-Match": "*"})
    assert refused.status_code == 404 and server.db.count("contacts") == 0
    assert api.patch(f"contacts({key})", json={"firstname": "U"}).status_code == 204
    assert server.db.rows("contacts")[0]["contactid"] == key


def test_attachments_size_and_blocked_extensions(server: StandinServer, api: httpx.Client) -> None:
    activityid = _id_of(api.post("emails", json={"subject": "with files"}))
    bind = {
        "objectid_activitypointer@odata.bind": f"/activitypointers({activityid})",
        "objecttypecode": "email",
    }
    body = base64.b64encode(b"hello").decode()
    ok = api.post(
        "activitymimeattachments",
        json={**bind, "filename": "a.txt", "mimetype": "text/plain", "body": body},
    )
    assert ok.status_code == 204
    assert server.db.attachments(activityid)[0]["filesize"] == 5

    blocked = api.post(
        "activitymimeattachments", json={**bind, "filename": "run.EXE", "body": body}
    )
    assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "0x80043e09"
    big = base64.b64encode(b"x" * 900).decode()  # 1200 Base64 characters > 1000 configured
    too_big = api.post("activitymimeattachments", json={**bind, "filename": "b.pdf", "body": big})
    assert too_big.status_code == 400
    assert too_big.json()["error"] == {
        "code": "0x80044a02",
        "message": "Attachment file size is too big.",
    }
    assert server.db.count("activitymimeattachments") == 1
    assert server.db.rows("emails")[0]["attachmentcount"] == 1
