"""pstlib.synth invariants over many small configs (hypothesis)."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pstlib.synth import SynthConfig, generate_mailbox


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    contacts=st.integers(1, 25),
    years=st.floats(0.05, 1.5),
)
def test_invariants_hold_for_small_configs(seed: int, contacts: int, years: float) -> None:
    box = generate_mailbox(SynthConfig(seed=seed, contacts=contacts, years=years))
    msgs, removed, truth = box.messages, box.removed, box.truth
    start = pd.Timestamp(box.calendar.start, tz="UTC")
    end = start + pd.Timedelta(days=box.calendar.days)
    # every message once, in time order, inside the period
    ids = pd.concat([msgs["message_id"], removed["message_id"]])
    assert ids.is_unique
    assert msgs["sent_at_utc"].is_monotonic_increasing
    assert ((msgs["sent_at_utc"] >= start) & (msgs["sent_at_utc"] < end)).all()
    # kept + removed = generated, per contact and in total
    assert truth.meta["messages_generated"] == len(msgs) + len(removed)
    assert truth.contacts["messages_kept"].sum() == len(msgs)
    assert truth.gaps["messages_removed"].sum() == len(removed)
    assert truth.contacts["retained_fraction"].dropna().between(0, 1).all()
    # the owner is on one side of every message
    owner = truth.meta["owner_address"]
    outgoing = msgs["direction"] == "outgoing"
    assert (msgs.loc[outgoing, "sender_address"] == owner).all()
    assert all(to[0] == owner for to in msgs.loc[~outgoing, "to_addresses"])
    # replies follow their parents
    assert (truth.reply_pairs["delay_s"] > 0).all()
    # gaps and vacations lie inside the period, ends inclusive and not before starts
    for table in (truth.gaps, truth.vacations):
        if len(table):
            assert (table["start_date"] <= table["end_date"]).all()
            assert (table["start_date"] >= truth.meta["start_date"]).all()
            assert (table["end_date"] <= truth.meta["end_date"]).all()
    assert (truth.gaps["expected_messages_missed"] >= 0).all()
