"""pstlib.analytics.senders on tiny hand-made mailboxes whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pstlib.analytics.senders import (
    classify_senders,
    peak_times,
    profile_senders,
    volume_trends,
)
from pstlib.errors import MissingColumnsError

OWNER = "me@corp.com"
T0 = pd.Timestamp("2024-01-01 09:00", tz="UTC")
TEXT = [
    "internet_message_id",
    "in_reply_to",
    "references",
    "conversation_index",
    "conversation_topic",
    "subject",
    "sender_address",
    "sender_name",
    "auto_submitted",
    "precedence",
    "list_id",
    "list_unsubscribe",
]


def mailbox(rows: list[dict[str, object]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(messages, recipients) with the store's columns. A row's ``to`` is its recipient list;
    ``id`` and ``reply_to`` give Message-IDs (``<id@t>``) and In-Reply-To."""
    messages = pd.DataFrame(
        {
            "message_row_id": np.arange(1, len(rows) + 1, dtype=np.int64),
            **{c: pd.array([r.get(c) for r in rows], dtype="string") for c in TEXT},
            "sent_at_utc": pd.to_datetime([r["at"] for r in rows], utc=True),
        }
    )
    messages["internet_message_id"] = pd.array(
        [f"<{r['id']}@t>" if "id" in r else None for r in rows], dtype="string"
    )
    messages["in_reply_to"] = pd.array(
        [f"<{r['reply_to']}@t>" if "reply_to" in r else None for r in rows], dtype="string"
    )
    messages["direction"] = np.where(messages["sender_address"] == OWNER, "outgoing", "incoming")
    recipients = pd.DataFrame(
        [
            {"message_row_id": i + 1, "kind": "to", "address": a, "name": None}
            for i, r in enumerate(rows)
            for a in r.get("to", [OWNER])  # type: ignore[attr-defined]
        ]
    )
    return messages, recipients


def at(hours: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=hours)


@pytest.fixture
def small() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows: list[dict[str, object]] = [
        # Ann (a colleague) writes twice; the owner answers after 1 h and 3 h; Ann answers the
        # owner's first answer after 2 h
        {
            "id": "a1",
            "sender_address": "ann@corp.com",
            "sender_name": "Ann",
            "at": at(0),
            "subject": "Plan",
        },
        {
            "id": "m1",
            "reply_to": "a1",
            "sender_address": OWNER,
            "at": at(1),
            "to": ["ann@corp.com"],
        },
        {
            "id": "a2",
            "reply_to": "m1",
            "sender_address": "ann@corp.com",
            "sender_name": "Ann B",
            "at": at(3),
        },
        {
            "id": "a3",
            "sender_address": "ann@corp.com",
            "sender_name": "Ann",
            "at": at(24),
            "subject": "Other",
        },
        {
            "id": "m2",
            "reply_to": "a3",
            "sender_address": OWNER,
            "at": at(27),
            "to": ["ann@corp.com"],
        },
        # a newsletter, every message bulk
        {
            "id": "n1",
            "sender_address": "weekly@news.shop.com",
            "at": at(5),
            "precedence": "bulk",
            "list_id": "<weekly.news.shop.com>",
        },
        {
            "id": "n2",
            "sender_address": "weekly@news.shop.com",
            "at": at(173),
            "precedence": "bulk",
            "list_id": "<weekly.news.shop.com>",
        },
        # a machine
        {
            "id": "s1",
            "sender_address": "no-reply@it.corp.com",
            "at": at(6),
            "auto_submitted": "auto-generated",
        },
        # a vendor's billing mailbox
        {
            "id": "v1",
            "sender_address": "billing@supplier.com",
            "at": at(7),
            "subject": "Invoice 123",
        },
        {
            "id": "v2",
            "sender_address": "billing@supplier.com",
            "at": at(200),
            "subject": "Invoice 124",
        },
        # a stranger writes once
        {"id": "x1", "sender_address": "zed@elsewhere.org", "at": at(8), "subject": "Hello"},
    ]
    return mailbox(rows)


