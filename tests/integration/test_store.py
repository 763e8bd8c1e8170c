"""The analytics store on real SQLite files: migrations, sessions, the batched writer, loaders."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from pstlib.errors import SourceError, StoreError
from pstlib.models import Address, FolderRole, Message, Recipient, RecipientKind
from pstlib.store import (
    SCHEMA_REVISION,
    Outcome,
    Store,
    load_errors,
    load_messages,
    load_recipients,
    load_sessions,
    load_sources,
    load_table,
    schema,
)
from pstlib.store.db import alembic_config

T0 = datetime(2025, 6, 11, 18, 6, 43, 123456, tzinfo=UTC)


def make_message(i: int, **overrides: object) -> Message:
    fields: dict[str, object] = {
        "source_path": "/mail/a.pst",
        "item_id": f"item-{i}",
        "folder_path": "Top of Personal Folders/Inbox",
        "folder_role": FolderRole.INBOX,
        "internet_message_id": f"<m{i}@example.com>" if i % 2 == 0 else None,
        "in_reply_to": "<parent@example.com>" if i % 3 == 0 else None,
        "references": ("<root@example.com>", "<parent@example.com>") if i % 3 == 0 else (),
        "subject": f"Subject {i}",
        "sender": Address(f"sender{i % 7}@example.com", f"Sender {i % 7}"),
        "recipients": (
            Recipient(RecipientKind.TO, Address(f"to-{i}@example.com", f"To {i}")),
            Recipient(RecipientKind.CC, Address(f"cc-{i}@example.com")),
        ),
        "sent_at_utc": T0 + timedelta(minutes=i),
        "received_at_utc": T0 + timedelta(minutes=i, seconds=5),
        "size_bytes": 1000 + i,
        "body": f"body {i}",
        "headers": (("list-id", "<news.example.com>"), ("precedence", "bulk"))
        if i % 5 == 0
        else (),
    }
    fields.update(overrides)
    return Message(**fields)  # type: ignore[arg-type]


def value(cell: object) -> object:
    """A frame cell as a plain value: None where missing."""
    return (
        None
        if cell is pd.NA or cell is None or (isinstance(cell, float) and cell != cell)
        else cell
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(tmp_path / "nested" / "store.sqlite") as opened:
        yield opened  # type: ignore[misc]


@pytest.fixture
def session(store: Store) -> tuple[str, int]:
    session_id = store.begin_session("assess", {"batch": 10}, mailbox_owner="me@example.com")
    source_id = store.add_source(session_id, "/mail/a.pst", "pst", 123_456, "ab" * 32)
    return session_id, source_id


# -- migrations ------------------------------------------------------------------------------


def test_open_creates_file_and_migrates_to_head(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.sqlite"
    with Store.open(path) as store, store.engine.connect() as conn:
        assert path.is_file()
        assert MigrationContext.configure(conn).get_current_heads() == (SCHEMA_REVISION,)
        # The database as migrated is exactly schema.metadata: no diffs at all.
        assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    # Opening again is a no-op migration.
    with Store.open(path) as store, store.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_heads() == (SCHEMA_REVISION,)


def _migrate(store: Store, direction: str, revision: str) -> None:
    """Run Alembic's ``upgrade`` or ``downgrade`` to ``revision`` on the store's database."""
    cfg = alembic_config()
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, direction)(cfg, revision)


def test_migration_round_trip_down_and_up(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        _migrate(store, "downgrade", "base")
        with store.engine.connect() as conn:
            tables = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'alembic_version'"
            ).all()
            assert tables == []
        _migrate(store, "upgrade", "head")
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []


def test_upgrade_from_0001_keeps_rows_and_indexes_only_imported_dedupe_keys(
    tmp_path: Path,
) -> None:
    """0002 swaps the index of every dedupe key for a partial one on imported rows' keys."""
    path = tmp_path / "s.sqlite"
    with Store.open(path) as store:
        session_id = store.begin_session("assess", {})
        source_id = store.add_source(session_id, "/mail/a.pst", "pst", 1, None)
        with store.writer(session_id) as writer:
            writer.add_message(source_id, make_message(0), Outcome.READ)
            writer.add_message(source_id, make_message(1), Outcome.IMPORTED)
        _migrate(store, "downgrade", "0001_initial_session_store")
        with store.engine.connect() as conn:
            indexes = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'"
            ).scalars()
            assert "ix_messages_dedupe_key" in set(indexes)
    with Store.open(path) as store, store.engine.connect() as conn:  # upgraded on opening
        assert MigrationContext.configure(conn).get_current_heads() == (SCHEMA_REVISION,)
        assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []
        indexes = dict(
            conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'messages' AND sql IS NOT NULL"
            ).all()
        )
        assert "ix_messages_dedupe_key" not in indexes
        assert indexes["ix_messages_imported_dedupe_key"].endswith("WHERE outcome = 'imported'")
        assert len(load_messages(store, session_id)) == 2
        assert store.known_dedupe_keys() == {make_message(1).dedupe_key}
        # the partial index holds the imported row only: a scan's rows cost it nothing
        held = conn.exec_driver_sql(
            "SELECT count(*) FROM messages INDEXED BY ix_messages_imported_dedupe_key "
            "WHERE outcome = 'imported'"
        ).scalar()
        assert held == 1


