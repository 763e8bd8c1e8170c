"""The expected-volume model and the run scans behind :mod:`pstlib.analytics.timeline`.

Mail is counted per *stream* and calendar day on a dense grid (streams × days). A stream is one
contact's mail (``all``), one direction of it (``incoming``, ``outgoing`` without auto-replies,
``auto_reply``) or one folder's share of it (``folder``); the mailbox as a whole is the
pseudo-contact
``"*"`` with the same streams. Everything below is whole-array numpy: no loop over streams or days.

The model of a stream's count on day *d* is negative binomial with mean

    mu[s, d] = level[s, d] × weekday[s, weekday(d)] × special[s, kind(d)]

* ``level``: the stream's own activity, a ratio of centred rolling sums (observed over
weekday-weighted
  exposure) across ``half_window`` days each side, shrunk towards the stream's overall rate, with
  days already found in a gap left out; slow changes, trends and change points move it;
* ``weekday``: the stream's weekday profile, shrunk towards the profile of all streams;
* ``special``: the factor of public holidays, of quiet periods and of owner vacations, estimated per
  stream from its own holiday/vacation days and shrunk towards its family's factor (all, incoming,
  outgoing, folder), so that e.g. a vacation stops outgoing mail and only thins incoming mail;
* dispersion ``phi`` (variance ``mu + phi·mu²``) per stream by the method of moments, shrunk towards
  the median.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats  # type: ignore[import-untyped]

from pstlib.analytics._calendar import day_table, local_dates

MAILBOX = "*"
FAMILIES = ("all", "incoming", "outgoing", "auto_reply", "folder", "source")

FloatArray = np.ndarray
BoolArray = np.ndarray


@dataclass(frozen=True)
class StreamGrid:
    """Daily counts of each stream. ``keys`` has one row per stream (row i ↔ ``counts[i]``)."""

    # contact_address, stream, part (folder or source id), message_count, first_day, last_day
    keys: pd.DataFrame
    counts: FloatArray  # (streams, days)
    span: BoolArray  # (streams, days): inside the contact's first..last day
    days: pd.DataFrame  # the day table (see _calendar.day_table)

    @property
    def family(self) -> np.ndarray:
        return np.asarray(pd.Categorical(self.keys["stream"], categories=FAMILIES).codes)


@dataclass(frozen=True)
class StreamFit:
    """The fitted model of every stream."""

    mu: FloatArray  # expected count per stream and day (0 outside the span)
    phi: FloatArray  # NB dispersion per stream
    rate_business: FloatArray  # mean expected count per business day in the span
    effective_days: FloatArray  # how many silences the stream has: places a run could start
    tempering: FloatArray  # in (0, 1]: how much slower silences end than independent days predict


def event_days(events: pd.DataFrame, timezone: str) -> pd.Series:
    return local_dates(events["sent_at_utc"], timezone)


def stream_rows(events: pd.DataFrame, dates: pd.Series) -> pd.DataFrame:
    """One row per (event, stream) it counts in, for contacts and for the mailbox ``"*"``."""
    auto = (
        events["auto_submitted"].fillna("no").astype("string").str.lower().ne("no")
        if "auto_submitted" in events.columns
        else pd.Series(False, index=events.index)
    )
    direction = events["direction"].astype("string").fillna("incoming")
    base = pd.DataFrame(
        {
            "contact_address": events["contact_address"].astype("string"),
            "date": dates,
            "message_key": (
                events["message_row_id"].astype("string")
                if "message_row_id" in events.columns
                else pd.Series(np.arange(len(events)), index=events.index).astype("string")
            ),
        }
    )
    folder = events["folder_path"].astype("string").fillna("")
    parts = [
        base.assign(stream="all", part=""),
        base.assign(stream=direction.mask(auto & direction.eq("outgoing"), "auto_reply"), part=""),
        base.assign(stream="folder", part=folder),
    ]
    if "source_id" in events.columns:
        parts.append(base.assign(stream="source", part=events["source_id"].astype("string")))
    per_stream = pd.concat(parts, ignore_index=True)
    # the mailbox counts each message once, however many contacts it reached
    mailbox = per_stream.assign(contact_address=MAILBOX).drop_duplicates(
        ["stream", "part", "message_key"]
    )
    return pd.concat([per_stream, mailbox], ignore_index=True)


def build_grid(
    events: pd.DataFrame,
    *,
    timezone: str,
    country: str | None,
    quiet_periods: pd.DataFrame | None,
    vacations: pd.DataFrame | None,
    min_messages: int,
) -> StreamGrid:
    """Count every stream with at least ``min_messages`` messages on the dense day grid."""
    dates = event_days(events, timezone)
    first, last = dates.min(), dates.max()
    days = day_table(first, last, country=country, quiet_periods=quiet_periods, vacations=vacations)
    rows = stream_rows(events, dates).assign(day=lambda f: (f["date"] - first).dt.days)
    # span of each contact: its first..last day of any mail
    spans = rows.groupby("contact_address")["day"].agg(first_day="min", last_day="max")
    keys = (
        rows.groupby(["contact_address", "stream", "part"], sort=True)
        .size()
        .rename("message_count")
        .reset_index()
        .join(spans, on="contact_address")
    )
    keep = keys["message_count"].ge(min_messages) | (
        keys["contact_address"].eq(MAILBOX) & keys["stream"].isin(["all", "incoming", "outgoing",
                                                                    "auto_reply"])
    )
    keys = keys[keep].reset_index(drop=True)
    # flat (stream, day) index of every kept row, then one bincount fills the grid
    stream_id = pd.MultiIndex.from_frame(keys[["contact_address", "stream", "part"]])
    row_id = stream_id.get_indexer(pd.MultiIndex.from_frame(rows[["contact_address", "stream",
                                                                   "part"]]))
    n_days = len(days)
    kept = row_id >= 0
    flat = row_id[kept] * n_days + rows["day"].to_numpy()[kept]
    counts = np.bincount(flat, minlength=len(keys) * n_days).astype(float)
    counts = counts.reshape(len(keys), n_days)
    day_index = np.arange(n_days)
    span = (day_index >= keys["first_day"].to_numpy()[:, None]) & (
        day_index <= keys["last_day"].to_numpy()[:, None]
    )
    return StreamGrid(keys=keys, counts=counts, span=span, days=days)


def _window_sums(values: FloatArray, half_window: int) -> FloatArray:
    """Centred rolling sums along axis 1 over ``2·half_window + 1`` days (clipped at the edges)."""
    n = values.shape[1]
    cum = np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(values, axis=1)], axis=1)
    hi = np.minimum(np.arange(n) + half_window + 1, n)
    lo = np.maximum(np.arange(n) - half_window, 0)
    out: FloatArray = cum[:, hi] - cum[:, lo]
    return out


def fit_streams(
    grid: StreamGrid,
    exclude: BoolArray,
    *,
    half_window: int = 42,
    level_prior_days: float = 14.0,
    weekday_prior_messages: float = 10.0,
    special_prior_messages: float = 10.0,
) -> StreamFit:
    """Fit the expected-volume model of every stream, leaving out ``exclude``d (stream, day)
    cells."""
    y = grid.counts
    weekday = grid.days["weekday"].to_numpy()
    onehot = np.eye(7)[weekday]  # (days, 7)
    holiday = grid.days["is_holiday"].to_numpy()
    quiet = grid.days["is_quiet"].to_numpy() & ~holiday
    vacation = grid.days["is_vacation"].to_numpy() & ~holiday & ~quiet
    regular = ~(holiday | quiet | vacation)
    fit_days = grid.span & ~exclude & regular  # the cells that teach level and weekday profile
    ym = np.where(fit_days, y, 0.0)

    def level_of(profile: FloatArray) -> FloatArray:
        exposure = np.where(fit_days, profile[:, weekday], 0.0)
        overall = ym.sum(axis=1) / np.maximum(exposure.sum(axis=1), 1e-9)
        prior = level_prior_days * overall[:, None]
        num = _window_sums(ym, half_window) + prior
        den = _window_sums(exposure, half_window) + level_prior_days
        return num / den  # type: ignore[no-any-return]

    # alternate level and weekday profile twice: each is estimated given the other
    profile = np.ones((len(y), 7))
    for _ in range(2):
        level = level_of(profile)
        num = ym @ onehot
        den = np.where(fit_days, level, 0.0) @ onehot
        pooled = num.sum(axis=0) / np.maximum(den.sum(axis=0), 1e-9)
        profile = (num + weekday_prior_messages * pooled) / (den + weekday_prior_messages)
    level = level_of(profile)
    base = level * profile[:, weekday]

    # holiday and vacation factors per stream, shrunk towards the factor of the stream's family
    family = grid.family
    usable = grid.span & ~exclude
    special = np.ones_like(base)
    for day_kind in (holiday, quiet, vacation):  # three kinds of special day
        cells = usable & day_kind
        obs = np.where(cells, y, 0.0).sum(axis=1)
        exp = np.where(cells, base, 0.0).sum(axis=1)
        fam_obs = np.bincount(family, weights=obs, minlength=len(FAMILIES))
        fam_exp = np.bincount(family, weights=exp, minlength=len(FAMILIES))
        fam_factor = np.clip(fam_obs / np.maximum(fam_exp, 1e-9), 0.0, 1.5)[family]
        factor = (obs + special_prior_messages * fam_factor) / (exp + special_prior_messages)
        special = np.where(day_kind[None, :], np.clip(factor, 0.0, 1.5)[:, None], special)
    mu = np.where(grid.span, base * special, 0.0)

    # dispersion by the method of moments on the fitted cells, shrunk towards the median stream
    resid = np.where(fit_days, (y - mu) ** 2 - y, 0.0).sum(axis=1)
    scale = np.where(fit_days, mu**2, 0.0).sum(axis=1)
    raw_phi = np.clip(resid / np.maximum(scale, 1e-9), 0.0, 5.0)
    typical = float(np.median(raw_phi)) if len(raw_phi) else 0.0
    phi = np.clip((resid + 25.0 * typical) / (scale + 25.0), 0.0, 5.0)

    business = grid.days["is_business_day"].to_numpy()[None, :] & grid.span
    rate_business = np.where(business, mu, 0.0).sum(axis=1) / np.maximum(business.sum(axis=1), 1)
    # Mail comes in threads, so silent days cluster: a silence ends less often than independent
    # days predict. ``tempering`` is the observed number of silence endings over the model's
    # expectation on the fitted cells (capped at 1, shrunk towards the pooled ratio); probabilities
    # of silent runs are raised to that power.
    log_zero = np.where(phi[:, None] > 1e-9,
                        -np.log1p(phi[:, None] * mu) / np.maximum(phi[:, None], 1e-9), -mu)
    silent_today = (y[:, :-1] == 0) & fit_days[:, :-1] & fit_days[:, 1:]
    ended = (silent_today & (y[:, 1:] > 0)).sum(axis=1)
    expected_ends = np.where(silent_today, -np.expm1(log_zero[:, 1:]), 0.0).sum(axis=1)
    pooled = min(float(ended.sum() / max(expected_ends.sum(), 1e-9)), 1.0)
    tempering = np.clip((ended + 5.0 * pooled) / (expected_ends + 5.0), 0.05, 1.0)
    # each silence (a day with mail followed by one without) is a place a run could start
    starts = ((y[:, :-1] > 0) & (y[:, 1:] == 0) & grid.span[:, 1:]).sum(axis=1)
    effective_days = starts.astype(float) + 1.0
    return StreamFit(mu=mu, phi=phi, rate_business=rate_business, effective_days=effective_days,
                     tempering=tempering)


def _runs(flags: BoolArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of True along axis 1: (row, first column, last column) of each run."""
    n_rows = flags.shape[0]
    padded = np.concatenate([np.zeros((n_rows, 1), bool), flags, np.zeros((n_rows, 1), bool)], 1)
    step = np.diff(padded.astype(np.int8), axis=1)
    start_r, start_c = np.nonzero(step == 1)
    _, end_c = np.nonzero(step == -1)
    return start_r, start_c, end_c - 1  # nonzero scans row-major, so starts and ends pair up


