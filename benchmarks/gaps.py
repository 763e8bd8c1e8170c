"""Gap detection against the synthetic mailboxes' planted truth, beside two simple baselines.

    .venv/bin/python benchmarks/gaps.py [--seeds 1,2,3] [--contacts 200] [--years 2] [--alpha 0.01]

For each seed, :func:`pstlib.synth.generate_mailbox` gives a mailbox with planted gaps (per contact:
full, partial, sent_only, received_only; archive-wide) and owner vacations; the messages'
``contact_address`` (the counterpart each message was generated for) is the contact. A planted gap
counts as found when a detection of the same contact (``"*"`` for archive-wide gaps) overlaps it
with an intersection-over-union of days >= 0.5. The contacts' shares of an archive-wide gap (kind
``archive_wide`` on a contact row) are attributions, not detections, and are not matched.

Baselines: ``14d`` reports every run of 14+ calendar days without mail between two messages;
``median`` flags business days with fewer than half the median of the same weekday over the 8 weeks
before (when that median is >= 1) and reports runs of 5+ flagged business days.

False alarms per contact-year are counted on three extra series per seed without planted gaps:
``gap_free`` (no vacations, holidays like any day), ``vacation_only`` and ``holiday_only``. The last
line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy import stats  # type: ignore[import-untyped]

from pstlib.analytics import timeline
from pstlib.analytics._timeline_model import level_draws
from pstlib.synth import Mailbox, SynthConfig, generate_mailbox

BUCKETS = [(0, 3, "<3"), (3, 10, "3-10"), (10, 50, "10-50"), (50, np.inf, ">50")]


def events_of(messages: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "message_row_id": messages["generation_index"],
            "contact_address": messages["contact_address"],
            "sent_at_utc": messages["sent_at_utc"],
            "direction": messages["direction"],
            "folder_path": messages["folder"],
            "auto_submitted": messages["auto_submitted"],
        }
    )


def truth_gaps(truth: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "contact_address": truth["contact_address"].fillna(timeline.MAILBOX),
            "start": pd.to_datetime(truth["start_date"]),
            "end": pd.to_datetime(truth["end_date"]),
            "expected_missed": truth["expected_messages_missed"].astype(float),
            "business_days": truth["business_days"],
            "kind": truth["kind"],
        }
    )


def match(detected: pd.DataFrame, planted: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(detection matched?, planted gap found?) by same contact and IoU >= 0.5 of calendar days
    (both tables hold inclusive dates), one detection to one planted gap (best IoU first)."""
    det = detected[["contact_address", "start", "end"]].reset_index(drop=True)
    pla = planted[["contact_address", "start", "end"]].reset_index(drop=True)
    pairs = det.reset_index().merge(pla.reset_index(), on="contact_address",
                                    suffixes=("_d", "_p"))
    inter = (pairs[["end_d", "end_p"]].min(axis=1) - pairs[["start_d", "start_p"]].max(axis=1))
    inter_days = inter.dt.days + 1
    union_days = (pairs[["end_d", "end_p"]].max(axis=1)
                  - pairs[["start_d", "start_p"]].min(axis=1)).dt.days + 1
    iou = inter_days.clip(lower=0) / union_days
    good = (
        pairs.assign(iou=iou)[iou >= 0.5]
        .sort_values("iou", ascending=False, kind="stable")
        .drop_duplicates("index_d")
        .drop_duplicates("index_p")
    )
    det_ok = np.zeros(len(det), bool)
    pla_ok = np.zeros(len(pla), bool)
    det_ok[good["index_d"].to_numpy()] = True
    pla_ok[good["index_p"].to_numpy()] = True
    return det_ok, pla_ok


