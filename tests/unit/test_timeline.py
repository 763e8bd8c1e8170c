"""pstlib.analytics.timeline on tiny hand-made timelines whose right answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pstlib.analytics import timeline
from pstlib.errors import MissingColumnsError

START = pd.Timestamp("2024-01-01")  # a Monday
OWNER = "owner@example.com"


def _events(
    contact: str,
    per_day: np.ndarray,
    *,
    days: pd.DatetimeIndex,
    direction: np.ndarray | None = None,
    auto: np.ndarray | None = None,
    first_id: int = 0,
) -> pd.DataFrame:
    """One event per message: ``per_day[i]`` messages on ``days[i]`` at 10:00 UTC."""
    counts = per_day.astype(int)
    when = np.repeat(days.to_numpy(), counts) + np.timedelta64(10, "h")
    n = len(when)
    return pd.DataFrame(
        {
            "message_row_id": np.arange(first_id, first_id + n),
            "contact_address": contact,
            "sent_at_utc": pd.to_datetime(when).tz_localize("UTC"),
            "direction": "incoming" if direction is None else np.repeat(direction, counts),
            "folder_path": "Inbox",
            "auto_submitted": None if auto is None else np.repeat(auto, counts),
        }
    )


def _weekday_series(rate: float, days: pd.DatetimeIndex, seed: int) -> np.ndarray:
    """Poisson(rate) on weekdays, nothing at weekends."""
    rng = np.random.default_rng(seed)
    return np.where(days.day_of_week < 5, rng.poisson(rate, len(days)), 0)


DAYS = pd.date_range(START, periods=280, freq="D")  # 40 weeks = 200 business days


def _steady_with_hole(rate: float, seed: int) -> tuple[pd.DataFrame, pd.Timestamp, pd.Timestamp]:
    counts = _weekday_series(rate, DAYS, seed)
    hole_start, hole_end = pd.Timestamp("2024-05-06"), pd.Timestamp("2024-05-17")  # Mon..Fri+1wk
    counts[(hole_start <= DAYS) & (hole_end >= DAYS)] = 0  # 10 business days without mail
    # a second, busier contact without a hole keeps the mailbox as a whole going
    other = _events(
        "other@example.com", _weekday_series(20.0, DAYS, seed + 100), days=DAYS, first_id=1_000_000
    )
    events = pd.concat([_events("busy@example.com", counts, days=DAYS), other], ignore_index=True)
    return events, hole_start, hole_end


def test_a_ten_business_day_hole_in_a_busy_contact_is_exactly_one_gap() -> None:
    # 10 messages every weekday for 40 weeks, none from Mon 6 May to Fri 17 May: about 100
    # messages are missing, an impossible silence for this contact, so exactly that gap.
    events, hole_start, hole_end = _steady_with_hole(10.0, seed=1)
    gaps = timeline.detect_gaps(events, infer_vacations=False)
    contact_gaps = gaps[gaps["contact_address"] == "busy@example.com"]
    assert len(contact_gaps) == 1
    gap = contact_gaps.iloc[0]
    assert (gap["start"], gap["end"]) == (hole_start, hole_end)
    assert gap["business_days"] == 10
    assert gap["kind"] == "full"
    assert gap["observed_messages"] == 0
    assert 80 < gap["expected_messages"] < 120
    assert gap["severity"] == "major"  # 50..200 missed
    assert gap["probability_anywhere"] < timeline.DEFAULT_ALPHA


def test_the_same_hole_in_a_quiet_contact_is_below_its_floor() -> None:
    # 0.2 messages per weekday: 10 silent business days miss only ~2 messages, which happens by
    # chance all the time (floor ln(100)/0.2 ≈ 23 business days), so nothing is reported.
    events, _, _ = _steady_with_hole(0.2, seed=2)
    gaps = timeline.detect_gaps(events, infer_vacations=False)
    assert gaps[gaps["contact_address"] == "busy@example.com"].empty
    floors = _floors(timeline.detection_floors(events))
    assert floors.loc["busy@example.com", "floor_business_days"] > 10


def _floors(floors: pd.DataFrame) -> pd.DataFrame:
    return floors[floors["stream"] == "all"].set_index("contact_address")


def test_the_floor_of_a_poisson_contact_is_ln_one_over_the_threshold_over_its_rate() -> None:
    # 2 a weekday: a silent weekday has probability exp(-2), so a silence must last
    # ln(1/threshold)/2 business days; the threshold is alpha shared out over the mailbox's
    # silences (multiple testing), far below alpha itself
    events = _events("busy@example.com", _weekday_series(2.0, DAYS, 3), days=DAYS)
    floors = _floors(timeline.detection_floors(events, alpha=0.01))
    threshold = floors.loc["busy@example.com", "threshold"]
    assert threshold < 0.01 / 50  # ~ 0.01 over some hundred silences
    assert floors.loc["busy@example.com", "floor_business_days"] == pytest.approx(
        np.log(1 / threshold) / 2.0, rel=0.2
    )


def test_a_chance_silence_of_bursty_mail_is_no_gap() -> None:
    # Mail in threads: on one weekday in four, a burst of 6 messages (1.5 a weekday on average),
    # and by chance nothing for 9 business days. A Poisson count of messages would call that
    # impossible (exp(-1.5 x 9) ≈ 1e-6); but a silent weekday has probability 3/4 and nine of them
    # 0.075: no gap.
    rng = np.random.default_rng(12)
    burst = np.where((DAYS.day_of_week < 5) & (rng.random(len(DAYS)) < 0.25), 6, 0)
    burst[(DAYS >= "2024-05-06") & (DAYS <= "2024-05-16")] = 0
    events = _events("bursty@example.com", burst, days=DAYS)
    assert timeline.detect_gaps(events, infer_vacations=False).empty
    # its floor is long: 9 business days are far from it
    floors = _floors(timeline.detection_floors(events))
    assert floors.loc["bursty@example.com", "floor_business_days"] > 20


def test_an_owner_vacation_is_no_gap() -> None:
    # Two weeks in which the owner sends nothing but auto-replies, while mail still comes in.
    rng = np.random.default_rng(4)
    weekday = DAYS.day_of_week < 5
    vacation = (DAYS >= "2024-06-03") & (DAYS <= "2024-06-14")
    frames = []
    for i in range(3):  # three contacts writing and being written to
        incoming = np.where(weekday, rng.poisson(3.0, len(DAYS)), 0)
        outgoing = np.where(weekday & ~vacation, rng.poisson(3.0, len(DAYS)), 0)
        replies = np.where(weekday & vacation, 1, 0)
        frames += [
            _events(f"c{i}@example.com", incoming, days=DAYS, first_id=10_000 * (3 * i)),
            _events(
                f"c{i}@example.com",
                outgoing,
                days=DAYS,
                first_id=10_000 * (3 * i + 1),
                direction=np.full(len(DAYS), "outgoing"),
            ),
            _events(
                f"c{i}@example.com",
                replies,
                days=DAYS,
                first_id=10_000 * (3 * i + 2),
                direction=np.full(len(DAYS), "outgoing"),
                auto=np.full(len(DAYS), "auto-replied"),
            ),
        ]
    events = pd.concat(frames, ignore_index=True)
    assert timeline.detect_gaps(events).empty
    found = timeline.detect_vacations(events)
    assert len(found) == 1
    assert (found.loc[0, "start"], found.loc[0, "end"]) == (
        pd.Timestamp("2024-06-03"),
        pd.Timestamp("2024-06-14"),
    )
    assert found.loc[0, "evidence"] == "auto_replies"


def test_a_declared_vacation_is_no_gap_even_when_both_directions_stop() -> None:
    events, hole_start, hole_end = _steady_with_hole(10.0, seed=5)
    declared = pd.DataFrame({"start": [hole_start], "end": [hole_end]})
    gaps = timeline.detect_gaps(events, vacations=declared, infer_vacations=False)
    assert gaps.empty


def test_a_holiday_week_is_no_gap() -> None:
    # Christmas to New Year in the UK: 25, 26 Dec and 1 Jan are public holidays and nobody
    # writes from 23 Dec to 1 Jan (nor on any other bank holiday); the organisation declares the
    # days between as a quiet period.
    days = pd.date_range("2023-06-05", "2024-06-28", freq="D")
    counts = _weekday_series(8.0, days, 6)
    quiet = (days >= "2023-12-23") & (days <= "2024-01-01")
    bank_holidays = days.isin(
        pd.to_datetime(["2023-08-28", "2024-03-29", "2024-04-01", "2024-05-06", "2024-05-27"])
    )
    counts[quiet | bank_holidays] = 0
    events = _events("busy@example.com", counts, days=days)
    periods = pd.DataFrame({"start": ["2023-12-23"], "end": ["2024-01-01"]})
    gaps = timeline.detect_gaps(events, country="GB", quiet_periods=periods, infer_vacations=False)
    assert gaps.empty


def test_a_holiday_without_mail_is_no_gap() -> None:
    # Good Friday and Easter Monday (GB) without mail in a 3-a-day contact: the model expects
    # (almost) nothing on public holidays, so the four quiet days are no gap.
    days = pd.date_range("2023-06-05", "2024-10-25", freq="D")
    counts = _weekday_series(3.0, days, 7)
    holidays_gb = days.isin(
        pd.to_datetime(
            [
                "2024-03-29",
                "2024-04-01",
                "2023-08-28",
                "2023-12-25",
                "2023-12-26",
                "2024-01-01",
                "2024-05-06",
                "2024-05-27",
                "2024-08-26",
            ]
        )
    )
    counts[holidays_gb] = 0
    events = _events("busy@example.com", counts, days=days)
    assert timeline.detect_gaps(events, country="GB", infer_vacations=False).empty


def test_a_level_change_is_no_gap() -> None:
    # 10 a day, then from August on 2 a day: a change point, not a hole
    counts = np.where(
        DAYS < "2024-08-01", _weekday_series(10.0, DAYS, 8), _weekday_series(2.0, DAYS, 9)
    )
    events = _events("busy@example.com", counts, days=DAYS)
    assert timeline.detect_gaps(events, infer_vacations=False).empty


def test_detect_gaps_is_deterministic_and_does_not_touch_its_input() -> None:
    events, _, _ = _steady_with_hole(10.0, seed=10)
    before = events.copy()
    first = timeline.detect_gaps(events)
    second = timeline.detect_gaps(events.sample(frac=1.0, random_state=1))
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(events, before)


def test_sent_only_gap_when_the_owner_s_mail_to_one_contact_stops() -> None:
    # Received mail goes on; the owner's mail to this one contact stops for three weeks and no
    # auto-reply was sent: lost sent mail, not a vacation (the other contact still gets mail).
    rng = np.random.default_rng(11)
    weekday = DAYS.day_of_week < 5
    hole = (DAYS >= "2024-05-06") & (DAYS <= "2024-05-24")
    out_a = np.where(weekday & ~hole, rng.poisson(5.0, len(DAYS)), 0)
    frames = [
        _events("a@example.com", np.where(weekday, rng.poisson(5.0, len(DAYS)), 0), days=DAYS),
        _events(
            "a@example.com",
            out_a,
            days=DAYS,
            first_id=100_000,
            direction=np.full(len(DAYS), "outgoing"),
        ),
        _events(
            "b@example.com",
            np.where(weekday, rng.poisson(5.0, len(DAYS)), 0),
            days=DAYS,
            first_id=200_000,
        ),
        _events(
            "b@example.com",
            np.where(weekday, rng.poisson(5.0, len(DAYS)), 0),
            days=DAYS,
            first_id=300_000,
            direction=np.full(len(DAYS), "outgoing"),
        ),
    ]
    gaps = timeline.detect_gaps(pd.concat(frames, ignore_index=True))
    assert gaps["contact_address"].tolist() == ["a@example.com"]
    assert gaps.loc[0, "kind"] == "sent_only"
    assert (gaps.loc[0, "start"], gaps.loc[0, "end"]) == (
        pd.Timestamp("2024-05-06"),
        pd.Timestamp("2024-05-24"),
    )


def test_score_completeness_counts_missed_messages_of_each_contact() -> None:
    events = pd.DataFrame({"message_row_id": [1, 2, 3, 4], "contact_address": ["a", "a", "a", "b"]})
    gaps = pd.DataFrame({"contact_address": ["a"], "kind": ["full"], "missed_messages": [1.0]})
    scores = timeline.score_completeness(events, gaps).set_index("contact_address")
    # a: 3 observed, 1 missed -> 75; b: no gap -> 100; mailbox: 4 messages, 1 missed -> 80
    assert scores.loc["a", "completeness_score"] == pytest.approx(75.0)
    assert scores.loc["b", "completeness_score"] == pytest.approx(100.0)
    assert scores.loc[timeline.MAILBOX, "completeness_score"] == pytest.approx(80.0)


def test_rank_gaps_weighs_missed_messages_by_importance() -> None:
    gaps = pd.DataFrame({"contact_address": ["a", "b", "c"], "missed_messages": [10.0, 30.0, 20.0]})
    importance = pd.DataFrame({"contact_address": ["a"], "importance": [5.0]})
    ranked = timeline.rank_gaps(gaps, importance)
    # a: 5 × 10 = 50 first, then b (30), then c (20)
    assert ranked["contact_address"].tolist() == ["a", "b", "c"]
    assert ranked["rank"].tolist() == [1, 2, 3]


def test_contact_events_takes_the_sender_of_incoming_and_each_recipient_of_outgoing() -> None:
    messages = pd.DataFrame(
        {
            "message_row_id": [1, 2, 3],
            "sender_address": ["Ann@Example.com", OWNER, "bob@example.com"],
            "sent_at_utc": pd.to_datetime(["2024-01-01T09:00Z", "2024-01-01T10:00Z", None]),
            "folder_path": ["Inbox", "Sent Items", "Inbox"],
        }
    )
    recipients = pd.DataFrame(
        {
            "message_row_id": [1, 2, 2, 2],
            "address": [OWNER, "ann@example.com", "bob@example.com", OWNER],
        }
    )
    events = timeline.contact_events(messages, recipients, OWNER)
    # message 1: incoming from ann; message 2: outgoing to ann and bob (not the owner);
    # message 3 has no date and is left out
    assert list(
        zip(events["message_row_id"], events["contact_address"], events["direction"], strict=True)
    ) == [
        (1, "ann@example.com", "incoming"),
        (2, "ann@example.com", "outgoing"),
        (2, "bob@example.com", "outgoing"),
    ]


def _plain_contact_events(
    messages: pd.DataFrame, recipients: pd.DataFrame, owner: str
) -> list[tuple[int, str, str]]:
    """The definition row by row: (message, contact, direction) in time, message, address order."""
    rows = []
    for message in messages.itertuples(index=False):
        if pd.isna(message.sent_at_utc) or pd.isna(message.sender_address):
            continue
        sender = message.sender_address.strip().lower()
        if sender != owner:
            rows.append((message.sent_at_utc, message.message_row_id, sender, "incoming"))
            continue
        mine = recipients.loc[recipients["message_row_id"] == message.message_row_id, "address"]
        for contact in {a.strip().lower() for a in mine.dropna()} - {owner}:
            rows.append((message.sent_at_utc, message.message_row_id, contact, "outgoing"))
    return [(m, c, d) for _, m, c, d in sorted(rows, key=lambda r: r[:3])]


ADDRESSES = ["Ann@Example.com", " ann@example.com", "bob@example.com", "OWNER@example.com ", None]


@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from([*ADDRESSES, OWNER]),
            st.one_of(st.none(), st.integers(0, 5)),  # hour of sending (None: no date)
        ),
        max_size=12,
    ),
    recipients=st.lists(st.tuples(st.integers(0, 11), st.sampled_from(ADDRESSES)), max_size=20),
)
@settings(max_examples=80, deadline=None)
def test_contact_events_follow_the_row_by_row_definition(
    messages: list[tuple[str | None, int | None]], recipients: list[tuple[int, str | None]]
) -> None:
    # addresses in any case and spacing, the owner among the recipients, a recipient twice, a
    # message without date or sender, ties in time: the same events as the plain definition
    frame = pd.DataFrame(
        {
            "message_row_id": np.arange(len(messages), dtype=np.int64)[::-1],
            "sender_address": pd.array([m[0] for m in messages], dtype="string"),
            "sent_at_utc": pd.to_datetime(
                [None if m[1] is None else START + pd.Timedelta(hours=m[1]) for m in messages]
            ).tz_localize("UTC"),
            "folder_path": "Inbox",
        }
    )
    table = pd.DataFrame(
        {
            "message_row_id": np.array([r[0] for r in recipients], dtype=np.int64),
            "address": pd.array([r[1] for r in recipients], dtype="string"),
        }
    )
    events = timeline.contact_events(frame, table, OWNER)
    got = list(
        zip(events["message_row_id"], events["contact_address"], events["direction"], strict=True)
    )
    assert got == _plain_contact_events(frame, table, OWNER)


def test_coverage_by_contact_counts_days_with_mail() -> None:
    events = pd.DataFrame(
        {
            "message_row_id": [1, 2, 3],
            "contact_address": ["a", "a", "a"],
            "sent_at_utc": pd.to_datetime(
                ["2024-01-01T09:00Z", "2024-01-01T15:00Z", "2024-01-10T09:00Z"]
            ),
            "direction": ["incoming", "outgoing", "incoming"],
        }
    )
    row = timeline.coverage_by_contact(events).set_index("contact_address").loc["a"]
    assert (row["timeline_days"], row["coverage_days"], row["message_count"]) == (10, 2, 3)
    assert (row["incoming_messages"], row["outgoing_messages"]) == (2, 1)


def test_source_coverage_and_recommendations_name_the_sources() -> None:
    events = pd.DataFrame(
        {
            "contact_address": ["a", "a", "a", "b"],
            "sent_at_utc": pd.to_datetime(
                ["2024-01-05T09:00Z", "2024-02-05T09:00Z", "2024-03-05T09:00Z", "2024-03-20T09:00Z"]
            ),
            "source_id": [1, 1, 2, 2],
        }
    )
    periods = timeline.source_coverage(events)
    a = periods[periods["contact_address"] == "a"]
    # January and February from source 1, March from source 2
    assert a["source_ids"].tolist() == ["1", "2"]
    assert a["period_end"].iloc[0] == pd.Timestamp("2024-02-29")
    gaps = pd.DataFrame(
        {
            "contact_address": ["a"],
            "start": [pd.Timestamp("2024-03-10")],
            "end": [pd.Timestamp("2024-03-15")],
            "kind": ["full"],
        }
    )
    advice = timeline.recommend_sources(events, gaps)
    assert advice.loc[0, "spanning_source_ids"] == "2"
    assert "2024-03-10 to 2024-03-15" in advice.loc[0, "recommendation"]


def test_missing_columns_are_named() -> None:
    with pytest.raises(MissingColumnsError, match="direction"):
        timeline.detect_gaps(
            pd.DataFrame({"contact_address": [], "sent_at_utc": [], "folder_path": []})
        )


def test_the_mailbox_threshold_is_benjamini_hochberg_over_every_silence() -> None:
    from pstlib.analytics._timeline_model import mailbox_threshold

    # 100 places, alpha 0.01: the k-th smallest probability must be within 0.01·k/100.
    # 1e-6 <= 1e-4 and 2e-4 <= 2e-4 pass, 0.5 > 3e-4 does not: the threshold is 2e-4.
    assert mailbox_threshold(np.array([0.5, 2e-4, 1e-6]), 100, 0.01) == pytest.approx(2e-4)
    # nothing passes: Bonferroni, alpha / places
    assert mailbox_threshold(np.array([0.5, 0.2]), 100, 0.01) == pytest.approx(1e-4)


def test_the_silence_dispersion_fits_the_share_of_days_with_mail() -> None:
    from pstlib.analytics._timeline_model import fit_silence_dispersion, log_silence

    # 2000 days, 2 expected messages each, mail on 40% of them: a Poisson count would have mail on
    # 1 - exp(-2) = 86%. The fitted phi gives P(no mail) a little above 60% (it errs towards
    # silence by a standard deviation of the count of days with mail).
    mu = np.full((1, 2000), 2.0)
    active = np.zeros((1, 2000), dtype=bool)
    active[0, :800] = True
    phi = fit_silence_dispersion(mu, active, np.ones_like(active))
    silent = np.exp(log_silence(np.array([2.0]), phi))[0]
    assert 0.60 < silent < 0.63
    # and phi -> 0 is Poisson
    assert np.exp(log_silence(np.array([2.0]), np.array([1e-9])))[0] == pytest.approx(
        np.exp(-2), rel=1e-5
    )


def test_an_uncertain_level_makes_a_silence_likelier() -> None:
    from pstlib.analytics._timeline_model import level_draws

    # A silence of M = 12 expected Poisson messages has probability exp(-12) ≈ 6e-6 when the
    # level is known. Learnt from 15 days with mail around it, the level is Gamma(16, mean 1), and
    # the silence's probability is E[exp(-12·G)] = (1 + 12/16)^-16 ≈ 1.3e-4: twenty times likelier.
    # The binned mixture bounds it from above, within a factor of a few.
    level, weight = level_draws(np.array([15.0, 1e6]))
    assert weight.sum(axis=1) == pytest.approx([1.0 - 1e-12] * 2)
    mixed = (weight * np.exp(-12.0 * level)).sum(axis=1)
    assert 1.3e-4 <= mixed[0] < 5 * 1.3e-4
    # with overwhelming evidence it is the known-level probability (the bins' edges err upwards)
    assert np.exp(-12.0) <= mixed[1] < 1.2 * np.exp(-12.0)


def test_an_outgoing_run_ends_at_a_vacation_but_keeps_one_inside_it() -> None:
    from pstlib.analytics._gap_rules import trim_to_days

    # days 0..9; a vacation on days 5..7 (not kept). A run 2..6 ends where the vacation begins
    # (2..4), a run 6..9 starts after it (8..9), a run wholly inside it (5..7) has no day left,
    # and a run 3..9 around it keeps the vacation inside (3..9).
    keep = np.ones(10, dtype=bool)
    keep[5:8] = False
    first, last, ok = trim_to_days(keep, np.array([2, 6, 5, 3]), np.array([6, 9, 7, 9]))
    assert first[[0, 1, 3]].tolist() == [2, 8, 3]
    assert last[[0, 1, 3]].tolist() == [4, 9, 9]
    assert ok.tolist() == [True, True, False, True]


def test_a_contact_gap_across_an_archive_gap_is_tested_on_its_own_days() -> None:
    from pstlib.analytics._gap_rules import drop_inside

    # days 0..9, an archive-wide gap on days 3..5. A contact's run on 4..5 is wholly inside it
    # (the archive gap's share: dropped); a run on 1..8 reaches beyond it and stays whole; the
    # mailbox's own run (stream 1, not a contact's) stays whatever it covers.
    archive = np.zeros(10, dtype=bool)
    archive[3:6] = True
    runs = pd.DataFrame({"stream": [0, 0, 1], "first_day": [4, 1, 3], "last_day": [5, 8, 5]})
    contact_streams = np.array([True, False])
    kept = drop_inside(runs, archive, contact_streams)
    assert kept[["first_day", "last_day"]].to_numpy().tolist() == [[1, 8], [3, 5]]


def test_a_contact_gap_running_into_an_archive_gap_ends_where_that_begins() -> None:
    # Three busy contacts; nobody's mail from Mon 3 June to Fri 14 June (an archive lost), and
    # a@ has none from Mon 20 May already: a's own gap is 20-31 May, the archive gap's days are
    # reported once, for the mailbox, and as a's share of it.
    weekday = DAYS.day_of_week < 5
    archive = (DAYS >= "2024-06-03") & (DAYS <= "2024-06-14")
    own = (DAYS >= "2024-05-20") & (DAYS <= "2024-05-31")
    rng = np.random.default_rng(21)
    frames = [
        _events(
            f"{name}@example.com",
            np.where(weekday & ~archive & ~(own & (name == "a")), rng.poisson(8.0, len(DAYS)), 0),
            days=DAYS,
            first_id=100_000 * i,
        )
        for i, name in enumerate(["a", "b", "c"])
    ]
    gaps = timeline.detect_gaps(pd.concat(frames, ignore_index=True), infer_vacations=False)
    mailbox = gaps[gaps["contact_address"].eq(timeline.MAILBOX)]
    assert mailbox[["start", "end", "kind"]].to_numpy().tolist() == [
        [pd.Timestamp("2024-06-03"), pd.Timestamp("2024-06-14"), "archive_wide"]
    ]
    mine = gaps[gaps["contact_address"].eq("a@example.com")].set_index("kind")
    assert (mine.loc["full", "start"], mine.loc["full", "end"]) == (
        pd.Timestamp("2024-05-20"),
        pd.Timestamp("2024-05-31"),
    )
    assert mine.loc["archive_wide", "start"] == pd.Timestamp("2024-06-03")


def test_the_owner_s_lost_sent_mail_shows_against_the_contact_s_mail_going_on() -> None:
    # Mail in conversations: each weekday one shared burst (gamma, shape 0.5) drives both
    # directions, 1.5 a day each way. Three weeks of the owner's mail to a@ are lost while a@
    # keeps writing. On its own, such a silence of bursty mail is no surprise (a third of days
    # are silent anyway: without the other direction the model finds nothing here); on the days
    # a@ wrote, the owner's silence is: a sent-only gap (running on over the next quiet days).
    rng = np.random.default_rng(8)
    weekday = DAYS.day_of_week < 5
    hole = (DAYS >= "2024-05-06") & (DAYS <= "2024-05-24")
    frames = []
    for i, name in enumerate(["a", "b", "c"]):
        burst = rng.gamma(0.5, 2.0, len(DAYS))
        incoming = np.where(weekday, rng.poisson(1.5 * burst), 0)
        outgoing = np.where(weekday & ~(hole & (name == "a")), rng.poisson(1.5 * burst), 0)
        frames += [
            _events(f"{name}@example.com", incoming, days=DAYS, first_id=100_000 * (2 * i)),
            _events(
                f"{name}@example.com",
                outgoing,
                days=DAYS,
                first_id=100_000 * (2 * i + 1),
                direction=np.full(len(DAYS), "outgoing"),
            ),
        ]
    gaps = timeline.detect_gaps(pd.concat(frames, ignore_index=True))
    assert gaps["contact_address"].tolist() == ["a@example.com"]
    assert gaps.loc[0, "kind"] == "sent_only"
    assert gaps.loc[0, "start"] == pd.Timestamp("2024-05-06")
    assert pd.Timestamp("2024-05-24") <= gaps.loc[0, "end"] <= pd.Timestamp("2024-05-31")


def test_a_mailbox_without_dated_mail_gives_empty_frames_of_the_same_columns() -> None:
    events, _, _ = _steady_with_hole(10.0, seed=1)
    undated = events.head(3).assign(sent_at_utc=pd.NaT)
    for analysis in (timeline.detect_gaps, timeline.detect_vacations, timeline.detection_floors,
                     timeline.expected_daily_volume):
        full, empty = analysis(events), analysis(undated)
        assert empty.empty and list(empty.columns) == list(full.columns), analysis.__name__
        assert analysis(events.iloc[:0]).empty


def _sent_loss_around_a_vacation(rate: float, seed: int) -> pd.DataFrame:
    """Three contacts; the owner away 3-14 June (auto-replies, nothing sent to anyone); the
    owner's mail to ``c0`` (``rate`` a weekday each way) lost from 15 April to 2 August."""
    rng = np.random.default_rng(seed)
    weekday = DAYS.day_of_week < 5
    vacation = (DAYS >= "2024-06-03") & (DAYS <= "2024-06-14")
    lost = (DAYS >= "2024-04-15") & (DAYS <= "2024-08-02")
    out = np.full(len(DAYS), "outgoing")
    frames = []
    for i in range(3):
        r = rate if i == 0 else 2.0
        sent = weekday & ~vacation & ~(lost & (i == 0))
        frames += [
            _events(f"c{i}@example.com", np.where(weekday, rng.poisson(r, len(DAYS)), 0),
                    days=DAYS, first_id=10_000 * (3 * i)),
            _events(f"c{i}@example.com", np.where(sent, rng.poisson(r, len(DAYS)), 0),
                    days=DAYS, first_id=10_000 * (3 * i + 1), direction=out),
            _events(f"c{i}@example.com", np.where(weekday & vacation, 1, 0), days=DAYS,
                    first_id=10_000 * (3 * i + 2), direction=out,
                    auto=np.full(len(DAYS), "auto-replied")),
        ]  # fmt: skip
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize(("rate", "seed"), [(r, s) for r in (0.4, 0.6) for s in range(4)])
def test_a_sent_only_loss_around_a_vacation_is_found(rate: float, seed: int) -> None:
    # The silence of the sent mail to c0 overlaps the vacation but reaches weeks beyond it. Its
    # days beyond the vacation must stay out of the fitted level: were the whole run let back
    # in (as the vacation's own silence), the loss would drag c0's level down around itself
    # and hide (it did for two of these eight mailboxes).
    events = _sent_loss_around_a_vacation(rate, seed)
    gaps = timeline.detect_gaps(events)
    assert gaps["contact_address"].tolist() == ["c0@example.com"]
    gap = gaps.iloc[0]
    assert gap["kind"] == "sent_only"
    assert pd.Timestamp("2024-04-08") <= gap["start"] <= pd.Timestamp("2024-04-15")
    assert pd.Timestamp("2024-08-02") <= gap["end"] <= pd.Timestamp("2024-08-09")
    vacations = timeline.detect_vacations(events)
    assert (vacations.loc[0, "start"], vacations.loc[0, "end"]) == (
        pd.Timestamp("2024-06-03"),
        pd.Timestamp("2024-06-14"),
    )


