"""The stand-in's storage: one SQLite database (a file or in memory) holding every row it accepted.

Each entity set is a table ``(id TEXT PRIMARY KEY, data TEXT)`` where ``data`` is the row as JSON,
so a query is a ``json_extract`` comparison and a test can count exactly what arrived. One lock
serialises access; a change set holds it for its whole run and uses a SAVEPOINT, so a failure rolls
back everything the change set wrote.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

ENTITY_SETS = ("contacts", "emails", "activityparties", "activitymimeattachments")

Row = dict[str, Any]


class StandinDB:
    """Rows of the stand-in's tables, with the helpers tests use to inspect them.

    ``path`` is a file path or ``None`` for a private in-memory database.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._conn = sqlite3.connect(
            path or ":memory:", check_same_thread=False, isolation_level=None
        )
        self._lock = threading.RLock()
        self._savepoints = 0
        with self._lock:
            if path:
                self._conn.execute("PRAGMA journal_mode=WAL")
            for name in ENTITY_SETS:
                self._conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{name}" (seq INTEGER PRIMARY KEY AUTOINCREMENT, '
                    "id TEXT UNIQUE NOT NULL, data TEXT NOT NULL)"
                )
            self._conn.execute(
                "CREATE INDEX IF NOT EXISTS activityparties_activity "
                "ON activityparties (json_extract(data, '$._activityid_value'))"
            )
            # the look-ups pstlib makes ($filter on these columns with a string literal, which
            # odata.py compares COLLATE NOCASE): indexed, as Dataverse indexes them, so that a
            # look-up takes its configured execution time and not a scan of every email
            for entity_set, column in (("emails", "messageid"), ("contacts", "emailaddress1")):
                self._conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {entity_set}_{column} ON {entity_set} "
                    f"(json_extract(data, '$.\"{column}\"') COLLATE NOCASE)"
                )
            self._conn.execute(
                "CREATE INDEX IF NOT EXISTS attachments_object "
                "ON activitymimeattachments (json_extract(data, '$._objectid_value'))"
            )

    # -- transactions -------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the lock and run the block in a SAVEPOINT: commit on success, roll back on error."""
        with self._lock:
            self._savepoints += 1
            name = f"sp{self._savepoints}"
            self._conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                self._conn.execute(f"ROLLBACK TO {name}")
                self._conn.execute(f"RELEASE {name}")
                raise
            else:
                self._conn.execute(f"RELEASE {name}")
            finally:
                self._savepoints -= 1

    # -- writes and reads used by the entity operations ----------------------------------------
    def insert(self, entity_set: str, key: str, row: Row) -> None:
        with self._lock:
            self._conn.execute(
                f'INSERT INTO "{_check(entity_set)}" (id, data) VALUES (?, ?)',
                (key, json.dumps(row)),
            )

    def replace(self, entity_set: str, key: str, row: Row) -> None:
        with self._lock:
            self._conn.execute(
                f'UPDATE "{_check(entity_set)}" SET data = ? WHERE id = ?', (json.dumps(row), key)
            )

    def delete(self, entity_set: str, key: str) -> None:
        with self._lock:
            self._conn.execute(f'DELETE FROM "{_check(entity_set)}" WHERE id = ?', (key,))

    def get(self, entity_set: str, key: str) -> Row | None:
        with self._lock:
            found = self._conn.execute(
                f'SELECT data FROM "{_check(entity_set)}" WHERE id = ?', (key,)
            ).fetchone()
        return None if found is None else _loads(found[0])

    def exists(self, entity_set: str, key: str) -> bool:
        return self.get(entity_set, key) is not None

    def select(
        self, entity_set: str, where: str = "", params: Sequence[Any] = (), limit: int | None = None
    ) -> list[Row]:
        """Rows matching a SQL condition on ``data`` (built by :mod:`pstlib.standin.odata`)."""
        sql = f'SELECT data FROM "{_check(entity_set)}"'
        if where:
            sql += f" WHERE {where}"
        sql += " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            found = self._conn.execute(sql, tuple(params)).fetchall()
        return [_loads(text) for (text,) in found]

    # -- introspection for tests ---------------------------------------------------------------
    def count(self, entity_set: str) -> int:
        """How many rows the table holds."""
        with self._lock:
            (number,) = self._conn.execute(
                f'SELECT COUNT(*) FROM "{_check(entity_set)}"'
            ).fetchone()
        return int(number)

    def rows(self, entity_set: str) -> list[Row]:
        """Every row of the table, in the order they arrived."""
        return self.select(entity_set)

    def parties(self, activityid: str) -> list[Row]:
        """The activity parties of one email, in the order they arrived."""
        return self.select(
            "activityparties",
            "json_extract(data, '$._activityid_value') = ?",
            (activityid.lower(),),
        )

    def attachments(self, activityid: str) -> list[Row]:
        """The attachments of one email, in the order they arrived."""
        return self.select(
            "activitymimeattachments",
            "json_extract(data, '$._objectid_value') = ?",
            (activityid.lower(),),
        )

    def clear(self) -> None:
        """Empty every table."""
        with self._lock:
            for name in ENTITY_SETS:
                self._conn.execute(f'DELETE FROM "{name}"')

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _check(entity_set: str) -> str:
    if entity_set not in ENTITY_SETS:
        raise KeyError(f"the stand-in has no table {entity_set!r}")
    return entity_set


def _loads(text: str) -> Row:
    row: Row = json.loads(text)
    return row
