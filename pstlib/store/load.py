"""Loaders: store tables as pandas DataFrames with proper dtypes.

Every loader returns the table's columns (names as in :mod:`pstlib.store.schema`) with:

- timestamps (``*_utc``) as ``datetime64[us, UTC]``;
- text as the pandas ``string`` dtype (missing values are ``pd.NA``);
- integers as ``int64`` (``Int64`` where the column may be NULL), floats as ``float64``,
  booleans as ``boolean``;
- low-cardinality columns (``outcome``, ``folder_role``, ``item_kind``, ``kind``, ``direction``,
  ``status``...) as categoricals whose categories are the known vocabulary in its defined order,
  then any other value found, sorted.

Rows are read through the raw DBAPI cursor (no per-value conversion in Python) and timestamps parsed
vectorised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import BigInteger, Boolean, Column, DateTime, Float, Integer, Table

from pstlib.errors import StoreError
from pstlib.models import FolderRole, ItemKind, RecipientKind
from pstlib.store import schema, snapshot
from pstlib.store.schema import Outcome, SessionStatus

if TYPE_CHECKING:
    from pstlib.store.db import Store

TEXT_DTYPE = pd.StringDtype()
TIME_DTYPE = "datetime64[us, UTC]"

# Known values of the low-cardinality columns, in the order reports show them. A categorical column
# without a vocabulary (None) takes its categories from the data.
VOCABULARY: dict[tuple[str, str], tuple[str, ...] | None] = {
    ("sessions", "status"): tuple(s.value for s in SessionStatus),
    ("sessions", "target"): ("assess", "dataverse"),
    ("sources", "kind"): ("pst", "ost", "mbox", "eml"),
    ("sources", "status"): ("reading", "read", "failed"),
    ("messages", "outcome"): tuple(o.value for o in Outcome),
    ("messages", "item_kind"): tuple(k.value for k in ItemKind),
    ("messages", "folder_role"): tuple(r.value for r in FolderRole),
    ("messages", "direction"): ("outgoing", "incoming"),
    ("recipients", "kind"): tuple(k.value for k in RecipientKind),
    ("contacts", "action"): ("matched", "created", "failed", "skipped"),
    ("errors", "stage"): (
        "open", "read", "warning", "source", "dedupe", "contacts", "send", "verify"
    ),
    ("errors", "code"): None,
    ("batches", "limit_code"): None,
    ("metrics", "name"): None,
}

_ORDER = {
    "sessions": ("started_at_utc", "session_id"),
    "sources": ("source_id",),
    "messages": ("message_row_id",),
    "recipients": ("message_row_id",),
    "contacts": ("contact_row_id",),
    "errors": ("error_id",),
    "batches": ("batch_row_id",),
    "metrics": ("at_utc",),
}


def column_dtype(table: str, column: Column[Any]) -> Any:
    """The pandas dtype a store column loads as."""
    if (table, column.name) in VOCABULARY:
        return "category"
    kind = column.type
    if isinstance(kind, DateTime):
        return TIME_DTYPE
    if isinstance(kind, Boolean):
        return "boolean"
    if isinstance(kind, Integer | BigInteger):
        return "Int64" if column.nullable else "int64"
    if isinstance(kind, Float):
        return "float64"
    return TEXT_DTYPE


def empty_frame(table: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A table's frame with no rows and the right dtypes."""
    return _to_frame(table, columns or list(schema.TABLES[table].columns.keys()), [], "sqlite")


