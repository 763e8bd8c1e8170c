"""pstlib.synth: determinism, a parseable mbox/EML that matches the tables, and a truthful truth."""

from __future__ import annotations

import email
import email.header
import email.utils
import mailbox
import re
from pathlib import Path

import pandas as pd
import pytest

from pstlib.errors import ConfigError
from pstlib.synth import (
    GapPlan,
    Mailbox,
    SynthConfig,
    generate_mailbox,
    load_truth,
    synthesize,
    write_mailbox,
)

# small but rich: every class, two vacations, a dozen gaps, some replies and auto-replies
SMALL = SynthConfig(
    seed=11, contacts=40, years=1.0, gaps=GapPlan(contact_share=0.5, archive_gaps=1)
)


@pytest.fixture(scope="module")
def small() -> Mailbox:
    return generate_mailbox(SMALL)


@pytest.fixture(scope="module")
def written(small: Mailbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_mailbox(small, out)
    return out


def _in_window(frame: pd.DataFrame, start: str, end: str) -> pd.Series:
    a = pd.Timestamp(start, tz="UTC")
    b = pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)
    return (frame["sent_at_utc"] >= a) & (frame["sent_at_utc"] < b)


def _addresses(value: str | None) -> list[str]:
    return [a.lower() for _, a in email.utils.getaddresses([value])] if value else []


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    config = {"contacts": 12, "years": 0.5}
    synthesize(tmp_path / "a", seed=3, **config)
    synthesize(tmp_path / "b", seed=3, **config)
    synthesize(tmp_path / "c", seed=4, **config)
    for name in ("mailbox.mbox", "truth.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    eml_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "eml").rglob("*.eml"))
    eml_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b" / "eml").rglob("*.eml"))
    assert eml_a == eml_b
    assert all(
        (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in eml_a
    )


def test_the_mbox_parses_and_matches_every_message(small: Mailbox, written: Path) -> None:
    parsed = list(mailbox.mbox(written / "mailbox.mbox"))
    frame = small.messages
    assert len(parsed) == len(frame)
    for msg, row in zip(parsed, frame.itertuples(index=False), strict=True):
        assert msg["Message-ID"] == row.message_id
        assert email.utils.parsedate_to_datetime(msg["Date"]) == row.sent_at_utc
        name, address = email.utils.parseaddr(msg["From"])
        assert address.lower() == row.sender_address
        assert str(email.header.make_header(email.header.decode_header(name))) == row.sender_name
        assert _addresses(msg["To"]) == list(row.to_addresses)
        assert _addresses(msg["Cc"]) == list(row.cc_addresses)
        assert msg["In-Reply-To"] == (row.in_reply_to if isinstance(row.in_reply_to, str) else None)
        subject = str(email.header.make_header(email.header.decode_header(msg["Subject"])))
        assert subject == row.subject
        body = msg.get_payload(decode=True).decode("utf-8")
        assert body == re.sub(r"(?m)^(>*From )", r">\1", row.body)  # mboxrd escaping, not undone


def test_eml_files_hold_the_same_messages_by_folder(small: Mailbox, written: Path) -> None:
    inbox = sorted((written / "eml" / "Inbox").glob("*.eml"))
    sent = sorted((written / "eml" / "Sent Items").glob("*.eml"))
    assert len(inbox) == (small.messages["direction"] == "incoming").sum()
    assert len(sent) == (small.messages["direction"] == "outgoing").sum()
    ids = set(small.messages["message_id"])
    for path in inbox[:50] + sent[:50]:
        msg = email.message_from_bytes(path.read_bytes())
        assert msg["Message-ID"] in ids
        assert not path.read_bytes().startswith(b"From ")


def test_truth_json_reads_back(small: Mailbox, written: Path) -> None:
    truth = load_truth(written / "truth.json")
    assert truth.meta["owner_address"] == SMALL.owner_address
    assert len(truth.gaps) == len(small.truth.gaps)
    assert truth.sender_classes == small.truth.sender_classes
    assert list(truth.reply_pairs["reply_message_id"]) == list(
        small.truth.reply_pairs["reply_message_id"]
    )


def test_vacations_silence_the_owner_but_not_the_inbox(small: Mailbox) -> None:
    msgs = small.messages
    assert len(small.truth.vacations) == 2
    for vac in small.truth.vacations.itertuples():
        inside = msgs[_in_window(msgs, vac.start_date, vac.end_date)]
        outgoing = inside[inside["direction"] == "outgoing"]
        # the owner sends nothing himself; only auto-replies go out, each answering received mail
        assert (outgoing["message_kind"] == "auto_reply").all()
        assert (inside["direction"] == "incoming").sum() > 0
        assert len(outgoing) == vac.auto_replies > 0
        assert (outgoing["auto_submitted"] == "auto-replied").all()
        parents = msgs.set_index("message_id").loc[outgoing["in_reply_to"].dropna()]
        assert (parents["direction"] == "incoming").all()
        # once per correspondent per vacation
        assert not outgoing["to_addresses"].duplicated().any()


def test_planted_gaps_removed_exactly_what_the_truth_says(small: Mailbox) -> None:
    msgs, removed, gaps = small.messages, small.removed, small.truth.gaps
    assert set(gaps["kind"]) >= {"archive"}
    assert (gaps["business_days"].between(1, 60) | (gaps["kind"] == "archive")).all()
    for gap in gaps.itertuples():
        window = _in_window(msgs, gap.start_date, gap.end_date)
        mine = msgs["contact_address"] == gap.contact_address
        assert (removed["gap_id"] == gap.gap_id).sum() == gap.messages_removed
        if gap.kind == "archive":
            assert not window.any()
        elif gap.kind == "full":
            assert not (window & mine).any()
        elif gap.kind == "sent_only":
            assert not (window & mine & (msgs["direction"] == "outgoing")).any()
        elif gap.kind == "received_only":
            assert not (window & mine & (msgs["direction"] == "incoming")).any()


def test_retained_fraction_is_kept_over_generated(small: Mailbox) -> None:
    contacts = small.truth.contacts.set_index("address")
    kept = small.messages["contact_address"].value_counts()
    lost = small.removed["contact_address"].value_counts()
    for address, row in contacts.iterrows():
        k, r = int(kept.get(address, 0)), int(lost.get(address, 0))
        assert row["messages_kept"] == k
        assert row["messages_generated"] == k + r
        if k + r:
            assert row["retained_fraction"] == pytest.approx(k / (k + r))
    assert small.truth.meta["messages_removed"] == len(small.removed)


def test_weekends_and_holidays_are_quiet() -> None:
    box = generate_mailbox(
        SynthConfig(
            seed=5,
            contacts=60,
            years=2.0,
            share_automated=0.0,
            share_newsletters=0.0,
            vacations_per_year=0.0,
        )
    )
    people = box.messages[box.messages["message_kind"] == "original"]
    day = people["sent_at_utc"].dt.tz_convert(None).dt.normalize()
    cal = box.calendar
    dates = pd.date_range(cal.start, periods=cal.days, freq="D")
    per_day = day.value_counts().reindex(dates, fill_value=0).to_numpy()
    business = per_day[cal.is_business].mean()
    assert business > 8 * per_day[cal.weekday >= 5].mean()
    assert business > 5 * per_day[cal.is_holiday & (cal.weekday < 5)].mean()


def test_reply_pairs_are_consistent(small: Mailbox) -> None:
    msgs = small.messages.set_index("message_id")
    pairs = small.truth.reply_pairs
    assert len(pairs) > 50
    assert (pairs["delay_s"] > 0).all()
    parent = msgs.loc[pairs["parent_message_id"]]
    reply = msgs.loc[pairs["reply_message_id"]]
    assert (reply["in_reply_to"].to_numpy() == pairs["parent_message_id"].to_numpy()).all()
    assert (reply["sent_at_utc"].to_numpy() > parent["sent_at_utc"].to_numpy()).all()
    assert reply["subject"].str.startswith("Re: ").all()
    assert (
        reply["references"].str.split().str[-1].to_numpy() == pairs["parent_message_id"].to_numpy()
    ).all()
    assert (reply["sender_address"].to_numpy() == parent["to_addresses"].str[0].to_numpy()).all()
    # nobody answers machines
    replied_to = msgs.loc[msgs["in_reply_to"].dropna().loc[lambda s: s.isin(msgs.index)]]
    assert not replied_to["contact_class"].isin(["newsletter", "automated"]).any()
    # most replies come within a day, a tail takes longer
    assert 0.5 < (pairs["delay_s"] < 86400).mean() < 0.99
    # the per-sender truth is what the pairs say
    contacts = small.truth.contacts.set_index("address")
    own = pairs[pairs["replier"] == "contact"].groupby("contact_address")["delay_s"]
    pd.testing.assert_series_equal(
        own.median(), contacts.loc[own.median().index, "contact_reply_median_s"], check_names=False
    )


def test_classes_carry_their_headers(small: Mailbox) -> None:
    msgs = small.messages[small.messages["message_kind"] == "original"]
    by_class = msgs.groupby("contact_class")
    assert set(small.truth.sender_classes.values()) == {
        "owner",
        "internal_colleague",
        "key_external",
        "external",
        "vendor",
        "newsletter",
        "automated",
        "one_off",
    }
    news = by_class.get_group("newsletter")
    assert news["list_id"].notna().all() and (news["precedence"] == "bulk").all()
    auto = by_class.get_group("automated")
    assert (auto["auto_submitted"] == "auto-generated").all()
    colleagues = small.truth.contacts.query("sender_class == 'internal_colleague'")
    assert colleagues["address"].str.endswith("@" + SMALL.internal_domain).all()


def test_message_ids_are_unique_hex_at_the_sender_domain(small: Mailbox) -> None:
    ids = pd.concat([small.messages["message_id"], small.removed["message_id"]])
    assert ids.is_unique
    assert ids.str.fullmatch(r"<[0-9a-f]{24}@[a-z0-9.-]+>").all()
    domains = small.messages["message_id"].str.extract(r"@(.+)>")[0]
    assert (domains == small.messages["sender_address"].str.partition("@")[2]).all()


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no_such"):
        synthesize(tmp_path, no_such=1)
    with pytest.raises(ConfigError, match="pst"):
        synthesize(tmp_path, contacts=3, years=0.1, formats=("pst",))
    with pytest.raises(ConfigError):
        SynthConfig(contacts=0)


def test_pstlib_readers_reproduce_every_message(small: Mailbox, written: Path) -> None:
    sources = pytest.importorskip("pstlib.sources.mbox")
    eml = pytest.importorskip("pstlib.sources.eml")
    frame = small.messages.set_index("message_id")
    for source in (sources.MboxSource(written / "mailbox.mbox"), eml.EmlSource(written / "eml")):
        seen = 0
        for msg in source:
            assert not isinstance(msg, Exception), msg
            row = frame.loc[msg.internet_message_id]
            assert msg.sent_at_utc == row["sent_at_utc"]
            assert (msg.sender.address, msg.sender.name) == (
                row["sender_address"],
                row["sender_name"],
            )
            to = [r.address.address for r in msg.recipients if r.kind == "to"]
            cc = [r.address.address for r in msg.recipients if r.kind == "cc"]
            assert (to, cc) == (list(row["to_addresses"]), list(row["cc_addresses"]))
            assert msg.subject == row["subject"]
            seen += 1
        source.close()
        assert seen == len(frame)
