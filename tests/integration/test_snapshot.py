"""Columnar snapshots: the same frames as SQL, and never stale after the session changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from pstlib.models import Address, FolderRole, Message, Recipient, RecipientKind
from pstlib.store import Store, load_messages, load_recipients
from pstlib.store import load as load_module
from pstlib.store.load import read_sql
from pstlib.store.schema import Outcome, SessionStatus
from pstlib.store.snapshot import (
    drop_snapshot,
    read_snapshot,
    refresh_snapshot,
    session_stamp,
    snapshot_path,
)

START = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def _message(i: int) -> Message:
    """Varied rows: ids on half, a reply chain, a missing name, list headers, no date on one."""
    return Message(
        source_path="box.pst",
        item_id=str(i),
        folder_path="Top/Inbox" if i % 3 else "Top/Sent Items",
        folder_role=FolderRole.INBOX if i % 3 else FolderRole.SENT,
        message_class="IPM.Note" if i % 7 else "IPM.Schedule.Meeting.Request",
        internet_message_id=f"<m{i}@example.com>" if i % 2 else None,
        in_reply_to=f"<m{i - 2}@example.com>" if i % 2 and i > 2 else None,
        references=(f"<m{i - 2}@example.com>",) if i % 2 and i > 2 else (),
        subject=f"Subject {i % 5} ünïcode",
        sender=Address(f"person{i % 4}@example.com", f"Person {i % 4}" if i % 5 else ""),
        recipients=(
            Recipient(RecipientKind.TO, Address(f"to{i % 3}@example.com", "To")),
            Recipient(RecipientKind.CC, Address(f"cc{i % 2}@example.org")),
        ),
        sent_at_utc=None if i == 5 else START + timedelta(hours=i, microseconds=i),
        received_at_utc=START + timedelta(hours=i, seconds=3),
        size_bytes=1000 + i,
        body=f"body {i}",
        headers=(("precedence", "bulk"),) if i % 4 == 0 else (),
    )


def _write(store: Store, session_id: str, source_id: int, items: range) -> None:
    with store.writer(session_id, batch_rows=7) as writer:
        for i in items:
            writer.add_message(
                source_id,
                _message(i),
                Outcome.READ if i % 6 else Outcome.FAILED,
                "could not read" if i % 6 == 0 else None,
                direction="incoming" if i % 3 else "outgoing",
            )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store.open(tmp_path / "store.sqlite")
    yield opened  # type: ignore[misc]
    opened.close()


@pytest.fixture
def session(store: Store) -> str:
    """A completed session of 40 messages (and a second session's rows around it)."""
    session_id = store.begin_session("assess", {}, session_id="s1")
    other = store.begin_session("assess", {}, session_id="s0")
    source_id = store.add_source(session_id, "box.pst", "pst", 10, None)
    other_source = store.add_source(other, "other.pst", "pst", 10, None)
    _write(store, other, other_source, range(100, 110))
    _write(store, session_id, source_id, range(40))
    store.end_session(session_id, SessionStatus.COMPLETED, None)
    return session_id


def test_snapshot_frames_equal_the_sql_frames(store: Store, session: str) -> None:
    sql_messages = read_sql(store, "messages", session_id=session)
    sql_recipients = read_sql(store, "recipients", session_id=session)
    written = refresh_snapshot(store, session)
    assert [p.name for p in written] == [f"{session}.parquet"] * 2
    assert (Path(str(store.engine.url.database)).parent / "store.sqlite.snapshot").is_dir()
    columns = list(sql_messages.columns)
    from_snapshot = read_snapshot(store, "messages", session, columns)
    assert from_snapshot is not None
    pd.testing.assert_frame_equal(from_snapshot, sql_messages)
    recipients = read_snapshot(store, "recipients", session, list(sql_recipients.columns))
    assert recipients is not None
    pd.testing.assert_frame_equal(recipients, sql_recipients)
    # the loaders: any subset of columns, in the order asked, as SQL gives it
    subset = ["sent_at_utc", "outcome", "message_row_id", "subject", "verified", "folder_role"]
    pd.testing.assert_frame_equal(
        load_messages(store, session, columns=subset), sql_messages[subset]
    )
    pd.testing.assert_frame_equal(load_recipients(store, session), sql_recipients)
    assert str(sql_messages["sent_at_utc"].dtype) == "datetime64[us, UTC]"
    assert sql_messages["outcome"].dtype == "category"


def test_loaders_write_the_snapshot_of_a_finished_session_and_then_use_it(
    store: Store, session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = snapshot_path(store, "messages", session)
    assert path is not None and not path.exists()
    first = load_messages(store, session)
    assert path.is_file()
    calls: list[tuple[str, list[str] | None]] = []
    real = load_module.read_sql

    def counting(store: Store, table: str, **kw: object) -> pd.DataFrame:
        calls.append((table, kw.get("columns")))  # type: ignore[arg-type]
        return real(store, table, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(load_module, "read_sql", counting)
    monkeypatch.setattr("pstlib.store.load.read_sql", counting)
    again = load_messages(store, session, columns=["message_row_id", "subject", "sent_at_utc"])
    assert calls == []  # no updatable column asked for: nothing read from SQL but the stamp
    pd.testing.assert_frame_equal(again, first[["message_row_id", "subject", "sent_at_utc"]])


def test_a_running_session_is_never_snapshotted(store: Store) -> None:
    session_id = store.begin_session("assess", {}, session_id="live")
    source_id = store.add_source(session_id, "box.pst", "pst", 10, None)
    _write(store, session_id, source_id, range(5))
    assert session_stamp(store, session_id) is None
    assert refresh_snapshot(store, session_id) == []
    assert len(load_messages(store, session_id)) == 5
    path = snapshot_path(store, "messages", session_id)
    assert path is not None and not path.exists()


def test_update_outcomes_after_completion_is_seen(store: Store, session: str) -> None:
    before = load_messages(store, session)  # writes the snapshot
    assert (before["outcome"] == "read").sum() > 0
    rows = before["message_row_id"].tolist()
    with store.writer(session) as writer:
        writer.update_outcomes(
            [
                {
                    "message_row_id": rows[1],
                    "outcome": "imported",
                    "dataverse_id": "d-1",
                    "verified": True,
                },
                {"message_row_id": rows[2], "outcome": "duplicate", "duplicate_of": "s0/100"},
            ]
        )
    after = load_messages(store, session)
    pd.testing.assert_frame_equal(after, read_sql(store, "messages", session_id=session))
    assert after["outcome"].iloc[1] == "imported" and after["verified"].iloc[1]
    assert after["duplicate_of"].iloc[2] == "s0/100"
    subset = load_messages(store, session, columns=["message_row_id", "outcome"])
    assert subset["outcome"].iloc[1] == "imported"


def test_rows_added_after_a_resume_invalidate_the_snapshot(store: Store, session: str) -> None:
    assert len(load_messages(store, session)) == 40
    stamp = session_stamp(store, session)
    store.resume_session(session)
    source_id = store.add_source(session, "box.pst", "pst", 10, None)
    _write(store, session, source_id, range(40, 45))
    assert len(load_messages(store, session)) == 45  # running: SQL
    store.end_session(session, SessionStatus.COMPLETED, None)
    assert session_stamp(store, session) != stamp
    messages = load_messages(store, session)
    recipients = load_recipients(store, session)
    pd.testing.assert_frame_equal(messages, read_sql(store, "messages", session_id=session))
    pd.testing.assert_frame_equal(recipients, read_sql(store, "recipients", session_id=session))
    assert len(messages) == 45 and messages["item_id"].iloc[-1] == "44"


def test_a_replaced_last_row_invalidates_the_snapshot(store: Store, session: str) -> None:
    """The writer gives a new row max(id)+1: deleting the last row and writing another reuses its
    id, with the same count; the stamp still tells them apart (``processed_at_utc``)."""
    load_messages(store, session)
    last = int(read_sql(store, "messages", session_id=session)["message_row_id"].max())
    with store.transaction() as conn:
        conn.exec_driver_sql(f"DELETE FROM recipients WHERE message_row_id = {last}")
        conn.exec_driver_sql(f"DELETE FROM messages WHERE message_row_id = {last}")
    source_id = store.add_source(session, "box.pst", "pst", 10, None)
    with store.writer(session) as writer:
        msg = _message(39)
        writer.add_message(
            source_id,
            Message(**{**msg.__dict__, "item_id": "replacement", "subject": "new"}),
            Outcome.READ,
        )
    messages = load_messages(store, session)
    assert messages["message_row_id"].iloc[-1] == last
    assert messages["subject"].iloc[-1] == "new"
    pd.testing.assert_frame_equal(messages, read_sql(store, "messages", session_id=session))
    pd.testing.assert_frame_equal(
        load_recipients(store, session), read_sql(store, "recipients", session_id=session)
    )


def test_a_damaged_or_foreign_snapshot_is_not_served(store: Store, session: str) -> None:
    expected = read_sql(store, "messages", session_id=session)
    refresh_snapshot(store, session)
    path = snapshot_path(store, "messages", session)
    assert path is not None
    path.write_bytes(b"not parquet")
    pd.testing.assert_frame_equal(load_messages(store, session), expected)
    # rewritten by that load; another session's file in its place is refused by its stamp
    other = store.begin_session("assess", {}, session_id="s2")
    store.end_session(other, SessionStatus.COMPLETED, None)
    refresh_snapshot(store, other)
    other_path = snapshot_path(store, "messages", other)
    assert other_path is not None
    path.write_bytes(other_path.read_bytes())
    pd.testing.assert_frame_equal(load_messages(store, session), expected)
    drop_snapshot(store, session)
    assert not path.exists()


def test_no_snapshots_in_memory_or_when_turned_off(tmp_path: Path) -> None:
    with Store.open("sqlite:///:memory:") as memory:
        assert snapshot_path(memory, "messages", "s") is None
    with Store.open(tmp_path / "a.sqlite") as store:
        store.use_snapshots = False
        session_id = store.begin_session("assess", {})
        store.end_session(session_id, SessionStatus.COMPLETED, None)
        assert refresh_snapshot(store, session_id) == []
        assert load_messages(store, session_id).empty
        assert not (tmp_path / "a.sqlite.snapshot").exists()
    with Store.open(tmp_path / "b.sqlite", snapshot_dir=tmp_path / "snaps") as store:
        session_id = store.begin_session("assess", {})
        store.end_session(session_id, SessionStatus.COMPLETED, None)
        assert refresh_snapshot(store, session_id)
        assert (tmp_path / "snaps" / "messages" / f"{session_id}.parquet").is_file()


def test_an_unwritable_snapshot_folder_still_loads(
    store: Store, session: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the folder would go")
    store.snapshot_dir = blocker
    assert refresh_snapshot(store, session) == []
    pd.testing.assert_frame_equal(
        load_messages(store, session), read_sql(store, "messages", session_id=session)
    )


def test_outcomes_changed_everywhere_are_seen(store: Store, session: str) -> None:
    """Every row updated: the most common outcome changes, and so does every other column."""
    before = load_messages(store, session)
    rows = before["message_row_id"].tolist()
    with store.writer(session) as writer:
        writer.update_outcomes(
            [
                {
                    "message_row_id": r,
                    "outcome": "imported" if i % 3 else "skipped",
                    "outcome_detail": None,
                    "activity_id": f"a-{i}",
                    "verified": i % 2 == 0,
                }
                for i, r in enumerate(rows)
            ]
        )
    after = load_messages(store, session)
    pd.testing.assert_frame_equal(after, read_sql(store, "messages", session_id=session))
    assert after["outcome_detail"].isna().all()
    assert (after["outcome"] == "imported").sum() == sum(1 for i in range(40) if i % 3)


def test_load_mail_gives_both_frames_under_one_stamp(store: Store, session: str) -> None:
    refresh_snapshot(store, session)
    columns = ["message_row_id", "outcome", "outcome_detail", "duplicate_of", "subject"]
    messages, recipients = load_module.load_mail(store, session, columns)
    pd.testing.assert_frame_equal(
        messages, read_sql(store, "messages", session_id=session)[columns]
    )
    pd.testing.assert_frame_equal(recipients, read_sql(store, "recipients", session_id=session))
    # one freshness check for the two frames, not one each
    calls: list[str] = []
    state = load_module.snapshot.session_state

    def counting(store: Store, session_id: str) -> object:
        calls.append(session_id)
        return state(store, session_id)

    load_module.snapshot.session_state = counting  # type: ignore[assignment]
    try:
        load_module.load_mail(store, session, columns)
    finally:
        load_module.snapshot.session_state = state
    assert calls == [session]


def test_updatable_values_set_on_a_few_rows_are_placed_on_those_rows(
    store: Store, session: str
) -> None:
    refresh_snapshot(store, session)
    ids = load_messages(store, session, columns=["message_row_id"])["message_row_id"].tolist()
    with store.writer(session) as writer:
        writer.update_outcomes(
            [
                {"message_row_id": ids[3], "outcome": "failed", "outcome_detail": "timeout"},
                {"message_row_id": ids[7], "duplicate_of": "s0/104", "verified": True},
            ]
        )
    columns = ["message_row_id", "outcome", "outcome_detail", "duplicate_of", "verified"]
    loaded = load_messages(store, session, columns=columns)
    pd.testing.assert_frame_equal(loaded, read_sql(store, "messages", session_id=session)[columns])
    assert (loaded.loc[3, "outcome"], loaded.loc[3, "outcome_detail"]) == ("failed", "timeout")
    assert (loaded.loc[7, "duplicate_of"], loaded.loc[7, "verified"]) == ("s0/104", True)


def test_load_mail_overlapping_the_stamp_check_never_serves_stale_rows(
    store: Store, session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_mail decodes the files while it asks for the stamp: fresh files are served (no SQL
    read of the rows), and a file whose stamp no longer matches, or that is damaged, is not."""
    refresh_snapshot(store, session)
    sql_reads: list[str] = []
    real_read_sql = load_module.read_sql

    def spying(store: Store, table: str, **kwargs: object) -> pd.DataFrame:
        sql_reads.append(table)
        return real_read_sql(store, table, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(load_module, "read_sql", spying)
    messages, recipients = load_module.load_mail(store, session)
    assert sql_reads == []
    pd.testing.assert_frame_equal(messages, real_read_sql(store, "messages", session_id=session))
    pd.testing.assert_frame_equal(
        recipients, real_read_sql(store, "recipients", session_id=session)
    )
    # outcomes updated on a few rows: still the files, with the current outcomes from SQL
    rows = messages["message_row_id"].tolist()
    with store.writer(session) as writer:
        writer.update_outcomes([{"message_row_id": rows[3], "outcome": "imported"}])
    messages, _ = load_module.load_mail(store, session, ["message_row_id", "outcome"])
    assert sql_reads == [] and messages["outcome"].iloc[3] == "imported"
    # rows added after a resume: both files are stale, both frames come from SQL
    store.resume_session(session)
    _write(store, session, store.add_source(session, "box.pst", "pst", 10, None), range(40, 43))
    store.end_session(session, SessionStatus.COMPLETED, None)
    messages, recipients = load_module.load_mail(store, session)
    assert sorted(sql_reads) == ["messages", "recipients"]
    assert len(messages) == 43
    pd.testing.assert_frame_equal(messages, real_read_sql(store, "messages", session_id=session))
    pd.testing.assert_frame_equal(
        recipients, real_read_sql(store, "recipients", session_id=session)
    )
    # (those loads wrote fresh files) a damaged recipients file: that frame alone from SQL
    path = snapshot_path(store, "recipients", session)
    assert path is not None
    path.write_bytes(b"not parquet")
    sql_reads.clear()
    messages, recipients = load_module.load_mail(store, session)
    assert sql_reads == ["recipients"]
    pd.testing.assert_frame_equal(
        recipients, real_read_sql(store, "recipients", session_id=session)
    )
