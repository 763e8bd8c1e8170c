"""Unit tests of the stand-in's parts: $filter compilation, batch parsing/rendering, limits."""

from __future__ import annotations

import pytest

from pstlib.standin import batch
from pstlib.standin.db import StandinDB
from pstlib.standin.limits import Limits, ServiceProtection, Throttled
from pstlib.standin.odata import FilterCompiler, ODataError, Reply, parse_query


def _compile(text: str) -> tuple[str, list[object]]:
    compiler = FilterCompiler(
        lambda name: name in {"emailaddress1", "statecode", "_x_value"}, "contact"
    )
    return compiler.compile(text), compiler.params


def test_filter_eq_string_with_escaped_quote() -> None:
    sql, params = _compile("emailaddress1 eq 'o''brien@example.com'")
    assert params == ["o'brien@example.com"]  # '' is one quote inside an OData string literal
    assert "COLLATE NOCASE" in sql  # Dataverse compares strings without case


def test_filter_and_or_parentheses_guid_number() -> None:
    sql, params = _compile(
        "(emailaddress1 eq 'a@b.com' or emailaddress1 eq 'c@d.com') and statecode eq 0 "
        "and _x_value eq 6E1D8A4B-0000-0000-0000-000000000001"
    )
    assert params == ["a@b.com", "c@d.com", 0, "6e1d8a4b-0000-0000-0000-000000000001"]
    assert sql.count(" OR ") == 1 and sql.count(" AND ") == 2


def test_filter_unknown_property_is_the_documented_error() -> None:
    with pytest.raises(ODataError) as caught:
        _compile("Name eq 'x'")
    assert caught.value.status == 400
    assert caught.value.message == (
        "Could not find a property named 'Name' on type 'Microsoft.Dynamics.CRM.contact'."
    )


def test_filter_runs_in_sqlite() -> None:
    db = StandinDB()
    db.insert("contacts", "1", {"contactid": "1", "emailaddress1": "A@B.com", "statecode": 0})
    db.insert("contacts", "2", {"contactid": "2", "emailaddress1": "x@y.com", "statecode": 1})
    sql, params = _compile("emailaddress1 eq 'a@b.com' or statecode eq 1")
    assert [row["contactid"] for row in db.select("contacts", sql, params)] == ["1", "2"]
    sql, params = _compile("emailaddress1 eq 'a@b.com' and statecode eq 1")
    assert db.select("contacts", sql, params) == []


def test_parse_query_options() -> None:
    options = parse_query("$select=subject,messageid&$top=5&$filter=subject%20eq%20'x'&$count=true")
    assert options.select == ["subject", "messageid"]
    assert options.top == 5 and options.filter == "subject eq 'x'" and options.count


BATCH = (
    b"--batch_A\r\n"
    b"Content-Type: multipart/mixed; boundary=changeset_B\r\n"
    b"\r\n"
    b"--changeset_B\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"Content-ID: 1\r\n"
    b"\r\n"
    b"POST /api/data/v9.2/contacts HTTP/1.1\r\n"
    b"Content-Type: application/json; type=entry\r\n"
    b"\r\n"
    b'{"firstname": "A"}\r\n'
    b"--changeset_B--\r\n"
    b"\r\n"
    b"--batch_A\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n"
    b"GET /api/data/v9.2/contacts?$select=firstname HTTP/1.1\r\n"
    b"\r\n"
    b"\r\n"
    b"--batch_A--\r\n"
)


def test_parse_batch_change_set_and_get() -> None:
    items = batch.parse_batch(BATCH, 'multipart/mixed; boundary="batch_A"')
    assert len(items) == 2 and batch.count_requests(items) == 2
    change_set, get = items
    assert isinstance(change_set, batch.ChangeSet) and isinstance(get, batch.Part)
    (post,) = change_set.parts
    assert (post.method, post.url, post.content_id) == ("POST", "/api/data/v9.2/contacts", "1")
    assert post.body == b'{"firstname": "A"}'
    assert (get.method, get.url, get.body) == (
        "GET",
        "/api/data/v9.2/contacts?$select=firstname",
        b"",
    )


