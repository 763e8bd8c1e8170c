"""The expected-volume model and the run scans behind :mod:`pstlib.analytics.timeline`.

Mail is counted per *stream* and calendar day on a dense grid (streams × days). A stream is one
contact's mail (``all``), one direction of it (``incoming``, ``outgoing`` without auto-replies,
``auto_reply``) or one folder's share of it (``folder``, for contacts with mail in three folders or
more); the mailbox as a whole is the pseudo-contact ``"*"`` with the same streams. Everything
below is whole-array numpy: no loop over streams or days. Work that is row-independent runs block
by block of streams (:func:`row_blocks`: a few MB each, so the temporaries of a mailbox of
millions of messages stay in cache and are not fresh memory on every operation), and prefix sums
are taken in the values' own width (:func:`prefix_sums`: 32-bit counts, 64-bit floats).

The model of a stream's count on day *d* is negative binomial with mean

    mu[s, d] = level[s, d] × weekday[s, weekday(d)] × special[s, kind(d)]

* ``level``: the stream's own activity, a ratio of centred rolling sums (observed over
  weekday-weighted exposure) across ``half_window`` days each side, shrunk towards the stream's
  overall rate, with days already found in a gap left out; slow changes, trends and change points
  move it;
* ``weekday``: the stream's weekday profile, shrunk towards the profile of all streams;
* ``special``: the factor of public holidays, of quiet periods and of owner vacations, estimated per
  stream from its own holiday/vacation days and shrunk towards its family's factor (all, incoming,
  outgoing, folder), so that e.g. a vacation stops outgoing mail and only thins incoming mail;
* dispersion ``phi`` (variance ``mu + phi·mu²``) per stream by the method of moments, shrunk towards
  the median.

A day's silence has the negative binomial's zero (:func:`log_silence`, with a dispersion fitted
to the days with mail); in one direction of a contact's mail it is conditioned on the other
direction's mail that day (:func:`log_silence_given`: the two directions of a conversation come
in the same bursts, so the owner's lost sent mail shows against the contact's mail going on).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import stats  # type: ignore[import-untyped]

from pstlib.analytics._calendar import day_table, local_dates

MAILBOX = "*"
METHODS = ("zero", "sparse")  # the two scans of find_candidates
FAMILIES = ("all", "incoming", "outgoing", "auto_reply", "folder")
# the largest (contact, stream, folder) key space whose keys build_grid counts on an array of
# the whole space (16M counts, 128 MB at most); a larger one is hashed
DENSE_KEY_SPACE = 1 << 24

FloatArray = np.ndarray
BoolArray = np.ndarray


@dataclass(frozen=True)
class StreamGrid:
    """Daily counts of each stream. ``keys`` has one row per stream (row i ↔ ``counts[i]``)."""

    # contact_address, stream, part (folder path), message_count, first_day, last_day
    keys: pd.DataFrame
    counts: np.ndarray  # (streams, days), int32 (32-bit prefix sums are the fastest)
    span: BoolArray  # (streams, days): inside the contact's first..last day
    days: pd.DataFrame  # the day table (see _calendar.day_table)

    @cached_property
    def index(self) -> pd.MultiIndex:
        """The rows' ``(contact_address, stream, part)``, to look streams up by name."""
        return pd.MultiIndex.from_frame(self.keys[["contact_address", "stream", "part"]])

    @cached_property
    def counterpart(self) -> np.ndarray:
        """Row of the other direction of each contact's ``incoming``/``outgoing`` stream (-1 for
        every other stream, the mailbox's among them, and where the other is not modelled)."""
        keys = self.keys
        direction = keys["stream"].isin(["incoming", "outgoing"]) & keys["contact_address"].ne(
            MAILBOX
        )
        other = keys["stream"].map({"incoming": "outgoing", "outgoing": "incoming"})
        wanted = pd.MultiIndex.from_arrays(
            [keys["contact_address"], other.fillna(""), keys["part"]]
        )
        rows: np.ndarray = np.where(direction.to_numpy(), self.index.get_indexer(wanted), -1)
        return rows

    @cached_property
    def silences(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, first day, last day) of every maximal run of days without mail inside its
        stream's span, for the tested streams: the silent-run candidates of every scan (they
        depend on the counts only, so each pass reuses them; see :func:`find_candidates`)."""
        scanned = np.flatnonzero(self.tested)
        rows, first, last = runs_of((self.counts[scanned] == 0) & self.span[scanned])
        return scanned[rows], first, last

    @cached_property
    def silence_starts(self) -> np.ndarray:
        """Per stream, its silences (a day with mail followed by one without, in the span): the
        places a run could start."""
        starts: np.ndarray = np.zeros(len(self.counts), dtype=np.int64)
        for rows in row_blocks(len(self.counts), self.counts.shape[1]):
            y = self.counts[rows]
            silence = (y[:, :-1] > 0) & (y[:, 1:] == 0) & self.span[rows][:, 1:]
            starts[rows] = silence.sum(axis=1)
        return starts

    def with_days(self, days: pd.DataFrame) -> StreamGrid:
        """The same counts over a new day table (e.g. with the vacations found marked): the
        lookups cached from the counts and keys carry over."""
        grid = replace(self, days=days)
        for name in ("index", "counterpart", "silences", "silence_starts", "family", "tested"):
            if name in self.__dict__:
                grid.__dict__[name] = self.__dict__[name]
        return grid

    @cached_property
    def family(self) -> np.ndarray:
        """Each stream's family: its code in :data:`FAMILIES` (computed once per grid, read-only)."""
        codes = np.array(pd.Categorical(self.keys["stream"], categories=FAMILIES).codes)
        codes.flags.writeable = False
        return codes

    @cached_property
    def tested(self) -> np.ndarray:
        """Streams scanned for gaps: all but auto-replies (folder streams are modelled only for
        contacts with mail in three folders or more, see :func:`build_grid`)."""
        tested: np.ndarray = self.family != FAMILIES.index("auto_reply")
        tested.flags.writeable = False
        return tested


@dataclass(frozen=True)
class StreamFit:
    """The fitted model of every stream."""

    mu: FloatArray  # expected count per stream and day (0 outside the span)
    phi: FloatArray  # NB dispersion per stream
    rate_business: FloatArray  # mean expected count per business day in the span
    effective_days: FloatArray  # how many silences the stream has: places a run could start
    silence_dispersion: FloatArray  # a day is silent with probability (1 + φ·mu)^(-1/φ)
    profile: FloatArray  # (streams, 7): the weekday part of mu (mu = level × weekday × special)
    special: FloatArray  # (streams, 3): the factor of holidays, quiet periods and vacations
    # what a refit of some streams reuses (see fit_streams)
    pooled: FloatArray  # (2, 7): the mailbox's weekday profile of each of the two sweeps
    observed_special: FloatArray  # (streams, 3): mail observed on special days of each kind
    expected_special: FloatArray  # (streams, 3): and expected before their factor
    resid: FloatArray  # per stream: the method of moments' excess variance
    scale: FloatArray  # and its scale (sum of mu²)

    def shape(self, days: pd.DataFrame, rows: slice | np.ndarray, span: BoolArray) -> FloatArray:
        """``mu`` without its level for the streams ``rows``: what each day weighs (weekday,
        holiday, quiet period, vacation) at level 1, 0 outside the ``span`` (of those rows)."""
        holiday = days["is_holiday"].to_numpy()
        quiet = days["is_quiet"].to_numpy() & ~holiday
        vacation = days["is_vacation"].to_numpy() & ~holiday & ~quiet
        out: FloatArray = self.profile[rows][:, days["weekday"].to_numpy()]
        for k, kind in enumerate((holiday, quiet, vacation)):
            columns = np.flatnonzero(kind)
            out[:, columns] *= self.special[rows, k][:, None]
        out[~span] = 0.0
        return out


def event_days(events: pd.DataFrame, timezone: str) -> pd.Series:
    return local_dates(events["sent_at_utc"], timezone)