def test_dedupe_look_ups_read_the_partial_index(store: Store) -> None:
    """The query of known_dedupe_keys (a bound outcome) is served by the partial index."""
    from sqlalchemy import select

    table = schema.messages
    query = select(table.c.dedupe_key).distinct().where(table.c.outcome == Outcome.IMPORTED)
    with store.engine.connect() as conn:
        compiled = query.compile(conn)
        plan = conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {compiled}", tuple(compiled.params.values())
        ).all()
    assert any("ix_messages_imported_dedupe_key" in row[-1] for row in plan), plan


def test_store_from_a_newer_pstlib_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    with pytest.raises(StoreError, match=r"0099_from_the_future.*newer than this pstlib"):
        Store.open(path)


def test_open_with_a_bad_url_raises_store_error() -> None:
    with pytest.raises(StoreError, match="cannot open store"):
        Store.open("nosuchdialect://x/y")


# -- sessions and sources --------------------------------------------------------------------


def test_session_lifecycle(store: Store) -> None:
    first = store.begin_session("assess", {"dry": True})
    second = store.begin_session("assess", {})
    assert first.startswith("import_") and len(first) == len("import_20250611_180643")
    # Two sessions in the same second: the second gets a suffix (unless the clock ticked).
    assert second == f"{first}_2" or second > first

    record = store.get_session(first)
    assert record["status"] == "running"
    assert record["options"] == {"dry": True}
    assert record["started_at_utc"].tzinfo is not None
    assert record["host"] and record["software_version"]

    store.end_session(first, "completed", {"found": 3, "imported": 3})
    record = store.get_session(first)
    assert record["status"] == "completed"
    assert record["summary"] == {"found": 3, "imported": 3}
    assert record["ended_at_utc"] >= record["started_at_utc"]

    with pytest.raises(StoreError, match="exists already"):
        store.begin_session("assess", {}, session_id=first)
    with pytest.raises(StoreError, match="no session"):
        store.get_session("import_nope")
    with pytest.raises(StoreError, match="unknown session status"):
        store.end_session(first, "exploded", None)

    store.resume_session(first)
    assert store.get_session(first)["status"] == "running"
    assert store.session_ids() == [first, second]


def test_sources_are_recorded_once_per_session_and_path(store: Store) -> None:
    session_id = store.begin_session("assess", {}, session_id="import_test")
    source_id = store.add_source(session_id, "/mail/a.pst", "pst", 10, None)
    assert store.add_source(session_id, "/mail/a.pst", "pst", 10, None) == source_id
    other = store.add_source(session_id, "/mail/b.mbox", "mbox", 20, None)
    assert other != source_id
    store.finish_source(source_id, "read", 42)
    store.finish_source(other, "failed", None, error="not a mailbox")

    sources = load_sources(store, session_id).set_index("path")
    assert sources.loc["/mail/a.pst", "status"] == "read"
    assert sources.loc["/mail/a.pst", "items_found"] == 42
    assert sources.loc["/mail/b.mbox", "error"] == "not a mailbox"
    assert pd.isna(sources.loc["/mail/b.mbox", "items_found"])
    assert sources["ended_at_utc"].notna().all()
    with pytest.raises(StoreError, match="no session"):
        store.add_source("import_nope", "/x.pst", "pst", 1, None)


