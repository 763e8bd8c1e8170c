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

    @property
    def tested(self) -> np.ndarray:
        """Streams scanned for gaps: all but auto-replies, and a contact's folder streams only
        when it has mail in three folders or more (with just an inbox and a sent folder, a
        folder's gap is the incoming or outgoing stream's, which is tested on its own)."""
        family = self.family
        folder = family == FAMILIES.index("folder")
        folders = (
            pd.Series(folder).groupby(self.keys["contact_address"].to_numpy()).transform("sum")
        ).to_numpy()
        tested: np.ndarray = (family != FAMILIES.index("auto_reply")) & (~folder | (folders >= 3))
        return tested


@dataclass(frozen=True)
class StreamFit:
    """The fitted model of every stream."""

    mu: FloatArray  # expected count per stream and day (0 outside the span)
    phi: FloatArray  # NB dispersion per stream
    rate_business: FloatArray  # mean expected count per business day in the span
    effective_days: FloatArray  # how many silences the stream has: places a run could start
    silence_dispersion: FloatArray  # a day is silent with probability (1 + φ·mu)^(-1/φ)
    level: FloatArray  # the level part of mu (mu = level × weekday × special), per stream and day


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
    # a vacation's days teach its factor even where a run was excluded (the run is the vacation)
    usable = grid.span & (~exclude | vacation[None, :])
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
    # fitted on business days, where a silence's probability matters (weekend days have little mail)
    business_day = grid.days["is_business_day"].to_numpy()[None, :]
    silence_dispersion = fit_silence_dispersion(mu, y > 0, fit_days & business_day)
    # each silence (a day with mail followed by one without) is a place a run could start
    starts = ((y[:, :-1] > 0) & (y[:, 1:] == 0) & grid.span[:, 1:]).sum(axis=1)
    effective_days = starts.astype(float) + 1.0
    return StreamFit(mu=mu, phi=phi, rate_business=rate_business, effective_days=effective_days,
                     silence_dispersion=silence_dispersion, level=np.where(grid.span, level, 0.0))


def log_silence(mu: FloatArray, phi: FloatArray) -> FloatArray:
    """``ln P(no mail)`` on a day with ``mu`` expected messages: ``-ln(1 + phi·mu)/phi``.

    The zero of a negative binomial (gamma-mixed Poisson) with dispersion ``phi``; ``-mu`` for
    Poisson mail (``phi → 0``). Broadcasts ``phi`` against ``mu``.
    """
    phi = np.maximum(phi, 1e-6)
    out: FloatArray = -np.log1p(phi * mu) / phi
    return out


def fit_silence_dispersion(
    mu: FloatArray, active: BoolArray, cells: BoolArray, *, iterations: int = 40,
    bounds: tuple[float, float] = (1e-3, 50.0),
) -> FloatArray:
    """Per stream, the ``phi`` with which ``P(no mail on day d) = (1 + phi·mu)^(-1/phi)`` fits the
    days with mail.

    Mail comes in threads and bursts: ten expected messages may be two conversations on a busy
    day, so silent days are far more common than a Poisson count of messages predicts, and the
    more so the busier the day. The zero of a negative binomial has that shape. ``phi`` solves
    ``Σ 1 - P(no mail) = A - sd(A) - 1/2`` over the fitted ``cells``, ``A`` the days with mail
    among them and ``sd(A)`` its binomial standard deviation: a standard deviation fewer active days
    than seen, so ``phi`` errs high and silences look, if anything, less improbable than they
    are. Bisection in log phi, all streams at once.
    """
    active_days = np.where(cells, active, False).sum(axis=1).astype(float)
    n_days = np.where(cells & (mu > 0), True, False).sum(axis=1).astype(float)
    share = active_days / np.maximum(n_days, 1.0)
    spread = np.sqrt(n_days * share * (1 - share))  # binomial standard deviation of A
    target = np.maximum(active_days - spread - 0.5, 0.5 * active_days)
    m = np.where(cells, mu, 0.0)
    lo = np.full(len(mu), np.log(bounds[0]))
    hi = np.full(len(mu), np.log(bounds[1]))
    for _ in range(iterations):  # fixed bisection steps, every stream at once
        mid = (lo + hi) / 2
        p_active = -np.expm1(log_silence(m, np.exp(mid)[:, None]))
        expected_active = np.where(cells, p_active, 0.0).sum(axis=1)
        too_many = expected_active > target  # too many active days expected: raise phi
        lo = np.where(too_many, mid, lo)
        hi = np.where(too_many, hi, mid)
    phi: FloatArray = np.exp((lo + hi) / 2)
    return phi


