"""``generate_mailbox``: a seeded synthetic mailbox (messages + ground truth) in memory.

The steps, each with its own random stream spawned from the seed (so a change to one step never
shifts another's draws): people → calendar and vacations → expected daily rates → gamma-Poisson
thread starts → times of day → reply rounds (log-normal mixture delays) → vacation auto-replies →
text and recipients → planted gaps → tables and ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pstlib.synth.config import SynthConfig
from pstlib.synth.gaps import apply_gaps, plan_gaps, plan_vacations, vacation_mask
from pstlib.synth.people import HUMAN_CLASSES, build_people
from pstlib.synth.rates import (
    Calendar,
    FloatArray,
    build_calendar,
    draw_counts,
    expected_rates,
    thread_factors,
)
from pstlib.synth.text import (
    AUTO_REPLY,
    INCOMING,
    KIND_NAMES,
    ORIGINAL,
    OUTGOING,
    REPLY,
    Composed,
    compose_messages,
)
from pstlib.synth.truth import GroundTruth, build_truth

VENDOR_PROMO_SHARE = 0.3
MIN_REPLY_DELAY_S = 30
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A generated mailbox.

    ``messages``: the mail in the archive, one row per message, sorted by ``sent_at_utc``; columns
    ``message_id, in_reply_to, references`` (space-separated, oldest first), ``thread_id, subject,
    body, sender_address, sender_name, to_addresses, cc_addresses`` (tuples), ``sent_at_utc`` (UTC),
    ``utc_offset_min`` (of the Date header), ``direction`` (incoming | outgoing, from the owner's
    side), ``folder`` (Inbox | Sent Items), ``contact_address`` (the counterpart the message was
    generated for), ``contact_class, message_kind`` (original | reply | auto_reply), ``reply_depth,
    list_id, list_unsubscribe, precedence, auto_submitted, generation_index``.
    ``removed``: the same columns plus ``gap_id`` for the messages the planted gaps took out.
    ``people``: the correspondents and their generating parameters (see ``build_people``).
    ``expected_incoming`` / ``expected_outgoing``: (correspondents × days) expected messages per
    day under the generating rates (replies attributed to their thread's start day).
    """

    config: SynthConfig
    messages: pd.DataFrame
    removed: pd.DataFrame
    people: pd.DataFrame
    truth: GroundTruth
    calendar: Calendar
    expected_incoming: FloatArray
    expected_outgoing: FloatArray

    @property
    def names(self) -> dict[str, str]:
        """address -> display name, the owner included."""
        names = dict(zip(self.people["address"], self.people["name"], strict=True))
        names[self.config.owner_address_normalised] = self.config.owner_name
        return names


def _times_of_day(
    people: pd.DataFrame, contact: I64, offset_min: I64, rng: np.random.Generator
) -> I64:
    """Seconds from the UTC day's midnight (may be negative or past a day: the day is the sender's
    local day): office hours in the sender's zone; automated mail at any hour; a newsletter near its
    fixed morning hour."""
    n = len(contact)
    cls = people["sender_class"].to_numpy()[contact]
    local = np.clip(rng.normal(11.5 * 3600, 2.6 * 3600, n), 6.5 * 3600, 21 * 3600)
    local = np.where(cls == "automated", rng.uniform(0, 86400, n), local)
    local = np.where(cls == "newsletter", 6 * 3600 + rng.uniform(0, 900, n), local)
    return (local - offset_min * 60).astype(np.int64)


def _reply_delays(people: pd.DataFrame, side: str, contact: I64, rng: np.random.Generator) -> I64:
    """Seconds until a reply: log-normal mixture (fast minutes / slow hours-days) per replier."""

    def col(name: str) -> FloatArray:
        return people[f"{side}_delay_{name}"].to_numpy()[contact]

    fast = rng.random(len(contact)) < col("fast_share")
    z = rng.standard_normal(len(contact))
    log_s = np.where(
        fast, col("fast_mu") + col("fast_sigma") * z, col("slow_mu") + col("slow_sigma") * z
    )
    return np.maximum(np.exp(log_s), MIN_REPLY_DELAY_S).astype(np.int64)


