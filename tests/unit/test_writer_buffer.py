"""The writer's flat row buffers, its many-rows-per-statement inserts, its time format and the
lock-free cached hashes, on tiny inline data."""

from __future__ import annotations

import gc
import hashlib
import pickle
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pstlib.errors import StoreError
from pstlib.models import Address, Attachment, FolderRole, Message, Recipient, RecipientKind
from pstlib.store import Outcome, Store, load_messages, load_recipients, schema
from pstlib.store.writer import (
    _MESSAGE_WIDTH,
    ROWS_PER_STATEMENT,
    _bind_none_directly,
    _sqlite_time,
)

T0 = datetime(2025, 6, 11, 18, 6, 43, 123456, tzinfo=UTC)


def _message(i: int, recipients: int, *, named: bool = False) -> Message:
    return Message(
        source_path="a.mbox",
        item_id=str(i),
        folder_role=FolderRole.SENT,
        subject=f"s{i}",
        sender=Address(f"from{i}@example.com", "From"),
        recipients=tuple(
            Recipient(RecipientKind.CC, Address(f"r{i}.{n}@example.com", f"R {n}" if named else ""))
            for n in range(recipients)
        ),
        sent_at_utc=T0,
        headers=(("list-id", "<l.example.com>"),) if i == 1 else (),
    )


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


@settings(max_examples=25, deadline=None)
@given(
    counts=st.lists(st.integers(0, 3), min_size=0, max_size=3 * ROWS_PER_STATEMENT + 5),
    batch_rows=st.integers(1, 2 * ROWS_PER_STATEMENT + 3),
    named=st.booleans(),
)
def test_every_row_is_written_once_whatever_the_statement_boundaries(
    counts: list[int], batch_rows: int, named: bool
) -> None:
    # Full statements of ROWS_PER_STATEMENT rows, a shorter last one, and flushes anywhere
    # between: each message and recipient is stored once, each recipient with its own message,
    # and a recipient with no name is NULL (not '').
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "s.sqlite") as store:
        session_id = store.begin_session("assess", {})
        source_id = store.add_source(session_id, "a.mbox", "mbox", 1, None)
        with store.writer(session_id, batch_rows=batch_rows) as writer:
            for i, count in enumerate(counts):
                writer.add_message(source_id, _message(i, count, named=named), Outcome.READ)
        messages = load_messages(store, session_id)
        recipients = load_recipients(store, session_id)
        raw = sqlite3.connect(Path(tmp) / "s.sqlite")
        names = [r[0] for r in raw.execute("SELECT name FROM recipients")]
        raw.close()
    assert sorted(messages["item_id"], key=int) == [str(i) for i in range(len(counts))]
    assert messages["message_row_id"].is_unique
    # row ids follow the order the messages were added in
    assert list(messages.sort_values("message_row_id")["item_id"]) == [
        str(i) for i in range(len(counts))
    ]
    by_id = dict(zip(messages["message_row_id"], messages["item_id"], strict=True))
    got = sorted(
        (by_id[r], a)
        for r, a in zip(recipients["message_row_id"], recipients["address"], strict=True)
    )
    want = sorted((str(i), f"r{i}.{n}@example.com") for i, c in enumerate(counts) for n in range(c))
    assert got == want
    if named:
        assert all(n is not None and n.startswith("R ") for n in names)
    else:
        assert names == [None] * len(names)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), None]),
    )
)
def test_sqlite_time_is_the_format_sqlalchemy_stores(value: datetime) -> None:
    # SQLAlchemy's SQLite DATETIME: "YYYY-MM-DD HH:MM:SS.ffffff", in UTC for an aware value
    as_utc = value.astimezone(UTC) if value.tzinfo is not None else value
    assert _sqlite_time(value) == as_utc.replace(tzinfo=None).isoformat(" ", "microseconds")
    assert _sqlite_time(None) is None


def test_none_still_binds_as_null_with_the_fast_adapter() -> None:
    _bind_none_directly()
    _bind_none_directly()  # idempotent
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a, b)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(None, 1), ("", None)])
    assert conn.execute("SELECT a IS NULL, b IS NULL FROM t ORDER BY rowid").fetchall() == [
        (1, 0),
        (0, 1),
    ]
    conn.close()


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


