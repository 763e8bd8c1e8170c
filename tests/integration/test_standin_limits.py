"""Service protection limits, fault injection and HTTPS of the stand-in, over real HTTP.

The 429 body and codes follow "Service protection API limits" (learn.microsoft.com/power-apps/
developer/data-platform/api-limits): a 429 Too Many Requests with a Retry-After header in seconds
and the OData error body of "Compose HTTP requests and handle errors".
"""

from __future__ import annotations

import ssl
import threading
import time

import httpx
import pytest

from pstlib.standin import StandinConfig, StandinServer


def _client(server: StandinServer, **kwargs: object) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.issue_token()}"}
    return httpx.Client(base_url=server.api_url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


def _assert_429(answer: httpx.Response, code: str, time_scale: float = 1.0) -> float:
    """The documented 429; returns its Retry-After in (real) seconds."""
    assert answer.status_code == 429
    assert set(answer.json()) == {"error"} and answer.json()["error"]["code"] == code
    header = answer.headers["Retry-After"]
    if time_scale == 1.0:
        assert header.isdigit() and int(header) >= 1  # whole seconds, as Dataverse sends
        return float(header)
    # time-scaled: whole Dataverse seconds (at least one), scaled like every other duration
    dataverse_seconds = float(header) / time_scale
    assert dataverse_seconds >= 1 and dataverse_seconds == pytest.approx(round(dataverse_seconds))
    return float(header)


def test_number_of_requests_limit_with_retry_after() -> None:
    config = StandinConfig(max_requests=5, time_scale=0.01)  # 5 requests per 3-second window
    with StandinServer(config) as server, _client(server) as api:
        for _ in range(5):
            assert api.get("contacts").status_code == 200
        throttled = api.get("contacts")
        wait = _assert_429(throttled, "0x80072322", 0.01)
        assert wait <= 3.0  # at most the (scaled) window, never rounded up to whole real seconds
        assert throttled.json()["error"]["message"] == (
            "Number of requests exceeded the limit of 5 over time window of 300 seconds."
        )
        # another application user has its own limits
        other = server.issue_token("someone-else")
        assert api.get("contacts", headers={"Authorization": f"Bearer {other}"}).status_code == 200
        time.sleep(wait)
        assert api.get("contacts").status_code == 200
        assert server.stats()["throttled_0x80072322"] == 1


def test_batch_counts_as_one_request_but_all_its_execution_time() -> None:
    # 100 s of execution per 300 s window, each operation 60 s; scaled by 0.01: 1 s and 0.6 s.
    config = StandinConfig(
        max_execution_s=100, operation_time_s=60, time_scale=0.01, max_requests=2
    )
    body = (
        "--batch_X\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        "POST /api/data/v9.2/contacts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
        '{"firstname":"a"}\r\n'
    ) * 2 + "--batch_X--\r\n"
    with StandinServer(config) as server, _client(server) as api:
        answer = api.post(
            "$batch",
            content=body.encode(),
            headers={"Content-Type": "multipart/mixed; boundary=batch_X"},
        )
        assert answer.status_code == 200 and server.db.count("contacts") == 2
        throttled = api.get("contacts")  # 1.2 s of execution > 1 s; 1 request < 2
        _assert_429(throttled, "0x80072321", 0.01)
        assert throttled.json()["error"]["message"].startswith(
            "Combined execution time of incoming requests exceeded limit of 100,000  milliseconds"
        )


def _contacts_batch(count: int, *, change_set: bool = False) -> tuple[bytes, dict[str, str]]:
    part = (
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        "POST /api/data/v9.2/contacts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
        '{"firstname":"a"}\r\n'
    )
    if not change_set:
        body = ("--batch_X\r\n" + part) * count + "--batch_X--\r\n"
    else:
        inner = "".join(f"--changeset_Y\r\nContent-ID: {i + 1}\r\n" + part for i in range(count))
        body = (
            "--batch_X\r\nContent-Type: multipart/mixed; boundary=changeset_Y\r\n\r\n"
            + inner
            + "--changeset_Y--\r\n--batch_X--\r\n"
        )
    return body.encode(), {"Content-Type": "multipart/mixed; boundary=batch_X"}


@pytest.mark.parametrize("change_set", [False, True])
def test_a_batch_takes_each_operations_time_in_all_and_is_charged_that(change_set: bool) -> None:
    # 20 operations of 5 ms each (0.5 Dataverse s at 0.01): 100 ms in all, once, not 20 sleeps
    # that each end a little late; charged what it took
    config = StandinConfig(operation_time_s=0.5, time_scale=0.01)
    body, headers = _contacts_batch(20, change_set=change_set)
    with StandinServer(config) as server, _client(server) as api:
        api.get("WhoAmI")  # the connection and the user's state exist before timing
        before = server.protection.execution_total(server.config.clients[0][0])
        started = time.monotonic()
        answer = api.post("$batch", content=body, headers=headers)
        took = time.monotonic() - started
        charged = server.protection.execution_total(server.config.clients[0][0]) - before
        assert answer.status_code == 200 and server.db.count("contacts") == 20
        assert 0.100 <= charged <= took
        assert charged < 0.100 + 0.5 * 0.005 * 20  # nowhere near a late end per operation


def test_concurrent_change_sets_run_side_by_side() -> None:
    # two change sets of 10 operations of 50 ms: together in about 0.5 s, not one after the other
    config = StandinConfig(operation_time_s=5, time_scale=0.01)
    body, headers = _contacts_batch(10, change_set=True)
    with StandinServer(config) as server, _client(server) as api:
        api.get("WhoAmI")
        answers: list[int] = []

        def send() -> None:
            answers.append(api.post("$batch", content=body, headers=headers).status_code)

        threads = [threading.Thread(target=send) for _ in range(2)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [200, 200] and server.db.count("contacts") == 20
        assert time.monotonic() - started < 0.9


def test_concurrent_requests_limit() -> None:
    config = StandinConfig(max_concurrent=2, operation_time_s=40, time_scale=0.01)  # 0.4 s each
    with StandinServer(config) as server:
        token = server.issue_token()
        statuses: list[int] = []
        codes: list[str] = []

        def call() -> None:
            answer = httpx.get(
                server.api_url + "contacts",
                timeout=30,
                headers={"Authorization": f"Bearer {token}"},
            )
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                codes.append(answer.json()["error"]["code"])
                assert answer.json()["error"]["message"] == (
                    "Number of concurrent requests exceeded the limit of 2."
                )

        threads = [threading.Thread(target=call) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses.count(200) >= 2 and statuses.count(429) >= 1
        assert set(codes) == {"0x80072326"}


def test_fault_injection_503_drop_latency() -> None:
    config = StandinConfig(
        error_on_requests=frozenset({2}), drop_on_requests=frozenset({3}), latency_s=0.2
    )
    with StandinServer(config) as server, _client(server) as api:
        started = time.monotonic()
        assert api.get("contacts").status_code == 200
        assert time.monotonic() - started >= 0.2
        failed = api.get("contacts")
        assert failed.status_code == 503 and set(failed.json()["error"]) == {"code", "message"}
        with pytest.raises(httpx.RemoteProtocolError):
            api.post("contacts", json={"firstname": "lost"})
        assert api.get("contacts").status_code == 200
        assert server.db.count("contacts") == 0
        assert server.stats()["faults_503"] == 1 and server.stats()["faults_dropped"] == 1


def test_seeded_random_faults_repeat() -> None:
    def run() -> list[int]:
        config = StandinConfig(error_rate=0.3, seed=7)
        with StandinServer(config) as server, _client(server) as api:
            return [api.get("contacts").status_code for _ in range(20)]

    first = run()
    assert first == run() and 503 in first and 200 in first


def test_throttle_storms() -> None:
    config = StandinConfig(storm_after_requests=2, storm_duration_s=100, time_scale=0.01)
    with StandinServer(config) as server, _client(server) as api:
        assert [api.get("contacts").status_code for _ in range(2)] == [200, 200]
        # storm: 100 Dataverse seconds of throttling, 1 real second
        assert _assert_429(api.get("contacts"), "0x80072322", 0.01) <= 1.0
        time.sleep(1.05)
        assert api.get("contacts").status_code == 200
        server.throttle_for(0.5)
        assert _assert_429(api.get("contacts"), "0x80072322", 0.01) == pytest.approx(0.5, abs=0.01)


def test_https_with_a_self_signed_certificate(tmp_path: object) -> None:
    with StandinServer(StandinConfig(tls=True, tls_dir=str(tmp_path))) as server:
        assert server.url.startswith("https://127.0.0.1:") and server.ca_path
        verify = ssl.create_default_context(cafile=server.ca_path)
        token = httpx.post(
            server.token_url,
            verify=verify,
            data={
                "grant_type": "client_credentials",
                "client_id": "standin-client",
                "client_secret": "standin-secret",
                "scope": server.scope,
            },
        ).json()["access_token"]
        answer = httpx.get(
            server.api_url + "contacts", verify=verify, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200
        discovery = httpx.get(
            f"{server.authority}/v2.0/.well-known/openid-configuration", verify=verify
        )
        assert discovery.json()["token_endpoint"] == server.token_url


def test_msal_acquires_a_token_from_the_https_authority() -> None:
    msal = pytest.importorskip("msal")
    requests = pytest.importorskip("requests")
    with StandinServer(StandinConfig(tls=True)) as server:
        session = requests.Session()
        session.verify = server.ca_path
        session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify
        app = msal.ConfidentialClientApplication(
            "standin-client",
            client_credential="standin-secret",
            authority=server.authority,
            http_client=session,
            instance_discovery=False,
            validate_authority=False,
        )
        result = app.acquire_token_for_client(scopes=[server.scope])
        assert result["token_type"] == "Bearer"
        answer = httpx.get(
            server.api_url + "WhoAmI",
            verify=ssl.create_default_context(cafile=server.ca_path),
            headers={"Authorization": f"Bearer {result['access_token']}"},
        )
        assert answer.status_code == 200


def test_time_scaled_retry_after_is_whole_dataverse_seconds_scaled() -> None:
    """Dataverse asks for whole seconds; a rehearsal at time_scale 0.02 asks for the same whole
    seconds of *its* time (0.02 s each), not a whole real second (50 Dataverse seconds, here
    longer than the whole window)."""
    # 10 s of execution per 20 s window, each operation 4 s; scaled: 0.2 s per 0.4 s, 0.08 s each
    config = StandinConfig(max_execution_s=10, window_s=20, operation_time_s=4, time_scale=0.02)
    with StandinServer(config) as server, _client(server) as api:
        for _ in range(3):  # 3 x 4 s = 12 s > 10 s of execution: the window is full
            assert api.get("contacts").status_code == 200
        throttled = api.get("contacts")
        wait = _assert_429(throttled, "0x80072321", 0.02)
        # the first 4 s leave the window 20 s after they ended: at most 20 Dataverse seconds on
        assert wait <= 0.4
        time.sleep(wait)
        assert api.get("contacts").status_code == 200
    with StandinServer(StandinConfig(max_requests=1)) as server, _client(server) as api:
        assert api.get("contacts").status_code == 200
        assert _assert_429(api.get("contacts"), "0x80072322") in (299.0, 300.0)
