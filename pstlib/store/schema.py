"""The analytics store's schema: one home for every table and column.

Written with SQLAlchemy Core so that one definition serves SQLite (the default: one file, WAL,
foreign keys on) and PostgreSQL (many workers). Changes go through Alembic migrations in
``store/migrations``; a store opened by a newer pstlib is upgraded automatically.

Column names carry units and roles (``sent_at_utc``, ``size_bytes``, ``duration_s``). Every
timestamp is UTC. A message's fate is one ``outcome`` per row (see :class:`Outcome`), never a log
line.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

SCHEMA_REVISION = "0002_imported_dedupe_index"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

UTC = DateTime(timezone=True)
# SQLite gives INTEGER PRIMARY KEY its rowid only for plain INTEGER; PostgreSQL wants BIGINT.
RowId = BigInteger().with_variant(Integer(), "sqlite")


class SessionStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class Outcome(StrEnum):
    """What happened to one message in one session."""

    READ = "read"  # read and recorded (an assess session stops here)
    IMPORTED = "imported"  # created in the target and acknowledged
    DUPLICATE = "duplicate"  # not sent: the same message is imported already (see duplicate_of)
    SKIPPED = "skipped"  # not sent on purpose (outcome_detail says why: not mail, too large, ...)
    FAILED = "failed"  # could not be read or sent (outcome_detail holds the error)
    PENDING = "pending"  # read, queued for the target, not yet acknowledged


_IMPORTED = text(f"outcome = '{Outcome.IMPORTED.value}'")

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),  # import_20250611_180643
    Column("started_at_utc", UTC, nullable=False),
    Column("ended_at_utc", UTC),
    Column("status", String(16), nullable=False),
    Column("target", String(16), nullable=False),  # assess | dataverse
    Column("options_json", Text, nullable=False, default="{}"),
    Column("software_version", String(32), nullable=False),
    Column("host", String(255), nullable=False),
    Column("mailbox_owner", String(320)),
    Column("summary_json", Text),  # the session document as it stood when the session ended
)

sources = Table(
    "sources",
    metadata,
    Column("source_id", RowId, primary_key=True, autoincrement=True),
    Column("session_id", String(64), ForeignKey("sessions.session_id"), nullable=False),
    Column("path", Text, nullable=False),
    Column("kind", String(8), nullable=False),  # pst | ost | mbox | eml
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64)),
    Column("status", String(16), nullable=False),  # reading | read | failed
    Column("items_found", Integer),
    Column("error", Text),
    Column("started_at_utc", UTC, nullable=False),
    Column("ended_at_utc", UTC),
    UniqueConstraint("session_id", "path"),
)

messages = Table(
    "messages",
    metadata,
    Column("message_row_id", RowId, primary_key=True, autoincrement=True),
    Column("session_id", String(64), ForeignKey("sessions.session_id"), nullable=False),
    Column("source_id", RowId, ForeignKey("sources.source_id"), nullable=False),
    Column("item_id", String(255), nullable=False),
    Column("dedupe_key", String(400), nullable=False),
    Column("internet_message_id", Text),
    Column("in_reply_to", Text),
    Column("references", Text),  # space-separated Message-IDs, oldest first
    Column("conversation_topic", Text),
    Column("conversation_index", String(512)),  # hex
    Column("subject", Text, nullable=False, default=""),
    Column("sender_address", String(320)),
    Column("sender_name", Text),
    Column("sent_at_utc", UTC),
    Column("received_at_utc", UTC),
    Column("size_bytes", BigInteger, nullable=False, default=0),
    Column("attachment_count", Integer, nullable=False, default=0),
    Column("attachment_bytes", BigInteger, nullable=False, default=0),
    Column("body_sha256", String(64)),
    Column("content_sha256", String(64), nullable=False),
    Column("message_class", String(128), nullable=False),
    Column("item_kind", String(16), nullable=False),
    Column("importance", Integer, nullable=False, default=1),
    Column("folder_path", Text, nullable=False, default=""),
    Column("folder_role", String(16), nullable=False),
    Column("direction", String(8)),  # outgoing | incoming (relative to the mailbox owner), or NULL
    Column("list_id", Text),
    Column("list_unsubscribe", Text),
    Column("auto_submitted", String(64)),
    Column("precedence", String(32)),
    Column("outcome", String(16), nullable=False),
    Column("outcome_detail", Text),
    Column("duplicate_of", String(400)),  # session/item or dataverse id the duplicate matched
    Column("activity_id", String(36)),  # deterministic UUID5 of the dedupe key
    Column("dataverse_id", String(36)),  # the id Dataverse acknowledged
    Column("verified", Boolean),
    Column("processed_at_utc", UTC, nullable=False),
    UniqueConstraint("session_id", "source_id", "item_id"),
    Index(None, "session_id", "outcome"),
    # analytics read whole sessions: only the session/outcome and dedupe look-ups need an index,
    # and every further index costs the writer (a scan must record 50k+ rows/s). The dedupe
    # look-ups read the keys of imported messages only: a partial index serves them, and a row of
    # any other outcome (all a scan writes) costs it nothing (migration 0002).
    Index(
        "ix_messages_imported_dedupe_key",
        "dedupe_key",
        sqlite_where=_IMPORTED,
        postgresql_where=_IMPORTED,
    ),
)

recipients = Table(
    "recipients",
    metadata,
    Column("message_row_id", RowId, ForeignKey("messages.message_row_id"), nullable=False),
    Column("kind", String(4), nullable=False),  # to | cc | bcc
    Column("address", String(320), nullable=False),
    Column("name", Text),
    Index(None, "message_row_id"),
)

contacts = Table(
    "contacts",
    metadata,
    Column("contact_row_id", RowId, primary_key=True, autoincrement=True),
    Column("session_id", String(64), ForeignKey("sessions.session_id"), nullable=False),
    Column("address", String(320), nullable=False),
    Column("name", Text),
    Column("action", String(16), nullable=False),  # matched | created | failed | skipped
    Column("detail", Text),
    Column("dataverse_id", String(36)),
    Column("at_utc", UTC, nullable=False),
    UniqueConstraint("session_id", "address"),
)

errors = Table(
    "errors",
    metadata,
    Column("error_id", RowId, primary_key=True, autoincrement=True),
    Column("session_id", String(64), ForeignKey("sessions.session_id"), nullable=False),
    Column("source_id", RowId, ForeignKey("sources.source_id")),
    Column("message_row_id", RowId, ForeignKey("messages.message_row_id")),
    # open | read | warning | source | dedupe | contacts | send | verify (read: an item, or a
    # folder, the reader could not read; warning: a non-fatal problem with an item it did read,
    # such as a bad date; source: why reading a file stopped early, its reader dying...)
    Column("stage", String(16), nullable=False),
    Column("code", String(64), nullable=False),
    Column("file", Text),
    Column("folder", Text),
    Column("item", String(255)),
    Column("cause", Text, nullable=False),
    Column("at_utc", UTC, nullable=False),
    Index(None, "session_id"),
)

batches = Table(
    "batches",
    metadata,
    Column("batch_row_id", RowId, primary_key=True, autoincrement=True),
    Column("session_id", String(64), ForeignKey("sessions.session_id"), nullable=False),
    Column("started_at_utc", UTC, nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("operations", Integer, nullable=False),
    Column("succeeded", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("attempt", Integer, nullable=False, default=1),
    Column("http_status", Integer),
    Column("limit_code", String(16)),  # 0x80072322 | 0x80072321 | 0x80072326 on a 429
    Column("retry_after_s", Float),
    Column("request_bytes", BigInteger),
    Index(None, "session_id"),
)

metrics = Table(
    "metrics",
    metadata,
    Column("session_id", String(64), ForeignKey("sessions.session_id"), nullable=False),
    Column("at_utc", UTC, nullable=False),
    Column("name", String(64), nullable=False),  # messages_read, rss_bytes, cpu_percent, ...
    Column("value", Float, nullable=False),
    Column("labels_json", Text),
    Index(None, "session_id", "name"),
)

TABLES: dict[str, Table] = {t.name: t for t in metadata.sorted_tables}
