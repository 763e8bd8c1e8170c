"""Synthetic round trip: generated mbox (and EML) -> scan -> store reproduces every message exactly."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pstlib.importer.session import scan
from pstlib.store import Store, load
from pstlib.synth import SynthConfig, generate_mailbox, write_mailbox


def _expected_recipients(messages: pd.DataFrame) -> pd.DataFrame:
    """(message_id, kind, address) for every To and Cc of the generated messages."""
    frames = [
        messages[["message_id", column]]
        .explode(column)
        .dropna()
        .rename(columns={column: "address"})
        .assign(kind=kind)
        for column, kind in (("to_addresses", "to"), ("cc_addresses", "cc"))
    ]
    return pd.concat(frames)[["message_id", "kind", "address"]]


def _scan_and_compare(tmp: Path, config: SynthConfig, formats: tuple[str, ...]) -> None:
    mailbox = generate_mailbox(config)
    result = write_mailbox(mailbox, tmp / "mail", formats=formats)
    target = result.mbox_path if "mbox" in formats else result.eml_dir
    assert target is not None
    with Store.open(tmp / "store.sqlite") as store:
        session_id = scan([target], store, mailbox_owner=result.owner_address)
        got = load.load_messages(store, session_id)
        rcpts = load.load_recipients(store, session_id)
    want = mailbox.messages
    assert len(got) == len(want)
    assert got["outcome"].eq("read").all()

    merged = want.merge(
        got, left_on="message_id", right_on="internet_message_id", how="outer", indicator=True
    )
    assert merged["_merge"].eq("both").all(), "every generated Message-ID is in the store, once"
    # times exact to the second (RFC 2822 dates carry seconds), sender exact
    assert (merged["sent_at_utc_x"] == merged["sent_at_utc_y"]).all()
    assert (merged["sender_address_x"] == merged["sender_address_y"]).all()
    assert (merged["sender_name_x"].fillna("") == merged["sender_name_y"].fillna("")).all()
    assert (merged["direction_x"] == merged["direction_y"]).all()
    assert (merged["in_reply_to_x"].fillna("") == merged["in_reply_to_y"].fillna("")).all()

    stored = rcpts.merge(
        got[["message_row_id", "internet_message_id"]], on="message_row_id"
    ).rename(columns={"internet_message_id": "message_id"})[["message_id", "kind", "address"]]
    expected = _expected_recipients(want)
    key = ["message_id", "kind", "address"]
    pd.testing.assert_frame_equal(
        stored.astype(str).sort_values(key).reset_index(drop=True),
        expected.astype(str).sort_values(key).reset_index(drop=True),
    )


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 10_000),
    contacts=st.integers(1, 12),
    years=st.floats(0.05, 0.6),
)
def test_mbox_round_trip(seed: int, contacts: int, years: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _scan_and_compare(
            Path(tmp), SynthConfig(seed=seed, contacts=contacts, years=years), ("mbox",)
        )


def test_eml_folder_round_trip(tmp_path: Path) -> None:
    _scan_and_compare(tmp_path, SynthConfig(seed=3, contacts=6, years=0.3), ("eml",))