def daily_counts(events: pd.DataFrame) -> pd.DataFrame:
    """contact × day counts, the mailbox as ``"*"``."""
    day = events["sent_at_utc"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    frame = pd.DataFrame({"contact_address": events["contact_address"], "day": day})
    mailbox = frame.assign(contact_address=timeline.MAILBOX)
    both = pd.concat([frame, mailbox])
    table = both.groupby(["contact_address", "day"]).size().unstack(fill_value=0)
    full = pd.date_range(table.columns.min(), table.columns.max(), freq="D")
    return table.reindex(columns=full, fill_value=0)


def baseline_14d(events: pd.DataFrame) -> pd.DataFrame:
    counts = daily_counts(events)
    days = counts.columns
    active = counts.to_numpy() > 0
    rows, cols = np.nonzero(active)  # row-major: per contact, active days in order
    same = rows[1:] == rows[:-1]
    silent = cols[1:] - cols[:-1] - 1
    keep = same & (silent >= 14)
    return pd.DataFrame(
        {
            "contact_address": counts.index.to_numpy()[rows[1:][keep]],
            "start": days[cols[:-1][keep] + 1],
            "end": days[cols[1:][keep] - 1],
        }
    )


def baseline_median(events: pd.DataFrame, weeks: int = 8, min_run: int = 5) -> pd.DataFrame:
    counts = daily_counts(events)
    days = counts.columns
    y = counts.to_numpy().astype(float)
    lagged = np.stack(
        [np.concatenate([np.full((len(y), 7 * k), np.nan), y[:, : -7 * k]], axis=1)
         for k in range(1, weeks + 1)]
    )
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN before the 8th week
        median = np.nanmedian(lagged, axis=0)
    business = np.asarray(days.day_of_week < 5)
    # spans: only between a contact's first and last message
    active = y > 0
    first = active.argmax(axis=1)
    last = y.shape[1] - 1 - active[:, ::-1].argmax(axis=1)
    idx = np.arange(y.shape[1])
    inside = (idx >= first[:, None]) & (idx <= last[:, None])
    flagged = inside & business & (median >= 1) & (y < 0.5 * median)
    # runs of flagged business days, weekends in between allowed: compress to business days
    fb = flagged[:, business]
    padded = np.concatenate([np.zeros((len(fb), 1), bool), fb, np.zeros((len(fb), 1), bool)], 1)
    step = np.diff(padded.astype(np.int8), axis=1)
    r, a = np.nonzero(step == 1)
    _, b = np.nonzero(step == -1)
    keep = (b - a) >= min_run
    bdays = days[business]
    return pd.DataFrame(
        {
            "contact_address": counts.index.to_numpy()[r[keep]],
            "start": bdays[a[keep]],
            "end": bdays[b[keep] - 1],
        }
    )


def scored(detected: pd.DataFrame, planted: pd.DataFrame) -> dict[str, float]:
    det_ok, pla_ok = match(detected, planted)
    precision = float(det_ok.mean()) if len(det_ok) else 1.0
    recall = float(pla_ok.mean()) if len(pla_ok) else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "detections": len(det_ok),
            "found": int(pla_ok.sum()), "planted": len(pla_ok)}


def reported(gaps: pd.DataFrame) -> pd.DataFrame:
    """Detections to match: everything but the contacts' shares of archive-wide gaps."""
    share = gaps["kind"].eq("archive_wide") & gaps["contact_address"].ne(timeline.MAILBOX)
    return gaps[~share]


STREAM_OF_KIND = {"full": "all", "partial": "all", "archive": "all", "sent_only": "outgoing",
                  "received_only": "incoming"}
POWER_Z = 2.326  # one-sided 99%: the gap is detectable when it passes in 99 draws of 100


FLANK_DAYS = 28  # the detector's flanks (evaluate_runs' flank_days)


def _flank_days(first: np.ndarray, last: np.ndarray, n_days: int) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """(day, gap) of each of the FLANK_DAYS days before and after each gap inside the period."""
    offsets = np.concatenate([np.arange(-FLANK_DAYS, 0), np.arange(1, FLANK_DAYS + 1)])
    day = np.where(offsets[None, :] < 0, first[:, None] + offsets[None, :],
                   last[:, None] + offsets[None, :])
    gap = np.repeat(np.arange(len(first)), len(offsets)).reshape(day.shape)
    inside = (day >= 0) & (day < n_days)
    return day[inside], gap[inside]