# -- the writer ------------------------------------------------------------------------------


def test_writer_round_trip_through_loaders(store: Store, session: tuple[str, int]) -> None:
    session_id, source_id = session
    messages = [make_message(i) for i in range(10)]
    with store.writer(session_id, batch_rows=3) as writer:
        for i, msg in enumerate(messages):
            writer.add_message(
                source_id,
                msg,
                Outcome.READ if i % 4 else Outcome.SKIPPED,
                None if i % 4 else "not mail",
                direction="incoming",
            )
        writer.add_error(
            "read",
            SourceError(
                "/mail/a.pst", "truncated item", code="truncated", folder="Inbox", item="9"
            ),
            source_id=source_id,
        )
        writer.add_error("send", ValueError("boom"))

    frame = load_messages(store, session_id)
    assert len(frame) == 10
    assert list(frame.columns) == list(schema.messages.columns.keys())
    assert str(frame["sent_at_utc"].dtype) == "datetime64[us, UTC]"
    assert frame["subject"].dtype == pd.StringDtype()
    for name in ("outcome", "folder_role", "item_kind", "direction"):
        assert isinstance(frame[name].dtype, pd.CategoricalDtype), name
    assert list(frame["outcome"].cat.categories[:6]) == [o.value for o in Outcome]
    assert frame["verified"].dtype == "boolean"
    assert frame["size_bytes"].dtype == "int64"

    by_item = frame.set_index("item_id")
    for i, msg in enumerate(messages):
        row = by_item.loc[msg.item_id]
        assert row["subject"] == msg.subject
        assert row["sent_at_utc"] == msg.sent_at_utc  # tz-aware, microseconds kept
        assert row["received_at_utc"] == msg.received_at_utc
        assert row["dedupe_key"] == msg.dedupe_key
        assert row["content_sha256"] == msg.content_sha256
        assert row["body_sha256"] == msg.body_sha256
        assert row["item_kind"] == "mail"
        assert row["folder_role"] == "inbox"
        assert row["sender_address"] == msg.sender.address  # type: ignore[union-attr]
        assert row["size_bytes"] == msg.size_bytes
        assert row["outcome"] == ("skipped" if i % 4 == 0 else "read")
        assert value(row["references"]) == (" ".join(msg.references) or None)
        assert value(row["list_id"]) == ("<news.example.com>" if i % 5 == 0 else None)
        assert value(row["precedence"]) == ("bulk" if i % 5 == 0 else None)
        assert value(row["internet_message_id"]) == msg.internet_message_id
        assert row["processed_at_utc"].tzinfo is not None

    recipients = load_recipients(store, session_id)
    assert len(recipients) == 20
    joined = recipients.merge(frame[["message_row_id", "item_id"]], on="message_row_id")
    to = joined[joined["kind"] == "to"].set_index("item_id")
    for msg in messages:
        assert to.loc[msg.item_id, "address"] == msg.recipients[0].address.address
        assert to.loc[msg.item_id, "name"] == msg.recipients[0].address.name
    assert joined.loc[joined["kind"] == "cc", "name"].isna().all()  # '' name stored as NULL

    errors = load_errors(store, session_id).sort_values("error_id")
    assert errors["code"].tolist() == ["truncated", "ValueError"]
    assert errors["item"].iloc[0] == "9"
    assert errors["folder"].iloc[0] == "Inbox"
    assert errors["source_id"].iloc[0] == source_id
    assert pd.isna(errors["source_id"].iloc[1])
    assert errors["cause"].tolist() == ["truncated item", "boom"]


def test_batching_writes_every_row_once(store: Store, session: tuple[str, int]) -> None:
    session_id, source_id = session
    n = 12_345
    with store.writer(session_id, batch_rows=1000) as writer:
        for i in range(n):
            writer.add_message(source_id, make_message(i), Outcome.READ)
            if i == 4321:
                assert writer.pending_rows < 1000  # flushed on its own along the way
    assert writer.rows_written == n
    frame = load_messages(store, session_id, columns=["message_row_id", "item_id", "subject"])
    assert list(frame.columns) == ["message_row_id", "item_id", "subject"]
    assert len(frame) == n
    assert frame["item_id"].is_unique and frame["message_row_id"].is_unique
    assert set(frame["item_id"]) == {f"item-{i}" for i in range(n)}
    # Every recipient points at its own message.
    recipients = load_recipients(store, session_id).merge(frame, on="message_row_id")
    assert len(recipients) == 2 * n
    to = recipients[recipients["kind"] == "to"]
    assert (to["address"] == "to-" + to["item_id"].str.removeprefix("item-") + "@example.com").all()


