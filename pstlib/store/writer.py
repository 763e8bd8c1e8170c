"""The batched writer: message rows (with their recipients), errors, contacts, batches and metrics.

Rows are turned into flat cells as they are added and inserted with ``executemany`` on the raw
DBAPI cursor, many rows to a statement (``INSERT ... VALUES (...), (...), ...``: the per-statement
cost of the driver and of SQLite's virtual machine is paid once per :data:`ROWS_PER_STATEMENT`
rows, not per row), one transaction per :meth:`MessageWriter.flush` (never one commit per
message). A flush
commits or raises :class:`~pstlib.errors.StoreError` (the driver's error as its cause); the rows of
a failed flush are dropped, not retried.

Recipients point at their message's ``message_row_id``, which the writer allocates inside the flush
transaction: on SQLite from ``max(message_row_id)`` under the write lock (``BEGIN IMMEDIATE``), on
PostgreSQL from the column's sequence (``nextval``), so concurrent writers never collide.

Messages come in two ways, to the same rows: as records (:meth:`MessageWriter.add_message`: a
scan, a reconcile) or as plain values (:func:`message_values`,
:meth:`MessageWriter.add_message_values`: what the collector ships to its writer process, which
then needs no ``Message`` rebuilt). The hashes are defined once, in :mod:`pstlib.models`, for
both.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from sqlalchemy import Table

from pstlib.errors import SourceError, StoreError
from pstlib.models import (
    FolderRole,
    Message,
    RecipientKind,
    body_sha256_of,
    content_sha256_of,
    dedupe_key_of,
    kind_of_class,
)
from pstlib.store import schema
from pstlib.store.schema import Outcome

if TYPE_CHECKING:
    from pstlib.store.db import Store

log = logging.getLogger(__name__)

DIRECTIONS = ("outgoing", "incoming")
CONTACT_ACTIONS = ("matched", "created", "failed", "skipped")
UPDATABLE = ("outcome", "outcome_detail", "duplicate_of", "activity_id", "dataverse_id", "verified")
_LIST_HEADERS = ("list-id", "list-unsubscribe", "auto-submitted", "precedence")
_OUTCOMES = {o.value: o.value for o in Outcome}
_ROLES = {r: r.value for r in FolderRole}  # enum -> plain str: no .value look-up per row
_RECIPIENT_KINDS = {k: k.value for k in RecipientKind}
_MESSAGE_WIDTH = len(schema.messages.columns)
_RECIPIENT_WIDTH = len(schema.recipients.columns)
_SQLITE_TIME = "%04d-%02d-%02d %02d:%02d:%02d.%06d"
_NO_HEADERS: tuple[str | None, ...] = (None, None, None, None)
_DIRECTION_SET = frozenset(DIRECTIONS)
_STAMP_S = 0.01  # processed_at_utc is formatted at most once per this many seconds
# Rows per INSERT statement: past ~25 the gain flattens, and 37 columns x 25 rows stays below
# the 999 bound values of SQLite before 3.32 (later ones allow 32,766, PostgreSQL 65,535).
ROWS_PER_STATEMENT = 25


def _sqlite_time(value: datetime | None) -> str | None:
    """UTC as SQLAlchemy's SQLite DATETIME stores it: ``YYYY-MM-DD HH:MM:SS.ffffff``.

    Formatted with ``%`` from the fields: about half the cost of ``isoformat`` with a timespec,
    and a message has two of them.
    """
    if value is None:
        return None
    if value.tzinfo is not None and value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return _SQLITE_TIME % (
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
    )


def _bind_none_directly() -> None:
    """Make Python's sqlite3 bind ``None`` through a registered adapter (once per process).

    Why: sqlite3 (3.11) adapts every value that is not an exact int, float, str or bytearray
    before binding it; for ``None`` with no adapter registered that is a registry miss and two
    attribute look-ups, about 0.3 µs, and a message row has a dozen or more NULL cells. With an
    adapter that returns ``None`` (``{}.get``, a C call) the value is still bound as NULL, at a
    third of the cost. No other value changes.
    """
    key = (type(None), sqlite3.PrepareProtocol)
    if key not in sqlite3.adapters:
        returns_none: dict[None, None] = {}
        sqlite3.register_adapter(type(None), cast("Callable[[None], None]", returns_none.get))


def _aware_time(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _list_headers(headers: Sequence[tuple[str, str]]) -> tuple[str | None, ...]:
    """``(list_id, list_unsubscribe, auto_submitted, precedence)``: each header's first value."""
    found: dict[str, str] = {}
    for key, value in headers:
        if key in _LIST_HEADERS and key not in found:
            found[key] = value
    if not found:
        return (None, None, None, None)
    get = found.get
    return (get("list-id"), get("list-unsubscribe"), get("auto-submitted"), get("precedence"))


