"""Columnar snapshots of finished sessions: Parquet copies of their big tables, kept in step.

Reading a million message rows from SQLite costs seconds; reading the same rows from Parquet a
tenth of one. A *snapshot* is one Parquet file per table per session
(``<store file>.snapshot/<table>/<session_id>.parquet`` beside a SQLite store, or under
``Store.snapshot_dir`` for PostgreSQL; none for an in-memory store), holding the rows exactly as
:mod:`pstlib.store.load` returns them (same columns, same dtypes, same order).

Only sessions that are no longer running get one (:data:`SNAPSHOT_TABLES`: ``messages`` and
``recipients``; the other tables are small and read from SQL in milliseconds). The loaders write it
the first time they read a finished session through SQL (so an import's own summary at the end of
the session writes it), or :func:`refresh_snapshot` does on demand.

Never stale. A snapshot records a *stamp* of the session when written, and serves rows only while
the store still shows the same stamp; otherwise the loaders read SQL and write a new snapshot.
The stamp rests on how the store is written (:mod:`pstlib.store.writer`): message rows are
inserted with ids above every existing one and never rewritten, except the columns
:data:`~pstlib.store.writer.UPDATABLE` that ``update_outcomes`` sets; recipients are inserted in
the same transaction as their message. So the stamp is:

- the session's ``status`` and ``ended_at_utc`` (a resumed session is running: no snapshot);
- the session's message count, smallest and largest ``message_row_id`` (an insert raises the
  largest; a delete lowers the count), and the ``processed_at_utc`` and ``dedupe_key`` of the
  row with the largest id (a deleted last row replaced by a new one with the same id);
- the number of recipient rows whose ``message_row_id`` lies between the smallest and largest;
- the schema revision and the snapshot format.

One indexed query per table checks it (milliseconds). The updatable columns are the exception:
``update_outcomes`` may change them at any time, without touching the stamp, so they are never
served from a snapshot: a load that asks for any of them reads their current values from SQL, cheaply
because they are mostly uniform (``outcome``: its most common value, from one count over the
session/outcome index, and the rows that differ; the others: the rows where any is set, NULL
elsewhere). Everything else comes from the Parquet file.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pstlib.errors import StoreError
from pstlib.store.schema import SCHEMA_REVISION, SessionStatus
from pstlib.store.writer import UPDATABLE

if TYPE_CHECKING:
    from pstlib.store.db import Store

log = logging.getLogger(__name__)

__all__ = [
    "SNAPSHOT_TABLES",
    "drop_snapshot",
    "read_fresh_snapshots",
    "read_snapshot",
    "refresh_snapshot",
    "session_stamp",
    "session_state",
    "snapshot_dir",
    "snapshot_path",
]

SNAPSHOT_TABLES = ("messages", "recipients")
FORMAT_VERSION = 1
STAMP_KEY = b"pstlib.snapshot"
MUTABLE: dict[str, tuple[str, ...]] = {"messages": UPDATABLE, "recipients": ()}
"""Columns that change after a row is written: read from SQL on every load, never snapshotted."""


# ------------------------------------------------------------------------------------ locations


def snapshot_dir(store: Store) -> Path | None:
    """Where ``store`` keeps its snapshots: ``Store.snapshot_dir`` when set, else
    ``<file>.snapshot`` beside a SQLite file; None (no snapshots) for an in-memory or PostgreSQL
    store without a configured folder, or when ``Store.use_snapshots`` is off."""
    if not store.use_snapshots:
        return None
    if store.snapshot_dir is not None:
        return Path(store.snapshot_dir)
    if not store.is_sqlite:
        return None
    database = store.engine.url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).with_name(Path(database).name + ".snapshot")


def _safe_name(session_id: str) -> str:
    if not session_id or session_id in (".", "..") or any(c in session_id for c in "/\\\x00"):
        raise StoreError(f"session id {session_id!r} cannot name a snapshot file")
    return session_id


def snapshot_path(store: Store, table: str, session_id: str) -> Path | None:
    """``<snapshot dir>/<table>/<session_id>.parquet``, or None when the store keeps none."""
    root = snapshot_dir(store)
    if root is None:
        return None
    if table not in SNAPSHOT_TABLES:
        raise StoreError(f"no snapshot of table {table!r} (valid: {', '.join(SNAPSHOT_TABLES)})")
    return root / table / f"{_safe_name(session_id)}.parquet"


# ---------------------------------------------------------------------------------------- stamps


def _query(store: Store, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
    rows = store.fetch_all(sql, params, "the session stamp")
    return tuple(rows[0]) if rows else None


def session_stamp(store: Store, session_id: str) -> dict[str, Any] | None:
    """The session's current stamp (see the module doc), or None while it is running or unknown.

    Values are as the driver returns them (times as stored), so that two stamps compare equal
    exactly when nothing the stamp covers changed.
    """
    state = session_state(store, session_id)
    return None if state is None else state[0]


def session_state(
    store: Store, session_id: str
) -> tuple[dict[str, Any], list[tuple[Any, int]]] | None:
    """The session's stamp and its message count per ``outcome`` (None while running).

    The count, smallest and largest ``message_row_id`` come from one scan of the session/outcome
    index grouped by outcome, which also gives the outcome counts that
    :func:`_read_updatable` needs: the one scan of the session's index a snapshot read pays.
    """
    mark = "?" if store.engine.dialect.paramstyle == "qmark" else "%s"
    session = _query(
        store, f"SELECT status, ended_at_utc FROM sessions WHERE session_id = {mark}", (session_id,)
    )
    if session is None or session[0] == SessionStatus.RUNNING.value:
        return None
    grouped = store.fetch_all(
        "SELECT outcome, count(*), min(message_row_id), max(message_row_id) FROM messages "
        f"WHERE session_id = {mark} GROUP BY outcome",
        (session_id,),
        "the session stamp",
    )
    rows = sum(int(g[1]) for g in grouped)
    first = min((int(g[2]) for g in grouped), default=None)
    last = max((int(g[3]) for g in grouped), default=None)
    last_row: tuple[Any, ...] | None = None
    recipients = 0
    if last is not None:
        last_row = _query(
            store,
            f"SELECT processed_at_utc, dedupe_key FROM messages WHERE message_row_id = {mark}",
            (last,),
        )
        found = _query(
            store,
            "SELECT count(*) FROM recipients "
            f"WHERE message_row_id >= {mark} AND message_row_id <= {mark}",
            (first, last),
        )
        recipients = int(found[0]) if found is not None else 0
    stamp = {
        "format": FORMAT_VERSION,
        "schema_revision": SCHEMA_REVISION,
        "session_id": session_id,
        "status": str(session[0]),
        "ended_at_utc": None if session[1] is None else str(session[1]),
        "messages": int(rows),
        "first_row_id": first,
        "last_row_id": last,
        "last_processed_at_utc": None if last_row is None else str(last_row[0]),
        "last_dedupe_key": None if last_row is None else str(last_row[1]),
        "recipients_in_range": recipients,
    }
    return stamp, [(g[0], int(g[1])) for g in grouped]


# ------------------------------------------------------------------------------ write and read


def _write(path: Path, frame: pd.DataFrame, stamp: dict[str, Any]) -> None:
    """Write ``frame`` with ``stamp`` in its metadata, atomically (a reader never sees half)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[STAMP_KEY] = json.dumps(stamp, sort_keys=True).encode()
    table = table.replace_schema_metadata(metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        # lz4 and row groups of 128k rows: decoded fast, and in parallel
        pq.write_table(table, tmp, compression="lz4", row_group_size=1 << 17)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_snapshot(
    store: Store, table: str, session_id: str, frame: pd.DataFrame, stamp: dict[str, Any]
) -> Path | None:
    """Write ``frame`` (the whole table of the session, every column, as the loader returns it)
    as the session's snapshot of ``table`` under ``stamp`` (taken before the rows were read).

    The updatable columns are left out. A store whose folder cannot be written keeps no snapshot
    (logged): loading still works, from SQL. Returns the path written, or None.
    """
    path = snapshot_path(store, table, session_id)
    if path is None:
        return None
    keep = [c for c in frame.columns if c not in MUTABLE[table]]
    try:
        _write(path, frame[keep], {**stamp, "table": table, "columns": keep})
    except OSError as err:
        log.warning("cannot write the snapshot %s: %s", path, err)
        return None
    return path


def refresh_snapshot(
    store: Store, session_id: str, tables: Sequence[str] = SNAPSHOT_TABLES
) -> list[Path]:
    """(Re)write the session's snapshots from SQL now; return the paths written.

    Nothing is written for a running session or a store that keeps no snapshots.
    """
    from pstlib.store.load import read_sql

    written: list[Path] = []
    for table in tables:
        if snapshot_path(store, table, session_id) is None:
            continue
        stamp = session_stamp(store, session_id)
        if stamp is None:
            break
        frame = read_sql(store, table, session_id=session_id)
        if session_stamp(store, session_id) != stamp:
            continue  # written to while we read: the rows may not match the stamp
        path = write_snapshot(store, table, session_id, frame, stamp)
        if path is not None:
            written.append(path)
    return written


def drop_snapshot(store: Store, session_id: str) -> None:
    """Remove the session's snapshot files (if any)."""
    for table in SNAPSHOT_TABLES:
        path = snapshot_path(store, table, session_id)
        if path is not None:
            path.unlink(missing_ok=True)


def _stamp_of(path: Path) -> dict[str, Any] | None:
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    raw = metadata.get(STAMP_KEY)
    if raw is None:
        return None
    try:
        stamp = json.loads(raw)
    except ValueError:
        return None
    return stamp if isinstance(stamp, dict) else None


_KEY = "message_row_id"  # how the updatable columns read from SQL meet the snapshot's rows


def _columns_to_read(table: str, columns: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """``columns`` split into those the file serves and the updatable ones SQL serves, and the
    file's columns to read (with the row key when updatable ones must be matched to rows)."""
    stored = [c for c in columns if c not in MUTABLE[table]]
    fresh = [c for c in columns if c in MUTABLE[table]]
    return stored, fresh, list(dict.fromkeys([*stored, _KEY])) if fresh else stored


def _is_current(saved: dict[str, Any], stamp: dict[str, Any], table: str) -> bool:
    """Whether a file's saved stamp is the session's current ``stamp``."""
    return {**stamp, "table": table, "columns": saved.get("columns")} == saved


def _served(
    table: str,
    frame: pd.DataFrame,
    columns: Sequence[str],
    stamp: dict[str, Any],
    updated: dict[str, Any] | None,
) -> pd.DataFrame | None:
    """The rows a fresh file gives, with the ``updated`` columns read from SQL (None: the store
    has a row the file lacks); None when the file's message count is not the store's."""
    if updated is None or (table == "messages" and len(frame) != stamp["messages"]):
        return None
    if updated:
        frame = frame.assign(**updated)
    result: pd.DataFrame = frame[list(columns)]
    return result


def read_snapshot(
    store: Store,
    table: str,
    session_id: str,
    columns: Sequence[str],
    stamp: dict[str, Any] | None = None,
    *,
    outcomes: list[tuple[Any, int]] | None = None,
) -> pd.DataFrame | None:
    """The session's rows of ``table`` (``columns``, in this order) from its snapshot when it is
    fresh, else None (no snapshot, stale, or a running session).

    ``stamp`` is the session's current stamp when the caller has it already, ``outcomes`` its
    message count per outcome taken with it (:func:`session_state`). Updatable columns among
    ``columns`` are read from SQL (see the module doc).
    """
    path = snapshot_path(store, table, session_id)
    if path is None or not path.is_file():
        return None
    saved = _stamp_of(path)
    if saved is None:
        return None
    current = stamp if stamp is not None else session_stamp(store, session_id)
    if current is None or not _is_current(saved, current, table):
        return None
    stored, fresh, wanted = _columns_to_read(table, columns)
    if any(c not in saved["columns"] for c in stored):
        return None
    key = _KEY
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            # the updatable columns come from SQL while Arrow decodes the file (both release
            # the GIL): the two reads overlap instead of adding up
            live: Future[dict[str, Any] | None] | None = None
            if fresh:
                ids = pq.read_table(path, columns=[key], pre_buffer=False).column(0).to_numpy()
                live = pool.submit(
                    _read_updatable, store, session_id, fresh, ids, current, outcomes
                )
            # pre_buffer=False: Arrow's coalesced read-ahead, meant for object stores, made a local
            # file's read three times slower here (1.4 s against 0.45 s for a million messages)
            frame = pq.read_table(path, columns=wanted, pre_buffer=False).to_pandas()
        except (OSError, pa.ArrowException) as err:
            log.warning("cannot read the snapshot %s: %s", path, err)
            return None
        updated = live.result() if live is not None else {}
    # unequal ids: the file was replaced between the two reads
    if fresh and not np.array_equal(ids, frame[key].to_numpy(np.int64)):
        return None
    return _served(table, frame, columns, current, updated)


def _open(path: Path, columns: Sequence[str]) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """The stamp and the ``columns`` of one snapshot file, both from one opening of it (a file
    replaced meanwhile cannot pair one file's stamp with another's rows); None when unreadable,
    unstamped or without one of the columns."""
    try:
        parquet = pq.ParquetFile(path, pre_buffer=False)
        raw = (parquet.schema_arrow.metadata or {}).get(STAMP_KEY)
        saved = json.loads(raw) if raw is not None else None
        if not isinstance(saved, dict) or any(c not in saved.get("columns", ()) for c in columns):
            return None
        return saved, parquet.read(columns=list(columns), use_threads=True).to_pandas()
    except (OSError, ValueError, pa.ArrowException) as err:
        log.warning("cannot read the snapshot %s: %s", path, err)
        return None


def read_fresh_snapshots(
    store: Store, session_id: str, columns: dict[str, Sequence[str]]
) -> tuple[tuple[dict[str, Any], list[tuple[Any, int]]] | None, dict[str, pd.DataFrame | None]]:
    """The session's state (:func:`session_state`) and, per table of ``columns`` (table:
    columns), its rows from the snapshot when that is fresh, else None.

    What :func:`session_state` then :func:`read_snapshot` per table give, in less time: the files
    are decoded while the store is asked for the session's stamp (Arrow and SQLite both release
    the GIL), and the rows are served only when the stamp saved in the file read equals the
    stamp the store shows; the updatable columns, read from SQL, overlap the next file's decoding.
    A file is read for nothing only when it turns out stale, and then the caller reads SQL, which
    costs far more anyway.
    """
    found: dict[str, pd.DataFrame | None] = dict.fromkeys(columns)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(session_state, store, session_id)
        state: tuple[dict[str, Any], list[tuple[Any, int]]] | None = None
        live: dict[str, Future[dict[str, Any] | None]] = {}
        opened: dict[str, tuple[dict[str, Any], pd.DataFrame] | None] = {}
        for table, names in columns.items():
            path = snapshot_path(store, table, session_id)
            _, fresh, wanted = _columns_to_read(table, names)
            opened[table] = _open(path, wanted) if path is not None and path.is_file() else None
            if state is None:
                state = pending.result()
                if state is None:  # running (or unknown): no snapshot serves it
                    return None, found
            loaded = opened[table]
            stamp, outcomes = state
            if loaded is None:
                continue
            if not _is_current(loaded[0], stamp, table):
                opened[table] = None  # stale: the caller reads SQL
                continue
            if fresh:
                ids = loaded[1][_KEY].to_numpy(np.int64)
                live[table] = pool.submit(
                    _read_updatable, store, session_id, fresh, ids, stamp, outcomes
                )
        if state is None:
            state = pending.result()
        for table, names in columns.items():
            loaded = opened[table]
            if loaded is not None and state is not None:
                updated = live[table].result() if table in live else {}
                found[table] = _served(table, loaded[1], names, state[0], updated)
    return state, found


def _rows(store: Store, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in store.fetch_all(sql, params, "messages")]


def _missing(column: str, n: int) -> Any:
    """``n`` missing values of an updatable column, built as arrays (no list of a million Nones)."""
    from pstlib.store.load import TEXT_DTYPE, column_dtype, convert_column
    from pstlib.store.schema import messages

    dtype = column_dtype("messages", messages.c[column])
    if dtype == TEXT_DTYPE:
        return pd.array(pa.nulls(n, pa.large_string()), dtype=TEXT_DTYPE)
    if dtype == "boolean":
        return pd.arrays.BooleanArray(np.zeros(n, dtype=bool), np.ones(n, dtype=bool))
    return convert_column("messages", column, [None] * n, "sqlite")


def _read_updatable(
    store: Store,
    session_id: str,
    columns: list[str],
    ids: npt.NDArray[np.int64],
    stamp: dict[str, Any],
    outcomes: list[tuple[Any, int]] | None,
) -> dict[str, Any] | None:
    """The session's current values of the updatable ``columns``, aligned with ``ids`` (the
    snapshot's ``message_row_id``, ascending); None when the store has a row the snapshot lacks.

    Cheap where the values are uniform, as they mostly are: ``outcome`` as its most common value
    (the counts per outcome come with the stamp, from one scan of the session/outcome index)
    plus the rows that differ (none to look for when all agree); the other columns as missing
    plus the rows where any is set, found by one pass over the session's rows (on SQLite in
    ``message_row_id`` order, a sequential read of the table, twice as fast as through the
    session index).
    """
    from pstlib.store.load import VOCABULARY, convert_column

    mark = "?" if store.engine.dialect.paramstyle == "qmark" else "%s"
    dialect = store.engine.dialect.name
    n = len(ids)
    values: dict[str, Any] = {}

    def place(found: list[tuple[Any, ...]]) -> npt.NDArray[np.intp] | None:
        row_ids = np.fromiter((r[0] for r in found), dtype=np.int64, count=len(found))
        at = np.searchsorted(ids, row_ids)
        if len(at) and (at.max() >= n or not np.array_equal(ids[np.minimum(at, n - 1)], row_ids)):
            return None
        return at

    if "outcome" in columns:
        counts = outcomes
        if counts is None:
            counts = [
                (v, int(c))
                for v, c in _rows(
                    store,
                    f"SELECT outcome, count(*) FROM messages WHERE session_id = {mark} "
                    "GROUP BY outcome",
                    (session_id,),
                )
            ]
        if sum(c for _, c in counts) != n:
            return None
        vocabulary = VOCABULARY[("messages", "outcome")] or ()
        extra = sorted({str(v) for v, _ in counts if v is not None and v not in vocabulary})
        categories = [*vocabulary, *extra]
        codes = np.full(n, -1, dtype=np.int64)
        if counts:
            common = max(counts, key=lambda r: r[1])[0]
            codes[:] = categories.index(common) if common is not None else -1
            if len(counts) > 1:
                others = _rows(
                    store,
                    f"SELECT message_row_id, outcome FROM messages WHERE session_id = {mark} "
                    f"AND outcome <> {mark}",
                    (session_id, common),
                )
                at = place(others)
                if at is None:
                    return None
                codes[at] = [categories.index(v) if v is not None else -1 for _, v in others]
        values["outcome"] = pd.Categorical.from_codes(codes, categories=pd.Index(categories))
    rest = [c for c in columns if c != "outcome"]
    if rest:
        quote = store.engine.dialect.identifier_preparer.quote
        names = ", ".join(quote(c) for c in rest)
        anything = " OR ".join(f"{quote(c)} IS NOT NULL" for c in rest)
        if dialect == "sqlite" and stamp.get("first_row_id") is not None:
            # the rowid range, read in order; "+" keeps SQLite off the session index
            where = f"message_row_id BETWEEN {mark} AND {mark} AND +session_id = {mark}"
            params: tuple[Any, ...] = (stamp["first_row_id"], stamp["last_row_id"], session_id)
        else:
            where, params = f"session_id = {mark}", (session_id,)
        found = _rows(
            store,
            f"SELECT message_row_id, {names} FROM messages WHERE {where} AND ({anything})",
            params,
        )
        at = place(found)
        if at is None:
            return None
        for j, column in enumerate(rest, start=1):
            if not found:
                values[column] = _missing(column, n)
                continue
            filled: list[Any] = [None] * n
            for i, row in zip(at.tolist(), found, strict=True):
                filled[i] = row[j]
            values[column] = convert_column("messages", column, filled, dialect)
    return {column: values[column] for column in columns}
