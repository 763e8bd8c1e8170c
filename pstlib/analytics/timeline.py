"""Timeline completeness per contact: coverage, expected volume, gaps, severity, completeness.

The input of every analysis here is a *contact timeline*: one row per (message, contact), built by
:func:`contact_events` from the store's ``messages`` and ``recipients`` tables. The contact of an
incoming message is its sender; of an outgoing message (sent by the mailbox owner), each recipient.
The mailbox as a whole appears as the pseudo-contact ``"*"`` (:data:`MAILBOX`) wherever a table has
one row per contact.

A *gap* is a run of days with too little mail to be chance under a model of the contact's own rhythm
(see :mod:`pstlib.analytics._timeline_model`): a negative binomial count per day whose mean follows
the contact's activity level (which may drift, trend or jump: that is no gap), weekday profile,
public holidays of a country, organisation-wide quiet periods and the owner's vacations (declared,
or inferred: the owner's mail stops while received mail goes on, often with auto-replies). A run's
expected mail comes from the mail on either side of it (the lower of the two rates; each side's the
lower of its month's and its six weeks', so that a burst beside a silence does not make it a gap),
and since that mail tells the rate only so well, the run's probability is mixed over the rates it
leaves possible.
In one direction of a contact's mail, a day's silence is judged given the other direction's mail
that day: the two come in the same bursts (a conversation), so the owner's sent mail missing
while the contact's mail goes on (or the reverse) is far less likely than the same silence on
quiet days.
A silence at the very edge of a contact's timeline (a flank that would hold under one message at the
run's level) is no gap: nothing there tells lost mail from a contact who had not yet begun, or had
stopped, writing.
A gap is reported only when its probability is below the mailbox's threshold: ``alpha`` shared out
over every place a silence could start in every contact's timeline (Benjamini-Hochberg), so that
the expected share of chance silences among the gaps reported stays below ``alpha``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from pstlib.analytics._calendar import day_table, local_dates, require_columns
from pstlib.analytics._gap_rules import (
    KIND_PRIORITY,
    attribute_archive_gaps,
    classify_clusters,
    drop_inside,
    infer_vacations,
    trim_off,
    trim_to_business_days,
    trim_vacations,
)
from pstlib.analytics._timeline_model import (
    MAILBOX,
    StreamFit,
    StreamGrid,
    build_grid,
    cells_of,
    evaluate_runs,
    find_candidates,
    fit_streams,
    floor_business_days,
    judge_runs,
    prefix_sums,
)

__all__ = [
    "DEFAULT_ALPHA",
    "GAP_KINDS",
    "GAP_SEVERITY_THRESHOLDS",
    "MAILBOX",
    "contact_events",
    "coverage_by_contact",
    "detect_gaps",
    "detect_vacations",
    "detection_floors",
    "expected_daily_volume",
    "rank_gaps",
    "recommend_sources",
    "score_completeness",
    "source_coverage",
]

DEFAULT_ALPHA = 0.01
MIN_MESSAGES = 10  # a contact with fewer messages has no detectable gap: it is not modelled
EVENT_COLUMNS = ["contact_address", "sent_at_utc", "direction", "folder_path"]
GAP_KINDS = ("full", "partial", "sent_only", "received_only", "archive_wide", "folder")
GAP_SEVERITY_THRESHOLDS: dict[str, float] = {
    "minor": 0.0,  # fewer than 10 expected messages missed
    "moderate": 10.0,  # 10 to 50
    "major": 50.0,  # 50 to 200
    "critical": 200.0,  # 200 or more
}
"""Lower bound of expected messages missed (``missed_messages``) for each severity."""

GAP_COLUMNS = [
    "contact_address",
    "start",
    "end",
    "calendar_days",
    "business_days",
    "expected_messages",
    "observed_messages",
    "missed_messages",
    "probability",
    "probability_anywhere",
    "floor_business_days",
    "severity",
    "kind",
    "folder_path",
    "suggested_action",
]
SUGGESTED_ACTIONS = {
    "archive_wide": "No mail at all for anyone in this period: look for a missing archive file "
    "(PST/OST) or export covering it and import it.",
    "full": "No mail with this contact in this period: look for a PST/OST or folder (e.g. a "
    "project or archive folder) holding it.",
    "partial": "Much less mail with this contact than expected: a source or folder may be only "
    "partly imported; compare counts with the original mailbox.",
    "sent_only": "The owner's sent mail to this contact is missing: check the Sent Items folder "
    "and any archive of sent mail for this period.",
    "received_only": "Mail received from this contact is missing: check the Inbox, its subfolders "
    "and rule-moved folders for this period.",
    "folder": "One folder's mail with this contact is missing: re-export that folder for this "
    "period.",
}


# ---------------------------------------------------------------------------------------- inputs
def contact_events(
    messages: pd.DataFrame, recipients: pd.DataFrame, owner_address: str
) -> pd.DataFrame:
    """The contact timeline: one row per (message, contact).

    Needs ``messages``: ``message_row_id, sender_address, sent_at_utc, folder_path`` (optional
    ``source_id, auto_submitted``) and ``recipients``: ``message_row_id, address``. A message whose
    sender is ``owner_address`` is ``outgoing`` and has one row per recipient (the owner left out);
    any other is ``incoming`` and has one row, its sender. Messages without ``sent_at_utc`` are left
    out. Returns ``message_row_id, contact_address, sent_at_utc, direction, folder_path`` and
    ``source_id``, ``auto_submitted`` where given.
    """
    require_columns(
        "contact_events",
        messages,
        ["message_row_id", "sender_address", "sent_at_utc", "folder_path"],
    )
    require_columns("contact_events", recipients, ["message_row_id", "address"])
    owner = owner_address.strip().lower()
    optional = [c for c in ("source_id", "auto_submitted") if c in messages.columns]
    dated = messages.loc[
        messages["sent_at_utc"].notna(),
        ["message_row_id", "sender_address", "sent_at_utc", "folder_path", *optional],
    ]
    sent_at = pd.to_datetime(dated["sent_at_utc"], utc=True)
    # addresses are normalised as their few distinct values (thousands among millions of rows),
    # then every string is a code into them: one table of the contacts, senders and recipients
    sender_code, sender_names = _address_codes(dated["sender_address"])
    outgoing = np.append(sender_names.eq(owner).fillna(False).to_numpy(bool), False)[sender_code]
    # each outgoing message's recipients (an inner join on the message, as many rows as match)
    position = np.arange(len(dated))
    sent_pairs = pd.DataFrame(
        {"message_row_id": dated["message_row_id"].to_numpy()[outgoing], "at": position[outgoing]}
    ).merge(recipients[["message_row_id", "address"]], on="message_row_id")
    address_code, address_names = _address_codes(sent_pairs["address"])
    contact_code, contacts = pd.factorize(pd.concat([sender_names, address_names]))
    contact_code = np.append(contact_code, -1)  # code -1 (no address) stays -1
    received_contact = contact_code[np.where(outgoing, -1, sender_code)[~outgoing]]
    sent_contact = contact_code[np.where(address_code >= 0, address_code + len(sender_names), -1)]
    is_owner = np.append(pd.Series(contacts).eq(owner).to_numpy(bool), False)
    at = np.concatenate([position[~outgoing], sent_pairs["at"].to_numpy()])
    contact = np.concatenate([received_contact, sent_contact])
    direction = np.concatenate(
        [np.zeros(len(received_contact), bool), np.ones(len(sent_contact), bool)]
    )
    # events with a contact, not the owner; a message counts once per contact
    keep = (contact >= 0) & ~(direction & is_owner[contact])
    message_id = dated["message_row_id"].to_numpy()
    message_code, _ = pd.factorize(message_id[at])  # (message, contact) as one integer
    pair = message_code.astype(np.int64) * (len(contacts) + 1) + contact
    keep &= ~(direction & pd.Series(np.where(direction, pair, -1)).duplicated().to_numpy())
    at, contact, direction = at[keep], contact[keep], direction[keep]
    # by time, message and contact address: messages ranked once, contacts by their sorted text
    message_rank = np.empty(len(dated), dtype=np.int64)
    message_rank[
        np.lexsort((message_id, sent_at.dt.tz_localize(None).to_numpy().view(np.int64)))
    ] = position
    contact_rank = np.empty(len(contacts), dtype=np.int64)
    contact_rank[np.argsort(np.asarray(contacts, dtype=object).astype(str), kind="stable")] = (
        np.arange(len(contacts))
    )
    order = np.argsort(
        message_rank[at] * max(len(contacts), 1) + contact_rank[contact], kind="stable"
    )
    at, contact, direction = at[order], contact[order], direction[order]
    columns = {
        "message_row_id": message_id[at],
        "contact_address": pd.array(contacts, dtype="string").take(contact),
        "sent_at_utc": sent_at.array.take(at),
        # the default text type of the pandas at hand, as a column of constants gets
        "direction": pd.Series(["incoming", "outgoing"]).array.take(direction.astype(np.int64)),
        "folder_path": dated["folder_path"].array.take(at),
        **{c: dated[c].array.take(at) for c in optional},
    }
    return pd.DataFrame(columns)


def _address_codes(addresses: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """Codes of ``addresses`` (-1 where missing) into their distinct values, stripped and
    lower-cased (the distinct values may then repeat: two spellings of one address)."""
    code, distinct = pd.factorize(addresses)
    names = pd.Series(distinct, dtype="string").str.strip().str.lower()
    return np.asarray(code), names.reset_index(drop=True)


def coverage_by_contact(events: pd.DataFrame, *, timezone: str = "UTC") -> pd.DataFrame:
    """First and last message, timeline and coverage days of each contact and of the mailbox.

    Needs ``contact_address, sent_at_utc, direction``. Returns one row per contact (and ``"*"``):
    ``contact_address, first_sent_at_utc, last_sent_at_utc, message_count, incoming_messages,
    outgoing_messages, timeline_days`` (calendar days from the first to the last message, both
    counted), ``coverage_days`` (days with mail) and ``coverage_ratio``.
    """
    require_columns("coverage_by_contact", events, ["contact_address", "sent_at_utc", "direction"])
    key = events["message_row_id"] if "message_row_id" in events.columns else events.index
    frame = events.assign(date=local_dates(events["sent_at_utc"], timezone), message_key=key)
    mailbox = frame.drop_duplicates("message_key").assign(contact_address=MAILBOX)
    table = (
        pd.concat([frame, mailbox], ignore_index=True)
        .assign(
            incoming=lambda f: f["direction"].eq("incoming"),
            outgoing=lambda f: f["direction"].eq("outgoing"),
        )
        .groupby("contact_address")
        .agg(
            first_sent_at_utc=("sent_at_utc", "min"),
            last_sent_at_utc=("sent_at_utc", "max"),
            message_count=("sent_at_utc", "size"),
            incoming_messages=("incoming", "sum"),
            outgoing_messages=("outgoing", "sum"),
            first_date=("date", "min"),
            last_date=("date", "max"),
            coverage_days=("date", "nunique"),
        )
    )
    return (
        table.assign(timeline_days=(table["last_date"] - table["first_date"]).dt.days + 1)
        .assign(coverage_ratio=lambda f: f["coverage_days"] / f["timeline_days"])
        .drop(columns=["first_date", "last_date"])
        .reset_index()
    )


# -------------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class _Analysis:
    grid: StreamGrid
    fit: StreamFit
    runs: pd.DataFrame  # the significant runs of the last pass, evaluated (see _scan_order)
    vacations: pd.DataFrame  # declared and inferred
    threshold: float  # the mailbox's probability threshold for a gap (Benjamini-Hochberg)


def _no_dated_mail(events: pd.DataFrame) -> bool:
    """No message with a date: no timeline to model (the analyses return empty frames)."""
    require_columns("timeline analysis", events, EVENT_COLUMNS)
    return not bool(events["sent_at_utc"].notna().any())


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def _analyse(
    events: pd.DataFrame,
    *,
    alpha: float,
    country: str | None,
    vacations: pd.DataFrame | None,
    quiet_periods: pd.DataFrame | None,
    infer: bool,
    timezone: str,
    min_messages: int,
) -> _Analysis:
    """Fit, scan, infer vacations, and fit and scan again without the gaps found (the last time
    only the streams whose excluded cells changed: see :func:`fit_streams`)."""
    require_columns("timeline analysis", events, EVENT_COLUMNS)
    grid = build_grid(
        events,
        timezone=timezone,
        country=country,
        quiet_periods=quiet_periods,
        vacations=vacations,
        min_messages=min_messages,
    )

    def one_pass(
        exclude: np.ndarray, previous: StreamFit | None = None
    ) -> tuple[StreamFit, pd.DataFrame]:
        fit = fit_streams(grid, exclude, previous=previous)
        places = fit.effective_days[grid.tested].sum()
        runs = find_candidates(grid, fit, threshold=alpha / places, partial_ratio=0.25)
        return fit, evaluate_runs(grid, fit, runs, alpha=alpha, exclude=exclude)

    def refit(
        exclude: np.ndarray, changed: np.ndarray, previous: StreamFit, runs: pd.DataFrame
    ) -> tuple[StreamFit, pd.DataFrame, float]:
        # only the streams whose excluded cells changed are fitted and scanned again; the
        # others' runs stand, judged again at the mailbox's new threshold
        fit = fit_streams(grid, exclude, previous=previous, rows=changed)
        places = fit.effective_days[grid.tested].sum()
        fresh = find_candidates(
            grid, fit, threshold=alpha / places, partial_ratio=0.25, rows=changed
        )
        kept = runs[~changed[runs["stream"].to_numpy()]]
        counted = kept["observed_messages"] <= 0.5 * kept["expected_test"]
        fresh = evaluate_runs(
            grid,
            fit,
            fresh,
            alpha=alpha,
            exclude=exclude,
            others=kept.loc[counted, "probability"].to_numpy(),
        )
        kept = judge_runs(
            fit,
            kept,
            float(fresh["threshold"].iloc[0])
            if len(fresh)
            else float(kept["threshold"].iloc[0])
            if len(kept)
            else alpha,
        )
        # in the order a whole scan gives (see _scan_order), the significant runs only: no
        # analysis reads the others
        every = pd.concat([kept, fresh], ignore_index=True)
        threshold = (
            float(every["threshold"].iloc[0]) if len(every) else alpha / fit.effective_days.sum()
        )
        return fit, _scan_order(grid, every, every["significant"].to_numpy()), threshold

    nothing = np.zeros_like(grid.span)
    fit, runs = one_pass(nothing)
    # what the first pass tells is in its suspicious runs (probability within the square root of
    # the threshold: the significant ones among them): vacations, the cells the next fit leaves
    # out, the archive-wide silences; the million others are dropped here, once
    probability = runs["probability"].to_numpy()
    runs = runs[
        (probability <= np.sqrt(runs["threshold"].to_numpy())) | runs["significant"].to_numpy()
    ]
    declared = _declared(vacations)
    inferred = infer_vacations(grid, fit, runs) if infer else declared.iloc[:0]
    every = pd.concat([declared, inferred], ignore_index=True)
    if not inferred.empty:  # the vacations become special days of the model
        days = grid.days
        grid = grid.with_days(
            day_table(
                days["date"].iloc[0],
                days["date"].iloc[-1],
                country=country,
                quiet_periods=quiet_periods,
                vacations=every[["start", "end"]],
            )
        )
        vacation_days = grid.days["is_vacation"].to_numpy()
        on_vacation = _overlaps_days(runs, vacation_days) & runs["significant"].to_numpy()
        # a significant run that overlaps a vacation is the vacation's silence, no gap; but the
        # days it reaches beyond the vacation may be a loss of their own (a sent-only gap
        # around a vacation): they stay out of the next fit's level, so that the loss does not
        # drag the level down around itself and hide
        beyond = cells_of(runs[on_vacation], grid.span.shape) & ~vacation_days[None, :]
        runs = runs[~on_vacation]
    else:
        beyond = np.zeros_like(grid.span)
    # A long gap drags the rolling level down around itself and so hides; refit first without
    # every suspicious run (probability within the square root of the threshold: generous, so
    # the level sees no gap), then once more without only the gaps that pass, so that chance
    # silences count in the final level and silence factor as they should.
    # Days on which the whole mailbox went silent (an archive-wide gap) teach no stream anything.
    suspicious = runs["probability"].to_numpy() <= np.sqrt(runs["threshold"].to_numpy())
    halved = (runs["observed_messages"] <= 0.5 * runs["expected_test"]).to_numpy()
    exclude = (
        cells_of(runs[suspicious & halved | runs["significant"].to_numpy()], grid.span.shape)
        | beyond
        | _mailbox_silence(grid, runs)[None, :]
    )
    fit, runs = one_pass(exclude, fit)
    # the second refit changes the excluded cells of few streams: only they are fitted again
    last_exclude = exclude
    exclude = (
        cells_of(runs[runs["significant"]], grid.span.shape) | _mailbox_silence(grid, runs)[None, :]
    )
    fit, runs, threshold = refit(exclude, (exclude != last_exclude).any(axis=1), fit, runs)
    return _Analysis(grid=grid, fit=fit, runs=runs, vacations=every, threshold=threshold)


def _scan_order(grid: StreamGrid, runs: pd.DataFrame, chosen: np.ndarray) -> pd.DataFrame:
    """The ``chosen`` runs in the order a whole scan lists them (silent runs, then sparse ones,
    each by stream and first day), each labelled with its place among all the ``runs`` in that
    order: what sorting every run and then selecting would give, without moving the million
    runs that are not chosen (one integer key, nearly sorted already, is sorted instead)."""
    n_streams, n_days = len(grid.keys), len(grid.days)
    sparse = runs["method"].ne("zero").to_numpy().astype(np.int64)
    key = (sparse * n_streams + runs["stream"].to_numpy()) * n_days + runs["first_day"].to_numpy()
    order = np.argsort(key, kind="stable")
    place = np.empty(len(order), dtype=np.int64)
    place[order] = np.arange(len(order))
    rows = np.flatnonzero(chosen)
    rows = rows[np.argsort(place[rows], kind="stable")]
    picked: pd.DataFrame = runs.iloc[rows].set_axis(pd.RangeIndex(len(runs))[place[rows]])
    return picked


def _mailbox_silence(grid: StreamGrid, runs: pd.DataFrame) -> np.ndarray:
    """The days of the significant silent runs of the mailbox's ``all`` stream."""
    keys = grid.keys
    mailbox_all = (keys["contact_address"].eq(MAILBOX) & keys["stream"].eq("all")).to_numpy()
    silent = runs[
        runs["significant"].to_numpy()
        & runs["method"].eq("zero").to_numpy()
        & mailbox_all[runs["stream"].to_numpy()]
    ]
    days: np.ndarray = cells_of(silent.assign(stream=0), (1, len(grid.days)))[0]
    return days


