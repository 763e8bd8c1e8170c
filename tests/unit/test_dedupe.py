"""Deduplication: within a session, against earlier sessions, against Dataverse."""

from __future__ import annotations

from collections.abc import Iterable

from pstlib.dataverse.mapping import activity_id_for
from pstlib.importer.dedupe import (
    Deduplicator,
    DuplicateKind,
    dataverse_duplicates,
    item_ref,
)
from pstlib.models import Message


def test_first_copy_is_kept_and_later_copies_point_to_it() -> None:
    dedupe = Deduplicator()
    assert dedupe.check("mid:a", "s/1/1") is None
    again = dedupe.check("mid:a", "s/1/2")
    assert again is not None and again.kind is DuplicateKind.WITHIN_SESSION
    assert again.duplicate_of == "within_session:s/1/1"
    assert dedupe.check("mid:a", "s/1/1") is None  # the first copy itself (a resumed run)


def test_earlier_sessions_are_duplicates() -> None:
    dedupe = Deduplicator(earlier={"mid:a": "old/3/7"})
    found = dedupe.check("mid:a", "new/1/1")
    assert found is not None and found.duplicate_of == "earlier_session:old/3/7"
    assert dedupe.check("mid:b", "new/1/2") is None


def test_item_ref() -> None:
    assert item_ref("import_1", 4, "#12") == "import_1/4/#12"


class _Emails:
    def __init__(self, found: dict[str, str]) -> None:
        self.found = found
        self.asked: list[str] = []

    def find_emails_by_messageid(self, message_ids: Iterable[str]) -> dict[str, str]:
        self.asked = sorted(message_ids)
        return {m: self.found[m] for m in self.asked if m in self.found}


def test_dataverse_copies_under_another_id_are_duplicates_our_own_are_not() -> None:
    ours = Message(source_path="x", item_id="1", internet_message_id="<ours@x>")
    theirs = Message(source_path="x", item_id="2", internet_message_id="theirs@x")
    no_id = Message(source_path="x", item_id="3", subject="no message-id")
    client = _Emails({"<ours@x>": activity_id_for(ours.dedupe_key), "<theirs@x>": "abc"})
    found = dataverse_duplicates(client, [ours, theirs, no_id])
    assert client.asked == ["<ours@x>", "<theirs@x>"]  # a message without an id is not looked up
    assert list(found) == [theirs.dedupe_key]
    assert found[theirs.dedupe_key].duplicate_of == "dataverse:abc"
