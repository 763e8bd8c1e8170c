"""The writer's plain-values path (the collector's writer process) on PostgreSQL: the same rows as
from the records. Skipped unless ``PSTLIB_TEST_POSTGRES_URL`` names a database it may write to."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from pstlib.models import Address, Message, Recipient, RecipientKind
from pstlib.store import Outcome, Store
from pstlib.store.writer import message_values

URL = os.environ.get("PSTLIB_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(not URL, reason="PSTLIB_TEST_POSTGRES_URL is not set")


def test_plain_values_store_the_same_rows_as_the_records() -> None:
    # a UTC time, one at +02:00 (stored as UTC, hashed with its offset), none; a naive one
    sent = [
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 1, 5, tzinfo=timezone(timedelta(hours=2))),
        None,
    ]
    messages = [
        Message(
            source_path="a.mbox",
            item_id=str(i),
            subject=f"s{i}",
            sender=Address(f"a{i}@x.com", ""),
            recipients=(Recipient(RecipientKind.TO, Address("b@y.com", "B")),),
            sent_at_utc=sent[i % 3],
            received_at_utc=datetime(2024, 1, 2, 3, 4, 5, 6),
            headers=(("precedence", "bulk"),),
            body=f"body {i}",
        )
        for i in range(7)
    ]
    columns = (
        "item_id, dedupe_key, content_sha256, body_sha256, sender_address, sender_name, "
        "sent_at_utc, received_at_utc, precedence, item_kind, direction, outcome"
    )
    with Store.open(URL) as store:
        by_record = store.begin_session("assess", {})
        by_values = store.begin_session("assess", {})
        source_a = store.add_source(by_record, "a.mbox", "mbox", 1, None)
        source_b = store.add_source(by_values, "a.mbox", "mbox", 1, None)
        with store.writer(by_record, batch_rows=3) as writer:
            for m in messages:
                writer.add_message(source_a, m, Outcome.READ, direction="incoming")
        with store.writer(by_values, batch_rows=3) as writer:
            writer.add_message_values(
                [message_values(source_b, m, Outcome.READ, None, "incoming") for m in messages]
            )
        query = text(
            f"SELECT {columns} FROM messages WHERE session_id = :s ORDER BY message_row_id"
        )
        with store.engine.connect() as conn:
            got = [conn.execute(query, {"s": s}).all() for s in (by_record, by_values)]
    assert len(got[0]) == 7 and got[1] == got[0]
    assert got[0][1][6] == datetime(2024, 1, 1, 3, tzinfo=UTC)  # +02:00 stored as UTC
    assert [r[1] for r in got[0]] == [m.dedupe_key for m in messages]
