"""Senders, threading and reply times against the ground truth of synthetic mailboxes.

Each mailbox goes the real way: pstlib.synth writes an mbox, ``scan`` reads it into a store, the
loaders read it back. The mailbox with seed 11 was not used to calibrate the classification rules
(seeds 1-5 and 7 were).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from pstlib.analytics.senders import classify_senders, profile_senders
from pstlib.analytics.threading import reply_pairs, thread_messages
from pstlib.importer.session import scan
from pstlib.store import Store, load_messages, load_recipients
from pstlib.synth import GroundTruth, load_truth, synthesize

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Scanned:
    messages: pd.DataFrame
    recipients: pd.DataFrame
    truth: GroundTruth
    owner: str


@pytest.fixture(scope="module", params=[11, 7])
def scanned(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Scanned:
    out = tmp_path_factory.mktemp(f"synth{request.param}")
    result = synthesize(out / "mail", seed=request.param, contacts=120, years=2.0,
                        formats=("mbox",))
    assert result.mbox_path is not None
    with Store.open(out / "store.sqlite") as store:
        scan([result.mbox_path], store, mailbox_owner=result.owner_address)
        messages, recipients = load_messages(store), load_recipients(store)
    return Scanned(messages, recipients, load_truth(result.truth_path), result.owner_address)


def _bare(ids: pd.Series) -> pd.Series:
    return ids.astype("string").str.strip("<>").str.lower()


def test_threading_finds_the_true_reply_pairs(scanned: Scanned) -> None:
    threads = thread_messages(scanned.messages)
    pairs = reply_pairs(scanned.messages, threads)
    ids = _bare(scanned.messages.set_index("message_row_id")["internet_message_id"])
    found = set(zip(ids[pairs["parent_message_row_id"]], ids[pairs["reply_message_row_id"]],
                    strict=True))
    truth = scanned.truth.reply_pairs
    expected = set(zip(_bare(truth["parent_message_id"]), _bare(truth["reply_message_id"]),
                       strict=True))
    agreement = len(found & expected) / len(expected | found)
    assert len(expected) > 1000
    assert agreement >= 0.99, f"{agreement:.4f} of pairs agree"


def test_reply_times_per_sender_match_the_truth_within_1_percent(scanned: Scanned) -> None:
    profile = profile_senders(
        scanned.messages, scanned.recipients, owner_address=scanned.owner
    ).set_index("sender_address")
    truth = scanned.truth.contacts.set_index("address")
    both = profile.merge(truth, left_index=True, right_index=True, suffixes=("", "_truth"))
    checks = {
        "owner_reply_delay_median_s": "owner_reply_median_s",
        "owner_reply_delay_mean_s": "owner_reply_mean_s",
        "sender_reply_delay_median_s": "contact_reply_median_s",
        "sender_reply_delay_mean_s": "contact_reply_mean_s",
    }
    for ours, theirs in checks.items():
        known = both[theirs].notna()
        assert known.sum() > 50, theirs
        assert both.loc[~known, ours].isna().all(), f"{ours} where the truth has no replies"
        relative = (both.loc[known, ours] - both.loc[known, theirs]).abs() / both.loc[
            known, theirs
        ]
        within = (relative <= 0.01).mean()
        assert within == 1.0, f"{ours}: {within:.3f} of senders within 1%"


def test_sender_classes_match_the_truth_on_95_percent(scanned: Scanned) -> None:
    classes = classify_senders(
        scanned.messages, scanned.recipients, owner_address=scanned.owner
    )
    truth = pd.Series(scanned.truth.sender_classes)
    expected = truth.reindex(classes["sender_address"]).to_numpy()
    agreement = (classes["sender_class"].astype(str).to_numpy() == expected).mean()
    assert len(classes) > 100
    assert agreement >= 0.95, f"{agreement:.3f} of senders classed as in the truth"