def _observed_span(mailbox: Mailbox, start: pd.Timestamp) -> pd.DataFrame:
    """``first``, ``last``: calendar day (from ``start``) of each contact's first and last message
    kept in the mailbox (UTC dates, as the detector is run), by contact address."""
    messages = mailbox.messages
    day = (
        messages["sent_at_utc"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize() - start
    ).dt.days
    return day.groupby(messages["contact_address"]).agg(["min", "max"]).set_axis(
        ["first", "last"], axis=1
    )


def detectable_gaps(mailbox: Mailbox, floors: pd.DataFrame) -> pd.DataFrame:
    """Each planted gap with ``silence_factor``, ``threshold`` and ``detectable``.

    A gap is *detectable* when it has 10+ expected missing messages outside the planted
    archive-wide gaps (a contact's days inside one are the archive gap's: its own loss there cannot
    be told apart, so those days count neither as missing nor in the test) and, under the truth's own
    expected messages per day of the stream it hits (both directions; only the owner's for
    ``sent_only``; only the contact's for ``received_only``; everyone's for an archive gap) and
    the silence dispersion φ the detector fitted to that stream, the test would pass in 99
    mailboxes of 100: a day is silent with probability ``(1 + φ·mu)^(-1/φ)`` (``mu`` times
    ``1 - loss`` in the gap),
    and the 99th percentile of the days with mail left in the window must be improbable below the
    mailbox's threshold (binomial tail, as the detector computes it), with the expected mail
    mixed over the relative levels the detector allows for (``level_draws`` of the days with
    mail the truth's rates expect in the ``FLANK_DAYS`` either side: a level learnt from a few
    bursts of mail is uncertain, and so is the silence it predicts). A partial loss below half is
    never detectable: it cannot be told from a change of the contact's level (the detector reports
    a gap only where at most half the expected mail came through). The flanks count only inside
    the contact's *observed* timeline (its first to last message kept in the mailbox): before its
    first message nothing shows that the contact was writing at all, so those days tell nothing
    of the level, and a gap with less than one message expected on either flank inside that
    timeline sits at its edge, where no method can tell lost mail from a contact who had not
    yet begun (or had stopped) writing: it is not detectable. The same test gives each gap
    ``floor_business_days``: at its own rate, the shortest full gap that would pass.
    """
    truth = mailbox.truth.gaps
    people = mailbox.people.reset_index(drop=True)
    row_of = pd.Series(np.arange(len(people)), index=people["address"])
    contact = truth["contact_address"].fillna(timeline.MAILBOX)
    stream = truth["kind"].map(STREAM_OF_KIND)
    fl = floors.set_index(["contact_address", "stream"])
    keys = pd.MultiIndex.from_arrays([contact, stream])
    phi = fl["silence_dispersion"].reindex(keys).to_numpy()
    threshold = float(floors["threshold"].iloc[0]) if len(floors) else np.nan
    start = pd.Timestamp(mailbox.calendar.start)
    first = (pd.to_datetime(truth["start_date"]) - start).dt.days.to_numpy()
    last = (pd.to_datetime(truth["end_date"]) - start).dt.days.to_numpy()
    exp_in, exp_out = mailbox.expected_incoming, mailbox.expected_outgoing
    # expected messages per (gap, day) of the stream the gap hits: a ragged gather, no loop
    lengths = last - first + 1
    gap_id = np.repeat(np.arange(len(truth)), lengths)
    day = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    day = day + np.repeat(first, lengths)
    who = row_of.reindex(contact).fillna(-1).to_numpy().astype(np.int64)[gap_id]
    kind = truth["kind"].to_numpy()[gap_id]
    everyone_in, everyone_out = exp_in.sum(axis=0), exp_out.sum(axis=0)
    safe = np.maximum(who, 0)
    mu = np.where(kind == "archive", everyone_in[day] + everyone_out[day],
                  np.where(kind == "sent_only", 0.0, exp_in[safe, day])
                  + np.where(kind == "received_only", 0.0, exp_out[safe, day]))
    # a contact's days inside an archive-wide gap are that gap's: nothing there tells the
    # contact's own loss from the archive's, so only the contact gap's other days count
    archive = truth["kind"].eq("archive").to_numpy()
    covered = np.zeros(mailbox.calendar.days + 1)
    np.add.at(covered, first[archive], 1)
    np.add.at(covered, last[archive] + 1, -1)
    in_archive = np.cumsum(covered)[:-1] > 0
    mu = np.where((kind != "archive") & in_archive[day], 0.0, mu)
    loss = truth["loss_fraction"].to_numpy()[gap_id]
    missed_visible = np.bincount(gap_id, weights=mu * loss, minlength=len(truth))
    k = np.maximum(phi[gap_id], 1e-6)
    # what the detector can know of the gap's level: the days with mail expected in the
    # FLANK_DAYS before and after it (the same stream, the truth's rates), as its test takes it
    flank_day, flank_gap = _flank_days(first, last, mailbox.calendar.days)
    flank_kind = truth["kind"].to_numpy()[flank_gap]
    flank_who = np.maximum(row_of.reindex(contact).fillna(-1).to_numpy().astype(np.int64), 0)[
        flank_gap]
    flank_mu = np.where(flank_kind == "archive", everyone_in[flank_day] + everyone_out[flank_day],
                        np.where(flank_kind == "sent_only", 0.0, exp_in[flank_who, flank_day])
                        + np.where(flank_kind == "received_only", 0.0,
                                   exp_out[flank_who, flank_day]))
    flank_mu = np.where((flank_kind != "archive") & in_archive[flank_day], 0.0, flank_mu)
    # only the flank days inside the contact's observed timeline (first..last message kept)
    seen = _observed_span(mailbox, start)
    seen_first = seen["first"].reindex(contact).fillna(0).to_numpy().astype(np.int64)
    seen_last = seen["last"].reindex(contact).fillna(mailbox.calendar.days).to_numpy()
    inside_seen = (flank_day >= seen_first[flank_gap]) & (flank_day <= seen_last[flank_gap])
    flank_mu = np.where(inside_seen, flank_mu, 0.0)
    before = flank_day < first[flank_gap]
    edge = np.minimum(
        np.bincount(flank_gap, weights=flank_mu * before, minlength=len(truth)),
        np.bincount(flank_gap, weights=flank_mu * ~before, minlength=len(truth)),
    ) < 1.0
    flank_k = np.maximum(phi[flank_gap], 1e-6)
    evidence = np.bincount(flank_gap, weights=-np.expm1(-np.log1p(flank_k * flank_mu) / flank_k),
                           minlength=len(truth))
    level, weight = level_draws(evidence)
    log1 = -np.log1p(k * (1 - loss) * mu) / k
    p1 = -np.expm1(log1)
    n_days = np.bincount(gap_id, weights=(mu > 0).astype(float), minlength=len(truth))
    e1 = np.bincount(gap_id, weights=p1, minlength=len(truth))
    v1 = np.bincount(gap_id, weights=p1 * (1 - p1), minlength=len(truth))
    total_mu = np.bincount(gap_id, weights=mu, minlength=len(truth))
    active99 = np.floor(e1 + POWER_Z * np.sqrt(v1))
    tail = np.zeros(len(truth))
    for j in range(level.shape[1]):  # the detector's level bins: its test mixes over them too
        log0 = -np.log1p(k * mu * level[gap_id, j]) / k
        e0 = np.bincount(gap_id, weights=-np.expm1(log0), minlength=len(truth))
        total_log0 = np.bincount(gap_id, weights=log0, minlength=len(truth))
        silent = np.exp(total_log0)
        tail += weight[:, j] * np.where(
            active99 <= 0, silent,
            np.maximum(silent, stats.binom.cdf(active99, np.maximum(n_days, 1),
                                               np.clip(e0 / np.maximum(n_days, 1), 0, 1))))
    rate = total_mu / np.maximum(truth["business_days"].to_numpy(), 1)
    per_day = np.log1p(np.maximum(phi, 1e-6) * rate) / np.maximum(phi, 1e-6)
    floor = np.log(1 / threshold) / np.maximum(per_day, 1e-12)
    detectable = (
        (missed_visible >= 10)
        & (truth["loss_fraction"].to_numpy() >= 0.5)
        & np.isfinite(phi)
        & (tail <= threshold)
        & ~edge
    )
    return pd.DataFrame({"silence_dispersion": phi, "threshold": threshold,
                         "floor_business_days": floor, "detectable": detectable})


def run_seed(seed: int, contacts: int, years: float, alpha: float) -> dict[str, object]:
    config = SynthConfig(seed=seed, contacts=contacts, years=years)
    mailbox = generate_mailbox(config)
    events = events_of(mailbox.messages)
    t0 = time.perf_counter()
    gaps = timeline.detect_gaps(events, alpha=alpha, country=config.holiday_country)
    elapsed = time.perf_counter() - t0
    floors = timeline.detection_floors(events, alpha=alpha, country=config.holiday_country)
    planted = pd.concat([truth_gaps(mailbox.truth.gaps),
                         detectable_gaps(mailbox, floors)], axis=1)
    ours = reported(gaps)
    det_ok, pla_ok = match(ours, planted)
    scores = timeline.score_completeness(events, gaps)
    truth_contacts = mailbox.truth.contacts[["address", "retained_fraction"]].dropna()
    joined = truth_contacts.merge(scores, left_on="address", right_on="contact_address",
                                  how="left")
    joined["completeness_score"] = joined["completeness_score"].fillna(0.0)
    errors = (joined["completeness_score"] - 100 * joined["retained_fraction"]).abs()
    contact_years = len(truth_contacts) * years

    false_alarms = {}
    no_gaps = replace(config.gaps, contact_share=0.0, archive_gaps=0)
    series = {
        "gap_free": {"vacations_per_year": 0.0, "holiday_factor": 1.0},
        "vacation_only": {"holiday_factor": 1.0},
        "holiday_only": {"vacations_per_year": 0.0},
    }
    for name, overrides in series.items():  # three fixed series per seed
        clean = generate_mailbox(replace(config, gaps=no_gaps, **overrides))  # type: ignore[arg-type]
        clean_events = events_of(clean.messages)
        found = reported(timeline.detect_gaps(clean_events, alpha=alpha,
                                              country=config.holiday_country))
        false_alarms[name] = (len(found), len(clean.truth.contacts) * years)
    return {
        "seed": seed,
        "ours": (det_ok, pla_ok),
        "planted": planted.assign(found=pla_ok),
        "baseline_14d": scored(baseline_14d(events), planted),
        "baseline_median": scored(baseline_median(events), planted),
        "baseline_14d_match": match(baseline_14d(events), planted),
        "baseline_median_match": match(baseline_median(events), planted),
        "abs_errors": errors.to_numpy(),
        "contact_years": contact_years,
        "false_alarms": false_alarms,
        "seconds": elapsed,
    }


def prf(det_ok: np.ndarray, pla_ok: np.ndarray) -> tuple[float, float, float]:
    precision = float(det_ok.mean()) if len(det_ok) else 1.0
    recall = float(pla_ok.mean()) if len(pla_ok) else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5,6,7,8,9,10")
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--years", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=timeline.DEFAULT_ALPHA)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results = [run_seed(s, args.contacts, args.years, args.alpha) for s in seeds]

    def pooled(key: str) -> tuple[float, float, float]:
        det = np.concatenate([r[key][0] for r in results])  # type: ignore[index]
        pla = np.concatenate([r[key][1] for r in results])  # type: ignore[index]
        return prf(det, pla)

    planted = pd.concat([r["planted"] for r in results], ignore_index=True)  # type: ignore[misc]
    ours = pooled("ours")
    b14 = pooled("baseline_14d_match")
    bmed = pooled("baseline_median_match")
    for r in results:
        planted_r = r["planted"]
        assert isinstance(planted_r, pd.DataFrame)
    found_b14 = np.concatenate([r["baseline_14d_match"][1] for r in results])  # type: ignore[index]
    found_med = np.concatenate([r["baseline_median_match"][1] for r in results])  # type: ignore[index]
    planted = planted.assign(found_14d=found_b14, found_median=found_med)

    print(f"seeds {seeds}, {args.contacts} contacts, {args.years} years, alpha {args.alpha}")
    print(f"planted gaps {len(planted)}, detectable (10+ expected missing, passes the mailbox's "
          f"test in 99% of draws) {int(planted['detectable'].sum())}")
    print(f"{'':34}{'pstlib':>10}{'14 days':>10}{'median':>10}")
    for label, idx in (("interval precision", 0), ("interval recall", 1), ("interval F1", 2)):
        print(f"{label:34}{ours[idx]:>10.3f}{b14[idx]:>10.3f}{bmed[idx]:>10.3f}")
    for lo, hi, name in BUCKETS:
        part = planted[(planted["expected_missed"] >= lo) & (planted["expected_missed"] < hi)]
        cells = [part[c].mean() if len(part) else float("nan")
                 for c in ("found", "found_14d", "found_median")]
        label = f"recall, expected missing {name} (n={len(part)})"
        print(f"{label:34}" + "".join(f"{v:>10.3f}" for v in cells))
    det = planted[planted["detectable"]]
    cells = [det[c].mean() if len(det) else float("nan")
             for c in ("found", "found_14d", "found_median")]
    print(f"{'recall, detectable gaps':34}" + "".join(f"{v:>10.3f}" for v in cells))
    for kind in ("full", "partial", "sent_only", "received_only", "archive"):
        part = det[det["kind"].eq(kind)]
        cells = [part[c].mean() if len(part) else float("nan")
                 for c in ("found", "found_14d", "found_median")]
        label = f"  detectable {kind} (n={len(part)})"
        print(f"{label:34}" + "".join(f"{v:>10.3f}" for v in cells))
    rates = {}
    for name in ("gap_free", "vacation_only", "holiday_only"):
        count = sum(r["false_alarms"][name][0] for r in results)  # type: ignore[index]
        years = sum(r["false_alarms"][name][1] for r in results)  # type: ignore[index]
        rates[name] = count / years
        print(f"{'false alarms / contact-year ' + name:34}{rates[name]:>10.4f}   ({count} in "
              f"{years:.0f} contact-years)")
    errors = np.concatenate([r["abs_errors"] for r in results])  # type: ignore[misc]
    mae = float(errors.mean())
    print(f"{'completeness MAE (points)':34}{mae:>10.3f}")
    seconds = sum(r["seconds"] for r in results)  # type: ignore[misc]
    print(f"{'detect_gaps seconds per mailbox':34}{seconds / len(results):>10.2f}")
    print(json.dumps({
        "precision": round(ours[0], 4),
        "recall": round(ours[1], 4),
        "recall_detectable": round(float(det["found"].mean()) if len(det) else float("nan"), 4),
        "detectable": len(det), "planted": len(planted),
        "f1": round(ours[2], 4), "baseline_14d_f1": round(b14[2], 4),
        "baseline_median_f1": round(bmed[2], 4),
        "false_alarms_per_contact_year_gap_free": round(rates["gap_free"], 5),
        "false_alarms_per_contact_year_vacation": round(rates["vacation_only"], 5),
        "false_alarms_per_contact_year_holiday": round(rates["holiday_only"], 5),
        "completeness_mae": round(mae, 4),
    }))


if __name__ == "__main__":
    main()
