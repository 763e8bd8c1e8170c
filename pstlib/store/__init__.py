"""The analytics store: sessions, sources and every message's fate, on SQLite or PostgreSQL.

The loaders and the export (pandas, pyarrow) are imported on first use, so that what only writes
(the import's collector process, ``pstlib sessions``) starts without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pstlib.store.db import Store
from pstlib.store.schema import SCHEMA_REVISION, Outcome, SessionStatus
from pstlib.store.writer import MessageWriter

if TYPE_CHECKING:
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

_LAZY = {
    "export_table": "pstlib.store.export",
    **dict.fromkeys(
        (
            "load_batches",
            "load_contacts",
            "load_errors",
            "load_messages",
            "load_metrics",
            "load_recipients",
            "load_sessions",
            "load_sources",
            "load_table",
        ),
        "pstlib.store.load",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