# stream names in their sort order: a stream's code is its rank, so the grid's rows sort by
# (contact, stream, part) like their names
STREAM_NAMES = ("all", "auto_reply", "folder", "incoming", "outgoing")


def text_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes of ``values`` as text (-1 where missing) into their sorted distinct texts.

    Hashed first, so that only the distinct values (a few thousand addresses or folders of a
    million events) are turned into text and sorted.
    """
    code, distinct = pd.factorize(values)
    names, inverse = np.unique(
        pd.Index(distinct).astype(str).to_numpy(dtype=object), return_inverse=True
    )
    inverse = np.append(inverse.reshape(-1), -1)  # code -1 (missing) stays -1
    codes: np.ndarray = inverse[code]
    return codes, names


def stream_rows(
    events: pd.DataFrame, day: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One entry per (event, stream) it counts in, for contacts and for the mailbox ``"*"``.

    The streams of an event are ``all``, its direction (``incoming``; ``outgoing``, or
    ``auto_reply`` when it was sent automatically) and ``folder`` (part: its folder); the mailbox
    counts each message (``message_row_id``) once, however many contacts it reached. The strings
    are factorised once and everything after is integer arithmetic: returns each entry's key
    ``(contact·5 + stream)·parts + part`` (so keys sort like ``(contact, stream, part)``: contact
    codes index the sorted contact addresses, ``"*"`` among them; stream codes
    :data:`STREAM_NAMES`; part codes the sorted folder paths, ``""`` first) and day, each event's
    contact code (-1 without one), the contact addresses and the folder paths.
    """
    if "auto_submitted" in events.columns:  # anything but "no" (any case) was sent automatically
        auto_code, auto_names = text_codes(events["auto_submitted"])
        automatic = np.append(np.char.lower(auto_names.astype(str)) != "no", False)
        auto = automatic[auto_code]  # code -1 (no header) is the appended False
    else:
        auto = np.zeros(len(events), dtype=bool)
    outgoing = events["direction"].eq("outgoing").fillna(False).to_numpy(bool)
    direction_stream = np.where(
        outgoing,
        np.where(auto, STREAM_NAMES.index("auto_reply"), STREAM_NAMES.index("outgoing")),
        STREAM_NAMES.index("incoming"),
    )
    contact_code, contacts = text_codes(events["contact_address"])
    if MAILBOX not in set(contacts):
        at = int(np.searchsorted(contacts, MAILBOX))
        contacts = np.insert(contacts, at, MAILBOX)
        contact_code = np.where(contact_code >= at, contact_code + 1, contact_code)
    mailbox = int(np.searchsorted(contacts, MAILBOX))
    folder_code, folders = text_codes(events["folder_path"])
    if "" not in set(folders):  # the part of every stream but the folders' (and no folder's)
        folders = np.insert(folders, 0, "")
        folder_code = folder_code + 1
    folder_code = np.where(folder_code < 0, int(np.searchsorted(folders, "")), folder_code)
    once = (
        ~pd.Series(events["message_row_id"].to_numpy()).duplicated().to_numpy()
        if "message_row_id" in events.columns
        else np.ones(len(events), dtype=bool)
    )
    n_streams, n_parts = len(STREAM_NAMES), len(folders)
    # keys in 32 bits when every key fits (halves the memory the millions of entries move)
    width = np.int32 if len(contacts) * n_streams * n_parts < 2**31 else np.int64
    part = np.asarray(folder_code).astype(width)
    streams: list[tuple[np.ndarray | int, np.ndarray | int]] = [  # (stream, part) of each
        (STREAM_NAMES.index("all"), 0),  # event in each of its three streams
        (direction_stream.astype(width), 0),
        (STREAM_NAMES.index("folder"), part),
    ]
    keys: list[np.ndarray] = []
    entry_days: list[np.ndarray] = []
    entry_day = day.astype(np.int32)
    for who, chosen in ((contact_code, contact_code >= 0), (mailbox, once)):  # contacts, "*"
        who_key: np.ndarray = np.asarray(who).astype(width) * (n_streams * n_parts)
        for stream, part_of in streams:
            key = who_key + np.asarray(stream, dtype=width) * n_parts + part_of
            keys.append(np.broadcast_to(key, chosen.shape)[chosen])
            entry_days.append(entry_day[chosen])
    return np.concatenate(keys), np.concatenate(entry_days), contact_code, contacts, folders


def build_grid(
    events: pd.DataFrame,
    *,
    timezone: str,
    country: str | None,
    quiet_periods: pd.DataFrame | None,
    vacations: pd.DataFrame | None,
    min_messages: int,
) -> StreamGrid:
    """Count every stream with at least ``min_messages`` messages on the dense day grid (the
    mailbox's ``all`` and direction streams always)."""
    dates = event_days(events, timezone)
    first, last = dates.min(), dates.max()
    days = day_table(first, last, country=country, quiet_periods=quiet_periods, vacations=vacations)
    day = (dates - first).dt.days.to_numpy(np.int64)
    key, entry_day, contact, contacts, folders = stream_rows(events, day)
    n_streams, n_parts = len(STREAM_NAMES), len(folders)
    # the distinct keys, sorted: counted on the key space itself when it is small (contacts ×
    # streams × folders, tens of thousands), else hashed and the few distinct keys sorted (a
    # sort of every entry costs far more)
    space = len(contacts) * n_streams * n_parts
    if space <= DENSE_KEY_SPACE:
        per_key = np.bincount(key, minlength=space)
        distinct = np.flatnonzero(per_key)
        message_count = per_key[distinct]
        row_of_key: np.ndarray | None = np.cumsum(per_key > 0) - 1
        row_of = None
    else:
        code, hashed = pd.factorize(key)
        order = np.argsort(hashed)
        distinct = np.asarray(hashed)[order]
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        row_of = rank[code]
        row_of_key = None
        message_count = np.bincount(row_of, minlength=len(distinct))
    key_contact = distinct // (n_streams * n_parts)
    key_stream = distinct // n_parts % n_streams
    key_part = distinct % n_parts
    # span of each contact: its first..last day of any mail (the mailbox's: every day)
    spans = (
        pd.DataFrame({"contact": contact, "day": day})[contact >= 0]
        .groupby("contact")["day"]
        .agg(["min", "max"])
    )
    first_day = np.zeros(len(contacts), dtype=np.int64)
    last_day = np.full(len(contacts), len(days) - 1, dtype=np.int64)
    first_day[spans.index.to_numpy()] = spans["min"].to_numpy()
    last_day[spans.index.to_numpy()] = spans["max"].to_numpy()
    folder = key_stream == STREAM_NAMES.index("folder")
    keep = (message_count >= min_messages) | ((contacts[key_contact] == MAILBOX) & ~folder)
    # with an inbox and a sent folder only, a folder's stream is the incoming or outgoing one
    # again: folder streams are modelled only for contacts with mail in three folders or more
    folders_kept = np.bincount(key_contact[folder & keep], minlength=len(contacts))
    keep &= ~folder | (folders_kept[key_contact] >= 3)
    kept = np.flatnonzero(keep)
    names = np.asarray(STREAM_NAMES, dtype=object)
    keys = pd.DataFrame(
        {
            "contact_address": pd.array(contacts[key_contact[kept]], dtype="string"),
            "stream": pd.array(names[key_stream[kept]], dtype="string"),
            "part": pd.array(np.where(folder[kept], folders[key_part[kept]], ""), dtype="string"),
            "message_count": message_count[kept],
            "first_day": first_day[key_contact[kept]],
            "last_day": last_day[key_contact[kept]],
        }
    )
    # flat (stream, day) index of every entry (-1 for the streams not kept), then one bincount
    # fills the grid
    n_days = len(days)
    cells = len(keys) * n_days
    index_width = np.int32 if cells < 2**31 else np.int64
    new_row = np.full(len(distinct), -1, dtype=index_width)
    new_row[kept] = np.arange(len(kept)) * n_days  # each kept stream's first cell
    row_start: np.ndarray = new_row[row_of] if row_of_key is None else new_row[row_of_key][key]
    flat = row_start + entry_day
    flat = flat[row_start >= 0]
    counts = np.bincount(flat, minlength=cells).astype(np.int32).reshape(len(keys), n_days)
    day_index = np.arange(n_days)
    span = (day_index >= keys["first_day"].to_numpy()[:, None]) & (
        day_index <= keys["last_day"].to_numpy()[:, None]
    )
    return StreamGrid(keys=keys, counts=counts, span=span, days=days)