def test_a_failing_flush_raises_and_writes_nothing(store: Store, session: tuple[str, int]) -> None:
    session_id, source_id = session
    writer = store.writer(session_id, batch_rows=100)
    writer.add_message(source_id, make_message(1), Outcome.READ)
    writer.add_message(999_999, make_message(2), Outcome.READ)  # no such source
    writer.add_metric("messages_read", 2)
    with pytest.raises(StoreError, match="FOREIGN KEY") as caught:
        writer.flush()
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    # One transaction: nothing of the batch is in the store.
    assert load_messages(store, session_id).empty
    assert load_table(store, "metrics", session_id).empty
    # The writer goes on working.
    writer.add_message(source_id, make_message(3), Outcome.READ)
    writer.flush()
    assert load_messages(store, session_id)["item_id"].tolist() == ["item-3"]


def test_leaving_the_block_on_an_error_still_records_what_was_read(
    store: Store, session: tuple[str, int]
) -> None:
    session_id, source_id = session
    with pytest.raises(KeyboardInterrupt), store.writer(session_id) as writer:
        writer.add_message(source_id, make_message(1), Outcome.READ)
        raise KeyboardInterrupt
    assert len(load_messages(store, session_id)) == 1


def test_bad_values_are_refused_when_added(store: Store, session: tuple[str, int]) -> None:
    session_id, source_id = session
    writer = store.writer(session_id)
    with pytest.raises(StoreError, match="unknown outcome"):
        writer.add_message(source_id, make_message(1), "lost")
    with pytest.raises(StoreError, match="unknown direction"):
        writer.add_message(source_id, make_message(1), Outcome.READ, direction="sideways")
    with pytest.raises(StoreError, match="no session"):
        store.writer("import_nope")


def test_update_outcomes_and_known_dedupe_keys(store: Store, session: tuple[str, int]) -> None:
    session_id, source_id = session
    messages = [make_message(i) for i in range(4)]
    with store.writer(session_id) as writer:
        for msg in messages:
            writer.add_message(source_id, msg, Outcome.PENDING)
        updated = writer.update_outcomes(
            [
                {
                    "source_id": source_id,
                    "item_id": "item-0",
                    "outcome": "imported",
                    "dataverse_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
                    "verified": True,
                },
                {"source_id": source_id, "item_id": "item-1", "outcome": Outcome.IMPORTED},
                {
                    "source_id": source_id,
                    "item_id": "item-2",
                    "outcome": "failed",
                    "outcome_detail": "HTTP 400",
                },
            ]
        )
        assert updated == 3
        with pytest.raises(StoreError, match="matched no message"):
            writer.update_outcomes([{"source_id": source_id, "item_id": "nope", "verified": True}])
        with pytest.raises(StoreError, match="cannot update"):
            writer.update_outcomes([{"message_row_id": 1, "subject": "x"}])

    frame = load_messages(store, session_id).set_index("item_id")
    assert frame.loc["item-0", "outcome"] == "imported"
    assert value(frame.loc["item-0", "verified"]) == True  # noqa: E712
    assert frame.loc["item-2", "outcome_detail"] == "HTTP 400"
    assert frame.loc["item-3", "outcome"] == "pending"
    assert pd.isna(frame.loc["item-3", "verified"])

    imported = {messages[0].dedupe_key, messages[1].dedupe_key}
    assert store.known_dedupe_keys() == imported
    assert store.known_dedupe_keys(exclude_session=session_id) == set()
    assert store.recorded_items(session_id, source_id) == {f"item-{i}" for i in range(4)}