def runs_of(flags: BoolArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    rows, firsts, lasts = runs_of(positive)
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


def find_candidates(grid: StreamGrid, fit: StreamFit, *, threshold: float,
                    partial_ratio: float) -> pd.DataFrame:
    """Candidate low runs of every stream: ``stream, first_day, last_day, method``.

    Two scans: runs of days without mail (``method='zero'``, every tested stream), and
    CUSUM segments of the days with mail where the rate looks like ``partial_ratio`` of the
    expected (``method='sparse'``, the ``all`` streams and the mailbox's two directions), kept when
    their log likelihood ratio reaches ``ln(1/threshold)``. A run that touches its stream's first or
    last day has only one flank and is no candidate.
    """
    y, mu, span = grid.counts, fit.mu, grid.span
    family = grid.family
    zero_rows, zero_first, zero_last = runs_of((y == 0) & span & grid.tested[:, None])
    sparse_family = (family == FAMILIES.index("all")) | (
        grid.keys["contact_address"].eq(MAILBOX).to_numpy()
        & np.isin(family, [FAMILIES.index("incoming"), FAMILIES.index("outgoing")])
    )
    # the days with mail: Bernoulli with P(silent) at the expected rate against at a share of it
    phi = fit.silence_dispersion[:, None]
    log0, log1 = log_silence(mu, phi), log_silence(partial_ratio * mu, phi)
    p0, p1 = -np.expm1(log0), -np.expm1(log1)
    llr_active = np.log(np.maximum(p1, 1e-300) / np.maximum(p0, 1e-300))
    llr = np.where(span & sparse_family[:, None] & (mu > 0),
                   np.where(y > 0, llr_active, log1 - log0), 0.0)
    sparse_rows, sparse_first, sparse_last = _cusum_segments(llr, np.log(1 / threshold))
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
    rate_business: FloatArray, silence_dispersion: FloatArray, threshold: float | FloatArray
) -> FloatArray:
    """Business days of silence needed before a run is improbable at level ``threshold``.

    A business day with ``λ`` expected messages is silent with probability ``(1 + φ·λ)^(-1/φ)``
    (φ the stream's silence dispersion), so ``n`` silent days fall below ``threshold`` when ``n >
    ln(1/threshold)·φ / ln(1 + φ·λ)``: the familiar ``ln(1/α)/λ`` for Poisson mail (φ → 0), longer
    for mail that comes in threads and with the multiple-testing threshold of a whole mailbox.
    """
    per_day = np.maximum(-log_silence(rate_business, silence_dispersion), 1e-12)
    floor: FloatArray = np.log(1 / np.asarray(threshold, dtype=float)) / per_day
    return floor


def mailbox_threshold(probability: FloatArray, places: float, alpha: float) -> float:
    """The per-run probability below which a run is a gap: Benjamini-Hochberg at level ``alpha``.

    ``probability`` holds the chance-probabilities of the candidate runs of a whole mailbox, and
    ``places`` the number of places a run could have started in all its tested streams (the sum of
    their silences). The threshold is ``alpha·k/places`` with ``k`` the largest rank whose
    probability is within it (``alpha/places``, Bonferroni, when none is): the expected share of
    chance runs among the gaps reported stays below ``alpha``.
    """
    m = max(float(places), 1.0)
    ordered = np.sort(np.asarray(probability, dtype=float))
    ranks = np.arange(1, len(ordered) + 1)
    passing = np.flatnonzero(ordered <= alpha * ranks / m)
    k = int(passing[-1]) + 1 if len(passing) else 1
    return alpha * k / m


