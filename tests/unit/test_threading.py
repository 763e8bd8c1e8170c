"""pstlib.analytics.threading on tiny hand-made mailboxes whose threads are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pstlib.analytics.threading import flag_automated_messages, reply_pairs, thread_messages
from pstlib.errors import MissingColumnsError

T0 = pd.Timestamp("2024-03-04 09:00", tz="UTC")


def frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Messages with the store's columns; unspecified fields are missing."""
    columns = {
        "internet_message_id": None,
        "in_reply_to": None,
        "references": None,
        "conversation_index": None,
        "conversation_topic": None,
        "sender_address": None,
        "auto_submitted": None,
        "precedence": None,
        "list_id": None,
        "list_unsubscribe": None,
        "sent_at_utc": None,
    }
    out = pd.DataFrame([{**columns, **r} for r in rows])
    out["message_row_id"] = np.arange(1, len(out) + 1, dtype=np.int64)
    for c in columns:
        if c != "sent_at_utc":
            out[c] = out[c].astype("string")
    out["sent_at_utc"] = pd.to_datetime(out["sent_at_utc"], utc=True)
    return out


def by_row(threads: pd.DataFrame) -> pd.DataFrame:
    return threads.set_index("message_row_id")


def test_references_give_parents_and_a_missing_parent_becomes_a_container() -> None:
    messages = frame(
        [
            {"internet_message_id": "<A@x>"},  # 1: root
            {"internet_message_id": "<B@x>", "references": "<a@X>"},  # 2: reply to 1 (case!)
            {"internet_message_id": "<C@x>", "references": "<A@x> <B@x>"},  # 3: reply to 2
            # 4: reply to the missing <M@x>, itself a reply to <A@x> (known from 4's References)
            {"internet_message_id": "<D@x>", "references": "<A@x> <M@x>"},
            {"internet_message_id": "<E@x>", "in_reply_to": "<C@x> (message from Bo)"},  # 5
            {"internet_message_id": "<F@x>"},  # 6: a thread of its own
        ]
    )
    t = by_row(thread_messages(messages))
    assert t["parent_message_row_id"].tolist() == [pd.NA, 1, 2, pd.NA, 3, pd.NA]
    assert t["depth"].tolist() == [0, 1, 2, 2, 3, 0]  # 4 sits under the container M, under A
    assert t.loc[[1, 2, 3, 4, 5], "thread_id"].nunique() == 1
    assert t.loc[1, "thread_id"] == "a@x"
    assert t.loc[6, "thread_id"] == "f@x"
    assert t["linked_by"].astype(str).tolist() == [
        "none",
        "references",
        "references",
        "references",
        "in_reply_to",
        "none",
    ]


def test_two_replies_to_one_missing_root_share_its_thread() -> None:
    messages = frame(
        [
            {"internet_message_id": "<r1@x>", "in_reply_to": "<gone@x>"},
            {"internet_message_id": "<r2@x>", "references": "<gone@x>"},
        ]
    )
    t = thread_messages(messages)
    assert t["thread_id"].tolist() == ["gone@x", "gone@x"]
    assert t["parent_message_row_id"].isna().all()  # the parent is not in the archive
    assert t["depth"].tolist() == [1, 1]


def test_a_root_gets_its_parent_from_another_messages_references() -> None:
    # 2 has no headers of its own, but 3 says 2 follows 1 (JWZ step 1B)
    messages = frame(
        [
            {"internet_message_id": "<1@x>"},
            {"internet_message_id": "<2@x>"},
            {"internet_message_id": "<3@x>", "references": "<1@x> <2@x>"},
        ]
    )
    t = by_row(thread_messages(messages))
    assert t["parent_message_row_id"].tolist() == [pd.NA, 1, 2]
    assert t.loc[2, "linked_by"] == "inferred"


def test_a_reference_loop_is_cut_and_every_message_still_has_a_thread() -> None:
    messages = frame(
        [
            {"internet_message_id": "<p@x>", "in_reply_to": "<q@x>"},
            {"internet_message_id": "<q@x>", "in_reply_to": "<p@x>"},
        ]
    )
    t = thread_messages(messages)
    assert t["thread_id"].nunique() == 1
    assert t["parent_message_row_id"].isna().sum() == 1  # one link of the loop is gone
    assert sorted(t["depth"].tolist()) == [0, 1]


