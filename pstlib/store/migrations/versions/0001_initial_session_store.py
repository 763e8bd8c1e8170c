"""Initial session store: sessions, sources, messages, recipients, contacts, errors, batches...

Revision ID: 0001_initial_session_store
Revises:
Create Date: 2025-06-11

Tables are spelled out here (not ``metadata.create_all``) so that this revision stays what it was
when later revisions change ``schema.py``. Constraint and index names follow the naming convention
of ``schema.metadata``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial_session_store"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

UTC = sa.DateTime(timezone=True)


def _row_id() -> sa.types.TypeEngine[int]:
    # INTEGER PRIMARY KEY is SQLite's rowid; PostgreSQL wants BIGINT (BIGSERIAL when a primary key).
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("started_at_utc", UTC, nullable=False),
        sa.Column("ended_at_utc", UTC),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("options_json", sa.Text, nullable=False),
        sa.Column("software_version", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("mailbox_owner", sa.String(320)),
        sa.Column("summary_json", sa.Text),
        sa.PrimaryKeyConstraint("session_id", name="pk_sessions"),
    )
    op.create_table(
        "sources",
        sa.Column("source_id", _row_id(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("items_found", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("started_at_utc", UTC, nullable=False),
        sa.Column("ended_at_utc", UTC),
        sa.PrimaryKeyConstraint("source_id", name="pk_sources"),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.session_id"], name="fk_sources_session_id_sessions"
        ),
        sa.UniqueConstraint("session_id", "path", name="uq_sources_session_id_path"),
    )
    op.create_table(
        "messages",
        sa.Column("message_row_id", _row_id(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("source_id", _row_id(), nullable=False),
        sa.Column("item_id", sa.String(255), nullable=False),
        sa.Column("dedupe_key", sa.String(400), nullable=False),
        sa.Column("internet_message_id", sa.Text),
        sa.Column("in_reply_to", sa.Text),
        sa.Column("references", sa.Text),
        sa.Column("conversation_topic", sa.Text),
        sa.Column("conversation_index", sa.String(512)),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("sender_address", sa.String(320)),
        sa.Column("sender_name", sa.Text),
        sa.Column("sent_at_utc", UTC),
        sa.Column("received_at_utc", UTC),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("attachment_count", sa.Integer, nullable=False),
        sa.Column("attachment_bytes", sa.BigInteger, nullable=False),
        sa.Column("body_sha256", sa.String(64)),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("message_class", sa.String(128), nullable=False),
        sa.Column("item_kind", sa.String(16), nullable=False),
        sa.Column("importance", sa.Integer, nullable=False),
        sa.Column("folder_path", sa.Text, nullable=False),
        sa.Column("folder_role", sa.String(16), nullable=False),
        sa.Column("direction", sa.String(8)),
        sa.Column("list_id", sa.Text),
        sa.Column("list_unsubscribe", sa.Text),
        sa.Column("auto_submitted", sa.String(64)),
        sa.Column("precedence", sa.String(32)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_detail", sa.Text),
        sa.Column("duplicate_of", sa.String(400)),
        sa.Column("activity_id", sa.String(36)),
        sa.Column("dataverse_id", sa.String(36)),
        sa.Column("verified", sa.Boolean),
        sa.Column("processed_at_utc", UTC, nullable=False),
        sa.PrimaryKeyConstraint("message_row_id", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.session_id"], name="fk_messages_session_id_sessions"
        ),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sources.source_id"], name="fk_messages_source_id_sources"
        ),
        sa.UniqueConstraint(
            "session_id", "source_id", "item_id", name="uq_messages_session_id_source_id_item_id"
        ),
    )
    op.create_index("ix_messages_session_id_outcome", "messages", ["session_id", "outcome"])
    op.create_index("ix_messages_dedupe_key", "messages", ["dedupe_key"])
    op.create_table(
        "recipients",
        sa.Column("message_row_id", _row_id(), nullable=False),
        sa.Column("kind", sa.String(4), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("name", sa.Text),
        sa.ForeignKeyConstraint(
            ["message_row_id"],
            ["messages.message_row_id"],
            name="fk_recipients_message_row_id_messages",
        ),
    )
    op.create_index("ix_recipients_message_row_id", "recipients", ["message_row_id"])
    op.create_table(
        "contacts",
        sa.Column("contact_row_id", _row_id(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("dataverse_id", sa.String(36)),
        sa.Column("at_utc", UTC, nullable=False),
        sa.PrimaryKeyConstraint("contact_row_id", name="pk_contacts"),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.session_id"], name="fk_contacts_session_id_sessions"
        ),
        sa.UniqueConstraint("session_id", "address", name="uq_contacts_session_id_address"),
    )
    op.create_table(
        "errors",
        sa.Column("error_id", _row_id(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("source_id", _row_id()),
        sa.Column("message_row_id", _row_id()),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("file", sa.Text),
        sa.Column("folder", sa.Text),
        sa.Column("item", sa.String(255)),
        sa.Column("cause", sa.Text, nullable=False),
        sa.Column("at_utc", UTC, nullable=False),
        sa.PrimaryKeyConstraint("error_id", name="pk_errors"),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.session_id"], name="fk_errors_session_id_sessions"
        ),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sources.source_id"], name="fk_errors_source_id_sources"
        ),
        sa.ForeignKeyConstraint(
            ["message_row_id"],
            ["messages.message_row_id"],
            name="fk_errors_message_row_id_messages",
        ),
    )
    op.create_index("ix_errors_session_id", "errors", ["session_id"])
    op.create_table(
        "batches",
        sa.Column("batch_row_id", _row_id(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("started_at_utc", UTC, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("operations", sa.Integer, nullable=False),
        sa.Column("succeeded", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("limit_code", sa.String(16)),
        sa.Column("retry_after_s", sa.Float),
        sa.Column("request_bytes", sa.BigInteger),
        sa.PrimaryKeyConstraint("batch_row_id", name="pk_batches"),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.session_id"], name="fk_batches_session_id_sessions"
        ),
    )
    op.create_index("ix_batches_session_id", "batches", ["session_id"])
    op.create_table(
        "metrics",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("at_utc", UTC, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("labels_json", sa.Text),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.session_id"], name="fk_metrics_session_id_sessions"
        ),
    )
    op.create_index("ix_metrics_session_id_name", "metrics", ["session_id", "name"])


def downgrade() -> None:
    for table in ("metrics", "batches", "errors", "contacts", "recipients", "messages", "sources"):
        op.drop_table(table)
    op.drop_table("sessions")