def test_the_chosen_runs_come_in_scan_order_labelled_as_in_the_whole_sorted_table() -> None:
    # the detector keeps only the significant runs of its last pass: they must be the rows (and
    # the labels) that sorting every run into scan order and then selecting them would give
    rng = np.random.default_rng(5)
    n = 400
    grid = timeline.StreamGrid(
        keys=pd.DataFrame({"stream": ["all"] * 30}),
        counts=np.zeros((30, 50), dtype=np.int32),
        span=np.ones((30, 50), dtype=bool),
        days=pd.DataFrame({"date": pd.date_range(START, periods=50, freq="D")}),
    )
    runs = pd.DataFrame(
        {
            "stream": rng.integers(0, 30, n),
            "first_day": rng.integers(0, 50, n),
            "method": pd.Categorical.from_codes(
                rng.integers(0, 2, n), categories=pd.Index(["zero", "sparse"])
            ),
            "probability": rng.random(n),
        }
    ).drop_duplicates(["stream", "first_day", "method"], ignore_index=True)
    chosen = rng.random(len(runs)) < 0.2
    order = np.lexsort((runs["first_day"], runs["stream"], runs["method"].ne("zero").to_numpy()))
    whole = runs.assign(chosen=chosen).iloc[order].reset_index(drop=True)
    expected = whole[whole["chosen"]].drop(columns="chosen")
    pd.testing.assert_frame_equal(timeline._scan_order(grid, runs, chosen), expected)