def test_parse_batch_rejects_bare_lf_as_documented() -> None:
    with pytest.raises(ODataError) as caught:
        batch.parse_batch(BATCH.replace(b"\r\n", b"\n"), "multipart/mixed; boundary=batch_A")
    assert caught.value.code == "0x80048d19"
    items = batch.parse_batch(
        BATCH.replace(b"\r\n", b"\n"), "multipart/mixed; boundary=batch_A", require_crlf=False
    )
    assert batch.count_requests(items) == 2


def test_render_nests_change_set_responses() -> None:
    ok = Reply(204, [("OData-Version", "4.0")])
    content_type, body = batch.render([batch.ChangeSetReply([("1", ok)]), Reply(200, [], b"{}")])
    boundary = content_type.split("boundary=")[1]
    text = body.decode()
    assert boundary.startswith("batchresponse_")
    assert "Content-Type: multipart/mixed; boundary=changesetresponse_" in text
    assert "Content-ID: 1\r\n\r\nHTTP/1.1 204 No Content\r\n" in text
    assert text.endswith(f"--{boundary}--\r\n")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_request_limit_sliding_window_and_retry_after() -> None:
    clock = _Clock()
    guard = ServiceProtection(Limits(max_requests=3, window_s=300), clock)
    for step in range(3):
        clock.now = 1000.0 + step * 10  # arrivals at 1000, 1010, 1020
        guard.admit("app")
        guard.release("app", 0.01)
    clock.now = 1030.0
    with pytest.raises(Throttled) as caught:
        guard.admit("app")
    assert caught.value.code == "0x80072322"
    assert caught.value.message == (
        "Number of requests exceeded the limit of 3 over time window of 300 seconds."
    )
    assert caught.value.retry_after == "270"  # the 1000 arrival leaves the window at 1300
    guard.admit("other-app")  # limits are per user
    clock.now = 1300.5
    guard.admit("app")


def test_execution_time_limit_counts_seconds() -> None:
    clock = _Clock()
    guard = ServiceProtection(Limits(max_execution_s=10, window_s=300), clock)
    guard.admit("app")
    guard.release("app", 11.0)
    with pytest.raises(Throttled) as caught:
        guard.admit("app")
    assert caught.value.code == "0x80072321"
    assert caught.value.message.startswith(
        "Combined execution time of incoming requests exceeded limit of 10,000  milliseconds"
    )


def test_concurrency_limit_is_immediate() -> None:
    guard = ServiceProtection(Limits(max_concurrent=2), _Clock())
    guard.admit("app")
    guard.admit("app")
    with pytest.raises(Throttled) as caught:
        guard.admit("app")
    assert (caught.value.code, caught.value.message) == (
        "0x80072326",
        "Number of concurrent requests exceeded the limit of 2.",
    )
    guard.release("app", 0.0)
    guard.admit("app")


def test_default_messages_match_the_documentation() -> None:
    from pstlib.standin.limits import concurrent_message, execution_message, requests_message

    # Quoted from "Service protection API limits" (learn.microsoft.com/power-apps/developer/
    # data-platform/api-limits), tables "Number of requests", "Execution time" and
    # "Concurrent requests".
    assert requests_message(Limits()) == (
        "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
    )
    assert execution_message(Limits()) == (
        "Combined execution time of incoming requests exceeded limit of 1,200,000  milliseconds "
        "over time window of 300 seconds. Decrease number of concurrent requests or reduce the "
        "duration of requests and try again later."
    )
    assert concurrent_message(Limits()) == "Number of concurrent requests exceeded the limit of 52."


@pytest.mark.parametrize(
    ("entity_set", "logical_name", "column"),
    [("emails", "email", "messageid"), ("contacts", "contact", "emailaddress1")],
)
def test_the_lookups_pstlib_makes_use_an_index(
    entity_set: str, logical_name: str, column: str
) -> None:
    # a look-up must take its configured execution time, not a scan of every row
    db = StandinDB()
    compiler = FilterCompiler(lambda name: True, logical_name)
    condition = compiler.compile(f"{column} eq 'A@x.org' or {column} eq 'b@x.org'")
    plan = db._conn.execute(
        f"EXPLAIN QUERY PLAN SELECT data FROM {entity_set} WHERE {condition}", compiler.params
    ).fetchall()
    searches = [row[-1] for row in plan if row[-1].startswith("SEARCH")]
    assert searches and all("USING INDEX" in step for step in searches)
    assert not any(row[-1].startswith("SCAN") for row in plan)