def test_contacts_batches_and_metrics(store: Store, session: tuple[str, int]) -> None:
    session_id, _ = session
    with store.writer(session_id) as writer:
        writer.add_contact("a@example.com", "created", name="A", dataverse_id="id-1")
        writer.add_contact("a@example.com", "matched", name="A")  # the latest word wins
        writer.add_batch(
            T0,
            1.25,
            100,
            98,
            2,
            http_status=429,
            limit_code="0x80072322",
            retry_after_s=3.0,
            request_bytes=40_000,
        )
        writer.add_metric("rss_bytes", 1.5e8, {"worker": "1"})
    with store.writer(session_id) as writer:
        writer.add_contact("a@example.com", "failed", detail="HTTP 500")  # upsert across flushes
    contacts = load_table(store, "contacts", session_id)
    assert contacts[["address", "action", "detail"]].values.tolist() == [
        ["a@example.com", "failed", "HTTP 500"]
    ]
    batches = load_table(store, "batches", session_id)
    assert batches["started_at_utc"].tolist() == [T0]
    assert batches["limit_code"].tolist() == ["0x80072322"]
    assert batches["http_status"].dtype == "Int64"
    metrics = load_table(store, "metrics", session_id)
    assert metrics["value"].tolist() == [1.5e8]
    assert metrics["labels_json"].tolist() == ['{"worker": "1"}']


def test_loaders_of_an_empty_store_have_their_dtypes(store: Store) -> None:
    for name, table in schema.TABLES.items():
        frame = load_table(store, name)
        assert frame.empty
        assert list(frame.columns) == list(table.columns.keys())
    assert str(load_sessions(store)["started_at_utc"].dtype) == "datetime64[us, UTC]"
    with pytest.raises(StoreError, match="valid: batches, contacts"):
        load_table(store, "nope")
    with pytest.raises(StoreError, match="no column"):
        load_messages(store, columns=["nope"])


def test_timestamps_are_stored_as_utc_whatever_the_offset(
    store: Store, session: tuple[str, int]
) -> None:
    session_id, source_id = session
    paris = datetime(2025, 6, 11, 20, 6, 43, tzinfo=__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    with store.writer(session_id) as writer:
        writer.add_message(source_id, make_message(1, sent_at_utc=paris), Outcome.READ)
    frame = load_messages(store, session_id)
    assert frame["sent_at_utc"].iloc[0] == pd.Timestamp("2025-06-11 18:06:43", tz="UTC")
    with store.engine.connect() as conn:
        raw = conn.execute(text("SELECT sent_at_utc FROM messages")).scalar()
    assert raw == "2025-06-11 18:06:43.000000"  # what SQLAlchemy's SQLite DateTime reads


# -- hostile text ----------------------------------------------------------------------------

hostile_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(subject=hostile_text, name=hostile_text, folder=hostile_text)
def test_arbitrary_unicode_round_trips(store: Store, subject: str, name: str, folder: str) -> None:
    session_id = store.begin_session("assess", {"subject": subject})
    source_id = store.add_source(session_id, folder or "/x", "pst", 0, None)
    msg = make_message(
        1,
        subject=subject,
        folder_path=folder,
        sender=Address("s@example.com", name),
        recipients=(Recipient(RecipientKind.BCC, Address("b@example.com", name)),),
    )
    with store.writer(session_id) as writer:
        writer.add_message(source_id, msg, Outcome.READ, detail=subject)
    row = load_messages(store, session_id).iloc[0]
    assert row["subject"] == subject
    assert row["folder_path"] == folder
    assert row["outcome_detail"] == subject
    assert value(row["sender_name"]) == (name or None)
    recipient = load_recipients(store, session_id).iloc[0]
    assert value(recipient["name"]) == (name or None)
    assert store.get_session(session_id)["options"] == {"subject": subject}


def test_writing_to_a_current_store_loads_neither_alembic_nor_pandas(tmp_path: Path) -> None:
    # what only writes (the import's collector process) starts without them: about 1 s of CPU
    path = tmp_path / "s.sqlite"
    Store.open(path).close()  # created (and migrated) here
    code = (
        "import sys\n"
        "from pstlib.store import Store\n"
        f"store = Store.open({str(path)!r})\n"
        "session_id = store.begin_session('assess', {})\n"
        "store.close()\n"
        "print(sorted(m for m in ('alembic', 'pandas', 'pyarrow') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    with Store.open(path) as store:  # and the session is there
        assert len(store.fetch_all("SELECT session_id FROM sessions", (), "sessions")) == 1