def test_conversation_index_and_topic_are_fallbacks() -> None:
    root = "01" + "ab" * 21  # 22 bytes
    messages = frame(
        [
            {"conversation_index": root.upper()},  # 1: the conversation's first message
            {"conversation_index": root + "0000000001"},  # 2: a reply (5 more bytes)
            # 3: a reply to a reply that is missing: hangs under the missing one's container
            {"conversation_index": root + "0000000002" + "0000000003"},
            {"conversation_topic": "Budget"},  # 4 and 5: no ids, no index, one topic
            {"conversation_topic": "budget "},
        ]
    )
    t = by_row(thread_messages(messages))
    assert t.loc[[1, 2, 3], "thread_id"].tolist() == ["ci:" + root] * 3
    assert t.loc[2, "parent_message_row_id"] == 1
    assert pd.isna(t.loc[3, "parent_message_row_id"])
    assert t.loc[[1, 2, 3], "depth"].tolist() == [0, 1, 2]
    assert t.loc[2, "linked_by"] == "conversation_index"
    assert t.loc[[4, 5], "thread_id"].tolist() == ["topic:budget", "topic:budget"]
    assert t.loc[[4, 5], "linked_by"].tolist() == ["none", "topic"]


def test_a_repeated_message_id_is_a_copy_of_its_first_row() -> None:
    messages = frame(
        [
            {"internet_message_id": "<a@x>"},
            {"internet_message_id": "<b@x>", "in_reply_to": "<a@x>"},
            {"internet_message_id": "<B@x>", "in_reply_to": "<a@x>"},  # the same message again
        ]
    )
    t = thread_messages(messages)
    assert t["duplicate_of_message_row_id"].tolist() == [pd.NA, pd.NA, 2]
    assert t["parent_message_row_id"].tolist() == [pd.NA, 1, 1]


def test_thread_messages_names_missing_columns_and_leaves_its_input_alone() -> None:
    messages = frame([{"internet_message_id": "<a@x>"}])
    before = messages.copy()
    thread_messages(messages)
    pd.testing.assert_frame_equal(messages, before)
    with pytest.raises(MissingColumnsError, match="references"):
        thread_messages(messages.drop(columns=["references"]))


def test_reply_pairs_keeps_people_and_drops_machines_and_self_replies() -> None:
    messages = frame(
        [
            # 1 -> 2: Bo answers Ann after 90 s: a pair
            {"internet_message_id": "<1@x>", "sender_address": "ann@x.com", "sent_at_utc": T0},
            {
                "internet_message_id": "<2@x>",
                "in_reply_to": "<1@x>",
                "sender_address": "Bo@x.com",
                "sent_at_utc": T0 + pd.Timedelta(seconds=90),
            },
            # 3: Bo follows up on his own mail: no pair
            {
                "internet_message_id": "<3@x>",
                "in_reply_to": "<2@x>",
                "sender_address": "bo@x.com",
                "sent_at_utc": T0 + pd.Timedelta(seconds=100),
            },
            # 4: Ann's out-of-office answer: an auto-reply, no pair
            {
                "internet_message_id": "<4@x>",
                "in_reply_to": "<3@x>",
                "sender_address": "ann@x.com",
                "auto_submitted": "auto-replied",
                "sent_at_utc": T0 + pd.Timedelta(seconds=110),
            },
            # 5 -> 6: Ann answers a no-reply notification: the parent is a machine, no pair
            {
                "internet_message_id": "<5@x>",
                "sender_address": "no-reply@svc.com",
                "sent_at_utc": T0,
            },
            {
                "internet_message_id": "<6@x>",
                "in_reply_to": "<5@x>",
                "sender_address": "ann@x.com",
                "sent_at_utc": T0 + pd.Timedelta(hours=1),
            },
            # 7: a reply dated before its parent (skewed clock): dropped
            {
                "internet_message_id": "<7@x>",
                "in_reply_to": "<1@x>",
                "sender_address": "cy@x.com",
                "sent_at_utc": T0 - pd.Timedelta(hours=1),
            },
        ]
    )
    threads = thread_messages(messages)
    pairs = reply_pairs(messages, threads)
    assert pairs[["parent_message_row_id", "reply_message_row_id"]].values.tolist() == [[1, 2]]
    assert pairs.loc[0, "replier_address"] == "bo@x.com"
    assert pairs.loc[0, "parent_sender_address"] == "ann@x.com"
    assert pairs.loc[0, "reply_delay_s"] == 90.0
    # without the machine filter, Ann's auto-reply to Bo (4) and her answer to the notification
    # (6) count too
    everything = reply_pairs(messages, threads, exclude_automated=False)
    assert everything["reply_message_row_id"].tolist() == [2, 4, 6]


