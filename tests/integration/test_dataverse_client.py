"""DataverseClient against the local Dataverse stand-in, over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from pstlib.dataverse import (
    BatchRecord,
    ClientCredentialsTokenProvider,
    DataverseClient,
    ThrottleEvent,
    map_message,
)
from pstlib.dataverse.mapping import EmailPayload, contact_id_for
from pstlib.dataverse.throttle import AdaptiveLimits
from pstlib.errors import DataverseError
from pstlib.models import Address, Attachment, Message, Recipient, RecipientKind
from tests.standin_client import FAST, SECRET_ENV, standin_client, standin_settings

server_module = pytest.importorskip("pstlib.standin.server")
StandinConfig = server_module.StandinConfig
StandinServer = server_module.StandinServer

OWNER = "owner@example.com"


@pytest.fixture
def standin() -> Iterator[object]:
    with StandinServer(StandinConfig()) as server:
        yield server








def _message(
    n: int, *, outgoing: bool = False, attachments: tuple[Attachment, ...] = ()
) -> Message:
    sender = Address(OWNER) if outgoing else Address(f"sender{n}@example.com", f"Sender {n}")
    return Message(
        source_path="box.pst",
        item_id=str(n),
        internet_message_id=f"<m{n}@example.com>",
        subject=f"Message {n} <b>&",
        sender=sender,
        recipients=(
            Recipient(RecipientKind.TO, Address(OWNER if not outgoing else "o'brien@example.com")),
            Recipient(RecipientKind.CC, Address("cc@example.com")),
        ),
        sent_at_utc=datetime(2020, 1, n, 9, 0, tzinfo=UTC),
        received_at_utc=datetime(2020, 1, n, 9, 1, tzinfo=UTC),
        body=f"body {n}\nsecond line",
        attachments=attachments,
    )


def test_token_is_fetched_once_and_reused(standin: object, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = standin_settings(standin, monkeypatch)
    tokens = ClientCredentialsTokenProvider.for_settings(settings, standin.token_url)  # type: ignore[attr-defined]
    first = tokens.token()
    assert tokens.token() == first  # cached until near expiry
    assert tokens.token(refresh=True) != first
    monkeypatch.setenv(SECRET_ENV, "wrong")
    with pytest.raises(DataverseError) as caught:
        tokens.token(refresh=True)
    assert caught.value.code == "invalid_client"


def test_contacts_are_found_and_created_once(
    standin: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    with standin_client(standin, monkeypatch) as client:
        assert client.find_contacts_by_email(["o'brien@example.com"]) == {}
        obrien = client.create_contact("O'Brien@example.com", "Pat O'Brien")
        assert obrien == contact_id_for("o'brien@example.com")
        # A second create of the same deterministic id is "already there", not a duplicate.
        assert client.create_contact("o'brien@example.com", "Pat O'Brien") == obrien
        plain = client.create_contact("plain@example.com")
        found = client.find_contacts_by_email(
            ["o'brien@example.com", "PLAIN@example.com", "nobody@example.com"]
        )
        assert found == {"o'brien@example.com": obrien, "plain@example.com": plain}
        assert standin.db.count("contacts") == 2  # type: ignore[attr-defined]


def test_emails_are_created_completed_and_verifiable(
    standin: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    records: list[BatchRecord] = []
    files = (
        Attachment("notes.txt", 5, "text/plain", b"hello"),
        Attachment("run.exe", 2, "application/octet-stream", b"MZ"),
    )
    with standin_client(standin, monkeypatch, on_batch=records.append) as client:
        cc = client.create_contact("cc@example.com", "Cee Cee")
        contacts = client.find_contacts_by_email(["cc@example.com", OWNER])
        messages = [_message(1), _message(2, outgoing=True, attachments=files), _message(3)]
        payloads = [
            map_message(m, mailbox_owner=OWNER, contacts=contacts, regarding_contact_id=cc)
            for m in messages
        ]
        assert [s.reason for s in payloads[1].skipped_attachments] == ["blocked_extension"]
        results = client.create_emails(payloads)
        assert [(r.ok, r.created, r.completed) for r in results] == [(True, True, True)] * 3

        incoming = client.get_email(payloads[0].activity_id, parties=True)
        assert incoming is not None
        assert (incoming["statecode"], incoming["statuscode"]) == (1, 4)  # Completed, Received
        assert incoming["subject"] == "Message 1 <b>&"
        assert incoming["description"] == "body 1<br>\nsecond line"
        assert incoming["messageid"] == "<m1@example.com>"
        assert incoming["_regardingobjectid_value"] == cc
        masks = sorted(p["participationtypemask"] for p in incoming["email_activity_parties"])
        assert masks == [1, 2, 3]
        cc_party = next(
            p for p in incoming["email_activity_parties"] if p["participationtypemask"] == 3
        )
        assert cc_party["_partyid_value"] == cc

        outgoing = client.get_email(payloads[1].activity_id, select=["statecode", "statuscode"])
        assert outgoing is not None and (outgoing["statecode"], outgoing["statuscode"]) == (1, 3)
        attachments = standin.db.attachments(payloads[1].activity_id)  # type: ignore[attr-defined]
        assert [a["filename"] for a in attachments] == ["notes.txt"]

        assert client.get_email("00000000-0000-0000-0000-000000000000") is None
        found = client.find_emails_by_messageid(["m1@example.com", "<m3@example.com>", "<x@y>"])
        assert found == {
            "<m1@example.com>": payloads[0].activity_id,
            "<m3@example.com>": payloads[2].activity_id,
        }

    phases = [(r.phase, r.http_status, r.operations, r.succeeded) for r in records]
    # one change set per email: 3 creates, 1 attachment, 3 completions (PATCH $<email>)
    assert sum(r.operations for r in records if r.phase == "create") == 3 + 1 + 3
    assert all(status == 200 for _, status, _, _ in phases)
    assert all(r.request_bytes > 0 and r.duration_s >= 0 and r.attempt == 1 for r in records)


def test_running_the_same_import_again_creates_nothing(
    standin: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    payloads = [map_message(_message(n), mailbox_owner=OWNER) for n in range(1, 6)]
    with standin_client(standin, monkeypatch) as client:
        first = client.create_emails(payloads)
        again = client.create_emails(payloads)
    assert all(r.ok and r.created for r in first)
    # Resumed after a crash: every create meets its deterministic id, which counts as done.
    assert [(r.ok, r.created, r.completed) for r in again] == [(True, False, True)] * 5
    assert standin.db.count("emails") == 5  # type: ignore[attr-defined]


def test_a_bad_email_fails_alone(standin: object, monkeypatch: pytest.MonkeyPatch) -> None:
    good = map_message(_message(1), mailbox_owner=OWNER)
    bad_source = map_message(_message(2), mailbox_owner=OWNER)
    bad = type(bad_source)(
        **{
            **{f: getattr(bad_source, f) for f in bad_source.__dataclass_fields__},
            "email": {**bad_source.email, "nosuchcolumn": 1},
        }
    )
    with standin_client(standin, monkeypatch) as client:
        results = client.create_emails([good, bad])
    assert results[0].ok and results[0].completed
    assert not results[1].ok and results[1].status == 400 and results[1].error_code
    assert results[1].attempts == 1  # a 400 is not retried


def test_throttling_is_waited_out_and_recorded(
    standin: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    records: list[BatchRecord] = []
    events: list[ThrottleEvent] = []
    payloads = [map_message(_message(n), mailbox_owner=OWNER) for n in range(1, 9)]
    limits = AdaptiveLimits(batch_size=2, concurrency=2, max_concurrency=2)
    with standin_client(
        standin, monkeypatch, on_batch=records.append, on_throttle=events.append, limits=limits
    ) as client:
        standin.throttle_for(0.3)  # type: ignore[attr-defined]
        results = client.create_emails(payloads)
    assert all(r.ok and r.completed for r in results)
    assert events and all(e.limit_code == "0x80072322" for e in events)
    throttled = [r for r in records if r.http_status == 429]
    assert throttled and all(r.limit_code == "0x80072322" for r in throttled)
    assert all(r.retry_after_s is not None and r.retry_after_s > 0 for r in throttled)
    assert any(r.attempt > 1 for r in records)
    assert limits.min_interval_s > 0  # "number of requests" slows the rate
    assert standin.stats().get("throttled_storm", 0) >= 1  # type: ignore[attr-defined]


def test_dropped_connections_and_503s_are_retried(
    standin: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one $batch does it all now (create + complete): fail its first three tries
    config = StandinConfig(drop_on_requests=frozenset({1}), error_on_requests=frozenset({2, 3}))
    payloads = [map_message(_message(n), mailbox_owner=OWNER) for n in range(1, 4)]
    with StandinServer(config) as server, standin_client(server, monkeypatch) as client:
        results = client.create_emails(payloads)
        stats = server.stats()
        assert server.db.count("emails") == 3
    assert all(r.ok and r.completed for r in results)
    assert stats.get("faults_dropped") == 1 and stats.get("faults_503") == 2


def test_an_expired_token_is_renewed_once(standin: object, monkeypatch: pytest.MonkeyPatch) -> None:
    class StaleFirst:
        """Hands out a token the server never issued until asked to refresh."""

        def __init__(self, real: ClientCredentialsTokenProvider) -> None:
            self.real, self.refreshes = real, 0

        def token(self, *, refresh: bool = False) -> str:
            if refresh:
                self.refreshes += 1
                return self.real.token(refresh=True)
            return "stale" if self.refreshes == 0 else self.real.token()

    settings = standin_settings(standin, monkeypatch)
    provider = StaleFirst(ClientCredentialsTokenProvider.for_settings(settings, standin.token_url))  # type: ignore[attr-defined]
    with DataverseClient(settings, token_provider=provider, policy=FAST) as client:
        assert client.find_contacts_by_email(["a@example.com"]) == {}
    assert provider.refreshes == 1


def _many(count: int) -> list[EmailPayload]:
    return [
        map_message(
            Message(
                source_path="box.mbox",
                item_id=str(n),
                internet_message_id=f"<bulk{n}@example.com>",
                subject=f"Bulk {n}",
                sender=Address(f"sender{n % 7}@example.com"),
                recipients=(Recipient(RecipientKind.TO, Address(OWNER)),),
                sent_at_utc=datetime(2020, 1, 1, tzinfo=UTC),
                received_at_utc=datetime(2020, 1, 1, tzinfo=UTC),
                body=f"body {n}",
            ),
            mailbox_owner=OWNER,
        )
        for n in range(count)
    ]


def test_paced_by_the_execution_budget_no_window_fills(monkeypatch: pytest.MonkeyPatch) -> None:
    """Microsoft's limits, time-scaled: a 3-second window allowing 12 s of execution, each
    operation 5 ms. 1200 emails are 2400 operations, more execution than one window allows, and
    eight workers could spend it twice as fast as the limit: paced, none of them meets a 429."""
    config = StandinConfig(time_scale=0.01, operation_time_s=0.5)
    limits = AdaptiveLimits(batch_size=20, concurrency=8, max_concurrency=8)
    with StandinServer(config) as server, standin_client(server, monkeypatch, limits=limits) as client:
        results = client.create_emails(_many(1200))
        assert server.db.count("emails") == 1200
        stats = server.stats()
    assert all(r.ok and r.completed for r in results)
    assert not any(name.startswith("throttled") for name in stats), stats
    assert client.throttle.events == []


def test_a_smaller_execution_budget_is_learned_from_429s(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant allowing an eighth of the documented execution time (0.5 s per second, 1.5 s
    per 3-second window here, less than the 300 emails take): the client, pacing at the
    documented 4, meets execution-time 429s, waits each Retry-After and slows down; every
    email lands once."""
    config = StandinConfig(time_scale=0.01, operation_time_s=0.5, max_execution_s=150)
    limits = AdaptiveLimits(batch_size=20, concurrency=8, max_concurrency=8)
    events: list[ThrottleEvent] = []
    with (
        StandinServer(config) as server,
        standin_client(server, monkeypatch, limits=limits, on_throttle=events.append) as client,
    ):
        results = client.create_emails(_many(300))
        assert server.db.count("emails") == 300
        stats = server.stats()
    assert all(r.ok and r.completed for r in results)
    assert stats.get("throttled_0x80072321", 0) >= 1
    assert events and {e.limit_code for e in events} == {"0x80072321"}
    assert all(0 < e.retry_after_s <= 3.0 for e in events)  # scaled: within the 3-second window
    pacer = client.throttle.pacer
    assert pacer is not None and pacer.rate < pacer.ceiling