@pytest.mark.skipif(
    sys.implementation.name != "cpython", reason="CPython's inline attribute arrays"
)
def test_hashing_a_record_gives_it_no_dict_of_its_own() -> None:
    """Caching the three hashes makes no container per record: a writer holding 100k records
    would otherwise pay full garbage collections over all of them (a third of its time)."""
    records = [_message(i, 2) for i in range(2000)]
    records[0].hashes()  # anything made once, on first use, is not made per record
    gc.disable()
    try:
        before = gc.get_count()[0]
        hashes = [msg.hashes() for msg in records]
        made = gc.get_count()[0] - before
    finally:
        gc.enable()
    # The result tuples, plus the odd container the interpreter makes for itself (the list
    # growing, a frame): a dict per record would make two containers per record.
    assert made < len(records) * 3 // 2
    del hashes
    msg = records[7]
    assert msg.hashes() == (msg.dedupe_key, msg.content_sha256, msg.body_sha256)
    assert msg.__dict__["dedupe_key"] == msg.dedupe_key  # still what __dict__ readers see
    copy = pickle.loads(pickle.dumps(msg))  # and they travel with a pickled record
    assert copy.__dict__["content_sha256"] == msg.content_sha256


def test_a_cached_hash_is_computed_once() -> None:
    msg = _message(3, 1)
    assert msg.dedupe_key.startswith("sha:")
    object.__setattr__(msg, "body_sha256", "planted")  # a cached value is never recomputed
    assert msg.body_sha256 == "planted"
    assert msg.hashes()[2] == "planted"


# -- the plain-values path (what the collector's writer process takes) --------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_address = st.builds(
    Address, st.from_regex(r"[a-z]{1,6}@[a-z]{1,5}\.(com|org)", fullmatch=True), _text
)
_time = st.none() | st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30)), None]),
)
_messages = st.builds(
    Message,
    source_path=st.just("a.pst"),
    item_id=st.uuids().map(str),
    folder_path=_text,
    folder_role=st.sampled_from(FolderRole),
    message_class=st.sampled_from(["IPM.Note", "IPM.Schedule.Meeting.Request", "IPM.Contact"]),
    internet_message_id=st.none() | _text.map(lambda t: f"<{t}@x>"),
    in_reply_to=st.none() | _text,
    references=st.lists(_text, max_size=2).map(tuple),
    conversation_topic=st.none() | _text,
    subject=_text,
    sender=st.none() | _address,
    recipients=st.lists(
        st.builds(Recipient, st.sampled_from(RecipientKind), _address), max_size=3
    ).map(tuple),
    sent_at_utc=_time,
    received_at_utc=_time,
    size_bytes=st.integers(0, 2**40),
    attachments=st.lists(st.builds(Attachment, _text, st.integers(0, 2**31)), max_size=2).map(
        tuple
    ),
    body=st.text(max_size=40).filter(lambda b: "\ud800" not in b),
    importance=st.integers(0, 2),
    headers=st.lists(
        st.tuples(st.sampled_from(["list-id", "precedence", "auto-submitted", "x-other"]), _text),
        max_size=3,
    ).map(tuple),
)