def evaluate_runs(
    grid: StreamGrid,
    fit: StreamFit,
    runs: pd.DataFrame,
    *,
    alpha: float,
    threshold: float | None = None,
    exclude: BoolArray | None = None,
    flank_days: int = 28,
    max_ratio: float = 0.5,
) -> pd.DataFrame:
    """Add each run's expected and observed counts, probability and verdict.

    A run's expected count is scaled by the lower of its two flanks' observed/expected ratios (the
    ``flank_days`` before and after, leaving out ``exclude``d cells; a flank with less than one
    expected message left takes the other's ratio), so that a level change at a run's edge does
    not make a gap. ``probability`` is the chance of so few days with mail in the
    window: a day is silent with probability ``(1 + φ·scale·mu)^(-1/φ)`` independently of the
    others (:func:`fit_silence_dispersion`), a silent run with their product, and a run with ``A``
    days with mail the
    binomial ``P(X <= A)`` with the same mean (which errs on the cautious side: its tail is the
    heavier); either is mixed over the relative levels the flanks' days with mail leave possible
    (:func:`level_draws`), since the run's level is learnt from them and not known.
    ``probability_anywhere`` is the chance of so improbable a run somewhere in the
    stream's timeline, ``1 - (1 - p)^N`` with ``N`` the stream's number of silences. A run is
    ``significant`` when ``probability <= threshold`` and it holds at most ``max_ratio`` of the
    (flank-scaled) expected messages. Without a ``threshold``, it is the mailbox's
    Benjamini-Hochberg threshold at ``alpha`` over these runs (:func:`mailbox_threshold`); either
    way it is returned in the column ``threshold``.
    """
    y, mu, span = grid.counts, fit.mu, grid.span
    exclude = np.zeros_like(span) if exclude is None else exclude
    s, a, b = (runs[c].to_numpy().astype(np.int64) for c in ("stream", "first_day", "last_day"))
    cum_y, cum_mu = _cumulative(y), _cumulative(mu)
    cum_active = _cumulative((y > 0).astype(float))
    cum_days = _cumulative((span & (mu > 0)).astype(float))
    usable = span & ~exclude
    # mu without its level: what a day weighs (weekday, holiday, vacation) at level 1
    shape = np.divide(mu, fit.level, out=np.zeros_like(mu), where=fit.level > 0)
    cum_uy = _cumulative(np.where(usable, y, 0.0))
    cum_ushape, cum_shape = _cumulative(np.where(usable, shape, 0.0)), _cumulative(shape)
    n = y.shape[1]
    left_lo, right_hi = np.maximum(a - flank_days, 0), np.minimum(b + 1 + flank_days, n)
    # the model's level inside the run: a long gap drags the rolling level down around itself,
    # so the flanks' own rates say what the run should have held
    run_level = (cum_mu[s, b + 1] - cum_mu[s, a]) / np.maximum(
        cum_shape[s, b + 1] - cum_shape[s, a], 1e-12)

    def flank_expected(lo: np.ndarray, hi: np.ndarray) -> FloatArray:
        # the flank's messages expected at the run's level
        out: FloatArray = (cum_ushape[s, hi] - cum_ushape[s, lo]) * run_level
        return out

    def ratio(lo: np.ndarray, hi: np.ndarray) -> FloatArray:
        # observed over expected at the run's level, shrunk towards a cautious 0.5 by 4 expected
        # messages: a flank with little evidence (a timeline's first weeks) cannot vouch for it
        obs = cum_uy[s, hi] - cum_uy[s, lo]
        return (obs + 2.0) / (flank_expected(lo, hi) + 4.0)  # type: ignore[no-any-return]

    left, right = ratio(left_lo, a), ratio(b + 1, right_hi)
    # a flank left out altogether (another gap, an archive-wide silence) says nothing
    left_known = flank_expected(left_lo, a) >= 1.0
    right_known = flank_expected(b + 1, right_hi) >= 1.0
    left = np.where(left_known, left, np.where(right_known, right, left))
    right = np.where(right_known, right, left)
    # what the flanks know of the run's level: their days with mail
    cum_flank = _cumulative((usable & (y > 0)).astype(float))
    evidence = (cum_flank[s, a] - cum_flank[s, left_lo]) + (cum_flank[s, right_hi]
                                                            - cum_flank[s, b + 1])
    expected = cum_mu[s, b + 1] - cum_mu[s, a]
    observed = cum_y[s, b + 1] - cum_y[s, a]
    scale = np.minimum(left, right)
    expected_test = expected * scale
    probability = _active_day_probability(grid, fit, s, a, b, scale, evidence, cum_active,
                                          cum_days)
    p = np.minimum(probability, 1 - 1e-16)
    anywhere = -np.expm1(fit.effective_days[s] * np.log1p(-p))
    cum_business = np.concatenate([[0], np.cumsum(grid.days["is_business_day"].to_numpy())])
    business_days = cum_business[b + 1] - cum_business[a]
    sparse_enough = observed <= max_ratio * expected_test
    if threshold is None:
        places = fit.effective_days[grid.tested].sum()
        threshold = mailbox_threshold(probability[sparse_enough], places, alpha)
    floor = floor_business_days(fit.rate_business[s], fit.silence_dispersion[s], threshold)
    return runs.assign(
        expected_messages=expected * (left + right) / 2,
        expected_test=expected_test,
        observed_messages=observed,
        probability=probability,
        probability_anywhere=anywhere,
        business_days=business_days,
        floor_business_days=floor,
        threshold=threshold,
        significant=(probability <= threshold) & sparse_enough & (business_days > 0),
    )


