"""Reconciliation on tiny inline tables whose answer is known."""

from __future__ import annotations

import pandas as pd

from pstlib.importer.reconcile import reconcile_session

SESSION = {"session_id": "s1", "target": "dataverse"}
SOURCES = pd.DataFrame(
    {
        "source_id": [1, 2],
        "path": ["a.pst", "bad.pst"],
        "status": ["read", "failed"],
        "items_found": [7, 0],  # a.pst: 6 messages recorded + 1 unreadable item
        "error": [None, "bad.pst: truncated"],
    }
)
ERRORS = pd.DataFrame(
    {"stage": ["read", "open"], "source_id": [1, 2], "item": ["#9", None],
     "cause": ["unreadable item", "truncated"]}
)


def _messages() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "message_row_id": [1, 2, 3, 4, 5, 6],
            "source_id": [1] * 6,
            "item_id": ["#1", "#2", "#3", "#4", "#5", "#6"],
            "dedupe_key": ["k1", "k2", "k3", "k1", "k5", "k6"],
            # imported+verified, imported unverified, failed after sending, duplicate,
            # skipped (not mail), failed before sending (could not be mapped)
            "outcome": ["imported", "imported", "failed", "duplicate", "skipped", "failed"],
            "outcome_detail": [None, None, "send: HTTP 400", "within_session", "not mail", "map: x"],
            "activity_id": ["a1", "a2", "a3", None, None, None],
            "dataverse_id": ["a1", "a2", None, None, None, None],
            "verified": pd.array([True, False, None, None, None, None], dtype="boolean"),
        }
    )


def test_chain_counts_and_differences_item_by_item() -> None:
    messages = _messages()
    before = messages.copy()
    chain = reconcile_session(SESSION, SOURCES, messages, ERRORS)
    pd.testing.assert_frame_equal(messages, before)  # the input is not modified
    assert (chain.found, chain.read, chain.unreadable) == (7, 6, 1)
    assert chain.accounted == {"duplicate": 1, "skipped": 1}
    assert (chain.to_send, chain.sent, chain.acknowledged) == (4, 3, 2)
    assert (chain.verified, chain.checked) == (1, 2)
    assert not chain.balanced
    stages = chain.differences.set_index("stage")["item_id"].fillna("-").groupby(level=0).agg(list)
    assert stages.to_dict() == {
        "open": ["-"],  # bad.pst could not be opened
        "read": ["#9"],  # the unreadable item
        "send": ["#6"],  # never sent
        "acknowledge": ["#3"],  # sent, refused
        "verify": ["#2"],  # acknowledged, not found when read back
    }


def test_a_clean_session_balances() -> None:
    messages = _messages().iloc[:1]
    sources = SOURCES.iloc[:1].assign(items_found=1)
    chain = reconcile_session(SESSION, sources, messages, ERRORS.iloc[:0])
    assert chain.balanced and chain.to_send == chain.sent == chain.verified == 1


def test_items_found_but_never_recorded_are_listed() -> None:
    sources = SOURCES.iloc[:1].assign(items_found=10)
    chain = reconcile_session(SESSION, sources, _messages(), ERRORS.iloc[:1])
    missing = chain.differences[chain.differences["reason"].str.contains("not recorded", na=False)]
    assert missing["reason"].tolist() == ["3 item(s) found, not recorded"]


def test_assess_sessions_stop_at_read() -> None:
    messages = _messages().assign(outcome="read", activity_id=None, dataverse_id=None)
    chain = reconcile_session({**SESSION, "target": "assess"}, SOURCES, messages, ERRORS)
    assert chain.sent is None and chain.acknowledged is None and chain.verified is None
    assert set(chain.differences["stage"]) == {"open", "read"}
