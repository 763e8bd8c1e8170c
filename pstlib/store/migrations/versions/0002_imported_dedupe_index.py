"""Index only the dedupe keys of imported messages (a partial index), not every message's.

Revision ID: 0002_imported_dedupe_index
Revises: 0001_initial_session_store
Create Date: 2026-11-25

Why: ``ix_messages_dedupe_key`` indexed every message row, and its upkeep (a random insert into a
B-tree of long keys) was the writer's largest single SQLite cost: about 3.5 of the 19 CPU us a
scan spends recording a message (an index on ``(outcome, dedupe_key)`` costs the same). No query looks a message up by its dedupe key alone: the dedupe
look-ups (:meth:`pstlib.store.Store.known_dedupe_keys`,
:func:`pstlib.importer.dedupe.earlier_imports`) read the keys of ``outcome = 'imported'`` rows.
A partial index on ``dedupe_key WHERE outcome = 'imported'`` serves exactly those and costs a row
of any other outcome (every row a scan writes) nothing: SQLite (3.8+) and PostgreSQL both have
partial indexes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_imported_dedupe_index"
down_revision: str | None = "0001_initial_session_store"
branch_labels: str | None = None
depends_on: str | None = None

IMPORTED = sa.text("outcome = 'imported'")


def upgrade() -> None:
    op.drop_index("ix_messages_dedupe_key", table_name="messages")
    op.create_index(
        "ix_messages_imported_dedupe_key",
        "messages",
        ["dedupe_key"],
        sqlite_where=IMPORTED,
        postgresql_where=IMPORTED,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_imported_dedupe_key", table_name="messages")
    op.create_index("ix_messages_dedupe_key", "messages", ["dedupe_key"])
