"""The analytics store: opening it (and migrating it), and the life of a session and its sources.

A store is a SQLAlchemy engine on SQLite (the default: one file, WAL, foreign keys on,
``synchronous=NORMAL``, a busy timeout) or PostgreSQL (``postgresql+psycopg://...``). Opening a
store applies pending Alembic migrations; a store written by a newer pstlib is refused with a
:class:`~pstlib.errors.StoreError`. Message rows go through
:class:`~pstlib.store.writer.MessageWriter`.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from pstlib.config import store_url
from pstlib.errors import StoreError
from pstlib.store import schema
from pstlib.store.schema import Outcome, SessionStatus

if TYPE_CHECKING:
    from alembic.config import Config

    from pstlib.store.writer import MessageWriter

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 30_000
SOURCE_STATUSES = ("reading", "read", "failed")
WRITE_OPTION = "pstlib_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime; a naive value is UTC already (as SQLite keeps it)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _configure_sqlite(engine: Engine) -> None:
    """PRAGMAs on every new connection, and transactions that SQLAlchemy (not pysqlite) begins."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (pysqlite's own BEGIN handling is broken for DDL and
        # SAVEPOINT); the writer issues BEGIN IMMEDIATE on the raw connection.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
            "PRAGMA cache_size=-65536",  # 64 MiB page cache
            "PRAGMA mmap_size=268435456",  # read pages through the OS cache (256 MiB window)
            "PRAGMA wal_autocheckpoint=10000",  # checkpoint every ~40 MB of WAL, not every 4 MB
            "PRAGMA journal_size_limit=67108864",  # and trim the WAL file back to 64 MiB after
            "PRAGMA temp_store=MEMORY",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writing transaction takes the write lock up front (BEGIN IMMEDIATE): a deferred one
        # that read first would fail at once with SQLITE_BUSY when another writer got in between.
        mode = conn.get_execution_options().get(WRITE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode else "BEGIN")


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database or ""
    if database in ("", ":memory:"):
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        # The pool hands a connection to one thread at a time; the collector writes from its own.
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
        )
    _configure_sqlite(engine)
    return engine


