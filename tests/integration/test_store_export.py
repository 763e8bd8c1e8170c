"""Exports of every table in every format read back equal to what the loaders give."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from pstlib.errors import StoreError
from pstlib.models import Address, Message, Recipient, RecipientKind
from pstlib.store import Outcome, Store, export_table, load_table
from pstlib.store.export import FORMATS, read_export
from pstlib.store.schema import TABLES

T0 = datetime(2025, 6, 11, 18, 6, 43, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store.open(tmp_path_factory.mktemp("export") / "store.sqlite")
    session_id = store.begin_session("dataverse", {"batch": 100}, session_id="import_export")
    source_id = store.add_source(session_id, "/mail/ä.pst", "pst", 10, None)
    with store.writer(session_id) as writer:
        writer.add_message(
            source_id,
            Message(
                "/mail/ä.pst",
                "1",
                subject='=HYPERLINK("x") — “quoted”, comma\nnew line',
                sender=Address("a@example.com", "Ä, B"),
                recipients=(Recipient(RecipientKind.TO, Address("b@example.com", "B")),),
                sent_at_utc=T0,
            ),
            Outcome.IMPORTED,
            dataverse_id="0f8fad5b-d9cb-469f-a165-70867728950e",
        )
        writer.add_message(source_id, Message("/mail/ä.pst", "2"), Outcome.FAILED, "unreadable")
        writer.update_outcomes([{"source_id": source_id, "item_id": "1", "verified": True}])
        writer.add_error("read", ValueError("bad item"), source_id=source_id, item="2")
        writer.add_contact("b@example.com", "created", name="B")
        writer.add_batch(T0, 0.5, 1, 1, 0, http_status=200)
        writer.add_metric("messages_read", 2.0, {"worker": "1"})
    store.finish_source(source_id, "read", 2)
    store.end_session(session_id, "completed", {"found": 2})
    yield store
    store.close()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table", sorted(TABLES))
def test_export_reads_back_equal(filled_store: Store, tmp_path: Path, table: str, fmt: str) -> None:
    path = export_table(filled_store, table, fmt, tmp_path)  # type: ignore[arg-type]
    assert path == tmp_path / f"{table}.{fmt}"
    expected = load_table(filled_store, table)
    assert len(expected) >= 1
    pd.testing.assert_frame_equal(read_export(path, table), expected)


def test_json_is_records_with_iso_utc_times(filled_store: Store, tmp_path: Path) -> None:
    path = export_table(filled_store, "messages", "json", tmp_path / "out.json", "import_export")
    records = json.loads(path.read_text(encoding="utf-8"))
    assert [r["item_id"] for r in records] == ["1", "2"]
    assert records[0]["sent_at_utc"] == "2025-06-11T18:06:43.123456Z"
    assert records[1]["sent_at_utc"] is None
    assert records[0]["verified"] is True
    assert records[0]["sender_name"] == "Ä, B"


def test_export_to_the_current_directory_by_default(
    filled_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = export_table(filled_store, "sessions", "csv", session_id="import_export")
    assert path == tmp_path / "sessions_import_export.csv"


def test_unknown_table_or_format_is_refused(filled_store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"unknown table 'nope' \(valid: batches, contacts"):
        export_table(filled_store, "nope", "csv", tmp_path)
    with pytest.raises(StoreError, match="unknown export format"):
        export_table(filled_store, "messages", "xlsx", tmp_path)  # type: ignore[arg-type]