def _drop_blurred(grid: StreamGrid, runs: pd.DataFrame) -> pd.DataFrame:
    """Drop each sparse run that overlaps a silent run of the same contact.

    Where a contact went silent, the silence is the gap: a sparse run around it (the slow days
    before and after) would blur its sharp edges and its kind. The silences that count are those
    of the contact's ``all``, ``incoming`` and ``outgoing`` streams (the mailbox's ``all`` only:
    its outgoing silences are vacations).
    """
    keys = grid.keys
    code, _ = pd.factorize(keys["contact_address"])
    stream = runs["stream"].to_numpy()
    family = keys["stream"].to_numpy()[stream]
    on_mailbox = keys["contact_address"].eq(MAILBOX).to_numpy()[stream]
    silent = runs["method"].eq("zero").to_numpy() & (
        (family == "all") | (~on_mailbox & np.isin(family, ["incoming", "outgoing"]))
    )
    per_contact = runs[silent].assign(stream=code[stream[silent]])
    mask = cells_of(per_contact, (int(code.max()) + 1 if len(code) else 0, len(grid.days)))
    cum, _ = prefix_sums(mask)  # 32-bit counts of silent days
    rows = code[stream]
    first, last = runs["first_day"].to_numpy(), runs["last_day"].to_numpy()
    overlaps = (cum[rows, last + 1] - cum[rows, first]) > 0
    kept: pd.DataFrame = runs[~(runs["method"].eq("sparse").to_numpy() & overlaps)]
    return kept