def generate_mailbox(config: SynthConfig | None = None) -> Mailbox:
    """Generate the mailbox ``config`` describes (default: :class:`SynthConfig` ``()``)."""
    config = config or SynthConfig()
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(9)]
    r_people, r_vac, r_counts, r_times, r_replies, r_auto, r_text, r_gaps, r_ids = streams
    owner = config.owner_address_normalised

    people = build_people(config, r_people)
    cal = build_calendar(config)
    vacations = plan_vacations(config, cal, r_vac)
    on_vacation = vacation_mask(vacations, cal)
    lam_in, lam_out = expected_rates(people, cal, config, on_vacation)
    counts_in, counts_out = draw_counts(lam_in, lam_out, people, r_counts)
    cls = people["sender_class"].to_numpy()
    offsets = people["utc_offset_min"].to_numpy().astype(np.int64)

    # thread starts: one row per message, from the (contact × day) counts, plus the one-offs
    parts_c, parts_d, parts_dir = [], [], []
    for counts, towards in ((counts_in, INCOMING), (counts_out, OUTGOING)):
        c_idx, d_idx = np.nonzero(counts)
        reps = counts[c_idx, d_idx]
        parts_c.append(np.repeat(c_idx, reps))
        parts_d.append(np.repeat(d_idx, reps))
        parts_dir.append(np.full(int(reps.sum()), towards, dtype=np.int8))
    one_offs = np.flatnonzero(cls == "one_off")
    parts_c.append(one_offs)
    parts_d.append(r_counts.choice(cal.business_days, size=len(one_offs)))
    parts_dir.append(np.full(len(one_offs), INCOMING, dtype=np.int8))
    contact = np.concatenate(parts_c).astype(np.int64)
    day = np.concatenate(parts_d).astype(np.int64)
    direction = np.concatenate(parts_dir)
    offset = np.where(direction == INCOMING, offsets[contact], config.owner_utc_offset_min)
    local_day_s = cal.start_s + day * 86400 + _times_of_day(people, contact, offset, r_times)
    t = np.clip(local_day_s, cal.start_s, cal.end_s - 1)
    order = np.lexsort((contact, direction, t))  # generation order: by time
    contact, direction, t, offset = contact[order], direction[order], t[order], offset[order]
    n0 = len(t)
    promo = (
        (cls[contact] == "vendor")
        & (direction == INCOMING)
        & (r_times.random(n0) < VENDOR_PROMO_SHARE)
    )
    parent = np.full(n0, -1, dtype=np.int64)
    kind = np.full(n0, ORIGINAL, dtype=np.int8)
    depth = np.zeros(n0, dtype=np.int64)

    # reply rounds: the owner answers received mail, the correspondent answers the owner's
    human = np.isin(cls, sorted(HUMAN_CLASSES))
    frontier = np.flatnonzero(human[contact] & ~promo)
    p_owner = people["owner_reply_prob"].to_numpy()
    p_contact = people["contact_reply_prob"].to_numpy()
    for r in range(config.reply_rounds):
        c, d = contact[frontier], direction[frontier]
        p = np.where(d == INCOMING, p_owner[c], p_contact[c]) * config.reply_decay**r
        hit = r_replies.random(len(frontier)) < p
        par, c, d = frontier[hit], c[hit], d[hit]
        delay = np.where(
            d == INCOMING,
            _reply_delays(people, "owner", c, r_replies),
            _reply_delays(people, "contact", c, r_replies),
        )
        t_new = t[par] + delay
        ok = t_new < cal.end_s
        ok[ok] &= ~((d[ok] == INCOMING) & on_vacation[(t_new[ok] - cal.start_s) // 86400])
        par, c, d, t_new = par[ok], c[ok], d[ok], t_new[ok]
        new_dir = (1 - d).astype(np.int8)
        first = len(t)
        contact = np.concatenate([contact, c])
        direction = np.concatenate([direction, new_dir])
        t = np.concatenate([t, t_new])
        offset = np.concatenate(
            [offset, np.where(new_dir == INCOMING, offsets[c], config.owner_utc_offset_min)]
        )
        parent = np.concatenate([parent, par])
        kind = np.concatenate([kind, np.full(len(par), REPLY, dtype=np.int8)])
        depth = np.concatenate([depth, depth[par] + 1])
        promo = np.concatenate([promo, np.zeros(len(par), dtype=bool)])
        frontier = np.arange(first, len(t))

    # vacation auto-replies: once per human correspondent per vacation, to their first mail in it
    vac_id = np.full(cal.days, -1, dtype=np.int64)
    return_day: list[str] = []
    for i, w in enumerate(vacations):
        first_day, last_day = w.day_range(cal)
        vac_id[first_day : last_day + 1] = i
        later = cal.business_days[cal.business_days > last_day]
        return_day.append(cal.date_of(int(later[0]) if len(later) else last_day + 1).isoformat())
    msg_vac = vac_id[(t - cal.start_s) // 86400]
    cand = np.flatnonzero(human[contact] & ~promo & (direction == INCOMING) & (msg_vac >= 0))
    cand = cand[np.lexsort((t[cand], msg_vac[cand], contact[cand]))]
    key = contact[cand] * (len(vacations) + 1) + msg_vac[cand]
    firsts = cand[np.unique(key, return_index=True)[1]]
    firsts = np.sort(firsts)
    t_auto = t[firsts] + r_auto.integers(5, 120, len(firsts))
    keep_auto = t_auto < cal.end_s
    firsts, t_auto = firsts[keep_auto], t_auto[keep_auto]
    return_dates: list[str | None] = [None] * len(t) + [
        return_day[v] for v in msg_vac[firsts].tolist()
    ]
    contact = np.concatenate([contact, contact[firsts]])
    direction = np.concatenate([direction, np.full(len(firsts), OUTGOING, dtype=np.int8)])
    t = np.concatenate([t, t_auto])
    offset = np.concatenate([offset, np.full(len(firsts), config.owner_utc_offset_min)])
    parent = np.concatenate([parent, firsts])
    kind = np.concatenate([kind, np.full(len(firsts), AUTO_REPLY, dtype=np.int8)])
    depth = np.concatenate([depth, depth[firsts] + 1])
    promo = np.concatenate([promo, np.zeros(len(firsts), dtype=bool)])

    composed = compose_messages(
        people,
        owner,
        config.owner_name,
        contact,
        direction,
        kind,
        parent,
        promo,
        return_dates,
        r_text,
        extra_to_share=config.extra_to_share,
        cc_share=config.cc_share,
    )
    ids = _message_ids(composed.sender, r_ids)
    gaps = plan_gaps(people, config.gaps, cal, r_gaps)
    removed_by, removed_counts = apply_gaps(gaps, cal, t, contact, direction, r_gaps)

    # one frame in final order, kept mail first: each part by time, ties in generation order
    kept_idx = np.flatnonzero(removed_by < 0)
    lost_idx = np.flatnonzero(removed_by >= 0)
    order = np.concatenate(
        [
            kept_idx[np.argsort(t[kept_idx], kind="stable")],
            lost_idx[np.argsort(t[lost_idx], kind="stable")],
        ]
    )
    frame = _message_frame(
        people, config, ids, composed, contact, direction, t, offset, parent, kind, depth, order
    ).assign(gap_id=removed_by[order])
    messages = frame.iloc[: len(kept_idx)].drop(columns="gap_id")
    removed = frame.iloc[len(kept_idx) :].reset_index(drop=True)

    f_in_in, f_in_out, f_out_in, f_out_out = thread_factors(people, config, on_vacation)
    exp_in = lam_in * f_in_in + lam_out * f_out_in
    exp_out = lam_in * f_in_out + lam_out * f_out_out

    truth = build_truth(
        config, people, cal, vacations, gaps, removed_counts, messages, removed, exp_in, exp_out
    )
    return Mailbox(
        config,
        messages,
        removed,
        people,
        truth,
        cal,
        exp_in,
        exp_out,
    )


def _message_ids(senders: list[str], rng: np.random.Generator) -> list[str]:
    """``<16 random hex + 8 hex ordinal@sender domain>``: unique by ordinal, fixed by the seed."""
    rand = rng.integers(0, np.iinfo(np.int64).max, len(senders), dtype=np.int64).tolist()
    return [
        f"<{r:016x}{i:08x}@{s.rpartition('@')[2]}>"
        for i, (r, s) in enumerate(zip(rand, senders, strict=True))
    ]


def _message_frame(
    people: pd.DataFrame,
    config: SynthConfig,
    ids: list[str],
    composed: Composed,
    contact: I64,
    direction: npt.NDArray[np.int8],
    t: I64,
    offset: I64,
    parent: I64,
    kind: npt.NDArray[np.int8],
    depth: I64,
    order: I64,
) -> pd.DataFrame:
    """Every generated message as a row, rows in ``order`` (indices in generation order)."""
    n = len(ids)
    parent_list = parent.tolist()
    in_reply_to: list[str | None] = [ids[p] if p >= 0 else None for p in parent_list]
    references: list[str] = [""] * n
    thread: list[str] = [""] * n
    for i, p in enumerate(parent_list):  # parents come first, so their chains are ready
        if p < 0:
            thread[i] = ids[i]
        else:
            thread[i] = thread[p]
            references[i] = f"{references[p]} {ids[p]}".lstrip()
    names = dict(zip(people["address"], people["name"], strict=True))
    names[config.owner_address_normalised] = config.owner_name
    outgoing = (direction == OUTGOING)[order]
    rows = order.tolist()

    def pick(values: list[Any]) -> list[Any]:
        return [values[i] for i in rows]

    return pd.DataFrame(
        {
            "message_id": pick(ids),
            "in_reply_to": pick(in_reply_to),
            "references": pick(references),
            "thread_id": pick(thread),
            "subject": pick(composed.subject),
            "body": pick(composed.body),
            "sender_address": pick(composed.sender),
            "sender_name": [names[s] for s in pick(composed.sender)],
            "to_addresses": pick(composed.to),
            "cc_addresses": pick(composed.cc),
            "sent_at_utc": pd.to_datetime(t[order], unit="s", utc=True),
            "utc_offset_min": offset[order].astype(np.int64),
            "direction": np.where(outgoing, "outgoing", "incoming"),
            "folder": np.where(outgoing, "Sent Items", "Inbox"),
            "contact_address": people["address"].to_numpy()[contact[order]],
            "contact_class": people["sender_class"].to_numpy()[contact[order]],
            "message_kind": np.asarray(KIND_NAMES)[kind[order]],
            "reply_depth": depth[order],
            "list_id": pick(composed.list_id),
            "list_unsubscribe": pick(composed.list_unsubscribe),
            "precedence": pick(composed.precedence),
            "auto_submitted": pick(composed.auto_submitted),
            "generation_index": order.astype(np.int64),
        }
    )
