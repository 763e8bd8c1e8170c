"""The writer's flat row buffers and the lock-free cached hashes, on tiny inline data."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from pstlib.models import Address, FolderRole, Message, Recipient, RecipientKind
from pstlib.store import Outcome, Store, load_messages, load_recipients
from pstlib.store.writer import _MESSAGE_WIDTH, _rows

T0 = datetime(2025, 6, 11, 18, 6, 43, 123456, tzinfo=UTC)


def _message(i: int, recipients: int) -> Message:
    return Message(
        source_path="a.mbox",
        item_id=str(i),
        folder_role=FolderRole.SENT,
        subject=f"s{i}",
        sender=Address(f"from{i}@example.com", "From"),
        recipients=tuple(
            Recipient(RecipientKind.CC, Address(f"r{i}.{n}@example.com")) for n in range(recipients)
        ),
        sent_at_utc=T0,
        headers=(("list-id", "<l.example.com>"),) if i == 1 else (),
    )


def test_rows_slices_a_flat_buffer() -> None:
    # 6 cells of width 3 are two rows
    assert list(_rows([1, 2, 3, 4, 5, 6], 3)) == [[1, 2, 3], [4, 5, 6]]


def test_flat_buffers_round_trip_across_flushes(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        session_id = store.begin_session("assess", {})
        source_id = store.add_source(session_id, "a.mbox", "mbox", 1, None)
        # batch_rows=2: messages 0-1 in one flush, 2 in the next; 0, 2 and 1 recipients
        with store.writer(session_id, batch_rows=2) as writer:
            for i, count in enumerate((0, 2, 1)):
                writer.add_message(source_id, _message(i, count), Outcome.READ)
                assert len(writer._messages) % _MESSAGE_WIDTH == 0
        assert writer.rows_written == 3
        messages = load_messages(store, session_id).sort_values("item_id")
        recipients = load_recipients(store, session_id)
    assert list(messages["subject"]) == ["s0", "s1", "s2"]
    assert list(messages["folder_role"].astype(str)) == ["sent"] * 3
    assert list(messages["list_id"].fillna("")) == ["", "<l.example.com>", ""]
    assert messages["processed_at_utc"].notna().all()
    by_id = dict(zip(messages["message_row_id"], messages["item_id"], strict=True))
    # every recipient points at its own message
    got = sorted(
        (by_id[r], a)
        for r, a in zip(recipients["message_row_id"], recipients["address"], strict=True)
    )
    assert got == [("1", "r1.0@example.com"), ("1", "r1.1@example.com"), ("2", "r2.0@example.com")]
    assert set(recipients["kind"].astype(str)) == {"cc"}


def test_hashes_are_cached_and_unchanged() -> None:
    msg = _message(1, 2)
    body = hashlib.sha256(b"").hexdigest()
    key = "\x1f".join(
        ("from1@example.com", T0.isoformat(), "r1.0@example.com,r1.1@example.com", "s1", body)
    )
    assert msg.body_sha256 == body
    assert msg.content_sha256 == hashlib.sha256(key.encode()).hexdigest()
    assert msg.dedupe_key == "sha:" + msg.content_sha256
    assert msg.__dict__["content_sha256"] == msg.content_sha256  # stored once, read back