def _declared(vacations: pd.DataFrame | None) -> pd.DataFrame:
    if vacations is None or vacations.empty:
        return pd.DataFrame(columns=["start", "end", "evidence"])
    require_columns("vacations", vacations, ["start", "end"])
    return vacations.assign(
        start=pd.to_datetime(vacations["start"]).dt.tz_localize(None),
        end=pd.to_datetime(vacations["end"]).dt.tz_localize(None),
        evidence="declared",
    )


def _overlaps_days(runs: pd.DataFrame, days: np.ndarray) -> np.ndarray:
    cum = np.concatenate([[0], np.cumsum(days)])
    first, last = runs["first_day"].to_numpy(), runs["last_day"].to_numpy()
    hits: np.ndarray = (cum[last + 1] - cum[first]) > 0
    return hits


_DAILY_COLUMNS = (
    "contact_address",
    "stream",
    "date",
    "observed_messages",
    "expected_messages",
    "is_business_day",
    "is_holiday",
    "is_quiet",
    "is_vacation",
)


def expected_daily_volume(
    events: pd.DataFrame,
    *,
    country: str | None = None,
    vacations: pd.DataFrame | None = None,
    quiet_periods: pd.DataFrame | None = None,
    infer: bool = True,
    timezone: str = "UTC",
    alpha: float = DEFAULT_ALPHA,
    min_messages: int = MIN_MESSAGES,
) -> pd.DataFrame:
    """The model's expected messages per contact, direction and day, beside the observed.

    Needs ``contact_address, sent_at_utc, direction, folder_path`` (optional ``auto_submitted``,
    ``message_row_id``). ``vacations`` and ``quiet_periods`` are DataFrames of
    inclusive ``start``, ``end`` dates. Returns one row per modelled contact (and ``"*"``), stream
    (``all``, ``incoming``, ``outgoing``: the owner's mail without auto-replies) and day of the
    contact's timeline: ``contact_address, stream, date, observed_messages, expected_messages,
    is_business_day, is_holiday, is_quiet, is_vacation``. Contacts with fewer than ``min_messages``
    messages are not modelled.
    """
    if _no_dated_mail(events):
        return _empty(list(_DAILY_COLUMNS))
    analysis = _analyse(
        events,
        alpha=alpha,
        country=country,
        vacations=vacations,
        quiet_periods=quiet_periods,
        infer=infer,
        timezone=timezone,
        min_messages=min_messages,
    )
    grid, fit = analysis.grid, analysis.fit
    shown = grid.keys["stream"].isin(["all", "incoming", "outgoing"]).to_numpy()
    rows, days = np.nonzero(grid.span & shown[:, None])
    day_flags = grid.days[["date", "is_business_day", "is_holiday", "is_quiet", "is_vacation"]]
    return pd.concat(
        [
            grid.keys[["contact_address", "stream"]].iloc[rows].reset_index(drop=True),
            day_flags.iloc[days].reset_index(drop=True),
        ],
        axis=1,
    ).assign(
        observed_messages=grid.counts[rows, days].astype(np.int64),
        expected_messages=fit.mu[rows, days],
    )[list(_DAILY_COLUMNS)]