def test_flag_automated_messages_reads_the_headers() -> None:
    messages = frame(
        [
            {"sender_address": "alerts@it.x.com"},
            {"sender_address": "ann@x.com", "auto_submitted": "auto-generated"},
            {"sender_address": "ann@x.com", "auto_submitted": "no"},
            {"sender_address": "news@x.com", "precedence": "Bulk"},
            {"sender_address": "shop@x.com", "list_unsubscribe": "<https://x.com/u>"},
            {"sender_address": "ann@x.com", "auto_submitted": "auto-replied"},
        ]
    )
    flags = flag_automated_messages(messages)
    assert flags["is_noreply_address"].tolist() == [True, False, False, False, False, False]
    assert flags["is_auto_generated"].tolist() == [False, True, False, False, False, False]
    assert flags["is_bulk"].tolist() == [False, False, False, True, True, False]
    assert flags["is_auto_reply"].tolist() == [False, False, False, False, False, True]


def test_in_reply_to_links_a_message_that_has_no_message_id_of_its_own() -> None:
    # 2 has no Message-ID (a draft, a broken client); its In-Reply-To still names its parent
    messages = frame(
        [
            {"internet_message_id": "<a@x>"},
            {"in_reply_to": " <A@x> "},
        ]
    )
    t = by_row(thread_messages(messages))
    assert t.loc[2, "parent_message_row_id"] == 1
    assert t.loc[2, "linked_by"] == "in_reply_to"
    assert t.loc[2, "thread_id"] == t.loc[1, "thread_id"] == "a@x"


BLANKS = ["", " ", "\t", "\n", "\u3000", "\xa0", "\x1c", "\x85"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5),  # the message's id
            st.lists(st.integers(0, 6), max_size=3),  # its References (6: not in the archive)
            st.sampled_from(BLANKS),
            st.sampled_from(BLANKS),
            st.booleans(),  # upper-case the ids
        ),
        min_size=1,
        max_size=8,
    )
)
def test_blanks_and_case_around_ids_never_change_the_threads(
    rows: list[tuple[int, list[int], str, str, bool]],
) -> None:
    def spell(i: int, before: str, after: str, upper: bool) -> str:
        text = f"m{i}@X.org" if upper else f"m{i}@x.org"
        return f"{before}<{before}{text}{after}>{after}"

    plain = frame(
        [
            {
                "internet_message_id": spell(i, "", "", False),
                "references": " ".join(spell(r, "", "", False) for r in refs) or None,
            }
            for i, refs, _, _, _ in rows
        ]
    )
    dressed = frame(
        [
            {
                "internet_message_id": spell(i, before, after, upper),
                "references": before.join(spell(r, before, after, upper) for r in refs) or None,
            }
            for i, refs, before, after, upper in rows
        ]
    )
    a, b = thread_messages(plain), thread_messages(dressed)
    pd.testing.assert_frame_equal(a, b)
    # every link points at a message of the archive, in the same thread, one level up
    t = by_row(a)
    linked = t["parent_message_row_id"].dropna().astype(int)
    assert linked.isin(t.index).all()
    assert (
        t.loc[linked.index, "thread_id"].to_numpy() == t.loc[linked, "thread_id"].to_numpy()
    ).all()
    assert (t.loc[linked.index, "depth"].to_numpy() > t.loc[linked, "depth"].to_numpy()).all()


def test_most_frequent_value_per_key_ties_go_to_the_last_seen() -> None:
    import numpy as np

    from pstlib.analytics.threading import most_frequent

    keys = np.array([0, 0, 0, 1, 1, 2, 2, 0], dtype=np.int64)
    values = np.array([5, 3, 5, 1, 2, 4, 9, 3], dtype=np.int64)
    # key 0: 5 twice, 3 twice, 3 seen last -> 3; key 1: tie 1/2, 2 last -> 2; row 6 left out
    key, value = most_frequent(keys, values, np.array([0, 1, 2, 3, 4, 5, 7], dtype=np.int64))
    assert key.tolist() == [0, 1, 2] and value.tolist() == [3, 2, 4]
    empty = most_frequent(keys, values, np.empty(0, dtype=np.int64))
    assert [a.tolist() for a in empty] == [[], []]