# -- a message as plain values (what the collector ships to its writer process) ----------------

MESSAGE_VALUE_FIELDS = (
    "item_id",
    "internet_message_id",
    "in_reply_to",
    "references",
    "conversation_topic",
    "conversation_index",
    "subject",
    "size_bytes",
    "message_class",
    "importance",
    "folder_path",
    "headers",
)
"""The :class:`Message` fields a message's values carry as they are (strings, numbers, tuples)."""
message_fields = attrgetter(*MESSAGE_VALUE_FIELDS)
sender_parts = attrgetter("address", "name")
recipient_parts = attrgetter("kind._value_", "address.address", "address.name")
attachment_size = attrgetter("size_bytes")
# datetime(state_bytes, tzinfo): how pickle rebuilds one (typeshed knows only the fields form)
_from_state = cast("Callable[[bytes, Any], datetime]", datetime)
_from_iso = datetime.fromisoformat


def shipped_time(value: datetime | None) -> bytes | str | None:
    """A timestamp as a plain value that :mod:`marshal` writes, cheaply and exactly.

    A UTC ``datetime`` (what sources yield) becomes its 10-byte pickle state (``__reduce__``:
    a tenth of the cost of ``isoformat``; the format is fixed, since pickles of any Python
    version must load); any other (naive, another offset, a subclass) its ``isoformat()``, from
    which the writer rebuilds the same value and offset. :meth:`MessageWriter.add_message_values`
    takes either.
    """
    if value is None:
        return None
    if value.__class__ is datetime and value.tzinfo is UTC:
        reduced: Any = value.__reduce__()  # (datetime, (state, tzinfo))
        state: bytes = reduced[1][0]
        return state
    return value.isoformat()


def message_values(
    source_id: int,
    msg: Message,
    outcome: Outcome | str,
    detail: str | None = None,
    direction: str | None = None,
    duplicate_of: str | None = None,
    activity_id: str | None = None,
    dataverse_id: str | None = None,
) -> tuple[Any, ...]:
    """One message's row as plain values: what :meth:`MessageWriter.add_message_values` takes.

    Why: the collector ships rows to a writer process; plain values (strings, numbers, bytes,
    tuples of them) cross with :mod:`marshal`, and the writer builds the row from them without
    rebuilding a ``Message`` (about 6 us each). The layout: ``source_id, outcome, detail,
    direction, duplicate_of, activity_id, dataverse_id``, the :data:`MESSAGE_VALUE_FIELDS`
    as one tuple, the folder role, sent and received (:func:`shipped_time`), the sender's
    ``(address, name)`` or None, the recipients' ``(kind, address, name)``, the attachments'
    sizes, the dedupe key, content hash and body hash where the record has them cached (else
    None: the writer computes them), and the body (None when its hash travels instead).
    :meth:`pstlib.importer.collector.Collector.message` inlines this function (its hot path).
    """
    state = msg.__dict__
    body_sha256 = state.get("body_sha256")
    attachments = msg.attachments
    sender = msg.sender
    return (
        source_id,
        _OUTCOMES.get(outcome, outcome),  # an unknown one is refused by the writer
        detail,
        direction,
        duplicate_of,
        activity_id,
        dataverse_id,
        message_fields(msg),
        msg.folder_role._value_,
        shipped_time(msg.sent_at_utc),
        shipped_time(msg.received_at_utc),
        None if sender is None else sender_parts(sender),
        tuple(map(recipient_parts, msg.recipients)),
        tuple(map(attachment_size, attachments)) if attachments else (),
        state.get("dedupe_key"),
        state.get("content_sha256"),
        body_sha256,
        msg.body if body_sha256 is None else None,
    )