# ------------------------------------------------------------------------------------------- gaps
def detect_vacations(
    events: pd.DataFrame,
    *,
    country: str | None = None,
    vacations: pd.DataFrame | None = None,
    quiet_periods: pd.DataFrame | None = None,
    timezone: str = "UTC",
    alpha: float = DEFAULT_ALPHA,
    min_messages: int = MIN_MESSAGES,
) -> pd.DataFrame:
    """The owner's vacations: declared ones and those the mail shows.

    A vacation stops the owner's own mail while received mail goes on, often with auto-replies
    (``auto_submitted`` other than ``no`` on outgoing mail); a lost file stops both directions. An
    improbably quiet run of the mailbox's outgoing mail (auto-replies left out) is a vacation when
    auto-replies were sent in it (``evidence='auto_replies'``; improbable within the square root of
    the mailbox's threshold) or, improbable below the threshold itself, received mail kept at least
    half its expected volume (``'received_continues'``). Needs the columns of
    :func:`expected_daily_volume`. Returns ``start, end`` (inclusive dates), ``business_days,
    sent_expected, sent_observed, received_ratio, auto_replies, evidence`` (``declared`` rows carry
    only their dates).
    """
    if _no_dated_mail(events):
        return _empty(
            [
                "start",
                "end",
                "evidence",
                "business_days",
                "sent_expected",
                "sent_observed",
                "received_ratio",
                "auto_replies",
            ]
        )
    analysis = _analyse(
        events,
        alpha=alpha,
        country=country,
        vacations=vacations,
        quiet_periods=quiet_periods,
        infer=True,
        timezone=timezone,
        min_messages=min_messages,
    )
    return analysis.vacations.reset_index(drop=True)