def test_reply_times_are_the_owners_answers_to_the_sender_and_the_senders_to_the_owner(
    small: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    messages, recipients = small
    profile = profile_senders(messages, recipients, owner_address=OWNER).set_index("sender_address")
    ann = profile.loc["ann@corp.com"]
    assert ann["message_count"] == 3
    assert ann["sent_to_count"] == 2
    assert ann["sender_name"] == "Ann"  # used twice, "Ann B" once
    assert ann["owner_reply_count"] == 2
    assert ann["owner_reply_delay_mean_s"] == 2 * 3600.0  # 1 h and 3 h
    assert ann["owner_reply_delay_median_s"] == 2 * 3600.0
    assert ann["sender_reply_count"] == 1
    assert ann["sender_reply_delay_median_s"] == 2 * 3600.0  # m1 at 1 h, a2 at 3 h
    assert np.isnan(profile.loc["zed@elsewhere.org", "owner_reply_delay_mean_s"])
    assert OWNER not in profile.index
    # first and last contact either way; recency counts from the last message (v2 at 200 h)
    assert ann["first_contact_at_utc"] == at(0)
    assert ann["last_contact_at_utc"] == at(27)
    assert ann["days_since_last_contact"] == pytest.approx((200 - 27) / 24, abs=1e-3)
    assert ann["active_months"] == 1.0  # less than a month: counted as one
    assert ann["messages_per_month"] == 3.0


def test_classes_follow_the_documented_rules(small: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    messages, recipients = small
    classes = classify_senders(messages, recipients, owner_address=OWNER).set_index(
        "sender_address"
    )
    assert classes["sender_class"].astype(str).to_dict() == {
        "ann@corp.com": "internal_colleague",  # the owner's domain
        "billing@supplier.com": "vendor",  # a role mailbox with invoices
        "no-reply@it.corp.com": "automated",  # before the domain rule
        "weekly@news.shop.com": "newsletter",  # all bulk
        "zed@elsewhere.org": "one_off",  # one thread
    }
    assert classes.loc["no-reply@it.corp.com", "class_confidence"] == 0.95
    assert classes.loc["weekly@news.shop.com", "class_confidence"] == 1.0
    # role mailbox and invoices: 0.5 + 2 x 0.25, capped at 0.95
    assert classes.loc["billing@supplier.com", "class_confidence"] == 0.95
    assert classes["class_confidence"].between(0, 1).all()


def test_the_owner_is_found_from_outgoing_mail_when_not_given(
    small: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    messages, recipients = small
    given = profile_senders(messages, recipients, owner_address=OWNER)
    found = profile_senders(messages, recipients)
    pd.testing.assert_frame_equal(given, found)


def test_importance_is_between_0_and_10_and_ranks_the_two_way_correspondent_first(
    small: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    messages, recipients = small
    profile = profile_senders(messages, recipients, owner_address=OWNER)
    assert profile["importance_score"].between(0, 10).all()
    assert profile.loc[0, "sender_address"] == "ann@corp.com"
    # Ann: volume 1 (most mail), reciprocity 2·2/5, recency 0.5**(173/24/90), replies 2/3
    expected = 10 * (0.4 * 1.0 + 0.2 * 0.8 + 0.2 * 0.5 ** ((200 - 27) / 24 / 90) + 0.2 * 2 / 3)
    assert profile.loc[0, "importance_score"] == pytest.approx(expected, abs=0.01)


def test_trend_finds_a_sender_who_writes_more_every_month() -> None:
    # 1, 2, ..., 12 messages in twelve consecutive months: increasing; a steady sender is stable
    rows: list[dict[str, object]] = []
    for month in range(12):
        start = pd.Timestamp("2023-01-03", tz="UTC") + pd.DateOffset(months=month)
        rows += [
            {"sender_address": "up@x.com", "at": start + pd.Timedelta(hours=i)}
            for i in range(month + 1)
        ]
        rows += [
            {"sender_address": "flat@x.com", "at": start + pd.Timedelta(hours=i)} for i in range(3)
        ]
    messages, _ = mailbox(rows)
    profile = profile_senders(messages, owner_address=OWNER).set_index("sender_address")
    assert profile.loc["up@x.com", "trend"] == "increasing"
    assert profile.loc["up@x.com", "trend_rho"] == pytest.approx(1.0)
    assert profile.loc["up@x.com", "trend_p_value"] < 1e-6
    assert profile.loc["up@x.com", "trend_months"] == 12
    assert profile.loc["flat@x.com", "trend"] == "stable"  # constant: no correlation at all
    assert np.isnan(profile.loc["flat@x.com", "trend_rho"])


def test_volume_trends_counts_each_month_including_empty_ones() -> None:
    rows: list[dict[str, object]] = [
        {"sender_address": "a@x.com", "at": "2024-01-05"},
        {"sender_address": OWNER, "at": "2024-01-20"},
        {"sender_address": "b@x.com", "at": "2024-03-02"},
    ]
    messages, _ = mailbox(rows)
    trends = volume_trends(messages)
    assert trends["period_start_utc"].dt.month.tolist() == [1, 2, 3]
    assert trends["message_count"].tolist() == [2, 0, 1]
    assert trends["incoming_count"].tolist() == [1, 0, 1]
    assert trends["outgoing_count"].tolist() == [1, 0, 0]
    assert trends["sender_count"].tolist() == [2, 0, 1]
    assert trends["message_count_rolling_3"].tolist() == [2.0, 1.0, 1.0]


def test_peak_times_has_168_cells_in_the_zone_asked_for() -> None:
    rows: list[dict[str, object]] = [
        {"sender_address": "a@x.com", "at": "2024-01-01 23:30"},  # a Monday, 23h UTC
        {"sender_address": "a@x.com", "at": "2024-01-01 23:45"},
    ]
    messages, _ = mailbox(rows)
    utc = peak_times(messages)
    assert len(utc) == 168
    assert utc.loc[(utc["weekday"] == 0) & (utc["hour"] == 23), "message_count"].item() == 2
    berlin = peak_times(messages, tz="Europe/Berlin")  # 00:30 on Tuesday there
    assert berlin.loc[(berlin["weekday"] == 1) & (berlin["hour"] == 0), "message_count"].item() == 2
    assert berlin["share"].sum() == pytest.approx(1.0)


def test_missing_columns_are_named_and_input_is_not_changed(
    small: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    messages, recipients = small
    before = messages.copy()
    profile_senders(messages, recipients)
    pd.testing.assert_frame_equal(messages, before)
    with pytest.raises(MissingColumnsError, match="subject"):
        classify_senders(messages.drop(columns=["subject"]))
    with pytest.raises(MissingColumnsError, match="sent_at_utc"):
        peak_times(messages.drop(columns=["sent_at_utc"]))


def test_one_sender_however_the_address_is_spelled_and_the_name_used_most() -> None:
    messages, recipients = mailbox(
        [
            {"id": "b1", "sender_address": "Bo@Y.com ", "sender_name": "Bo", "at": at(0)},
            {"id": "b2", "sender_address": " bo@y.com", "sender_name": "Robert", "at": at(1)},
            {"id": "b3", "sender_address": "BO@y.com", "sender_name": "Robert", "at": at(2)},
            {"id": "b4", "sender_address": "bo@y.com", "sender_name": "Bo", "at": at(3)},
            # the owner writes to Bo (spelled another way again)
            {"id": "m1", "sender_address": OWNER, "at": at(4), "to": ["BO@Y.COM"]},
        ]
    )
    profile = profile_senders(messages, recipients, owner_address=OWNER)
    assert profile["sender_address"].tolist() == ["bo@y.com"]
    bo = profile.iloc[0]
    assert (bo["message_count"], bo["sent_to_count"]) == (4, 1)
    # Bo and Robert twice each: the tie goes to the name seen last
    assert bo["sender_name"] == "Bo"
    assert bo["last_contact_at_utc"] == at(4)


def test_an_empty_mailbox_gives_empty_profiles_and_classes() -> None:
    messages, recipients = mailbox([{"id": "x", "sender_address": "a@b.com", "at": at(0)}])
    messages, recipients = messages.iloc[:0], recipients.iloc[:0]
    profile = profile_senders(messages, recipients, owner_address=OWNER)
    assert profile.empty and "importance_score" in profile.columns
    assert classify_senders(messages, recipients, owner_address=OWNER).empty
