"""The same store on a real PostgreSQL server, where one is configured.

Set ``PSTLIB_TEST_POSTGRES_URL`` (``postgresql+psycopg://user@127.0.0.1:5432/db``) to a database
these tests may empty; they are skipped otherwise.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from pstlib.errors import StoreError
from pstlib.models import Address, Message, Recipient, RecipientKind
from pstlib.store import Outcome, Store, load_messages, load_recipients, schema

URL = os.environ.get("PSTLIB_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(not URL, reason="PSTLIB_TEST_POSTGRES_URL is not set")
T0 = datetime(2025, 6, 11, 18, 6, 43, 123456, tzinfo=UTC)


@pytest.fixture
def store() -> Iterator[Store]:
    engine = create_engine(URL)
    with engine.begin() as conn:  # start from an empty database
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    with Store.open(URL) as opened:
        yield opened


def message(i: int) -> Message:
    return Message(
        "/mail/a.pst",
        f"item-{i}",
        subject=f"Subject {i} — ä",
        sender=Address("s@example.com", "S"),
        recipients=(Recipient(RecipientKind.TO, Address(f"to-{i}@example.com", "T")),),
        sent_at_utc=T0 + timedelta(minutes=i),
    )


def test_migrated_schema_matches_metadata(store: Store) -> None:
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []


def test_concurrent_writers_link_recipients_to_their_own_messages(store: Store) -> None:
    sessions = [store.begin_session("assess", {}, session_id=f"import_w{w}") for w in range(3)]
    sources = [store.add_source(s, "/mail/a.pst", "pst", 0, None) for s in sessions]

    def work(w: int) -> None:
        with store.writer(sessions[w], batch_rows=50) as writer:
            for i in range(500):
                writer.add_message(sources[w], message(i), Outcome.READ)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    frame = load_messages(store)
    assert len(frame) == 1500 and frame["message_row_id"].is_unique
    assert str(frame["sent_at_utc"].dtype) == "datetime64[us, UTC]"
    assert (
        frame.loc[frame["item_id"] == "item-3", "sent_at_utc"].tolist()
        == [pd.Timestamp(T0 + timedelta(minutes=3))] * 3
    )
    joined = load_recipients(store).merge(frame, on="message_row_id")
    assert len(joined) == 1500
    assert (
        joined["address"] == "to-" + joined["item_id"].str.removeprefix("item-") + "@example.com"
    ).all()


def test_failing_flush_raises(store: Store) -> None:
    session_id = store.begin_session("assess", {})
    writer = store.writer(session_id)
    writer.add_message(12345, message(1), Outcome.READ)
    with pytest.raises(StoreError, match="foreign key"):
        writer.flush()


def test_update_outcomes_contacts_and_known_keys(store: Store) -> None:
    session_id = store.begin_session("dataverse", {})
    source_id = store.add_source(session_id, "/mail/a.pst", "pst", 0, None)
    assert store.add_source(session_id, "/mail/a.pst", "pst", 0, None) == source_id
    with store.writer(session_id) as writer:
        writer.add_message(source_id, message(1), Outcome.PENDING)
        writer.add_contact("a@example.com", "created")
        writer.add_contact("a@example.com", "matched")
        writer.add_error("send", ValueError("x"), source_id=source_id)
        writer.add_batch(T0, 0.1, 1, 1, 0)
        writer.add_metric("messages_read", 1)
        writer.flush()
        writer.add_contact("a@example.com", "failed")
        assert (
            writer.update_outcomes(
                [
                    {
                        "source_id": source_id,
                        "item_id": "item-1",
                        "outcome": "imported",
                        "verified": True,
                    }
                ]
            )
            == 1
        )
    assert store.known_dedupe_keys() == {message(1).dedupe_key}
    store.end_session(session_id, "completed", {"ok": True})
    assert store.get_session(session_id)["summary"] == {"ok": True}


def test_only_imported_dedupe_keys_are_indexed(store: Store) -> None:
    """Migration 0002: a partial index on the dedupe keys of imported rows, none on every row's."""
    with store.engine.connect() as conn:
        defs = dict(
            conn.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'messages'")
            ).all()
        )
    assert "ix_messages_dedupe_key" not in defs
    definition = defs["ix_messages_imported_dedupe_key"]
    assert "(dedupe_key)" in definition and "WHERE" in definition and "'imported'" in definition