def detect_gaps(
    events: pd.DataFrame,
    *,
    alpha: float = DEFAULT_ALPHA,
    country: str | None = None,
    vacations: pd.DataFrame | None = None,
    quiet_periods: pd.DataFrame | None = None,
    infer_vacations: bool = True,
    timezone: str = "UTC",
    min_messages: int = MIN_MESSAGES,
) -> pd.DataFrame:
    """Gaps in each contact's timeline (and the mailbox's), most improbable first.

    Needs ``contact_address, sent_at_utc, direction, folder_path`` (optional ``auto_submitted`` for
    vacation evidence, ``message_row_id`` to count a message once in the mailbox; a source's
    gap is found as the gaps of the contacts whose mail it held: see :func:`recommend_sources`).
    ``vacations`` / ``quiet_periods``: DataFrames of inclusive ``start``, ``end`` dates;
    ``country``:
    an ISO code (``"US"``, ``"DE-BY"``) whose public holidays the model knows. Inferred vacations
    (see :func:`detect_vacations`) are no gaps.

    Returns :data:`GAP_COLUMNS`: ``contact_address``; ``start``, ``end`` (inclusive dates, trimmed
    to business days); ``calendar_days``, ``business_days``; ``expected_messages`` (in the window,
    under the model), ``observed_messages``, ``missed_messages`` (expected minus observed, >= 0);
    ``probability`` (of so few messages in the window) and ``probability_anywhere`` (of so
    improbable
    a window anywhere in the contact's timeline: below ``alpha`` for every gap);
    ``floor_business_days`` (the shortest silence the contact's rate lets us tell from chance);
    ``severity`` by ``missed_messages`` (:data:`GAP_SEVERITY_THRESHOLDS`); ``kind`` (one of
    :data:`GAP_KINDS`: ``full`` nothing came through, ``partial`` some did, ``sent_only`` /
    ``received_only`` one direction stopped while the other went on, ``folder`` one folder's mail
    stopped, ``archive_wide`` nobody's mail came through: the mailbox row ``"*"`` holds the gap and
    each affected contact's row its share, reported without a test of its own; a contact's own
    gap that runs into an archive-wide one ends where that begins);
    ``folder_path`` (for folder gaps) and ``suggested_action``.
    """
    if _no_dated_mail(events):
        return _empty(GAP_COLUMNS)
    analysis = _analyse(
        events,
        alpha=alpha,
        country=country,
        vacations=vacations,
        quiet_periods=quiet_periods,
        infer=infer_vacations,
        timezone=timezone,
        min_messages=min_messages,
    )
    grid, fit = analysis.grid, analysis.fit
    significant = analysis.runs[analysis.runs["significant"]]
    on_mailbox = grid.keys["contact_address"].eq(MAILBOX).to_numpy()
    threshold = analysis.threshold
    # the owner's own mail stops on vacation: an outgoing run ends where a vacation begins
    outgoing = grid.keys["stream"].eq("outgoing").to_numpy()
    significant = trim_vacations(grid, significant, outgoing)
    significant = _drop_blurred(grid, significant)
    # the cells of every gap and every archive-wide silence are left out of the flanks of the
    # windows classify_clusters tests again
    silence = _mailbox_silence(grid, significant)
    exclude = cells_of(significant, grid.span.shape) | silence[None, :]
    mailbox = classify_clusters(
        grid,
        fit,
        significant[on_mailbox[significant["stream"]]],
        alpha=alpha,
        threshold=threshold,
        exclude=exclude,
    )
    archive = mailbox[mailbox["kind"].eq("archive_wide")]
    # a contact's run inside an archive-wide gap is that gap's share, reported by attribution
    # below; a run reaching beyond it is tested on its other days only (the contact's mail on the
    # archive gap's days is lost with everyone's and tells nothing of the contact's own gap)
    archive_days = cells_of(archive.assign(stream=0), (1, len(grid.days)))[0]
    contact_runs = drop_inside(
        significant[~on_mailbox[significant["stream"]]], archive_days, ~on_mailbox
    )
    # and ends where the archive gap begins (its days are the archive gap's, reported once)
    contact_runs = trim_off(contact_runs, archive_days, ~on_mailbox)
    exclude |= archive_days[None, :]
    contact_fit = replace(
        fit, mu=np.where(archive_days[None, :] & ~on_mailbox[:, None], 0.0, fit.mu)
    )
    own = pd.concat(
        [
            mailbox,
            classify_clusters(
                grid, contact_fit, contact_runs, alpha=alpha, threshold=threshold, exclude=exclude
            ),
        ],
        ignore_index=True,
    )
    shares = attribute_archive_gaps(grid, fit, archive).assign(
        kind="archive_wide", folder_path="", probability=np.nan, probability_anywhere=np.nan
    )
    share_rows = shares["stream"].to_numpy()
    shares = shares.assign(
        floor_business_days=floor_business_days(
            fit.rate_business[share_rows], fit.silence_dispersion[share_rows], threshold
        )
    )
    gaps = pd.concat([own, shares], ignore_index=True)
    return _gap_table(grid, gaps)


