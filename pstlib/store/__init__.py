"""The analytics store: sessions, sources and every message's fate, on SQLite or PostgreSQL."""

from pstlib.store.db import Store
from pstlib.store.export import export_table
from pstlib.store.load import (
    load_batches,
    load_contacts,
    load_errors,
    load_messages,
    load_metrics,
    load_recipients,
    load_sessions,
    load_sources,
    load_table,
)
from pstlib.store.schema import SCHEMA_REVISION, Outcome, SessionStatus
from pstlib.store.writer import MessageWriter

__all__ = [
    "SCHEMA_REVISION",
    "MessageWriter",
    "Outcome",
    "SessionStatus",
    "Store",
    "export_table",
    "load_batches",
    "load_contacts",
    "load_errors",
    "load_messages",
    "load_metrics",
    "load_recipients",
    "load_sessions",
    "load_sources",
    "load_table",
]
