"""Store column types map to the pandas dtypes the analyses expect; times are written as UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pandas as pd

from pstlib.store import schema
from pstlib.store.load import TIME_DTYPE, column_dtype, empty_frame
from pstlib.store.writer import _sqlite_time


def test_column_dtypes_follow_the_schema() -> None:
    messages = schema.messages.c
    assert column_dtype("messages", messages.sent_at_utc) == TIME_DTYPE
    assert column_dtype("messages", messages.subject) == pd.StringDtype()
    assert column_dtype("messages", messages.size_bytes) == "int64"  # NOT NULL
    assert column_dtype("errors", schema.errors.c.source_id) == "Int64"  # may be NULL
    assert column_dtype("messages", messages.verified) == "boolean"
    assert column_dtype("batches", schema.batches.c.duration_s) == "float64"
    for name in ("outcome", "folder_role", "item_kind", "direction"):
        assert column_dtype("messages", messages[name]) == "category"


def test_empty_frames_carry_categories_in_vocabulary_order() -> None:
    frame = empty_frame("messages")
    assert list(frame["outcome"].cat.categories) == [o.value for o in schema.Outcome]
    assert str(frame["processed_at_utc"].dtype) == "datetime64[us, UTC]"
    assert list(empty_frame("recipients")["kind"].cat.categories) == ["to", "cc", "bcc"]


def test_sqlite_time_is_utc_with_microseconds() -> None:
    # 20:06:43.5 at +02:00 is 18:06:43.5 UTC; a naive time is taken as UTC already.
    plus_two = timezone(timedelta(hours=2))
    assert _sqlite_time(datetime(2025, 6, 11, 20, 6, 43, 500000, tzinfo=plus_two)) == (
        "2025-06-11 18:06:43.500000"
    )
    assert (
        _sqlite_time(datetime(2025, 6, 11, 18, 6, 43, tzinfo=UTC)) == "2025-06-11 18:06:43.000000"
    )
    assert _sqlite_time(datetime(1601, 1, 1)) == "1601-01-01 00:00:00.000000"
    assert _sqlite_time(None) is None