def _gap_table(grid: StreamGrid, gaps: pd.DataFrame) -> pd.DataFrame:
    if gaps.empty:
        return _empty(GAP_COLUMNS)
    first, last = trim_to_business_days(
        grid,
        gaps["first_day"].to_numpy().astype(np.int64),
        gaps["last_day"].to_numpy().astype(np.int64),
    )
    dates = grid.days["date"].to_numpy()
    business = np.concatenate([[0], np.cumsum(grid.days["is_business_day"].to_numpy())])
    missed = np.maximum(gaps["expected_messages"] - gaps["observed_messages"], 0.0)
    severity = pd.cut(
        missed,
        bins=[*GAP_SEVERITY_THRESHOLDS.values(), np.inf],
        right=False,
        labels=list(GAP_SEVERITY_THRESHOLDS),
    ).astype("string")
    return (
        gaps.assign(
            start=dates[first],
            end=dates[last],
            calendar_days=last - first + 1,
            business_days=business[last + 1] - business[first],
            observed_messages=gaps["observed_messages"].astype(np.int64),
            missed_messages=missed,
            severity=severity,
            suggested_action=gaps["kind"].map(SUGGESTED_ACTIONS),
            priority=gaps["kind"].map(KIND_PRIORITY),
        )
        .sort_values(
            ["probability_anywhere", "priority", "contact_address", "start"],
            na_position="last",
            kind="stable",
        )[GAP_COLUMNS]
        .reset_index(drop=True)
    )