def prefix_sums(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Cumulative sums along axis 1 with a leading 0 column, and their unit (always 1).

    Counts and booleans are summed as 32-bit integers (exact while a row's total stays below
    2^31, as every count of a mailbox's messages or days does; 64-bit past it): an accumulation
    that widens its input (32 to 64 bits) runs an order of magnitude slower than one in the
    input's own width. Other values are summed as 64-bit floats: a window's sum (the difference
    of two prefix sums) then carries a cancellation error of about 1e-16 of the row's total,
    about 1e-10 messages on the busiest stream, far below what any test of a run can feel (a
    fixed-point sum would be exact, but rounding each value to an integer costs more than the
    sum itself).
    """
    cum: np.ndarray
    if values.dtype == bool or np.issubdtype(values.dtype, np.integer):
        # a row's total is at most its largest value times its length
        largest = (
            1
            if values.dtype == bool or not values.size
            else max(int(values.max()), -int(values.min()))
        )
        kind = np.int64 if largest * values.shape[1] >= 2**31 else np.int32
        cum = np.zeros((values.shape[0], values.shape[1] + 1), dtype=kind)
        np.cumsum(values.astype(kind, copy=False), axis=1, dtype=kind, out=cum[:, 1:])
    else:
        cum = np.zeros((values.shape[0], values.shape[1] + 1))
        np.cumsum(values, axis=1, out=cum[:, 1:])
    return cum, 1.0


def _window_sums(values: np.ndarray, half_window: int) -> FloatArray:
    """Centred rolling sums along axis 1 over ``2·half_window + 1`` days (clipped at the edges).

    Differences of one prefix sum (:func:`prefix_sums`) taken as shifted slices (no index
    arrays: the grid is large).
    """
    n = values.shape[1]
    cum, unit = prefix_sums(values)
    hi = np.minimum(np.arange(n) + half_window + 1, n)
    lo = np.maximum(np.arange(n) - half_window, 0)
    out: FloatArray = np.empty((values.shape[0], n))
    w = half_window
    if n <= 2 * w + 1:  # every window is clipped: the general gather
        np.subtract(cum[:, hi], cum[:, lo], out=out)
    else:  # left edge (lo = 0), the middle (both ends inside), the right edge (hi = n)
        np.subtract(cum[:, w + 1 : 2 * w + 1], cum[:, :1], out=out[:, :w])
        np.subtract(cum[:, 2 * w + 1 :], cum[:, : n - 2 * w], out=out[:, w : n - w])
        np.subtract(cum[:, n : n + 1], cum[:, n - 2 * w : n - w], out=out[:, n - w :])
    if unit != 1.0:
        out *= unit
    return out


def weekday_sums(values: np.ndarray, weekday: np.ndarray) -> FloatArray:
    """Sums of each row of ``values`` by the weekday (0-6) of its columns: (rows, 7).

    Consecutive days cycle through the weekdays, so the whole weeks are a reshaped view summed
    over the weeks (no copy, no matrix product), and the days after them are added one weekday
    each.
    """
    n_rows, n_days = values.shape
    out = np.zeros((n_rows, 7))
    whole = n_days // 7 * 7
    if whole:
        out[:, weekday[:7]] = values[:, :whole].reshape(n_rows, -1, 7).sum(axis=1)
    out[:, weekday[whole:]] += values[:, whole:]
    return out


def row_blocks(n_rows: int, n_columns: int, cells: int = 1 << 19) -> list[slice]:
    """Consecutive blocks of rows of about ``cells`` cells each (at least one row).

    The grid of a large mailbox holds tens of millions of cells; whole-grid temporaries would be
    fresh memory on every operation (page faults cost more than the arithmetic) and out of cache,
    so row-independent work runs block by block (a few MB each, reused by the allocator): still
    whole arrays, over a bounded number of blocks.
    """
    step = max(1, cells // max(n_columns, 1))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


def fit_streams(
    grid: StreamGrid,
    exclude: BoolArray,
    *,
    previous: StreamFit | None = None,
    rows: BoolArray | None = None,
    half_window: int = 42,
    level_prior_days: float = 14.0,
    weekday_prior_messages: float = 10.0,
    special_prior_messages: float = 10.0,
) -> StreamFit:
    """Fit the expected-volume model of every stream, leaving out ``exclude``d (stream, day)
    cells.

    The work is row-independent but for a few mailbox-wide sums (the pooled weekday profile, the
    families' holiday and vacation factors, the median dispersion), so it runs in blocks of
    streams (:func:`row_blocks`) with those sums taken between the sweeps. A ``previous`` fit of
    the same grid (a refit without some gaps) is where the search for each stream's silence
    dispersion starts (it moves little between fits); with a mask of ``rows`` as well, only those
    streams are fitted again (those whose excluded cells changed), the others keep the previous
    fit, and the pooled weekday profile (the mailbox's weekly rhythm, which a few streams' gaps
    barely move) is the previous one; the family factors and the median dispersion are taken
    afresh over every stream.
    """
    y, span = grid.counts, grid.span
    n_streams = len(y)
    days = grid.days
    weekday = days["weekday"].to_numpy()
    holiday = days["is_holiday"].to_numpy()
    quiet = days["is_quiet"].to_numpy() & ~holiday
    vacation = days["is_vacation"].to_numpy() & ~holiday & ~quiet
    regular = ~(holiday | quiet | vacation)
    business_day = days["is_business_day"].to_numpy()
    partial = rows is not None and previous is not None
    refit = np.ones(n_streams, dtype=bool) if rows is None else rows
    blocks: list[slice | np.ndarray]
    if partial:
        chosen = np.flatnonzero(refit)
        blocks = [chosen[b] for b in row_blocks(len(chosen), len(days))]
    else:
        blocks = list(row_blocks(n_streams, len(days)))

    def fit_days_of(block: slice | np.ndarray) -> BoolArray:
        # the cells that teach level and weekday profile
        out: BoolArray = span[block] & ~exclude[block] & regular
        return out

    # per block: its fitted cells, and the mail on them (total and rolling sums), the same in
    # every sweep: taken once; and the mail by weekday (the weekday profile's numerator)
    fitted_mail: list[tuple[BoolArray, np.ndarray, FloatArray]] = []
    num = np.zeros((n_streams, 7))
    for block in blocks:
        fit_days = fit_days_of(block)
        ym = np.where(fit_days, y[block], 0)
        fitted_mail.append((fit_days, ym.sum(axis=1), _window_sums(ym, half_window)))
        num[block] = weekday_sums(ym, weekday)

    def level_of(i: int, profile: FloatArray | None) -> FloatArray:
        fit_days, total, rolling = fitted_mail[i]
        # the exposure of a flat profile is a count of days (summed as integers, faster)
        exposure = fit_days if profile is None else np.where(fit_days, profile[:, weekday], 0.0)
        overall = total / np.maximum(exposure.sum(axis=1), 1e-9)
        num = rolling + level_prior_days * overall[:, None]
        den = _window_sums(exposure, half_window)
        den += level_prior_days
        np.divide(num, den, out=den)
        return den

    # alternate level and weekday profile twice: each is estimated given the other
    profile = np.ones((n_streams, 7)) if previous is None else previous.profile.copy()
    pooled = np.ones((2, 7)) if previous is None else previous.pooled.copy()
    for sweep in range(2):
        den = np.zeros((n_streams, 7))
        for i, block in enumerate(blocks):
            fit_days = fitted_mail[i][0]
            level = level_of(i, None if sweep == 0 else profile[block])
            den[block] = weekday_sums(np.where(fit_days, level, 0.0), weekday)
        if not partial:
            pooled[sweep] = num.sum(axis=0) / np.maximum(den.sum(axis=0), 1e-9)
        fitted = (num + weekday_prior_messages * pooled[sweep]) / (den + weekday_prior_messages)
        profile = fitted if not partial else np.where(refit[:, None], fitted, profile)

    # the level, and the observed and expected mail of each stream on its special days
    special_days = (holiday, quiet, vacation)  # three kinds of special day
    special_columns = [np.flatnonzero(kind) for kind in special_days]
    if previous is not None and partial:
        observed_special = previous.observed_special.copy()
        expected_special = previous.expected_special.copy()
        mu = previous.mu.copy()
    else:
        observed_special, expected_special = np.zeros((n_streams, 3)), np.zeros((n_streams, 3))
        mu = np.empty(y.shape)  # every block fills its rows below
    for i, block in enumerate(blocks):
        level = level_of(i, profile[block])
        # level × weekday straight into mu's rows (a view of them, for a block of consecutive
        # rows: no copy)
        base = mu[block] if isinstance(block, slice) else np.empty_like(level)
        np.multiply(level, profile[block][:, weekday], out=base)
        # a vacation's days teach its factor even where a run was excluded (the run is the
        # vacation)
        usable = span[block] & (~exclude[block] | vacation[None, :])
        for k, columns in enumerate(special_columns):
            cells = usable[:, columns]
            observed_special[block, k] = np.where(cells, y[block][:, columns], 0.0).sum(axis=1)
            expected_special[block, k] = np.where(cells, base[:, columns], 0.0).sum(axis=1)
        if not isinstance(block, slice):
            mu[block] = base
    # holiday and vacation factors per stream, shrunk towards the factor of the stream's family
    family = grid.family
    special = np.ones((n_streams, 3))
    for k in range(3):
        fam_obs = np.bincount(family, weights=observed_special[:, k], minlength=len(FAMILIES))
        fam_exp = np.bincount(family, weights=expected_special[:, k], minlength=len(FAMILIES))
        fam_factor = np.clip(fam_obs / np.maximum(fam_exp, 1e-9), 0.0, 1.5)[family]
        factor = (observed_special[:, k] + special_prior_messages * fam_factor) / (
            expected_special[:, k] + special_prior_messages
        )
        special[:, k] = np.clip(factor, 0.0, 1.5)
    if previous is not None and partial:
        # the streams not fitted again keep the factors their mu was made with
        special = np.where(refit[:, None], special, previous.special)

    # mu; the moments for the dispersion; the business days' rate; the silence dispersion
    if previous is not None and partial:
        resid, scale = previous.resid.copy(), previous.scale.copy()
        rate_business = previous.rate_business.copy()
        effective_days = previous.effective_days.copy()
        silence_dispersion = previous.silence_dispersion.copy()
    else:
        resid, scale = np.zeros(n_streams), np.zeros(n_streams)
        rate_business, effective_days = np.zeros(n_streams), np.zeros(n_streams)
        silence_dispersion = np.zeros(n_streams)
    cum_business = np.concatenate([[0], np.cumsum(business_day)])
    first_day, last_day = grid.keys["first_day"].to_numpy(), grid.keys["last_day"].to_numpy()
    business_in_span = cum_business[last_day + 1] - cum_business[first_day]
    business_weight = business_day.astype(float)
    for i, block in enumerate(blocks):
        block_mu = mu[block]
        for k, columns in enumerate(special_columns):
            block_mu[:, columns] *= special[block, k][:, None]
        block_mu[~span[block]] = 0.0
        mu[block] = block_mu
        fit_days, fitted_total = fitted_mail[i][:2]
        block_y = y[block]
        # Σ (y - mu)² - y and Σ mu² over the fitted cells, as row-wise dot products (no
        # temporaries of squares); mu is 0 outside the span, so its business days' sum is a
        # product with the business days (einsum's own loops: a BLAS product may start threads
        # that spin on the other core)
        fitted_mu = np.where(fit_days, block_mu, 0.0)
        deviation = np.where(fit_days, block_y - block_mu, 0.0)
        resid[block] = np.einsum("ij,ij->i", deviation, deviation) - fitted_total
        scale[block] = np.einsum("ij,ij->i", fitted_mu, fitted_mu)
        rate_business[block] = np.einsum("ij,j->i", block_mu, business_weight) / np.maximum(
            business_in_span[block], 1
        )
        # fitted on business days, where a silence's probability matters (weekend days have
        # little mail)
        silence_dispersion[block] = fit_silence_dispersion(
            block_mu,
            block_y > 0,
            fit_days & business_day[None, :],
            start=None if previous is None else previous.silence_dispersion[block],
        )
        effective_days[block] = grid.silence_starts[block] + 1.0

    # dispersion by the method of moments on the fitted cells, shrunk towards the median stream
    raw_phi = np.clip(resid / np.maximum(scale, 1e-9), 0.0, 5.0)
    typical = float(np.median(raw_phi)) if len(raw_phi) else 0.0
    phi = np.clip((resid + 25.0 * typical) / (scale + 25.0), 0.0, 5.0)
    return StreamFit(
        mu=mu,
        phi=phi,
        rate_business=rate_business,
        effective_days=effective_days,
        silence_dispersion=silence_dispersion,
        profile=profile,
        special=special,
        pooled=pooled,
        observed_special=observed_special,
        expected_special=expected_special,
        resid=resid,
        scale=scale,
    )


def log_silence(mu: FloatArray, phi: FloatArray) -> FloatArray:
    """``ln P(no mail)`` on a day with ``mu`` expected messages: ``-ln(1 + phi·mu)/phi``.

    The zero of a negative binomial (gamma-mixed Poisson) with dispersion ``phi``; ``-mu`` for
    Poisson mail (``phi → 0``). Broadcasts ``phi`` against ``mu``.
    """
    phi = np.maximum(phi, 1e-6)
    out: FloatArray = -np.log1p(phi * mu) / phi
    return out


def fit_silence_dispersion(
    mu: FloatArray,
    active: BoolArray,
    cells: BoolArray,
    *,
    iterations: int = 40,
    bounds: tuple[float, float] = (1e-3, 50.0),
    tolerance: float = 1e-10,
    start: FloatArray | None = None,
) -> FloatArray:
    """Per stream, the ``phi`` with which ``P(no mail on day d) = (1 + phi·mu)^(-1/phi)`` fits the
    days with mail.

    Mail comes in threads and bursts: ten expected messages may be two conversations on a busy
    day, so silent days are far more common than a Poisson count of messages predicts, and the
    more so the busier the day. The zero of a negative binomial has that shape. ``phi`` solves
    ``Σ 1 - P(no mail) = A - sd(A) - 1/2`` over the fitted ``cells``, ``A`` the days with mail
    among them and ``sd(A)`` its binomial standard deviation: a standard deviation fewer active days
    than seen, so ``phi`` errs high and silences look, if anything, less improbable than they
    are. The expected days with mail fall as ``phi`` rises, so the root is unique (clipped to
    ``bounds``); it is found by Newton's method in ``log phi`` kept inside a bisection bracket, all
    streams at once on the fitted cells only (gathered once into one flat array: the grid is
    large and most of its cells are weekends, gaps or outside a timeline), so a handful of
    passes over them replaces the forty of plain bisection; a stream's cells leave the array once
    its root is found, so the later passes run over the few slow streams only. ``start`` (per
    stream; 1 if not given) is where the search begins.
    """
    n_streams = len(mu)
    fitted = cells & (mu > 0)  # a cell without expected mail adds nothing to either side
    active_days = np.count_nonzero(cells & active, axis=1).astype(float)
    per_stream = np.count_nonzero(fitted, axis=1)
    n_days = per_stream.astype(float)
    share = active_days / np.maximum(n_days, 1.0)
    spread = np.sqrt(n_days * share * (1 - share))  # binomial standard deviation of A
    target = np.maximum(active_days - spread - 0.5, 0.5 * active_days)
    m = mu[fitted]  # row-major: each stream's cells together
    nonempty = per_stream > 0
    low, high = np.log(bounds[0]), np.log(bounds[1])
    lo, hi = np.full(n_streams, low), np.full(n_streams, high)
    if start is None:  # the root for the stream's mean mu on every cell: a few steps away
        mean_mu = np.where(fitted, mu, 0.0).sum(axis=1) / np.maximum(per_stream, 1)
        start = _mean_cell_dispersion(mean_mu, per_stream, target, bounds)
    x = np.clip(np.log(start), low, high)
    # the streams still searching, and their cells: Newton settles most streams in two or three
    # steps, so the cells of the settled ones are dropped from the flat array as they go
    live = np.flatnonzero(nonempty)
    live_cells = m
    live_counts = per_stream[live]
    for _ in range(iterations):  # at most
        if len(live) == 0:
            break
        starts = np.concatenate([[0], np.cumsum(live_counts)[:-1]])
        # expected minus target days with mail at phi = exp(x), and its slope in x (in place,
        # as far as it goes: these are the largest arrays of the fit)
        phi_cells = np.repeat(np.exp(x[live]), live_counts)
        scaled = phi_cells * live_cells
        grown = np.log1p(scaled)
        grown /= phi_cells  # ln(1 + phi·mu) / phi
        silent = np.negative(grown, out=phi_cells)
        np.exp(silent, out=silent)
        value = live_counts - np.add.reduceat(silent, starts) - target[live]
        scaled += 1.0
        np.divide(live_cells, scaled, out=scaled)  # mu / (1 + phi·mu)
        np.subtract(grown, scaled, out=grown)
        grown *= silent
        slope = -np.add.reduceat(grown, starts)
        x_live, lo_live, hi_live = x[live], lo[live], hi[live]
        too_many = value > 0  # too many active days expected: the root lies above
        lo_live = np.where(too_many, x_live, lo_live)
        hi_live = np.where(too_many, hi_live, x_live)
        newton = x_live - value / np.where(slope < 0, slope, -1e-300)
        # a step beyond a bound not yet tried tries the bound (the root may lie beyond it)
        newton = np.where((newton <= lo_live) & (lo_live == low) & (x_live > low), low, newton)
        newton = np.where((newton >= hi_live) & (hi_live == high) & (x_live < high), high, newton)
        inside = np.isfinite(newton) & (newton >= lo_live) & (newton <= hi_live)
        step = np.where(inside, newton, (lo_live + hi_live) / 2) - x_live
        x[live], lo[live], hi[live] = x_live + step, lo_live, hi_live
        going = ~((np.abs(step) < tolerance) | (hi_live - lo_live < tolerance))
        if not going.all():
            live_cells = live_cells[np.repeat(going, live_counts)]
            live, live_counts = live[going], live_counts[going]
    # a stream without fitted cells expects no active day at any phi: the lower bound
    phi: FloatArray = np.where(nonempty, np.exp(np.clip(x, low, high)), bounds[0])
    return phi


def _mean_cell_dispersion(
    mean_mu: FloatArray, n_days: np.ndarray, target: FloatArray, bounds: tuple[float, float]
) -> FloatArray:
    """Per stream, the ``phi`` at which ``n_days`` days of ``mean_mu`` expected messages each
    expect ``target`` days with mail: bisection in ``log phi``, one number per stream (the start
    of :func:`fit_silence_dispersion`'s search over the stream's own days)."""
    lo = np.full(len(mean_mu), np.log(bounds[0]))
    hi = np.full(len(mean_mu), np.log(bounds[1]))
    for _ in range(30):  # the bracket narrows to e^(ln(5e4)/2^30): far finer than needed
        mid = (lo + hi) / 2
        phi = np.exp(mid)
        expected = n_days * -np.expm1(-np.log1p(phi * mean_mu) / phi)
        too_many = expected > target  # the root lies above
        lo, hi = np.where(too_many, mid, lo), np.where(too_many, hi, mid)
    start: FloatArray = np.exp((lo + hi) / 2)
    return start


def runs_of(flags: BoolArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of True along axis 1: (row, first column, last column) of each run."""
    n_rows = flags.shape[0]
    padded = np.concatenate([np.zeros((n_rows, 1), bool), flags, np.zeros((n_rows, 1), bool)], 1)
    step = np.diff(padded.astype(np.int8), axis=1)
    start_r, start_c = np.nonzero(step == 1)
    _, end_c = np.nonzero(step == -1)
    return start_r, start_c, end_c - 1  # nonzero scans row-major, so starts and ends pair up


def _cusum_segments(llr: FloatArray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    # the peak of each excursion (its first highest day), for the excursions reaching threshold
    lengths = lasts - firsts + 1
    values = score[positive]  # row-major: each excursion's days together, in order
    offsets = np.cumsum(lengths) - lengths
    peak_vals = np.maximum.reduceat(values, offsets)
    keep = peak_vals >= threshold
    if not keep.any():
        return rows[keep], firsts[keep], lasts[keep]
    at_peak = np.flatnonzero((values == np.repeat(peak_vals, lengths)) & np.repeat(keep, lengths))
    run_id = np.repeat(np.arange(len(rows)), lengths)[at_peak]
    first_at_peak = np.concatenate([[True], run_id[1:] != run_id[:-1]])
    peak_cols = firsts[keep] + (at_peak[first_at_peak] - offsets[keep])
    return rows[keep], firsts[keep], peak_cols


def find_candidates(
    grid: StreamGrid,
    fit: StreamFit,
    *,
    threshold: float,
    partial_ratio: float,
    rows: BoolArray | None = None,
) -> pd.DataFrame:
    """Candidate low runs of every stream: ``stream, first_day, last_day, method``.

    Two scans: runs of days without mail (``method='zero'``, every tested stream), and
    CUSUM segments of the days with mail where the rate looks like ``partial_ratio`` of the
    expected (``method='sparse'``, the ``all`` streams and the mailbox's two directions), kept when
    their log likelihood ratio reaches ``ln(1/threshold)``. A run that touches its stream's first or
    last day has only one flank and is no candidate. With a mask of ``rows``, those streams only.
    """
    y, mu, span = grid.counts, fit.mu, grid.span
    family = grid.family
    chosen = np.ones(len(y), dtype=bool) if rows is None else rows
    zero_rows, zero_first, zero_last = grid.silences
    if rows is not None:
        wanted = chosen[zero_rows]
        zero_rows, zero_first, zero_last = zero_rows[wanted], zero_first[wanted], zero_last[wanted]
    sparse_family = (family == FAMILIES.index("all")) | (
        grid.keys["contact_address"].eq(MAILBOX).to_numpy()
        & np.isin(family, [FAMILIES.index("incoming"), FAMILIES.index("outgoing")])
    )
    # the days with mail: Bernoulli with P(silent) at the expected rate against at a share of it
    # (on the rows of the sparse scan only, block by block)
    scanned = np.flatnonzero(sparse_family & chosen)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for block in row_blocks(len(scanned), y.shape[1]):
        rows = scanned[block]
        mu_s = mu[rows]
        phi = fit.silence_dispersion[rows, None]
        log0, log1 = log_silence(mu_s, phi), log_silence(partial_ratio * mu_s, phi)
        p0, p1 = -np.expm1(log0), -np.expm1(log1)
        llr_active = np.log(np.maximum(p1, 1e-300) / np.maximum(p0, 1e-300))
        llr = np.where(span[rows] & (mu_s > 0), np.where(y[rows] > 0, llr_active, log1 - log0), 0.0)
        r, f, last = _cusum_segments(llr, np.log(1 / threshold))
        found.append((rows[r], f, last))
    sparse_rows, sparse_first, sparse_last = (
        np.concatenate([part[i] for part in found]) if found else np.zeros(0, np.int64)
        for i in range(3)
    )
    stream = np.concatenate([zero_rows, sparse_rows])
    first_day = np.concatenate([zero_first, sparse_first])
    last_day = np.concatenate([zero_last, sparse_last])
    # a million short silences: codes into the two names, not a million strings
    method = np.repeat(np.array([0, 1], dtype=np.int8), [len(zero_rows), len(sparse_rows)])
    inner = first_day > grid.keys["first_day"].to_numpy()[stream]
    inner &= last_day < grid.keys["last_day"].to_numpy()[stream]
    # the runs kept, taken from the arrays before the table is built (one copy, not two)
    return pd.DataFrame(
        {
            "stream": stream[inner],
            "first_day": first_day[inner],
            "last_day": last_day[inner],
            "method": pd.Categorical.from_codes(method[inner], categories=pd.Index(METHODS)),
        }
    )


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
    values = np.asarray(probability, dtype=float)
    # no rank passes above alpha·n/m (n probabilities): only the values below it are sorted, and
    # their ranks are those of the whole sort (every smaller value is among them)
    ordered = np.sort(values[values <= alpha * len(values) / m])
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
    others: FloatArray | None = None,
    flank_days: int = 28,
    far_flank_days: int = 42,
    max_ratio: float = 0.5,
) -> pd.DataFrame:
    """Add each run's expected and observed counts, probability and verdict.

    A run's expected count is scaled by the lower of its two flanks' observed/expected ratios (the
    ``flank_days`` before and after, leaving out ``exclude``d cells; a flank with less than one
    expected message left takes the other's ratio), so that a level change at a run's edge does
    not make a gap; each flank's ratio is the lower of that over ``flank_days`` and over
    ``far_flank_days`` (a burst beside a silence is no level to hold it to), for the runs that
    could matter (see below). ``probability`` is the chance of so few days with mail in the
    window: a day is silent with probability ``(1 + φ·scale·mu)^(-1/φ)`` independently of the
    others (:func:`fit_silence_dispersion`; in a contact's ``incoming`` or ``outgoing`` stream,
    given the other direction's mail that day, :func:`log_silence_given`), a silent run with
    their product, and a run with ``A`` days with mail the
    binomial ``P(X <= A)`` with the same mean (which errs on the cautious side: its tail is the
    heavier); either is mixed over the relative levels the flanks' days with mail leave possible
    (:func:`level_draws`), since the run's level is learnt from them and not known.
    ``probability_anywhere`` is the chance of so improbable a run somewhere in the
    stream's timeline, ``1 - (1 - p)^N`` with ``N`` the stream's number of silences. A run one
    of whose flanks lies so far outside its stream's timeline that it would hold under one
    message at the run's level has no test (``probability`` 1): at the edge of a timeline,
    nothing tells a lost stretch from a contact who had not begun, or had stopped, writing at
    the other flank's rate. A run is
    ``significant`` when ``probability <= threshold`` and it holds at most ``max_ratio`` of the
    (flank-scaled) expected messages. Without a ``threshold``, it is the mailbox's
    Benjamini-Hochberg threshold at ``alpha`` over these runs (:func:`mailbox_threshold`); either
    way it is returned in the column ``threshold``; ``others`` are the probabilities of the
    mailbox's other runs that count in it (sparse enough, evaluated already: see
    :func:`judge_runs`).
    """
    y, span = grid.counts, grid.span
    exclude = np.zeros_like(span) if exclude is None else exclude
    s, a, b = (runs[c].to_numpy().astype(np.int64) for c in ("stream", "first_day", "last_day"))
    n = y.shape[1]
    left_lo, right_hi = np.maximum(a - flank_days, 0), np.minimum(b + 1 + flank_days, n)
    totals = _run_totals(grid, fit, exclude, s, a, b, left_lo, right_hi)
    expected, observed, run_shape = totals[:3]
    left_obs, right_obs, left_evidence, right_evidence, left_shape, right_shape = totals[3:9]
    weighted_expected = totals[9]
    left_span_shape, right_span_shape = totals[10:12]
    # the model's level inside the run: a long gap drags the rolling level down around itself,
    # so the flanks' own rates say what the run should have held
    run_level = expected / np.maximum(run_shape, 1e-12)
    # the flanks' messages expected at the run's level, and their observed over expected
    left, right = _flank_ratios(
        left_obs, right_obs, left_shape * run_level, right_shape * run_level
    )
    # a flank that lies (almost) outside the timeline, excluded cells or not, would hold under one
    # message at the run's level: the run sits at the timeline's edge, where nothing tells a
    # loss from a contact who had not yet begun (or had stopped) writing at the other flank's
    # rate, so it is no gap (as a run touching the first or last day is no candidate)
    one_sided = (np.minimum(left_span_shape, right_span_shape) * run_level) < 1.0
    # what the flanks know of the run's level: their days with mail
    evidence = left_evidence + right_evidence
    scale = np.minimum(left, right)
    expected_test = expected * scale
    cum_business = np.concatenate([[0], np.cumsum(grid.days["is_business_day"].to_numpy())])
    business_days = cum_business[b + 1] - cum_business[a]
    sparse_enough = observed <= max_ratio * expected_test
    # Most runs are the short silences between days with mail, far too likely to matter. A
    # run's probability is at least that of no mail at all at the highest level it is mixed over,
    # and a silent day's probability at least exp(-mu) (ln(1 + φ·mu)/φ <= mu), so it is at
    # least this bound. The Benjamini-Hochberg threshold of the bounds is at least that of the
    # probabilities (each bound is at most its probability), and no use is made of a probability
    # above the square root of the threshold: a run whose bound exceeds the square root of the
    # bounds' threshold keeps the bound and is spared the exact computation.
    # evidence counts days: the level quantiles of each distinct count, found without a sort
    counted = np.rint(np.maximum(evidence, 0.0)).astype(np.int64)
    present = np.bincount(counted) > 0 if len(counted) else np.zeros(0, dtype=bool)
    distinct = np.flatnonzero(present).astype(float)
    index = (np.cumsum(present) - 1)[counted] if len(counted) else counted
    levels, _ = level_draws(distinct)  # one row per distinct count of days with mail
    weight = np.diff(LEVEL_BIN_EDGES)  # the bins' probabilities, the same for every run
    bound = (
        weight.sum() * np.exp(-levels[index, -1] * weighted_expected * scale)
        if len(s)
        else evidence
    )
    bound[one_sided] = 1.0  # untestable: see one_sided above
    others = np.zeros(0) if others is None else others
    places = max(float(fit.effective_days[grid.tested].sum()), 1.0)

    def cutoff_of(bounds: FloatArray) -> float:
        if threshold is None:
            return float(
                np.sqrt(
                    mailbox_threshold(
                        np.concatenate([bounds[sparse_enough], others]), places, alpha
                    )
                )
            )
        return float(np.sqrt(min(threshold, 1.0)))

    def closer(chosen: np.ndarray) -> FloatArray:
        # each level bin's silence at its own level (the bound above takes the highest level for
        # all): still at most the probability
        out: FloatArray = np.einsum(
            "ij,j->i",
            np.exp(-levels[index[chosen]] * (weighted_expected * scale)[chosen, None]),
            weight,
        )
        return out

    # the runs within the cutoff get the closer bound, which spares most of them the exact
    # computation over their days
    near = np.flatnonzero(bound <= cutoff_of(bound))
    bound[near] = closer(near)
    exact = near[bound[near] <= cutoff_of(bound)]
    # Mail comes in bursts, and a lull follows a burst: a flank's rate next to a silence is high
    # by chance more often than its days with mail let the level's draws allow for. Each flank's
    # rate is therefore the lower of its near rate and its rate over ``far_flank_days`` (the
    # fitted level's own reach): a busy month beside a silence does not make it a gap unless the
    # weeks around agree. A lower scale only raises a run's bounds, and the threshold of the
    # bounds falls with it, so a run whose bound is past the cutoff stays past it: the far flanks
    # are summed for the runs still within it only (a few of a million).
    if len(exact) and far_flank_days > flank_days:
        es, ea, eb = s[exact], a[exact], b[exact]
        far = _run_totals(
            grid,
            fit,
            exclude,
            es,
            ea,
            eb,
            np.maximum(ea - far_flank_days, 0),
            np.minimum(eb + 1 + far_flank_days, n),
        )
        far_left, far_right = _flank_ratios(
            far[3], far[4], far[7] * run_level[exact], far[8] * run_level[exact]
        )
        left[exact] = np.minimum(left[exact], far_left)
        right[exact] = np.minimum(right[exact], far_right)
        scale[exact] = np.minimum(left[exact], right[exact])
        expected_test[exact] = expected[exact] * scale[exact]
        sparse_enough[exact] = observed[exact] <= max_ratio * expected_test[exact]
        bound[exact] = closer(exact)
        exact = exact[bound[exact] <= cutoff_of(bound)]
    probability = bound.copy()
    probability[exact] = _active_day_probability(
        grid,
        fit,
        s[exact],
        a[exact],
        b[exact],
        scale[exact],
        levels[index[exact]],
        np.broadcast_to(weight, (len(exact), len(weight))),
    )
    p = np.minimum(probability, 1 - 1e-16)
    anywhere = -np.expm1(fit.effective_days[s] * np.log1p(-p))
    if threshold is None:
        threshold = mailbox_threshold(
            np.concatenate([probability[sparse_enough], others]), places, alpha
        )
    # the counts and the verdict together, the runs' own columns not copied
    return with_columns(
        runs,
        {
            "expected_messages": expected * (left + right) / 2,
            "expected_test": expected_test,
            "observed_messages": observed,
            "probability": probability,
            "probability_anywhere": anywhere,
            "business_days": business_days,
            **_verdict(
                fit, s, observed, expected_test, probability, business_days, threshold, max_ratio
            ),
        },
    )


def _flank_ratios(
    left_obs: FloatArray,
    right_obs: FloatArray,
    left_expected: FloatArray,
    right_expected: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Each flank's observed over expected messages (expected at the run's level), shrunk
    towards a cautious 0.5 by 4 expected messages: a flank with little evidence (a timeline's
    first weeks) cannot vouch for it; a flank left out altogether (under one message expected:
    another gap, an archive-wide silence) says nothing and takes the other's."""
    left = (left_obs + 2.0) / (left_expected + 4.0)
    right = (right_obs + 2.0) / (right_expected + 4.0)
    left_known, right_known = left_expected >= 1.0, right_expected >= 1.0
    left = np.where(left_known, left, np.where(right_known, right, left))
    right = np.where(right_known, right, left)
    return left, right


def with_columns(frame: pd.DataFrame, columns: dict[str, np.ndarray | float]) -> pd.DataFrame:
    """``frame.assign(**columns)`` without copying: a new frame over the same column arrays (a
    scalar fills its column), the replaced columns in their places, the new ones after. Assign
    copies every column of the frame, which for the million candidate runs of a large mailbox
    costs more than the arithmetic that computed them."""
    data: dict[str, object] = {c: frame[c].array for c in frame.columns}
    for c, v in columns.items():
        data[c] = np.full(len(frame), v) if np.ndim(v) == 0 else v
    return pd.DataFrame(data, index=frame.index, copy=False)


def judge_runs(
    fit: StreamFit, runs: pd.DataFrame, threshold: float, *, max_ratio: float = 0.5
) -> pd.DataFrame:
    """Set the ``threshold``, ``floor_business_days`` and ``significant`` columns of evaluated
    runs (see :func:`evaluate_runs`) for the mailbox's threshold."""
    columns = (
        "stream",
        "observed_messages",
        "expected_test",
        "probability",
        "business_days",
    )
    s, observed, expected_test, probability, business_days = (runs[c].to_numpy() for c in columns)
    return with_columns(
        runs,
        _verdict(
            fit,
            s.astype(np.int64),
            observed,
            expected_test,
            probability,
            business_days,
            threshold,
            max_ratio,
        ),
    )


def _verdict(
    fit: StreamFit,
    s: np.ndarray,
    observed: FloatArray,
    expected_test: FloatArray,
    probability: FloatArray,
    business_days: np.ndarray,
    threshold: float,
    max_ratio: float,
) -> dict[str, np.ndarray | float]:
    """The ``floor_business_days``, ``threshold`` and ``significant`` columns of runs."""
    floors = floor_business_days(fit.rate_business, fit.silence_dispersion, threshold)
    return {
        "floor_business_days": floors[s],  # one floor per stream, then one per run
        "threshold": threshold,
        "significant": (probability <= threshold)
        & (observed <= max_ratio * expected_test)
        & (business_days > 0),
    }


def _run_totals(
    grid: StreamGrid,
    fit: StreamFit,
    exclude: BoolArray,
    s: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    left_lo: np.ndarray,
    right_hi: np.ndarray,
) -> FloatArray:
    """Sums over each run (``a..b`` of stream ``s``) and its flanks (``left_lo..a-1``,
    ``b+1..right_hi-1``), one row each: expected and observed mail and the level-free weight
    (:meth:`StreamFit.shape`) of the run; then the observed mail, the days with mail and the
    weight of the left and right flanks, on their cells not ``exclude``d; the run's expected mail
    weighted by ``1 + φ·n`` (``n`` the other direction's mail that day, see
    :func:`log_silence_given`), which bounds its silence's probability; last, the weight of the
    left and right flanks on every day of the span, excluded or not (how much of each flank lies
    inside the timeline at all). Block by block of streams (:func:`row_blocks`), from cumulative
    sums; of the streams that hold a run only, when they are few (a cluster's streams of a large
    grid)."""
    y, mu, span = grid.counts, fit.mu, grid.span
    counterpart = grid.counterpart
    # the runs of each block of streams together: the sums are written in the order of the
    # runs' streams, each block's runs a slice of it, and put back in the runs' order at the end
    # (a scan lists its silent runs by stream, then its sparse ones by stream)
    in_order = bool(np.all(s[1:] >= s[:-1]))
    order = np.arange(len(s)) if in_order else np.argsort(s, kind="stable")
    out = np.zeros((12, len(s)))
    held = np.bincount(s, minlength=len(y)) > 0
    # each run's stream's place among the streams summed: all of them (blocks are then views
    # of the grid) or, when under half hold a run, those only (gathered block by block)
    summed = np.arange(len(y)) if 2 * held.sum() > len(y) else np.flatnonzero(held)
    place = np.cumsum(held) - 1 if len(summed) < len(y) else np.arange(len(y))
    blocks = row_blocks(len(summed), y.shape[1])
    edges = np.searchsorted(place[s[order]], [block.start for block in blocks] + [len(summed)])
    width = y.shape[1] + 1  # a prefix sum's row
    for i, block in enumerate(blocks):
        chosen = order[edges[i] : edges[i + 1]]
        if len(chosen) == 0:
            continue
        target = slice(edges[i], edges[i + 1])
        rows: slice | np.ndarray = block if len(summed) == len(y) else summed[block]
        # flat positions in the block's prefix sums of each window's ends: the same for every
        # array summed
        base = (place[s[chosen]] - block.start) * width
        run = (base + a[chosen], base + b[chosen] + 1)
        left_flank = (base + left_lo[chosen], run[0])
        right_flank = (run[1], base + right_hi[chosen])
        block_y, block_mu, block_span = y[rows], mu[rows], span[rows]
        shape = fit.shape(grid.days, rows, block_span)
        block_exclude = exclude[rows]
        # each array's window sums go to their rows of ``out`` (the order of the docstring)
        if block_exclude.any():
            usable = block_span & ~block_exclude
            _put_window_totals(block_y, [(run, 1)], out, target)
            _put_window_totals(shape, [(run, 2), (left_flank, 10), (right_flank, 11)], out, target)
            _put_window_totals(
                np.where(usable, block_y, 0), [(left_flank, 3), (right_flank, 4)], out, target
            )
            _put_window_totals(
                usable & (block_y > 0), [(left_flank, 5), (right_flank, 6)], out, target
            )
            _put_window_totals(
                np.where(usable, shape, 0.0), [(left_flank, 7), (right_flank, 8)], out, target
            )
        else:  # every cell of the span is usable, and mail and weight are 0 outside it
            flanks = [(left_flank, 3), (right_flank, 4)]
            _put_window_totals(block_y, [(run, 1), *flanks], out, target)
            _put_window_totals(block_y > 0, [(left_flank, 5), (right_flank, 6)], out, target)
            _put_window_totals(
                shape,
                [(run, 2), (left_flank, 7), (right_flank, 8), (left_flank, 10), (right_flank, 11)],
                out,
                target,
            )
        _put_window_totals(block_mu, [(run, 0)], out, target)
        # the expected mail weighted by the other direction's: on the streams that have one
        # only (on the others the weight is 1, and the sums those of mu, bit for bit)
        partner = counterpart[rows]
        paired = partner >= 0
        if paired.all():
            other = y[partner]
            weighted = block_mu * (1.0 + fit.silence_dispersion[rows, None] * other)
            _put_window_totals(weighted, [(run, 9)], out, target)
            continue
        out[9, target] = out[0, target]
        if not paired.any():
            continue
        local = place[s[chosen]] - block.start  # each run's row in the block
        on_paired = np.flatnonzero(paired[local])  # the runs of streams that have a partner
        if len(on_paired) == 0:
            continue
        sub = np.flatnonzero(paired)
        sub_rows = sub + block.start if isinstance(rows, slice) else rows[sub]
        weighted = mu[sub_rows] * (1.0 + fit.silence_dispersion[sub_rows, None] * y[partner[sub]])
        sub_base = ((np.cumsum(paired) - 1)[local[on_paired]]) * width
        picked = chosen[on_paired]
        cum, _ = prefix_sums(weighted)
        flat = cum.reshape(-1)
        out[9, edges[i] + on_paired] = flat[sub_base + b[picked] + 1] - flat[sub_base + a[picked]]
    if not in_order:  # back in the runs' order, row by row (no second table of sums)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        for row in out:
            row[:] = row[rank]
    return out


def _put_window_totals(
    values: np.ndarray,
    windows: list[tuple[tuple[np.ndarray, np.ndarray], int]],
    out: FloatArray,
    target: slice,
) -> None:
    """Write the sums of ``values`` over each window into ``out[row, target]``: each window is
    given as the flat positions ``lo``, ``hi`` of its ends in the prefix sum
    (:func:`prefix_sums`) of ``values`` (``cum[lo]`` to ``cum[hi]``), with its ``row``."""
    cum, _ = prefix_sums(values)
    flat = cum.reshape(-1)
    for (lo, hi), row in windows:
        np.subtract(flat[hi], flat[lo], out=out[row, target])


# Bins of the relative level's distribution, finest in its lower tail (where a silence is
# likeliest); each bin is represented by its lower edge, so the mixture is an upper bound (short,
# at most, of the 1e-12 below the first edge).
LEVEL_BIN_EDGES = np.array(
    [
        1e-12,
        1e-9,
        1e-8,
        1e-7,
        1e-6,
        1e-5,
        1e-4,
        1e-3,
        3e-3,
        0.01,
        0.03,
        0.1,
        0.2,
        0.35,
        0.5,
        0.7,
        1.0,
    ]
)


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
    distinct, index = np.unique(
        np.maximum(np.asarray(evidence, dtype=float), 0.0), return_inverse=True
    )
    shape = distinct[:, None] + 1.0
    lower = LEVEL_BIN_EDGES[:-1][None, :]
    level: FloatArray = (stats.gamma.ppf(lower, shape) / shape)[index.reshape(-1)]
    weight: FloatArray = np.broadcast_to(np.diff(LEVEL_BIN_EDGES)[None, :], level.shape)
    return level, weight


def _active_day_probability(
    grid: StreamGrid,
    fit: StreamFit,
    s: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    scale: FloatArray,
    level: FloatArray,
    weight: FloatArray,
) -> FloatArray:
    """P(at most the observed number of days with mail in ``a..b``) for each run (see
    :func:`evaluate_runs`), mixed over the levels of :func:`level_draws`; a day's silence is
    that of :func:`log_silence_given` the other direction's mail that day."""
    counts = grid.counts
    # the runs' own days, gathered flat (a run's scale differs from its neighbours')
    lengths = (b - a + 1).astype(np.int64)
    run_id = np.repeat(np.arange(len(s)), lengths)
    cols = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = cols + np.repeat(a, lengths)
    cell_rows = np.repeat(s, lengths)
    mu_cells = fit.mu[cell_rows, cols]
    # days with mail, and days on which mail was expected (the binomial's trials)
    active = np.bincount(run_id, weights=counts[cell_rows, cols] > 0, minlength=len(s))
    days = np.maximum(np.bincount(run_id, weights=mu_cells > 0, minlength=len(s)), 1.0)
    mu_cells *= scale[run_id]
    phi_cells = fit.silence_dispersion[s][run_id]
    # the other direction's mail and expected mail on each day (none for other streams)
    other = grid.counterpart[cell_rows]
    has_other = other >= 0
    other_rows = np.maximum(other, 0)
    other_count = np.where(has_other, counts[other_rows, cols], 0).astype(float)
    other_mu = np.where(has_other, fit.mu[other_rows, cols], 0.0) * scale[run_id]
    out = np.zeros(len(s))
    for j in range(level.shape[1]):  # a fixed number of level bins, every run and day at once
        at_level = level[run_id, j]
        log0 = log_silence_given(mu_cells * at_level, phi_cells, other_mu * at_level, other_count)
        expected_active = np.bincount(run_id, weights=-np.expm1(log0), minlength=len(s))
        silent = np.exp(np.bincount(run_id, weights=log0, minlength=len(s)))  # exact, no mail
        mean_p = np.clip(expected_active / days, 0.0, 1.0)
        binomial = stats.binom.cdf(active, days, mean_p)
        out += weight[:, j] * np.where(active <= 0, silent, np.maximum(binomial, silent))
    result: FloatArray = np.minimum(out, 1.0)
    return result


def log_silence_given(
    mu: FloatArray, phi: FloatArray, other_mu: FloatArray, other_count: FloatArray
) -> FloatArray:
    """``ln P(no mail)`` in one direction on a day with ``mu`` expected messages, given that the
    other direction had ``other_count`` messages where ``other_mu`` were expected.

    The two directions of a conversation come in the same bursts: the day's burst is one gamma
    factor ``G`` (shape ``k = 1/phi``, mean 1) of both directions' Poisson rates, which gives each
    direction's zero of :func:`log_silence`. Given the other direction's ``n`` messages, ``G`` is
    ``Gamma(k + n, rate k + other_mu)``, so ``P(no mail) = (1 + mu/(k + other_mu))^-(k + n)``:
    a silence is likelier on a quiet day of the other direction and far less likely on a busy
    one, which is how the owner's lost sent mail shows while the contact's mail goes on (and the
    contact's lost mail while the owner's goes on). ``other_count = other_mu = 0`` is
    :func:`log_silence` itself.
    """
    k = 1.0 / np.maximum(phi, 1e-6)
    out: FloatArray = -(k + other_count) * np.log1p(mu / (k + other_mu))
    return out


def cells_of(runs: pd.DataFrame, shape: tuple[int, int]) -> BoolArray:
    """A (streams, days) mask that is True on every day of every run.

    +1 on each run's first day and -1 after its last, summed along the days, on the rows that
    hold a run only (a few of a large grid): counted with ``bincount``, which has no slow path
    for repeated cells, unlike ``np.add.at``.
    """
    mask: BoolArray = np.zeros(shape, dtype=bool)
    stream = runs["stream"].to_numpy().astype(np.int64)
    if len(stream) == 0:
        return mask
    rows, local = np.unique(stream, return_inverse=True)
    width = shape[1] + 1
    size = len(rows) * width
    base = local.reshape(-1) * width
    first = runs["first_day"].to_numpy().astype(np.int64)
    after = runs["last_day"].to_numpy().astype(np.int64) + 1
    edges = np.bincount(base + first, minlength=size) - np.bincount(base + after, minlength=size)
    inside = np.cumsum(edges.reshape(len(rows), width), axis=1)[:, :-1] > 0
    mask[rows] = inside
    return mask