def _insert_sql(
    store: Store,
    table: Table,
    suffix: str = "",
    *,
    with_key: bool = True,
    rows: int = 1,
    nullable_last: bool = False,
) -> str:
    """``INSERT`` of every column in table order (without a generated key unless ``with_key``),
    ``rows`` rows to the statement.

    ``nullable_last``: the last column is bound as ``''`` for NULL and turned back into NULL by
    ``NULLIF`` (why: Python's sqlite3 binds ``None`` through its adapter protocol, several
    times slower than a string; only for a column where ``''`` is never a value of its own).
    """
    dialect = store.engine.dialect
    quote = dialect.identifier_preparer.quote
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    columns = [c for c in table.columns if with_key or not c.primary_key]
    names = ", ".join(quote(c.name) for c in columns)
    marks = [mark] * len(columns)
    if nullable_last:
        marks[-1] = f"NULLIF({mark}, '')"
    values = ", ".join(["(" + ", ".join(marks) + ")"] * rows)
    return f"INSERT INTO {table.name} ({names}) VALUES {values}{suffix}"


def _insert_many(cursor: Any, sql_of: Callable[[int], str], cells: list[Any], width: int) -> None:
    """Insert the rows of a flat buffer, :data:`ROWS_PER_STATEMENT` rows to a statement.

    ``sql_of(n)`` is the ``INSERT`` of ``n`` rows. The full statements go to one
    ``executemany`` (each parameter list a slice of the buffer); the rest, fewer rows, to one
    ``execute``.
    """
    step = width * ROWS_PER_STATEMENT
    full = len(cells) - len(cells) % step
    if full:
        cursor.executemany(
            sql_of(ROWS_PER_STATEMENT), (cells[s : s + step] for s in range(0, full, step))
        )
    if full < len(cells):
        cursor.execute(sql_of((len(cells) - full) // width), cells[full:])


def _statements(make: Callable[[int], str]) -> Callable[[int], str]:
    """``make(n)`` remembered for each ``n`` (a writer builds each statement once)."""
    cache: dict[int, str] = {}

    def sql_of(rows: int) -> str:
        sql = cache.get(rows)
        if sql is None:
            sql = cache[rows] = make(rows)
        return sql

    return sql_of


class MessageWriter:
    """Buffers rows for one session and writes them in batches. Use as a context manager.

    Leaving the ``with`` block flushes what is buffered, also when the block raised (what was read
    before a stop is recorded); a failing flush then raises with the block's error as context.
    """

    def __init__(self, store: Store, session_id: str, *, batch_rows: int = 20_000) -> None:
        if batch_rows < 1:
            raise StoreError(f"batch_rows must be at least 1, not {batch_rows}")
        self.store = store
        self.session_id = session_id
        self.batch_rows = batch_rows
        self.rows_written = 0  # message rows committed by this writer
        sqlite = store.is_sqlite
        self._sqlite = sqlite
        if sqlite:
            _bind_none_directly()
        self._time: Callable[[datetime | None], Any] = _sqlite_time if sqlite else _aware_time
        self._stamp: Any = None  # processed_at_utc as stored, re-formatted every _STAMP_S
        self._stamp_until = 0.0
        # Rows are kept flat, _MESSAGE_WIDTH (_RECIPIENT_WIDTH) cells each, in one list per table:
        # no container object per row that the garbage collector would count and traverse. A
        # message row's first cell (the message_row_id) is filled in at flush; a recipient row's
        # first cell is the index of its message in this buffer until then.
        self._messages: list[Any] = []
        self._recipients: list[Any] = []  # index in _messages, kind, address, name; ...
        self._kinds: dict[str, str] = {}  # message_class -> item_kind
        self._errors: list[tuple[Any, ...]] = []
        self._contacts: dict[str, tuple[Any, ...]] = {}
        self._batches: list[tuple[Any, ...]] = []
        self._metrics: list[tuple[Any, ...]] = []
        self._pending = 0
        mark = "?" if store.engine.dialect.paramstyle == "qmark" else "%s"
        self._sql_messages = _statements(lambda n: _insert_sql(store, schema.messages, rows=n))
        # a recipient's name (its last column) is bound as '' for none: see _insert_sql
        self._sql_recipients = _statements(
            lambda n: _insert_sql(store, schema.recipients, rows=n, nullable_last=True)
        )
        self._sql_errors = _insert_sql(store, schema.errors, with_key=False)
        self._sql_batches = _insert_sql(store, schema.batches, with_key=False)
        self._sql_metrics = _insert_sql(store, schema.metrics)
        self._sql_contacts = _insert_sql(
            store,
            schema.contacts,
            with_key=False,
            suffix=" ON CONFLICT (session_id, address) DO UPDATE SET name = excluded.name, "
            "action = excluded.action, detail = excluded.detail, "
            "dataverse_id = excluded.dataverse_id, at_utc = excluded.at_utc",
        )
        self._sql_max_row_id = "SELECT COALESCE(MAX(message_row_id), 0) FROM messages"
        self._sql_next_ids = (
            "SELECT nextval(pg_get_serial_sequence('messages', 'message_row_id')) "
            f"FROM generate_series(1, {mark})"
        )

    # -- context manager ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.flush()
        except Exception as err:
            if exc is not None:
                err.__context__ = exc
            raise

    def close(self) -> None:
        """Flush what is buffered."""
        self.flush()

    # -- adding rows ----------------------------------------------------------------------------

    def add_message(
        self,
        source_id: int,
        msg: Message,
        outcome: Outcome | str,
        detail: str | None = None,
        *,
        direction: str | None = None,
        duplicate_of: str | None = None,
        activity_id: str | None = None,
        dataverse_id: str | None = None,
    ) -> None:
        """Buffer one message's row (and its recipients' rows)."""
        try:
            outcome_value = _OUTCOMES[outcome]
        except KeyError:
            raise StoreError(
                f"unknown outcome {outcome!r} (valid: {', '.join(_OUTCOMES)})"
            ) from None
        if direction is not None and direction not in DIRECTIONS:
            raise StoreError(f"unknown direction {direction!r} (valid: {', '.join(DIRECTIONS)})")
        headers = msg.headers
        list_id, list_unsubscribe, auto_submitted, precedence = (
            _list_headers(headers) if headers else _NO_HEADERS
        )
        sender = msg.sender
        attachments = msg.attachments
        to_cell = self._time
        now = time.monotonic()
        if now >= self._stamp_until:  # one formatted processed_at per _STAMP_S, not per row
            self._stamp = to_cell(datetime.now(UTC))
            self._stamp_until = now + _STAMP_S
        message_class = msg.message_class
        kind = self._kinds.get(message_class)
        if kind is None:
            kind = self._kinds[message_class] = msg.kind.value
        dedupe_key, content_sha256, body_sha256 = msg.hashes()
        references = msg.references
        messages = self._messages
        index = len(messages) // _MESSAGE_WIDTH
        messages.extend(
            (
                None,  # message_row_id: allocated at flush
                self.session_id,
                source_id,
                msg.item_id,
                dedupe_key,
                msg.internet_message_id,
                msg.in_reply_to,
                " ".join(references) if references else None,
                msg.conversation_topic,
                msg.conversation_index,
                msg.subject,
                sender.address if sender else None,
                (sender.name or None) if sender else None,
                to_cell(msg.sent_at_utc),
                to_cell(msg.received_at_utc),
                msg.size_bytes,
                len(attachments),
                sum(a.size_bytes for a in attachments) if attachments else 0,
                body_sha256,
                content_sha256,
                message_class,
                kind,
                msg.importance,
                msg.folder_path,
                _ROLES[msg.folder_role],
                direction,
                list_id,
                list_unsubscribe,
                auto_submitted,
                precedence,
                outcome_value,
                detail,
                duplicate_of,
                activity_id,
                dataverse_id,
                None,  # verified
                self._stamp,
            )
        )
        if msg.recipients:
            extend = self._recipients.extend
            kinds = _RECIPIENT_KINDS
            for r in msg.recipients:
                address = r.address
                extend((index, kinds[r.kind], address.address, address.name))
        self._pending += 1  # _added(), inlined
        if self._pending >= self.batch_rows:
            self.flush()

    def add_message_values(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Buffer messages given as plain values (:func:`message_values`), in order.

        The same rows as :meth:`add_message` would buffer for the records, flushing whenever
        ``batch_rows`` are pending. Why a second way in: the collector's writer process receives
        plain values; rebuilding a ``Message`` from them costs more than building the row. A row
        with a bad outcome or direction raises StoreError; the rows before it stay buffered.
        """
        done, count = 0, len(rows)
        while done < count:
            room = max(1, self.batch_rows - self._pending)
            part = rows[done : done + room] if done or count > room else rows
            self._buffer_values(part)
            done += len(part)
            if self._pending >= self.batch_rows:
                self.flush()

    def _buffer_values(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """:meth:`add_message_values` for at most the rows that fit before the next flush."""
        outcomes, directions, kinds = _OUTCOMES, _DIRECTION_SET, self._kinds
        to_cell, sqlite = self._time, self._sqlite
        from_state, from_iso = _from_state, _from_iso
        session_id = self.session_id
        messages, add_recipient = self._messages, self._recipients.extend
        index = len(messages) // _MESSAGE_WIDTH
        add = messages.extend
        now = time.monotonic()
        if now >= self._stamp_until:
            self._stamp = to_cell(datetime.now(UTC))
            self._stamp_until = now + _STAMP_S
        stamp = self._stamp
        for row in rows:
            (
                source_id,
                outcome,
                detail,
                direction,
                duplicate_of,
                activity_id,
                dataverse_id,
                fields,
                role,
                sent,
                received,
                sender,
                recipients,
                sizes,
                dedupe_key,
                content_sha256,
                body_sha256,
                body,
            ) = row
            if outcome not in outcomes:
                raise StoreError(f"unknown outcome {outcome!r} (valid: {', '.join(outcomes)})")
            if direction is not None and direction not in directions:
                raise StoreError(
                    f"unknown direction {direction!r} (valid: {', '.join(DIRECTIONS)})"
                )
            (
                item_id,
                internet_message_id,
                in_reply_to,
                references,
                topic,
                conversation_index,
                subject,
                size_bytes,
                message_class,
                importance,
                folder_path,
                headers,
            ) = fields
            # the shipped times back as datetimes: from a UTC state or an ISO text
            sent_at = (
                from_state(sent, UTC)
                if sent.__class__ is bytes
                else (None if sent is None else from_iso(sent))
            )
            received_at = (
                from_state(received, UTC)
                if received.__class__ is bytes
                else (None if received is None else from_iso(received))
            )
            if body_sha256 is None:
                body_sha256 = body_sha256_of(body)
            if content_sha256 is None:
                content_sha256 = content_sha256_of(
                    sender[0] if sender else "",
                    "" if sent_at is None else sent_at.isoformat(),
                    [r[1] for r in recipients],
                    subject,
                    body_sha256,
                )
            if dedupe_key is None:
                dedupe_key = dedupe_key_of(internet_message_id, content_sha256)
            kind = kinds.get(message_class)
            if kind is None:
                kind = kinds[message_class] = kind_of_class(message_class).value
            add(
                (
                    None,  # message_row_id: allocated at flush
                    session_id,
                    source_id,
                    item_id,
                    dedupe_key,
                    internet_message_id,
                    in_reply_to,
                    " ".join(references) if references else None,
                    topic,
                    conversation_index,
                    subject,
                    sender[0] if sender else None,
                    (sender[1] or None) if sender else None,
                    _sqlite_time(sent_at) if sqlite else _aware_time(sent_at),
                    _sqlite_time(received_at) if sqlite else _aware_time(received_at),
                    size_bytes,
                    len(sizes),
                    sum(sizes) if sizes else 0,
                    body_sha256,
                    content_sha256,
                    message_class,
                    kind,
                    importance,
                    folder_path,
                    role,
                    direction,
                    *(_list_headers(headers) if headers else _NO_HEADERS),
                    outcomes[outcome],
                    detail,
                    duplicate_of,
                    activity_id,
                    dataverse_id,
                    None,  # verified
                    stamp,
                )
            )
            for kind_value, address, name in recipients:
                add_recipient((index, kind_value, address, name))
            index += 1
            self._pending += 1

    def add_error(
        self,
        stage: str,
        err: SourceError | BaseException,
        *,
        source_id: int | None = None,
        item: str | None = None,
    ) -> None:
        """Buffer one error: a :class:`SourceError`'s fields, or any exception's type and text."""
        if isinstance(err, SourceError):
            code, file, folder, cause = err.code, err.file, err.folder, err.cause
            item = item if item is not None else err.item
        else:
            code, file, folder = type(err).__name__, None, None
            cause = str(err) or repr(err)
        self._errors.append(
            (
                self.session_id,
                source_id,
                None,  # message_row_id
                stage,
                code,
                file,
                folder,
                item,
                cause,
                self._time(datetime.now(UTC)),
            )
        )
        self._added()

    def add_metric(self, name: str, value: float, labels: Mapping[str, Any] | None = None) -> None:
        """Buffer one sample of a live metric (``messages_read``, ``rss_bytes``...)."""
        labels_json = json.dumps(dict(labels), sort_keys=True) if labels else None
        self._metrics.append(
            (self.session_id, self._time(datetime.now(UTC)), name, float(value), labels_json)
        )
        self._added()

    def add_contact(
        self,
        address: str,
        action: str,
        *,
        name: str | None = None,
        detail: str | None = None,
        dataverse_id: str | None = None,
    ) -> None:
        """Buffer what happened to one contact; the latest word on an address in a session wins."""
        if action not in CONTACT_ACTIONS:
            raise StoreError(
                f"unknown contact action {action!r} (valid: {', '.join(CONTACT_ACTIONS)})"
            )
        self._contacts[address] = (
            self.session_id,
            address,
            name,
            action,
            detail,
            dataverse_id,
            self._time(datetime.now(UTC)),
        )
        self._added()

    def add_batch(
        self,
        started_at_utc: datetime,
        duration_s: float,
        operations: int,
        succeeded: int,
        failed: int,
        *,
        attempt: int = 1,
        http_status: int | None = None,
        limit_code: str | None = None,
        retry_after_s: float | None = None,
        request_bytes: int | None = None,
    ) -> None:
        """Buffer one request to the target ($batch or single), with its throttling answer."""
        self._batches.append(
            (
                self.session_id,
                self._time(started_at_utc),
                float(duration_s),
                operations,
                succeeded,
                failed,
                attempt,
                http_status,
                limit_code,
                retry_after_s,
                request_bytes,
            )
        )
        self._added()

    def _added(self) -> None:
        self._pending += 1
        if self._pending >= self.batch_rows:
            self.flush()

    # -- writing --------------------------------------------------------------------------------

    @property
    def pending_rows(self) -> int:
        return self._pending

    def flush(self) -> None:
        """Write everything buffered in one transaction: it commits, or raises StoreError."""
        if not self._pending:
            return
        messages, recipients = self._messages, self._recipients
        errors, contacts = self._errors, list(self._contacts.values())
        batches, metrics = self._batches, self._metrics
        # The rows of a failed flush are not retried: a bad row would fail every later flush.
        self._messages, self._recipients, self._errors = [], [], []
        self._contacts, self._batches, self._metrics = {}, [], []
        self._pending = 0
        started = time.perf_counter()
        message_count = len(messages) // _MESSAGE_WIDTH

        def write(cursor: Any) -> None:
            if messages:
                ids = self._allocate_ids(cursor, message_count)
                messages[::_MESSAGE_WIDTH] = ids
                _insert_many(cursor, self._sql_messages, messages, _MESSAGE_WIDTH)
                if recipients:
                    recipients[::_RECIPIENT_WIDTH] = [
                        ids[i] for i in recipients[::_RECIPIENT_WIDTH]
                    ]
                    _insert_many(cursor, self._sql_recipients, recipients, _RECIPIENT_WIDTH)
            for sql, rows in (
                (self._sql_errors, errors),
                (self._sql_contacts, contacts),
                (self._sql_batches, batches),
                (self._sql_metrics, metrics),
            ):
                if rows:
                    cursor.executemany(sql, rows)

        self._run(write, f"{message_count} message row(s)")
        self.rows_written += message_count
        log.debug(
            "flushed %d messages, %d recipients in %.3fs",
            message_count,
            len(recipients) // _RECIPIENT_WIDTH,
            time.perf_counter() - started,
        )

    def _allocate_ids(self, cursor: Any, count: int) -> list[int]:
        if self.store.is_sqlite:
            cursor.execute(self._sql_max_row_id)
            first = int(cursor.fetchone()[0]) + 1
            return list(range(first, first + count))
        cursor.execute(self._sql_next_ids, (count,))
        return [int(r[0]) for r in cursor.fetchall()]

    def _run(self, work: Callable[[Any], None], what: str) -> None:
        """Run ``work(cursor)`` in one transaction on a raw DBAPI connection: commit or raise."""
        raw = self.store.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                if self.store.is_sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                work(cursor)
                raw.commit()
            except BaseException as err:
                raw.rollback()
                if isinstance(err, Exception) and not isinstance(err, StoreError):
                    raise StoreError(
                        f"writing {what} of session {self.session_id} to {self.store.url} "
                        f"failed: {err}"
                    ) from err
                raise
            finally:
                cursor.close()
        finally:
            raw.close()

    def update_outcomes(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Set outcome, dataverse_id, activity_id, verified... of recorded messages, in bulk.

        Each row names its message by ``message_row_id``, or by ``source_id`` and ``item_id`` in
        this writer's session, and carries any of ``outcome``, ``outcome_detail``,
        ``duplicate_of``, ``activity_id``, ``dataverse_id``, ``verified``. Buffered rows are
        flushed first. Every row must match a message, else nothing is changed and StoreError is
        raised. Returns the number of messages updated.
        """
        self.flush()
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[tuple[Any, ...]]] = {}
        for row in rows:
            keys: tuple[str, ...]
            if "message_row_id" in row:
                keys = ("message_row_id",)
            elif "source_id" in row and "item_id" in row:
                keys = ("session_id", "source_id", "item_id")
            else:
                raise StoreError(
                    f"update names no message (message_row_id, or source_id+item_id): {row}"
                )
            values = tuple(c for c in UPDATABLE if c in row)
            unknown = set(row) - set(UPDATABLE) - {"message_row_id", "source_id", "item_id"}
            if unknown or not values:
                raise StoreError(
                    f"cannot update {sorted(unknown) or 'nothing'} "
                    f"(updatable: {', '.join(UPDATABLE)})"
                )
            if "outcome" in row and row["outcome"] not in _OUTCOMES:
                raise StoreError(f"unknown outcome {row['outcome']!r}")
            params = [row[c] for c in values]
            params += [self.session_id if k == "session_id" else row[k] for k in keys]
            groups.setdefault((values, keys), []).append(tuple(params))
        if not groups:
            return 0
        dialect = self.store.engine.dialect
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        expected = len(rows)
        updated = 0

        def write(cursor: Any) -> None:
            nonlocal updated
            for (values, keys), params in groups.items():
                sets = ", ".join(f"{c} = {mark}" for c in values)
                where = " AND ".join(f"{k} = {mark}" for k in keys)
                cursor.executemany(f"UPDATE messages SET {sets} WHERE {where}", params)
                updated += max(cursor.rowcount, 0)
            if updated != expected:
                raise StoreError(
                    f"{expected - updated} of {expected} outcome update(s) matched no message "
                    f"in session {self.session_id}"
                )

        self._run(write, f"{expected} outcome update(s)")
        return updated


def measure_write_rate(
    n: int = 100_000, path: str | Path | None = None, *, batch_rows: int = 20_000
) -> float:
    """Message rows per second that :class:`MessageWriter` writes to a fresh SQLite store.

    Builds ``n`` varied messages first (two recipients each, half with a Message-ID), then times
    ``add_message`` for all of them and the final flush: the cost the importer pays per message.
    """
    from pstlib.models import Address, FolderRole, Recipient, RecipientKind
    from pstlib.store.db import Store

    start = datetime(2024, 1, 1, tzinfo=UTC)
    messages = [
        Message(
            source_path="bench.pst",
            item_id=str(i),
            folder_path="Top/Inbox",
            folder_role=FolderRole.INBOX,
            internet_message_id=f"<{i}@bench.example>" if i % 2 else None,
            subject=f"Quarterly numbers {i % 97}",
            sender=Address(f"sender{i % 300}@example.com", f"Sender {i % 300}"),
            recipients=(
                Recipient(RecipientKind.TO, Address(f"to{i % 50}@example.com", "To")),
                Recipient(RecipientKind.CC, Address(f"cc{i % 70}@example.com")),
            ),
            sent_at_utc=start + timedelta(minutes=i),
            received_at_utc=start + timedelta(minutes=i, seconds=3),
            size_bytes=2048 + i % 4096,
            body="Hello,\n\nplease find the numbers attached.\n" * 4,
            headers=(("precedence", "bulk"),) if i % 10 == 0 else (),
        )
        for i in range(n)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(path if path is not None else Path(tmp) / "bench.sqlite")
        try:
            session_id = store.begin_session("assess", {})
            source_id = store.add_source(session_id, "bench.pst", "pst", 0, None)
            began = time.perf_counter()
            with store.writer(session_id, batch_rows=batch_rows) as writer:
                for msg in messages:
                    writer.add_message(source_id, msg, Outcome.READ, direction="incoming")
            elapsed = time.perf_counter() - began
        finally:
            store.close()
    return n / elapsed