def detection_floors(
    events: pd.DataFrame,
    *,
    alpha: float = DEFAULT_ALPHA,
    country: str | None = None,
    vacations: pd.DataFrame | None = None,
    quiet_periods: pd.DataFrame | None = None,
    timezone: str = "UTC",
    min_messages: int = MIN_MESSAGES,
) -> pd.DataFrame:
    """The shortest gap each contact's rhythm lets us tell from chance.

    Mail comes in threads, so a day's silence is likelier than a Poisson count of messages says:
    a business day with ``λ`` expected messages is silent with probability ``(1 + φ·λ)^(-1/φ)``,
    ``φ`` the stream's silence dispersion (fitted to its days with mail; ``exp(-λ)`` for Poisson
    mail, φ → 0). A silence of ``n`` business days is a gap only when its probability is below the
    mailbox's ``threshold`` (``alpha`` shared out over every place a silence could start in every
    contact's timeline, Benjamini-Hochberg), so when ``n >= ln(1/threshold)·φ/ln(1 + φ·λ)``
    (``ln(1/threshold)/λ`` for Poisson mail), at the stream's average rate: a shorter gap is
    reported only where the mail around it runs above that average.
    Needs the columns of :func:`detect_gaps`. Returns ``contact_address, stream`` (``all``,
    ``incoming``, ``outgoing``), ``expected_per_business_day, dispersion, silence_dispersion,
    threshold, floor_business_days`` for every modelled stream of every contact and ``"*"``
    (contacts with fewer than ``min_messages`` messages: no row).
    """
    if _no_dated_mail(events):
        return _empty(
            [
                "contact_address",
                "stream",
                "expected_per_business_day",
                "dispersion",
                "silence_dispersion",
                "threshold",
                "floor_business_days",
            ]
        )
    analysis = _analyse(
        events,
        alpha=alpha,
        country=country,
        vacations=vacations,
        quiet_periods=quiet_periods,
        infer=True,
        timezone=timezone,
        min_messages=min_messages,
    )
    grid, fit = analysis.grid, analysis.fit
    rows = np.flatnonzero(grid.keys["stream"].isin(["all", "incoming", "outgoing"]).to_numpy())
    return pd.DataFrame(
        {
            "contact_address": grid.keys["contact_address"].to_numpy()[rows],
            "stream": grid.keys["stream"].to_numpy()[rows],
            "expected_per_business_day": fit.rate_business[rows],
            "dispersion": fit.phi[rows],
            "silence_dispersion": fit.silence_dispersion[rows],
            "threshold": analysis.threshold,
            "floor_business_days": floor_business_days(
                fit.rate_business[rows], fit.silence_dispersion[rows], analysis.threshold
            ),
        }
    )


# ---------------------------------------------------------------------------------- completeness
def score_completeness(events: pd.DataFrame, gaps: pd.DataFrame) -> pd.DataFrame:
    """A completeness score from 0 to 100 per contact and for the mailbox (``"*"``).

    ``completeness_score = 100 × observed / (observed + missed)``: ``observed`` the contact's
    messages in ``events`` and ``missed`` the sum of ``missed_messages`` of its gaps in ``gaps`` (as
    returned by :func:`detect_gaps`, the contact's shares of archive-wide gaps included). It
    estimates the fraction of the contact's mail that the archive retained; gaps below the
    detection floor are not counted, so it is an upper bound. For the mailbox, ``missed`` is the
    mailbox's own gaps plus every contact gap that is not a share of an archive-wide one.

    Needs ``events``: ``contact_address`` (and ``message_row_id`` to count a message once in the
    mailbox); ``gaps``: ``contact_address, kind, missed_messages``. Returns ``contact_address,
    observed_messages, missed_messages, gap_count, completeness_score``.
    """
    require_columns("score_completeness", events, ["contact_address"])
    require_columns("score_completeness", gaps, ["contact_address", "kind", "missed_messages"])
    key = events["message_row_id"] if "message_row_id" in events.columns else events.index
    observed = pd.concat(
        [events["contact_address"].value_counts(), pd.Series({MAILBOX: pd.Series(key).nunique()})]
    )
    contact_gaps = gaps[gaps["contact_address"].ne(MAILBOX)]
    mailbox_missed = (
        gaps.loc[gaps["contact_address"].eq(MAILBOX), "missed_messages"].sum()
        + contact_gaps.loc[contact_gaps["kind"].ne("archive_wide"), "missed_messages"].sum()
    )
    per_gap = gaps.groupby("contact_address").agg(
        missed_messages=("missed_messages", "sum"), gap_count=("kind", "size")
    )
    per_gap.loc[MAILBOX, "missed_messages"] = mailbox_missed
    table = (
        observed.rename("observed_messages")
        .rename_axis("contact_address")
        .to_frame()
        .join(per_gap)
        .fillna({"missed_messages": 0.0, "gap_count": 0})
    )
    return (
        table.assign(
            gap_count=table["gap_count"].astype(np.int64),
            completeness_score=100.0
            * table["observed_messages"]
            / (table["observed_messages"] + table["missed_messages"]),
        )
        .reset_index()
        .sort_values("contact_address", kind="stable")
        .reset_index(drop=True)
    )


def rank_gaps(gaps: pd.DataFrame, importance: pd.DataFrame | None = None) -> pd.DataFrame:
    """Gaps in the order to chase them: the contact's importance times the messages missed.

    Needs ``gaps``: ``contact_address, missed_messages``; ``importance`` (optional):
    ``contact_address, importance`` (any positive weight, e.g. from the sender analysis). Without
    it, or for contacts it does not list, every contact weighs 1, so the rank is by messages missed.
    Returns the gaps with ``importance``, ``priority_score = importance × missed_messages`` and
    ``rank`` (1 = first), highest score first.
    """
    require_columns("rank_gaps", gaps, ["contact_address", "missed_messages"])
    weights = pd.Series(dtype=float)
    if importance is not None:
        require_columns("rank_gaps", importance, ["contact_address", "importance"])
        weights = importance.set_index("contact_address")["importance"].astype(float)
    weight = gaps["contact_address"].map(weights).fillna(1.0).astype(float)
    return (
        gaps.assign(importance=weight, priority_score=weight * gaps["missed_messages"])
        .sort_values(["priority_score", "contact_address"], ascending=[False, True], kind="stable")
        .assign(rank=lambda f: np.arange(1, len(f) + 1))
        .reset_index(drop=True)
    )