def _convert(table: str, column: Column[Any], values: Sequence[Any], dialect: str) -> Any:
    dtype = column_dtype(table, column)
    if dtype == "category":
        vocabulary = VOCABULARY[(table, column.name)] or ()
        seen = set(values)
        seen.discard(None)
        extra = sorted(str(v) for v in seen if v not in vocabulary)
        return pd.Categorical(values, categories=[*vocabulary, *extra])
    if dtype == TIME_DTYPE:
        series = pd.Series(values, dtype=object)
        if dialect == "sqlite":
            parsed = pd.to_datetime(series, utc=True, format="ISO8601")
        else:
            parsed = pd.to_datetime(series, utc=True)
        return parsed.dt.as_unit("us").array
    if dtype == "int64":
        return np.asarray(values, dtype=np.int64)
    if dtype == "float64":
        return np.asarray(values, dtype=np.float64)
    return pd.array(values, dtype=dtype)


def convert_column(table: str, name: str, values: Sequence[Any], dialect: str) -> Any:
    """Driver values of one column as the array the loaders return for it."""
    return _convert(table, schema.TABLES[table].columns[name], values, dialect)


def _to_frame(table: str, names: Sequence[str], rows: Sequence[Any], dialect: str) -> pd.DataFrame:
    columns = schema.TABLES[table].columns
    data = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return pd.DataFrame(
        {
            name: _convert(table, columns[name], values, dialect)
            for name, values in zip(names, data, strict=True)
        },
        columns=list(names),
    )


def _names(table: str, columns: Sequence[str] | None) -> list[str]:
    meta: Table = schema.TABLES[table]
    names = list(columns) if columns is not None else list(meta.columns.keys())
    unknown = [n for n in names if n not in meta.columns]
    if unknown:
        raise StoreError(
            f"table {table} has no column(s) {', '.join(unknown)} "
            f"(columns: {', '.join(meta.columns.keys())})"
        )
    return names


def _read(
    store: Store,
    table: str,
    *,
    session_id: str | None = None,
    columns: Sequence[str] | None = None,
    state: tuple[dict[str, Any], list[tuple[Any, int]]] | None = None,
) -> pd.DataFrame:
    """Read ``table`` (only ``session_id``'s rows where given) into a typed frame.

    A finished session's ``messages`` and ``recipients`` come from its columnar snapshot when that
    is fresh (see :mod:`pstlib.store.snapshot`); else from SQL, and the snapshot is (re)written.
    ``state`` is the session's :func:`~pstlib.store.snapshot.session_state` when the caller has
    just taken it.
    """
    names = _names(table, columns)
    if session_id is None or table not in snapshot.SNAPSHOT_TABLES:
        return read_sql(store, table, session_id=session_id, columns=names)
    if snapshot.snapshot_path(store, table, session_id) is None:
        return read_sql(store, table, session_id=session_id, columns=names)
    state = state or snapshot.session_state(store, session_id)
    if state is None:  # running (or unknown): rows are still coming
        return read_sql(store, table, session_id=session_id, columns=names)
    stamp, outcomes = state
    frame = snapshot.read_snapshot(store, table, session_id, names, stamp, outcomes=outcomes)
    if frame is not None:
        return frame
    full = read_sql(store, table, session_id=session_id)
    if snapshot.session_stamp(store, session_id) == stamp:
        snapshot.write_snapshot(store, table, session_id, full, stamp)
    return full if list(full.columns) == names else full[names]