def _cusum_segments(
    llr: FloatArray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Page's CUSUM of ``llr`` along axis 1: (row, first, last) of each excursion above threshold.

    ``S_t = max(0, S_{t-1} + llr_t)`` equals the cumulative sum minus its running minimum (floored
    at 0). Each excursion of S above 0 is a candidate segment from its first day to the day S peaks.
    """
    cum = np.cumsum(llr, axis=1)
    score = cum - np.minimum(np.minimum.accumulate(cum, axis=1), 0.0)
    positive = score > 1e-9
    rows, firsts, lasts = _runs(positive)
    if len(rows) == 0:
        return rows, firsts, lasts
    # the peak of each excursion: argmax of score within [first, last]
    lengths = lasts - firsts + 1
    run_id = np.repeat(np.arange(len(rows)), lengths)
    cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = cols + np.repeat(firsts, lengths)
    values = score[np.repeat(rows, lengths), cols]
    order = np.lexsort((-values, run_id))  # per run, highest score first
    first_of_run = np.concatenate([[True], run_id[order][1:] != run_id[order][:-1]])
    peak_cols = cols[order][first_of_run]
    peak_vals = values[order][first_of_run]
    keep = peak_vals >= threshold
    return rows[keep], firsts[keep], peak_cols[keep]


def _cumulative(values: FloatArray) -> FloatArray:
    return np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(values, axis=1)], axis=1)


def find_candidates(
    grid: StreamGrid, fit: StreamFit, *, alpha: float, partial_ratio: float
) -> pd.DataFrame:
    """Candidate low runs of every stream: ``stream, first_day, last_day, method``.

    Two scans: runs of days without mail (``method='zero'``, every stream but auto-replies), and
    CUSUM segments where the rate looks like ``partial_ratio`` of the expected (``method='sparse'``,
    the ``all`` streams and the mailbox's two directions). A run that touches its stream's first or
    last day has only one flank and is no candidate.
    """
    y, mu, span = grid.counts, fit.mu, grid.span
    family = grid.family
    scanned = family != FAMILIES.index("auto_reply")
    zero_rows, zero_first, zero_last = _runs((y == 0) & span & scanned[:, None])
    sparse_family = (family == FAMILIES.index("all")) | (
        grid.keys["contact_address"].eq(MAILBOX).to_numpy()
        & np.isin(family, [FAMILIES.index("incoming"), FAMILIES.index("outgoing")])
    )
    llr = np.where(span & sparse_family[:, None],
                   y * np.log(partial_ratio) + (1 - partial_ratio) * mu, 0.0)
    sparse_rows, sparse_first, sparse_last = _cusum_segments(llr, np.log(1 / alpha))
    cand = pd.DataFrame(
        {
            "stream": np.concatenate([zero_rows, sparse_rows]),
            "first_day": np.concatenate([zero_first, sparse_first]),
            "last_day": np.concatenate([zero_last, sparse_last]),
            "method": ["zero"] * len(zero_rows) + ["sparse"] * len(sparse_rows),
        }
    )
    s = cand["stream"].to_numpy()
    inner = cand["first_day"].to_numpy() > grid.keys["first_day"].to_numpy()[s]
    inner &= cand["last_day"].to_numpy() < grid.keys["last_day"].to_numpy()[s]
    kept: pd.DataFrame = cand.loc[inner].reset_index(drop=True)
    return kept


def floor_business_days(
    rate_business: FloatArray, phi: FloatArray, alpha: float, tempering: FloatArray | float = 1.0
) -> FloatArray:
    """Business days of silence needed before a run is improbable at level ``alpha``.

    Under the negative binomial a silent business day has probability ``(1 + phi·λ)^(-1/phi)``, so
    ``n`` silent days fall below ``alpha`` when ``n > phi·ln(1/alpha) / ln(1 + phi·λ)``; for
    ``phi → 0`` (Poisson) this is the familiar ``ln(1/alpha) / λ``.
    """
    lam = np.maximum(rate_business, 1e-12)
    per_day = np.where(phi > 1e-9, np.log1p(phi * lam) / np.maximum(phi, 1e-9), lam)
    floor: FloatArray = np.log(1 / alpha) / (per_day * tempering)
    return floor


def evaluate_runs(
    grid: StreamGrid,
    fit: StreamFit,
    runs: pd.DataFrame,
    *,
    alpha: float,
    exclude: BoolArray | None = None,
    flank_days: int = 28,
    partial_ratio: float = 0.25,
) -> pd.DataFrame:
    """Add each run's expected and observed counts, probability and verdict.

    A run's expected count is scaled by the lower of its two flanks' observed/expected ratios (the
    ``flank_days`` before and after, leaving out ``exclude``d cells), so that a level change at a
    run's edge does not make a gap. ``probability`` is P(X <= observed) for X negative binomial with
    the run's mean and variance (moment-matched sum of the days); ``probability_anywhere`` is the
    chance of so improbable a run somewhere in the stream's timeline, ``1 - (1 - p)^N`` with ``N``
    the stream's effective number of days. A run is ``significant`` when ``probability_anywhere <
    alpha``, it lasts at least the stream's floor of business days, and it holds at most twice
    ``partial_ratio`` of the (flank-scaled) expected messages.
    """
    y, mu, span = grid.counts, fit.mu, grid.span
    exclude = np.zeros_like(span) if exclude is None else exclude
    s, a, b = (runs[c].to_numpy().astype(np.int64) for c in ("stream", "first_day", "last_day"))
    cum_y, cum_mu, cum_mu2 = _cumulative(y), _cumulative(mu), _cumulative(mu**2)
    usable = span & ~exclude
    cum_uy, cum_umu = _cumulative(np.where(usable, y, 0.0)), _cumulative(np.where(usable, mu, 0.0))
    n = y.shape[1]
    left_lo, right_hi = np.maximum(a - flank_days, 0), np.minimum(b + 1 + flank_days, n)

    def ratio(lo: np.ndarray, hi: np.ndarray) -> FloatArray:
        # observed/expected on a flank, shrunk towards a cautious 0.5 by 4 expected messages: a
        # flank with little evidence (a timeline's first weeks) cannot vouch for the run's rate
        obs = cum_uy[s, hi] - cum_uy[s, lo]
        exp = cum_umu[s, hi] - cum_umu[s, lo]
        return (obs + 2.0) / (exp + 4.0)  # type: ignore[no-any-return]

    left, right = ratio(left_lo, a), ratio(b + 1, right_hi)
    expected = cum_mu[s, b + 1] - cum_mu[s, a]
    observed = cum_y[s, b + 1] - cum_y[s, a]
    scale = np.minimum(left, right)
    expected_test = expected * scale
    extra_var = fit.phi[s] * scale**2 * (cum_mu2[s, b + 1] - cum_mu2[s, a])
    probability = _nb_cdf(observed, expected_test, extra_var) ** fit.tempering[s]
    p = np.minimum(probability, 1 - 1e-16)
    anywhere = -np.expm1(fit.effective_days[s] * np.log1p(-p))
    cum_business = np.concatenate([[0], np.cumsum(grid.days["is_business_day"].to_numpy())])
    business_days = cum_business[b + 1] - cum_business[a]
    floor = floor_business_days(fit.rate_business[s], fit.phi[s], alpha, fit.tempering[s])
    sparse_enough = observed <= 2 * partial_ratio * expected_test
    return runs.assign(
        expected_messages=expected * (left + right) / 2,
        expected_test=expected_test,
        observed_messages=observed,
        probability=probability,
        probability_anywhere=anywhere,
        business_days=business_days,
        floor_business_days=floor,
        significant=(anywhere < alpha) & (business_days >= floor) & sparse_enough,
    )


def _nb_cdf(observed: FloatArray, mean: FloatArray, extra_var: FloatArray) -> FloatArray:
    """P(X <= observed), X negative binomial with ``mean`` and variance ``mean + extra_var``."""
    mean = np.maximum(mean, 1e-12)
    overdispersed = extra_var > 1e-9 * mean
    size = np.where(overdispersed, mean**2 / np.maximum(extra_var, 1e-300), 1.0)
    nb = stats.nbinom.cdf(observed, size, size / (size + mean))
    out: FloatArray = np.where(overdispersed, nb, stats.poisson.cdf(observed, mean))
    return out


def cells_of(runs: pd.DataFrame, shape: tuple[int, int]) -> BoolArray:
    """A (streams, days) mask that is True on every day of every run."""
    edges = np.zeros((shape[0], shape[1] + 1))
    np.add.at(edges, (runs["stream"].to_numpy(), runs["first_day"].to_numpy()), 1)
    np.add.at(edges, (runs["stream"].to_numpy(), runs["last_day"].to_numpy() + 1), -1)
    mask: BoolArray = np.cumsum(edges, axis=1)[:, :-1] > 0
    return mask
