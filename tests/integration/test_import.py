"""The Dataverse import end to end: real corpus files, a real SQLite store, the stand-in over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pstlib.dataverse.mapping import activity_id_for, contact_id_for, normalise_messageid
from pstlib.importer.contacts import ContactPolicy, CreateContacts
from pstlib.importer.reconcile import reconcile, verify_session
from pstlib.importer.run import ImportOptions, import_mail
from pstlib.importer.session import Progress
from pstlib.models import Message
from pstlib.standin import StandinConfig, StandinServer
from pstlib.store import Store, load
from tests.standin_client import standin_client

OWNER = "alex.wilber@contoso.com"


@pytest.fixture
def standin() -> Iterator[StandinServer]:
    with StandinServer(StandinConfig()) as server:
        yield server



@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store.sqlite") as opened:
        yield opened


def write_mbox(path: Path, count: int, *, start: int = 0, domain: str = "fabrikam.com") -> Path:
    """A small mbox: ``count`` messages to and from the owner; every third one has no Message-ID."""
    parts = []
    for n in range(start, start + count):
        incoming = n % 2 == 0
        sender = f"person{n % 7}@{domain}" if incoming else OWNER
        to = OWNER if incoming else f"person{n % 7}@{domain}"
        mid = "" if n % 3 == 2 else f"Message-ID: <msg{n}@{domain}>\n"
        parts.append(
            f"From {sender} Mon Jan  1 00:00:00 2024\n"
            f"From: Person {n % 7} <{sender}>\nTo: {to}\nCc: cc{n % 3}@contoso.com\n"
            f"Subject: message {n}\nDate: Mon, 1 Jan 2024 {n % 24:02d}:{n % 60:02d}:00 +0000\n"
            f"{mid}\nBody of message {n}.\n\n"
        )
    path.write_text("".join(parts))
    return path


def synth_mailbox(out: Path, *, seed: int = 3) -> Path:
    synth = pytest.importorskip("pstlib.synth")
    result = synth.synthesize(out, seed=seed, contacts=8, years=0.15, formats=("mbox",))
    assert result.mbox_path is not None
    return Path(result.mbox_path)


def store_matches_standin(store: Store, session_id: str, server: StandinServer) -> pd.DataFrame:
    """Assert the store's imported messages and the stand-in's emails agree record for record."""
    messages = load.load_messages(store, session_id)
    imported = messages[messages["outcome"] == "imported"]
    emails = {row["activityid"]: row for row in server.db.rows("emails")}
    # same activity ids, each exactly once, each acknowledged with its own id
    assert set(imported["activity_id"]) == set(emails)
    assert imported["activity_id"].is_unique
    assert (imported["dataverse_id"] == imported["activity_id"]).all()
    assert (imported["activity_id"] == imported["dedupe_key"].map(activity_id_for)).all()
    # same messageids
    for row in imported.itertuples():
        email = emails[row.activity_id]
        expected = normalise_messageid(None if pd.isna(row.internet_message_id) else row.internet_message_id)
        assert email.get("messageid") == expected, row.item_id
        assert email.get("statecode") == 1  # completed
    # same parties: sender + distinct (role, address) of the recipients
    recipients = load.load_recipients(store, session_id)
    recipients = recipients[recipients["address"] != ""]
    distinct = recipients.drop_duplicates(["message_row_id", "kind", "address"])
    expected_parties = (
        distinct.groupby("message_row_id").size().reindex(imported["message_row_id"], fill_value=0)
        + imported.set_index("message_row_id")["sender_address"].fillna("").ne("").astype(int)
    )
    for row_id, count in expected_parties.items():
        activity_id = imported.loc[imported["message_row_id"] == row_id, "activity_id"].iloc[0]
        assert len(server.db.parties(activity_id)) == count, activity_id
    return imported


@pytest.mark.corpus
def test_corpus_and_synthetic_mailbox_land_record_for_record(
    pst_dir: Path, tmp_path: Path, store: Store, standin: StandinServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mbox = synth_mailbox(tmp_path / "synth")
    ticks: list[Progress] = []
    with standin_client(standin, monkeypatch) as client:
        session_id = import_mail(
            [pst_dir, mbox], store, ImportOptions(mailbox_owner=OWNER), client=client,
            on_progress=ticks.append,
        )
    session = store.get_session(session_id)
    assert session["status"] == "completed"
    imported = store_matches_standin(store, session_id, standin)
    assert len(imported) > 150
    messages = load.load_messages(store, session_id)
    # every message has exactly one final outcome
    assert not messages["outcome"].isin(["pending", "failed", "read"]).any()
    skipped = messages[messages["outcome"] == "skipped"]
    assert skipped["outcome_detail"].str.startswith("not mail: ").all()
    assert {"contact", "appointment"} <= set(skipped["item_kind"].astype(str))
    duplicates = messages[messages["outcome"] == "duplicate"]
    assert set(duplicates["outcome_detail"]) <= {"within_session"}
    assert duplicates["duplicate_of"].str.startswith(f"within_session:{session_id}/").all()
    # the session document is complete
    summary = session["summary"]
    assert summary["totals"]["imported"] == len(imported)
    assert summary["contacts"]["created"] == standin.db.count("contacts")
    assert summary["batch_performance"]["batches"] >= 2
    batches = load.load_batches(store, session_id)
    assert batches["operations"].sum() >= 2 * len(imported)
    # contacts: internal (contoso.com, the owner's domain) ones are not created by default
    contacts = load.load_contacts(store, session_id)
    internal = contacts[contacts["address"].str.endswith("@contoso.com")]
    assert (internal["action"] == "skipped").all() and len(internal) > 0
    created = contacts[contacts["action"] == "created"]
    assert (created["dataverse_id"] == created["address"].map(contact_id_for)).all()
    # progress: one tick per item, the outcome named
    assert sum(t.messages for t in ticks) >= len(messages)
    assert {t.outcome for t in ticks} >= {"imported", "skipped", "duplicate"}
    # chain of custody: everything sent was acknowledged, read back and verified
    with standin_client(standin, monkeypatch) as client:
        chain = verify_session(store, session_id, client)
    assert chain.to_send == chain.sent == chain.acknowledged == chain.verified == len(imported)
    # what does not balance is listed item by item: the two truncated files, the unreadable items
    assert set(chain.differences["stage"]) == {"open", "read"}
    assert (chain.differences["stage"] == "open").sum() == 2


def test_same_mailbox_twice_is_all_duplicates(
    tmp_path: Path, store: Store, standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mbox = write_mbox(tmp_path / "box.mbox", 30)
    options = ImportOptions(mailbox_owner=OWNER)
    with standin_client(standin, monkeypatch) as client:
        first = import_mail([mbox], store, options, client=client)
        second = import_mail([mbox], store, options, client=client)
    assert first != second
    again = load.load_messages(store, second)
    assert (again["outcome"] == "duplicate").all()
    assert (again["outcome_detail"] == "earlier_session").all()
    assert again["duplicate_of"].str.startswith(f"earlier_session:{first}/").all()
    assert standin.db.count("emails") == 30
    store_matches_standin(store, first, standin)


def test_message_already_in_dataverse_is_a_dataverse_duplicate(
    tmp_path: Path, store: Store, standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mbox = write_mbox(tmp_path / "box.mbox", 6)
    with standin_client(standin, monkeypatch) as client:
        # imported by something else: same messageid, another activity id
        other = standin.service
        other_id = "0f0f0f0f-0000-4000-8000-000000000001"
        token = standin.issue_token()
        import httpx

        response = httpx.post(
            standin.api_url + "emails",
            json={"activityid": other_id, "subject": "imported elsewhere",
                  "messageid": "<msg0@fabrikam.com>"},
            headers={"Authorization": f"Bearer {token}", "OData-Version": "4.0"},
        )
        assert response.status_code in (201, 204), response.text
        assert other is not None
        session_id = import_mail([mbox], store, ImportOptions(mailbox_owner=OWNER), client=client)
    messages = load.load_messages(store, session_id).set_index("item_id")
    first = messages.iloc[0]
    assert first["outcome"] == "duplicate"
    assert first["outcome_detail"] == "dataverse"
    assert first["duplicate_of"] == f"dataverse:{other_id}"
    assert (messages["outcome"] == "imported").sum() == 5
    assert standin.db.count("emails") == 6  # five imported + the one from elsewhere


def test_assess_target_writes_nothing_but_the_store(
    tmp_path: Path, store: Store, standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mbox = write_mbox(tmp_path / "box.mbox", 12)
    with standin_client(standin, monkeypatch) as client:
        session_id = import_mail(
            [mbox], store, ImportOptions(target="assess", mailbox_owner=OWNER), client=client
        )
    assert standin.stats().get("api_requests", 0) == 0
    messages = load.load_messages(store, session_id)
    assert (messages["outcome"] == "read").all() and len(messages) == 12
    contacts = load.load_contacts(store, session_id)
    assert (contacts["action"] == "skipped").all()
    assert contacts["detail"].str.startswith("assess: ").all()
    chain = reconcile(store, session_id)
    assert chain.balanced and chain.sent is None and chain.read == chain.found == 12


def test_contact_policy_never_creates_nothing(
    tmp_path: Path, store: Store, standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mbox = write_mbox(tmp_path / "box.mbox", 10)
    options = ImportOptions(
        mailbox_owner=OWNER, contacts=ContactPolicy(create=CreateContacts.NEVER)
    )
    with standin_client(standin, monkeypatch) as client:
        client.create_contact("person0@fabrikam.com", "Person Zero")  # one known contact
        session_id = import_mail([mbox], store, options, client=client)
    contacts = load.load_contacts(store, session_id).set_index("address")
    assert contacts.loc["person0@fabrikam.com", "action"] == "matched"
    assert (contacts.drop(index="person0@fabrikam.com")["action"] == "skipped").all()
    assert standin.db.count("contacts") == 1
    # the matched contact is a party (and the regarding contact) of its emails
    bound = [p for p in standin.db.rows("activityparties") if p.get("_partyid_value")]
    assert bound and all(
        p["_partyid_value"] == contact_id_for("person0@fabrikam.com") for p in bound
    )


@pytest.mark.parametrize(
    "faults",
    [
        {"error_rate": 0.15, "seed": 1},
        {"drop_rate": 0.1, "seed": 2},
        {"storm_after_requests": 4, "storm_duration_s": 1.5, "seed": 3},
        {"latency_s": 0.05, "error_rate": 0.05, "drop_rate": 0.05, "seed": 4},
    ],
    ids=["503s", "dropped", "429-storm", "slow-and-flaky"],
)
def test_faults_lose_nothing_and_import_nothing_twice(
    faults: dict[str, float], tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    mbox = write_mbox(tmp_path / "box.mbox", 60)
    options = ImportOptions(mailbox_owner=OWNER, batch_messages=10, max_failed_batches=50)
    with StandinServer(StandinConfig(**faults)) as server:  # type: ignore[arg-type]
        session_id = None
        for _ in range(4):  # a failed message is sent again when the session is resumed
            with standin_client(server, monkeypatch, timeout_s=5.0) as client:
                session_id = import_mail(
                    [mbox], store, options, client=client, resume=session_id
                )
            outcomes = load.load_messages(store, session_id)["outcome"]
            if not outcomes.isin(["failed", "pending"]).any():
                break
        assert session_id is not None
        messages = load.load_messages(store, session_id)
        assert len(messages) == 60
        assert (messages["outcome"] == "imported").all(), messages["outcome_detail"].tolist()
        store_matches_standin(store, session_id, server)
        ids = [row.get("messageid") for row in server.db.rows("emails") if row.get("messageid")]
        assert len(ids) == len(set(ids))  # no messageid twice
        if "storm_after_requests" in faults:
            assert server.stats().get("throttled_storm", 0) > 0
            # every 429 is recorded with its limit code and Retry-After (batches also in batches)
            metrics = load.load_metrics(store, session_id)
            throttled = metrics[metrics["name"] == "throttled"]
            assert len(throttled) > 0 and (throttled["value"] > 0).all()
            assert throttled["labels_json"].str.contains("0x80072322").all()
            batches = load.load_batches(store, session_id)
            in_batches = batches[batches["http_status"] == 429]
            assert (in_batches["limit_code"].astype(str) == "0x80072322").all()
    summary = json.loads(str(store.get_session(session_id)["summary_json"]))
    assert summary["totals"]["imported"] == 60


def test_verifying_7000_emails_takes_a_handful_of_requests(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading back 7,000 emails one GET each would meet the 6000-requests-per-5-minutes limit
    (and wait out the window); in $batch GETs it is a handful of requests."""
    count = 7000
    session_id = store.begin_session("dataverse", {})
    source_id = store.add_source(session_id, "box.mbox", "mbox", 0, None)
    with StandinServer(StandinConfig()) as server:  # the documented limits: 6000 / 300 s
        with store.writer(session_id) as writer, server.db.transaction():
            for n in range(count):
                message = Message(
                    source_path="box.mbox", item_id=str(n), internet_message_id=f"<v{n}@x.org>"
                )
                activity_id = activity_id_for(message.dedupe_key)
                writer.add_message(
                    source_id, message, "imported", activity_id=activity_id,
                    dataverse_id=activity_id,
                )
                if n % 1000 == 1:  # never arrived
                    continue
                # every 1000th row holds another message's id: found, but not as sent
                messageid = f"<v{n}@x.org>" if n % 1000 else "<other@x.org>"
                server.db.insert(
                    "emails", activity_id, {"activityid": activity_id, "messageid": messageid}
                )
        before = server.stats().get("api_requests", 0)
        with standin_client(server, monkeypatch) as client:
            chain = verify_session(store, session_id, client)
        requests = server.stats().get("api_requests", 0) - before
        throttled = sum(v for k, v in server.stats().items() if k.startswith("throttled"))
    assert requests <= 10  # 7 batches of 1000 GETs (and a token), not 7,000 GETs
    assert throttled == 0
    assert chain.checked == count
    assert chain.verified == count - 14  # 7 missing, 7 with another messageid
    verified = load.load_messages(store, session_id)["verified"]
    assert verified.notna().all() and int((~verified.astype(bool)).sum()) == 14