def alembic_config() -> Config:
    """The Alembic configuration of the packaged migrations (no alembic.ini looked up anywhere)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade_store(engine: Engine) -> str:
    """Apply pending migrations; refuse a store whose revision this pstlib does not know.

    Returns the revision the store is at afterwards. A store already at this pstlib's revision
    (every open but the first after an upgrade) is recognised from its ``alembic_version`` row
    alone: Alembic, about 0.4 s to import, is loaded only when there is something to migrate.
    """
    with engine.connect() as conn:
        if inspect(conn).has_table("alembic_version"):
            stamped = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
            if list(stamped) == [schema.SCHEMA_REVISION]:
                return schema.SCHEMA_REVISION
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = alembic_config()
    scripts = ScriptDirectory.from_config(cfg)
    known = {rev.revision for rev in scripts.walk_revisions()}
    head = scripts.get_current_head()
    with engine.connect() as conn, conn.execution_options(**{WRITE_OPTION: True}).begin():
        current = MigrationContext.configure(conn).get_current_heads()
        unknown = [rev for rev in current if rev not in known]
        if unknown:
            raise StoreError(
                f"store {engine.url.render_as_string(hide_password=True)} is at schema revision "
                f"{', '.join(unknown)}, newer than this pstlib knows (latest {head}): "
                "upgrade pstlib to open it"
            )
        if tuple(current) != (head,):
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    return str(head)


class Store:
    """An open analytics store. Use :meth:`open`; close it (or use it as a context manager)."""

    def __init__(self, engine: Engine, *, snapshot_dir: Path | None = None) -> None:
        self.engine = engine
        self.url: str = engine.url.render_as_string(hide_password=True)
        # columnar snapshots of finished sessions (see pstlib.store.snapshot): beside a SQLite
        # file by default, in ``snapshot_dir`` where given (PostgreSQL has none without it)
        self.snapshot_dir: Path | None = snapshot_dir
        self.use_snapshots: bool = True

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @classmethod
    def open(cls, url_or_path: str | Path, *, snapshot_dir: str | Path | None = None) -> Store:
        """Open (creating the file and its parents, and migrating) the store at a path or URL.

        ``snapshot_dir``: where columnar snapshots of finished sessions go (default: beside a
        SQLite file, ``<file>.snapshot``; none for PostgreSQL unless given).
        """
        url = store_url(url_or_path)
        try:
            engine = _create_engine(url)
        except (SQLAlchemyError, ValueError, OSError) as err:
            raise StoreError(f"cannot open store {url_or_path}: {err}") from err
        try:
            upgrade_store(engine)
        except StoreError:
            engine.dispose()
            raise
        except (SQLAlchemyError, OSError) as err:
            engine.dispose()
            raise StoreError(f"cannot open store {url_or_path}: {err}") from err
        return cls(engine, snapshot_dir=None if snapshot_dir is None else Path(snapshot_dir))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def fetch_all(self, sql: str, params: tuple[Any, ...], what: str) -> list[tuple[Any, ...]]:
        """Rows of one raw read-only query (fast: no SQLAlchemy row objects); StoreError names ``what``.

        The read transaction is ended before the connection goes back to the pool.
        """
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(sql, params)
                rows = cast(list[tuple[Any, ...]], cursor.fetchall())
            finally:
                cursor.close()
            raw.rollback()  # end the read transaction (PostgreSQL) so the pooled connection is clean
        except Exception as err:
            raise StoreError(f"cannot read {what} from {self.url}: {err}") from err
        finally:
            raw.close()
        return rows

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection in a transaction that commits on leaving, or rolls back and re-raises."""
        with self.engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    # -- sessions -------------------------------------------------------------------------------

    def begin_session(
        self,
        target: str,
        options: Mapping[str, Any],
        *,
        session_id: str | None = None,
        mailbox_owner: str | None = None,
    ) -> str:
        """Record a new running session and return its id (``import_YYYYMMDD_HHMMSS`` in UTC).

        A generated id that is taken gets a suffix (``_2``, ``_3``...). An explicit ``session_id``
        that exists is an error: continue an existing session with :meth:`resume_session`.
        """
        from pstlib import __version__

        started = utc_now()
        base = session_id or started.strftime("import_%Y%m%d_%H%M%S")
        row = {
            "started_at_utc": started,
            "status": SessionStatus.RUNNING.value,
            "target": target,
            "options_json": json.dumps(dict(options), sort_keys=True, default=str),
            "software_version": __version__,
            "host": socket.gethostname(),
            "mailbox_owner": mailbox_owner,
        }
        for attempt in range(1, 1000):
            candidate = base if attempt == 1 else f"{base}_{attempt}"
            try:
                with self.transaction() as conn:
                    conn.execute(insert(schema.sessions).values(session_id=candidate, **row))
            except IntegrityError as err:
                if session_id is not None:
                    raise StoreError(f"session {session_id} exists already in {self.url}") from err
                continue
            return candidate
        raise StoreError(f"no free session id from {base} in {self.url}")

    def resume_session(self, session_id: str) -> None:
        """Mark an existing session running again (an import continuing after a stop)."""
        self._update_session(session_id, status=SessionStatus.RUNNING.value, ended_at_utc=None)

    def end_session(
        self, session_id: str, status: SessionStatus | str, summary: Mapping[str, Any] | None
    ) -> None:
        """Close a session with its final status and its summary document (JSON)."""
        try:
            status = SessionStatus(status)
        except ValueError as err:
            valid = ", ".join(s.value for s in SessionStatus)
            raise StoreError(f"unknown session status {status!r} (valid: {valid})") from err
        self._update_session(
            session_id,
            status=status.value,
            ended_at_utc=utc_now(),
            summary_json=None
            if summary is None
            else json.dumps(dict(summary), sort_keys=True, default=str),
        )

    def _update_session(self, session_id: str, **values: Any) -> None:
        table = schema.sessions
        with self.transaction() as conn:
            result = conn.execute(
                update(table).where(table.c.session_id == session_id).values(**values)
            )
            if result.rowcount != 1:
                raise StoreError(f"no session {session_id} in {self.url}")

    def get_session(self, session_id: str) -> dict[str, Any]:
        """The session's row (times aware UTC), with ``options`` and ``summary`` parsed."""
        table = schema.sessions
        with self.engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.session_id == session_id)).first()
        if row is None:
            raise StoreError(f"no session {session_id} in {self.url}")
        record = dict(row._mapping)
        for name in ("started_at_utc", "ended_at_utc"):
            record[name] = as_utc(record[name])
        record["options"] = json.loads(record["options_json"] or "{}")
        summary = record["summary_json"]
        record["summary"] = None if summary is None else json.loads(summary)
        return record

    def session_ids(self) -> list[str]:
        """Every session id, oldest first."""
        table = schema.sessions
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table.c.session_id).order_by(table.c.started_at_utc, table.c.session_id)
            )
            return [r[0] for r in rows]

    # -- sources --------------------------------------------------------------------------------

    def add_source(
        self, session_id: str, path: str, kind: str, size_bytes: int, sha256: str | None
    ) -> int:
        """Record a source file being read in a session; return its ``source_id``.

        The same ``(session_id, path)`` again returns the existing id (an import resuming).
        """
        table = schema.sources
        where = (table.c.session_id == session_id) & (table.c.path == path)
        for _ in range(2):
            with self.transaction() as conn:
                existing = conn.execute(select(table.c.source_id).where(where)).scalar()
                if existing is not None:
                    return int(existing)
                try:
                    with conn.begin_nested():
                        result = conn.execute(
                            insert(table)
                            .values(
                                session_id=session_id,
                                path=path,
                                kind=kind,
                                size_bytes=size_bytes,
                                sha256=sha256,
                                status="reading",
                                started_at_utc=utc_now(),
                            )
                            .returning(table.c.source_id)
                        )
                        return int(result.scalar_one())
                except IntegrityError as err:
                    if not self._session_exists(conn, session_id):
                        raise StoreError(f"no session {session_id} in {self.url}") from err
                    # another worker recorded the same path meanwhile: read its id
        raise StoreError(f"cannot record source {path} in session {session_id}")

    def finish_source(
        self, source_id: int, status: str, items_found: int | None, error: str | None = None
    ) -> None:
        """Close a source: ``read`` or ``failed``, how many items it held, and why it failed."""
        if status not in SOURCE_STATUSES:
            raise StoreError(
                f"unknown source status {status!r} (valid: {', '.join(SOURCE_STATUSES)})"
            )
        table = schema.sources
        with self.transaction() as conn:
            result = conn.execute(
                update(table)
                .where(table.c.source_id == source_id)
                .values(status=status, items_found=items_found, error=error, ended_at_utc=utc_now())
            )
            if result.rowcount != 1:
                raise StoreError(f"no source {source_id} in {self.url}")

    def _session_exists(self, conn: Connection, session_id: str) -> bool:
        table = schema.sessions
        found = conn.execute(
            select(func.count()).select_from(table).where(table.c.session_id == session_id)
        ).scalar()
        return bool(found)

    # -- messages -------------------------------------------------------------------------------

    def writer(self, session_id: str, batch_rows: int = 20_000) -> MessageWriter:
        """A batched writer of message, recipient, error, contact, batch and metric rows."""
        from pstlib.store.writer import MessageWriter

        with self.engine.connect() as conn:
            if not self._session_exists(conn, session_id):
                raise StoreError(f"no session {session_id} in {self.url}")
        return MessageWriter(self, session_id, batch_rows=batch_rows)

    def known_dedupe_keys(self, exclude_session: str | None = None) -> set[str]:
        """Dedupe keys of messages imported in any session (but ``exclude_session``)."""
        table = schema.messages
        query = select(table.c.dedupe_key).distinct().where(table.c.outcome == Outcome.IMPORTED)
        if exclude_session is not None:
            query = query.where(table.c.session_id != exclude_session)
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def recorded_items(self, session_id: str, source_id: int) -> set[str]:
        """Item ids of a source already recorded in a session (what a resumed import skips)."""
        table = schema.messages
        query = select(table.c.item_id).where(
            (table.c.session_id == session_id) & (table.c.source_id == source_id)
        )
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())