def read_sql(
    store: Store,
    table: str,
    *,
    session_id: str | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read ``table`` (only ``session_id``'s rows where given) from SQL into a typed frame."""
    names = _names(table, columns)
    dialect = store.engine.dialect
    quote = dialect.identifier_preparer.quote
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    select_list = ", ".join(f"t.{quote(n)}" for n in names)
    sql = f"SELECT {select_list} FROM {table} t"
    params: tuple[Any, ...] = ()
    if session_id is not None:
        if table == "recipients":
            sql += " JOIN messages m ON m.message_row_id = t.message_row_id"
            sql += f" WHERE m.session_id = {mark}"
        else:
            sql += f" WHERE t.session_id = {mark}"
        params = (session_id,)
    sql += " ORDER BY " + ", ".join(f"t.{quote(n)}" for n in _ORDER[table])
    rows = store.fetch_all(sql, params, table)
    return _to_frame(table, names, rows, dialect.name)


def load_sessions(store: Store) -> pd.DataFrame:
    """One row per session: ``session_id``, ``started_at_utc``, ``ended_at_utc``, ``status``..."""
    return _read(store, "sessions")


def load_sources(store: Store, session_id: str | None = None) -> pd.DataFrame:
    """One row per source file read in a session."""
    return _read(store, "sources", session_id=session_id)


def load_messages(
    store: Store, session_id: str | None = None, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per message per session (only ``columns`` where given), in the order written."""
    return _read(store, "messages", session_id=session_id, columns=columns)


def load_mail(
    store: Store, session_id: str, columns: Sequence[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One session's ``messages`` (only ``columns`` where given) and ``recipients``, both checked
    against one stamp of the session (see :mod:`pstlib.store.snapshot`).

    The same frames as :func:`load_messages` and :func:`load_recipients`, for half the freshness
    checks (the check scans the session's index: a few tenths of a second per million messages),
    and the two frames describe the same state of the session.
    """
    names = _names("messages", columns)
    if snapshot.snapshot_path(store, "messages", session_id) is None:
        return _read(store, "messages", session_id=session_id, columns=names), _read(
            store, "recipients", session_id=session_id
        )
    recipient_names = _names("recipients", None)
    # the snapshot files are decoded while the store is asked for the session's stamp
    state, found = snapshot.read_fresh_snapshots(
        store, session_id, {"messages": names, "recipients": recipient_names}
    )
    if state is None:  # running (or unknown): rows are still coming
        return _read(store, "messages", session_id=session_id, columns=names), _read(
            store, "recipients", session_id=session_id
        )
    messages, recipients = found["messages"], found["recipients"]
    if messages is None:  # stale or missing: from SQL, and the snapshot written again
        messages = _read(store, "messages", session_id=session_id, columns=names, state=state)
    if recipients is None:
        recipients = _read(store, "recipients", session_id=session_id, state=state)
    return messages, recipients


def load_recipients(store: Store, session_id: str | None = None) -> pd.DataFrame:
    """One row per recipient of a message: ``message_row_id``, ``kind``, ``address``, ``name``."""
    return _read(store, "recipients", session_id=session_id)


def load_contacts(store: Store, session_id: str | None = None) -> pd.DataFrame:
    """One row per contact address per session, with what the import did about it."""
    return _read(store, "contacts", session_id=session_id)


def load_errors(store: Store, session_id: str | None = None) -> pd.DataFrame:
    """One row per recorded error: ``stage``, ``code``, ``file``, ``folder``, ``item``..."""
    return _read(store, "errors", session_id=session_id)


def load_batches(store: Store, session_id: str | None = None) -> pd.DataFrame:
    """One row per request to the target, with its duration and throttling answer."""
    return _read(store, "batches", session_id=session_id)


def load_metrics(store: Store, session_id: str | None = None) -> pd.DataFrame:
    """One row per metric sample: ``at_utc``, ``name``, ``value``, ``labels_json``."""
    return _read(store, "metrics", session_id=session_id)


def _load_sessions(store: Store, session_id: str | None) -> pd.DataFrame:
    return _read(store, "sessions", session_id=session_id)


LOADERS: dict[str, Callable[[Store, str | None], pd.DataFrame]] = {
    "sessions": _load_sessions,
    "sources": load_sources,
    "messages": load_messages,
    "recipients": load_recipients,
    "contacts": load_contacts,
    "errors": load_errors,
    "batches": load_batches,
    "metrics": load_metrics,
}


def load_table(store: Store, name: str, session_id: str | None = None) -> pd.DataFrame:
    """Load a table by name (``sessions``, ``messages``...); StoreError names the valid ones."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise StoreError(f"unknown table {name!r} (valid: {', '.join(sorted(LOADERS))})") from None
    return loader(store, session_id)