# Bins of the relative level's distribution, finest in its lower tail (where a silence is
# likeliest); each bin is represented by its lower edge, so the mixture is an upper bound (short,
# at most, of the 1e-12 below the first edge).
LEVEL_BIN_EDGES = np.array([1e-12, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1,
                            0.2, 0.35, 0.5, 0.7, 1.0])


def level_draws(evidence: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Relative levels a run's rate may have, given ``evidence`` days with mail around it.

    The level of a stream at a run is learnt from the mail around the run, so it is known only
    as well as that mail tells it: with ``A`` days with mail (independent bursts) the relative
    level is taken as ``Gamma(shape=A+1, mean 1)`` (coefficient of variation ``1/sqrt(A+1)``).
    Returns ``(level, weight)``, each (runs, bins): the lower edge of each bin of
    :data:`LEVEL_BIN_EDGES` and the bin's probability, so that ``Σ weight·P(run | level)``
    bounds the run's probability from above (the probability falls as the level rises).
    """
    # evidence is a count of days: the quantiles of each distinct count, computed once
    distinct, index = np.unique(np.maximum(np.asarray(evidence, dtype=float), 0.0),
                                return_inverse=True)
    shape = distinct[:, None] + 1.0
    lower = LEVEL_BIN_EDGES[:-1][None, :]
    level: FloatArray = (stats.gamma.ppf(lower, shape) / shape)[index.reshape(-1)]
    weight: FloatArray = np.broadcast_to(np.diff(LEVEL_BIN_EDGES)[None, :], level.shape)
    return level, weight


def _active_day_probability(
    grid: StreamGrid, fit: StreamFit, s: np.ndarray, a: np.ndarray, b: np.ndarray,
    scale: FloatArray, evidence: FloatArray, cum_active: FloatArray, cum_days: FloatArray,
) -> FloatArray:
    """P(at most the observed number of days with mail in ``a..b``) for each run (see above),
    mixed over the levels of :func:`level_draws`."""
    active = cum_active[s, b + 1] - cum_active[s, a]
    days = np.maximum(cum_days[s, b + 1] - cum_days[s, a], 1.0)
    # the runs' own days, gathered flat (a run's scale differs from its neighbours')
    lengths = (b - a + 1).astype(np.int64)
    run_id = np.repeat(np.arange(len(s)), lengths)
    cols = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = cols + np.repeat(a, lengths)
    mu_cells = fit.mu[np.repeat(s, lengths), cols] * scale[run_id]
    phi_cells = fit.silence_dispersion[s][run_id]
    level, weight = level_draws(evidence)
    out = np.zeros(len(s))
    for j in range(level.shape[1]):  # a fixed number of level bins, every run and day at once
        log0 = log_silence(mu_cells * level[run_id, j], phi_cells)
        expected_active = np.bincount(run_id, weights=-np.expm1(log0), minlength=len(s))
        silent = np.exp(np.bincount(run_id, weights=log0, minlength=len(s)))  # exact, no mail
        mean_p = np.clip(expected_active / days, 0.0, 1.0)
        binomial = stats.binom.cdf(active, days, mean_p)
        out += weight[:, j] * np.where(active <= 0, silent, np.maximum(binomial, silent))
    result: FloatArray = np.minimum(out, 1.0)
    return result


def cells_of(runs: pd.DataFrame, shape: tuple[int, int]) -> BoolArray:
    """A (streams, days) mask that is True on every day of every run."""
    edges = np.zeros((shape[0], shape[1] + 1))
    np.add.at(edges, (runs["stream"].to_numpy(), runs["first_day"].to_numpy()), 1)
    np.add.at(edges, (runs["stream"].to_numpy(), runs["last_day"].to_numpy() + 1), -1)
    mask: BoolArray = np.cumsum(edges, axis=1)[:, :-1] > 0
    return mask