# --------------------------------------------------------------------------------------- sources
def source_coverage(events: pd.DataFrame, *, timezone: str = "UTC") -> pd.DataFrame:
    """Which sources cover which months of each contact's timeline.

    Needs ``contact_address, sent_at_utc, source_id``. Returns one row per contact (and ``"*"``)
    and run of consecutive months in which the same set of sources holds its mail:
    ``contact_address, period_start, period_end`` (first and last day of the months),
    ``source_ids`` (comma-separated, sorted), ``message_count``. A month without mail ends a run,
    so a contact whose months alternate between sources shows where each source stops.
    """
    require_columns("source_coverage", events, ["contact_address", "sent_at_utc", "source_id"])
    month = local_dates(events["sent_at_utc"], timezone).dt.to_period("M")
    frame = events.assign(month=month, source=events["source_id"].astype("string"))
    mailbox = frame.assign(contact_address=MAILBOX)
    if "message_row_id" in frame.columns:
        mailbox = mailbox.drop_duplicates(["message_row_id", "source"])
    monthly = (
        pd.concat([frame, mailbox], ignore_index=True)
        .groupby(["contact_address", "month"])
        .agg(
            source_ids=("source", lambda s: ",".join(sorted(set(s)))),
            message_count=("source", "size"),
        )
        .reset_index()
        .sort_values(["contact_address", "month"], kind="stable")
    )
    # a new run starts at a contact's first month, after a month without mail, or on a new set
    ordinal = monthly["month"].apply(lambda p: p.ordinal).astype(np.int64)
    same_contact = monthly["contact_address"].eq(monthly["contact_address"].shift())
    contiguous = ordinal.diff().eq(1) & same_contact
    same_set = monthly["source_ids"].eq(monthly["source_ids"].shift()).fillna(False)
    run = np.cumsum(~(contiguous.to_numpy(dtype=bool) & same_set.to_numpy(dtype=bool)))
    return (
        monthly.assign(run=run)
        .groupby("run")
        .agg(
            contact_address=("contact_address", "first"),
            first_month=("month", "first"),
            last_month=("month", "last"),
            source_ids=("source_ids", "first"),
            message_count=("message_count", "sum"),
        )
        .assign(
            period_start=lambda f: f["first_month"].dt.start_time,
            period_end=lambda f: f["last_month"].dt.end_time.dt.normalize(),
        )[["contact_address", "period_start", "period_end", "source_ids", "message_count"]]
        .reset_index(drop=True)
    )


def recommend_sources(events: pd.DataFrame, gaps: pd.DataFrame) -> pd.DataFrame:
    """For each gap, the sources to look in and what to look for.

    A source whose mail (anyone's) spans a gap's dates but has none of the contact's in it is the
    first place to look (its export may have missed a folder); when no source spans the dates, a
    source is missing altogether. Needs ``events``: ``contact_address, sent_at_utc, source_id``;
    ``gaps``: ``contact_address, start, end, kind``. Returns the gaps with ``spanning_source_ids``
    (comma-separated), ``contact_source_ids`` (sources holding any of the contact's mail) and
    ``recommendation`` (text naming the date range and the sources).
    """
    require_columns("recommend_sources", events, ["contact_address", "sent_at_utc", "source_id"])
    require_columns("recommend_sources", gaps, ["contact_address", "start", "end", "kind"])
    source = events["source_id"].astype("string")
    dates = local_dates(events["sent_at_utc"], "UTC")
    spans = (
        pd.DataFrame({"source": source, "date": dates})
        .groupby("source")["date"]
        .agg(source_first="min", source_last="max")
        .reset_index()
    )
    per_contact = (
        pd.DataFrame({"contact_address": events["contact_address"], "source": source})
        .drop_duplicates()
        .groupby("contact_address")["source"]
        .agg(lambda s: ",".join(sorted(s)))
        .rename("contact_source_ids")
    )
    numbered = gaps.reset_index(drop=True).rename_axis("gap").reset_index()
    spanning = (
        numbered[["gap", "start", "end"]]
        .merge(spans, how="cross")
        .query("source_first <= start and source_last >= end")
        .groupby("gap")["source"]
        .agg(lambda s: ",".join(sorted(s)))
        .rename("spanning_source_ids")
    )
    table = numbered.join(spanning, on="gap").join(per_contact, on="contact_address")
    table = table.fillna({"spanning_source_ids": "", "contact_source_ids": ""})
    window = table["start"].dt.strftime("%Y-%m-%d") + " to " + table["end"].dt.strftime("%Y-%m-%d")
    who = table["contact_address"].where(table["contact_address"].ne(MAILBOX), "anyone")
    recommendation = np.where(
        table["spanning_source_ids"].ne(""),
        "Look in source(s) "
        + table["spanning_source_ids"]
        + " for mail with "
        + who
        + " from "
        + window
        + ": they span these dates but hold none of it (a folder may be missing).",
        "No imported source spans " + window + ": look for another PST/OST or export holding "
        "mail with " + who + " in that period.",
    )
    return table.assign(recommendation=recommendation).drop(columns=["gap"])