@settings(max_examples=40, deadline=None)
@given(
    messages=st.lists(_messages, min_size=1, max_size=6, unique_by=lambda m: m.item_id),
    cached=st.sampled_from(["none", "dedupe_key", "content_sha256"]),
    outcome=st.sampled_from(Outcome),
    direction=st.sampled_from([None, "incoming", "outgoing"]),
    batch_rows=st.integers(1, 4),
)
def test_plain_values_store_the_same_rows_as_the_records(
    messages: list[Message], cached: str, outcome: Outcome, direction: str | None, batch_rows: int
) -> None:
    # Each message written once through add_message and once through add_message_values (what
    # the writer process does with what the collector ships, via marshal): every stored cell
    # but the session, the row id and the processing time is the same, hashes included, whether
    # the record had its hashes cached (the importer's dedupe, a reader worker) or not.
    from pstlib.importer.collector import pack_entries, unpack_chunk
    from pstlib.store.writer import message_values

    if cached != "none":
        for msg in messages:
            getattr(msg, cached)
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "s.sqlite") as store:
        by_record = store.begin_session("assess", {})
        by_values = store.begin_session("assess", {})
        source_a = store.add_source(by_record, "a.pst", "pst", 1, None)
        source_b = store.add_source(by_values, "a.pst", "pst", 1, None)
        shipped = [
            message_values(source_b, m, outcome, "why", direction, "dup", "act", "dv")
            for m in messages
        ]
        rows, _ = unpack_chunk(pack_entries(shipped))
        with store.writer(by_values, batch_rows=batch_rows) as writer:
            writer.add_message_values(rows)
        assert writer.rows_written == len(messages)
        with store.writer(by_record, batch_rows=batch_rows) as writer:
            for m in messages:
                writer.add_message(
                    source_a,
                    m,
                    outcome,
                    "why",
                    direction=direction,
                    duplicate_of="dup",
                    activity_id="act",
                    dataverse_id="dv",
                )
        raw = sqlite3.connect(Path(tmp) / "s.sqlite")
        skip = {"message_row_id", "session_id", "source_id", "processed_at_utc"}
        names = [c.name for c in schema.messages.columns if c.name not in skip]
        select = ", ".join(f'"{n}"' for n in names)
        got = {
            session: raw.execute(
                f"SELECT {select} FROM messages WHERE session_id = ? ORDER BY message_row_id",
                (session,),
            ).fetchall()
            for session in (by_record, by_values)
        }
        recipients = {
            session: raw.execute(
                "SELECT m.item_id, r.kind, r.address, r.name FROM recipients r JOIN messages m "
                "USING (message_row_id) WHERE m.session_id = ? ORDER BY r.rowid",
                (session,),
            ).fetchall()
            for session in (by_record, by_values)
        }
        raw.close()
    assert got[by_values] == got[by_record]
    assert recipients[by_values] == recipients[by_record]
    # and the hashes are the records' own
    hashes = [
        (r[names.index("dedupe_key")], r[names.index("content_sha256")]) for r in got[by_record]
    ]
    assert hashes == [(m.dedupe_key, m.content_sha256) for m in messages]


def test_plain_values_with_a_bad_outcome_or_direction_are_refused(tmp_path: Path) -> None:
    from pstlib.store.writer import message_values

    with Store.open(tmp_path / "s.sqlite") as store:
        session_id = store.begin_session("assess", {})
        source_id = store.add_source(session_id, "a.mbox", "mbox", 1, None)
        writer = store.writer(session_id)
        good = message_values(source_id, _message(1, 1), Outcome.READ)
        with pytest.raises(StoreError, match="unknown outcome"):
            writer.add_message_values([good, message_values(source_id, _message(2, 0), "lost")])
        bad_direction = message_values(source_id, _message(3, 0), Outcome.READ, None, "up")
        with pytest.raises(StoreError, match="unknown direction"):
            writer.add_message_values([bad_direction])
        writer.flush()  # the good row before the bad one was buffered
        assert load_messages(store, session_id)["item_id"].tolist() == ["1"]


def test_hashes_come_from_the_plain_value_functions() -> None:
    from pstlib.models import body_sha256_of, content_sha256_of, dedupe_key_of

    msg = _message(4, 3)
    key, content, body = msg.hashes()
    assert (key, content, body) == (msg.dedupe_key, msg.content_sha256, msg.body_sha256)
    assert body == body_sha256_of("")
    addresses = [r.address.address for r in reversed(msg.recipients)]  # any order
    assert content == content_sha256_of("from4@example.com", T0.isoformat(), addresses, "s4", body)
    assert dedupe_key_of(" <Ab@X> ", content) == "mid:ab@x"
    assert dedupe_key_of(None, content) == key


@given(
    address=st.text(max_size=30),
    name=st.text(max_size=30),
    kind=st.sampled_from(list(RecipientKind)),
    data=st.none() | st.binary(max_size=40),
)
def test_records_pickle_to_equal_records(
    address: str, name: str, kind: RecipientKind, data: bytes | None
) -> None:
    # Reader processes send records pickled: the slotted ones pickle as constructor calls
    # (dataclasses' own state functions were two thirds of the unpickling)
    sender = Address(address, name, f"{name} <{address}>")
    msg = Message(
        source_path="a.pst",
        item_id="1",
        sender=sender,
        recipients=(Recipient(kind, Address(address.upper())),),
        attachments=(Attachment(name or "x", len(data or b""), "text/plain", data),),
    )
    _ = msg.dedupe_key
    copy = pickle.loads(pickle.dumps(msg, pickle.HIGHEST_PROTOCOL))
    assert copy == msg and copy.dedupe_key == msg.dedupe_key
    assert type(copy.sender) is Address and copy.recipients[0].kind is kind
    assert copy.attachments[0].data == data
