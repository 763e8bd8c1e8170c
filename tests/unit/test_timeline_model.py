"""The numerical building blocks of pstlib.analytics._timeline_model, against plain references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats  # type: ignore[import-untyped]

from pstlib.analytics import _timeline_model as model
from pstlib.analytics._gap_rules import trim_off

START = pd.Timestamp("2024-01-01")  # a Monday


def _clipped_window_sums(values: np.ndarray, half_window: int) -> np.ndarray:
    """The obvious definition: each day's sum over the days within half_window of it."""
    n = values.shape[1]
    return np.stack(
        [values[:, max(d - half_window, 0) : d + half_window + 1].sum(axis=1) for d in range(n)],
        axis=1,
    )


@given(
    n_days=st.integers(1, 60),
    half_window=st.integers(0, 20),
    seed=st.integers(0, 10_000),
    counts=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_window_sums_are_the_clipped_sums_of_each_day(
    n_days: int, half_window: int, seed: int, counts: bool
) -> None:
    rng = np.random.default_rng(seed)
    values = rng.poisson(2.0, (3, n_days)) if counts else rng.gamma(0.5, 3.0, (3, n_days))
    got = model._window_sums(values, half_window)
    # counts exactly; fractions within the fixed-point unit (2^-32) per summed day
    np.testing.assert_allclose(got, _clipped_window_sums(values, half_window), rtol=0, atol=1e-8)


@given(n_days=st.integers(1, 40), first_weekday=st.integers(0, 6), seed=st.integers(0, 1000))
@settings(max_examples=40, deadline=None)
def test_weekday_sums_add_each_column_to_its_weekday(
    n_days: int, first_weekday: int, seed: int
) -> None:
    weekday = (first_weekday + np.arange(n_days)) % 7
    values = np.random.default_rng(seed).random((4, n_days))
    # the same as a product with the one-hot weekday matrix
    np.testing.assert_allclose(model.weekday_sums(values, weekday), values @ np.eye(7)[weekday])


def test_prefix_sums_keep_window_sums_within_rounding_of_the_row_total() -> None:
    # 1e6 + 0.1 then a thousand 1e-3: a float running sum rounds each step to ~1e-10 of the
    # million it carries, so the thousand small values still sum to 1.0 within 1e-6
    values = np.array([[1e6 + 0.1] + [1e-3] * 1000])
    cum, unit = model.prefix_sums(values)
    assert unit == 1.0
    assert cum[0, -1] - cum[0, 1] == pytest.approx(1.0, abs=1e-6)
    # counts are summed exactly, in 32 bits while a row's total fits (the fast width)
    counts, unit = model.prefix_sums(np.array([[1, 2, 3]], dtype=np.int32))
    assert unit == 1.0
    assert counts.dtype == np.int32
    assert counts.tolist() == [[0, 1, 3, 6]]
    flags, _ = model.prefix_sums(np.array([[True, False, True]]))
    assert flags.tolist() == [[0, 1, 1, 2]]
    # and in 64 bits past it: 2^30 + 2^30 overflows 32 bits
    wide, _ = model.prefix_sums(np.array([[2**30, 2**30]], dtype=np.int64))
    assert wide.dtype == np.int64
    assert wide.tolist() == [[0, 2**30, 2**31]]


def test_row_blocks_cover_every_row_once_in_order() -> None:
    blocks = model.row_blocks(10, 4, cells=12)  # 3 rows of 4 days per block
    assert [(b.start, b.stop) for b in blocks] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert [(b.start, b.stop) for b in model.row_blocks(2, 100, cells=10)] == [(0, 1), (1, 2)]


def _bisection(mu: np.ndarray, active: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """The root of fit_silence_dispersion's equation by plain bisection in log phi."""
    active_days = np.where(cells, active, False).sum(axis=1).astype(float)
    n_days = (cells & (mu > 0)).sum(axis=1).astype(float)
    share = active_days / np.maximum(n_days, 1.0)
    target = np.maximum(
        active_days - np.sqrt(n_days * share * (1 - share)) - 0.5, 0.5 * active_days
    )
    lo, hi = np.full(len(mu), np.log(1e-3)), np.full(len(mu), np.log(50.0))
    for _ in range(60):
        mid = (lo + hi) / 2
        p_active = -np.expm1(model.log_silence(np.where(cells, mu, 0.0), np.exp(mid)[:, None]))
        too_many = np.where(cells, p_active, 0.0).sum(axis=1) > target
        lo, hi = np.where(too_many, mid, lo), np.where(too_many, hi, mid)
    return np.exp((lo + hi) / 2)


@given(seed=st.integers(0, 10_000), share=st.floats(0.02, 0.98))
@settings(max_examples=30, deadline=None)
def test_the_silence_dispersion_is_the_root_bisection_finds(seed: int, share: float) -> None:
    # streams from quiet to busy, with mail on a share of days; the last one has no cells at all
    rng = np.random.default_rng(seed)
    mu = rng.gamma(2.0, 1.0, (5, 120)) * np.array([[0.05], [0.3], [1.0], [4.0], [1.0]])
    active = rng.random((5, 120)) < share
    cells = rng.random((5, 120)) < 0.8
    cells[4] = False
    newton = model.fit_silence_dispersion(mu, active, cells)
    np.testing.assert_allclose(np.log(newton), np.log(_bisection(mu, active, cells)), atol=1e-8)
    # started from a previous answer, the same root
    again = model.fit_silence_dispersion(mu, active, cells, start=newton * 1.5)
    np.testing.assert_allclose(np.log(again), np.log(newton), atol=1e-8)


@pytest.mark.parametrize(
    ("mu", "phi", "other_mu", "other_count"),
    [(1.0, 0.5, 2.0, 0), (1.0, 0.5, 2.0, 4), (0.2, 2.0, 0.3, 1), (3.0, 0.1, 1.0, 7)],
)
def test_a_silence_given_the_other_direction_is_the_gamma_poisson_posterior(
    mu: float, phi: float, other_mu: float, other_count: int
) -> None:
    # P(no mail | the other direction had n) = E[exp(-mu·G) P(n | other_mu·G)] / P(n), with the
    # day's burst G ~ Gamma(1/phi, mean 1) shared by both directions: integrated numerically
    k = 1.0 / phi
    gamma = stats.gamma(k, scale=1.0 / k)

    def joint(g: float) -> float:
        return float(gamma.pdf(g) * stats.poisson.pmf(other_count, other_mu * g))

    evidence, _ = integrate.quad(joint, 0, np.inf)
    silent, _ = integrate.quad(lambda g: joint(g) * np.exp(-mu * g), 0, np.inf)
    got = model.log_silence_given(
        np.array([mu]), np.array([phi]), np.array([other_mu]), np.array([float(other_count)])
    )[0]
    assert got == pytest.approx(np.log(silent / evidence), rel=1e-6)


def test_without_the_other_direction_a_silence_is_the_plain_negative_binomial_zero() -> None:
    mu, phi = np.array([0.5, 2.0, 8.0]), np.array([0.3, 1.0, 3.0])
    zero = np.zeros(3)
    np.testing.assert_allclose(
        model.log_silence_given(mu, phi, zero, zero), model.log_silence(mu, phi)
    )
    # a busy day of the other direction makes the silence rarer, a quiet one likelier
    busy = model.log_silence_given(mu, phi, np.ones(3), np.full(3, 5.0))
    quiet = model.log_silence_given(mu, phi, np.ones(3), zero)
    assert np.all(busy < model.log_silence(mu, phi))
    assert np.all(model.log_silence(mu, phi) < quiet)


def test_trim_off_moves_only_the_chosen_streams_ends_off_the_days() -> None:
    # days 0..9, days 3..5 to trim off: a run 1..4 ends at 2, a run 4..8 starts at 6, a run
    # 3..5 has nothing left, a run 2..7 keeps them inside; stream 1 is not chosen
    days = np.zeros(10, dtype=bool)
    days[3:6] = True
    runs = pd.DataFrame(
        {"stream": [0, 0, 0, 0, 1], "first_day": [1, 4, 3, 2, 4], "last_day": [4, 8, 5, 7, 8]}
    )
    kept = trim_off(runs, days, np.array([True, False]))
    assert kept[["first_day", "last_day"]].to_numpy().tolist() == [[1, 2], [6, 8], [2, 7], [4, 8]]


def _events(rows: list[tuple[int, str, int, str, str]]) -> pd.DataFrame:
    """(message id, contact, day, direction, folder) → an events frame at 10:00 UTC."""
    ids, contacts, days, directions, folders = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "message_row_id": ids,
            "contact_address": contacts,
            "sent_at_utc": (
                START + pd.to_timedelta(days, unit="D") + pd.Timedelta(hours=10)
            ).tz_localize("UTC"),
            "direction": directions,
            "folder_path": folders,
        }
    )


def test_the_grid_counts_each_stream_and_the_mailbox_counts_a_message_once() -> None:
    # a: 4 incoming (Inbox, Projects, Archive) and 2 outgoing (Sent Items), 4 folders: folder
    # streams; b: 2 incoming, 1 outgoing (2 folders: none). Message 7 went to a and b.
    rows = [
        (1, "a", 0, "incoming", "Inbox"),
        (2, "a", 0, "incoming", "Projects"),
        (3, "a", 2, "incoming", "Archive"),
        (4, "a", 3, "incoming", "Inbox"),
        (5, "a", 3, "outgoing", "Sent Items"),
        (7, "a", 4, "outgoing", "Sent Items"),
        (7, "b", 4, "outgoing", "Sent Items"),
        (8, "b", 1, "incoming", "Inbox"),
        (9, "b", 2, "incoming", "Inbox"),
    ]
    grid = model.build_grid(
        _events(rows),
        timezone="UTC",
        country=None,
        quiet_periods=None,
        vacations=None,
        min_messages=1,
    )
    table = grid.keys.assign(counts=[c.tolist() for c in grid.counts])
    by = table.set_index(["contact_address", "stream", "part"])["counts"]
    assert by[("a", "all", "")] == [2, 0, 1, 2, 1]
    assert by[("a", "incoming", "")] == [2, 0, 1, 1, 0]
    assert by[("a", "folder", "Inbox")] == [1, 0, 0, 1, 0]
    assert not table[(table["contact_address"] == "b") & (table["stream"] == "folder")].shape[0]
    assert by[("*", "all", "")] == [2, 1, 2, 2, 1]  # message 7 once
    assert by[("*", "outgoing", "")] == [0, 0, 0, 1, 1]
    # rows sort by contact, stream and part, the mailbox "*" first
    assert table["contact_address"].iloc[0] == "*"
    assert list(table.index) == list(table.sort_values(["contact_address", "stream", "part"]).index)
    # each contact's span runs from its first to its last day; the mailbox's is every day
    spans = table.groupby("contact_address")[["first_day", "last_day"]].first()
    assert spans.loc["b"].tolist() == [1, 4]
    assert spans.loc["*"].tolist() == [0, 4]


@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 30),  # message id
            st.sampled_from(["a", "b", "c", "*x"]),
            st.integers(0, 20),  # day
            st.sampled_from(["incoming", "outgoing"]),
            st.sampled_from(["Inbox", "Sent Items", "Projects", "Archive"]),
        ),
        min_size=1,
        max_size=60,
    )
)
@settings(max_examples=40, deadline=None)
def test_the_grid_is_the_same_whether_its_keys_are_counted_or_hashed(
    rows: list[tuple[int, str, int, str, str]],
) -> None:
    # the small key space is counted on an array; a large one hashed: the same grid either way
    events = _events(rows)
    counted = model.build_grid(
        events, timezone="UTC", country=None, quiet_periods=None, vacations=None, min_messages=2
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "DENSE_KEY_SPACE", 0)
        hashed = model.build_grid(
            events, timezone="UTC", country=None, quiet_periods=None, vacations=None, min_messages=2
        )
    pd.testing.assert_frame_equal(counted.keys, hashed.keys)
    np.testing.assert_array_equal(counted.counts, hashed.counts)
    np.testing.assert_array_equal(counted.span, hashed.span)
    # and every message is counted: the mailbox's "all" stream holds each message id once
    mailbox_all = counted.index.get_loc(("*", "all", ""))
    assert counted.counts[mailbox_all].sum() == len({r[0] for r in rows})


@given(
    runs=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 15), st.integers(0, 5)), max_size=12)
)
@settings(max_examples=60, deadline=None)
def test_cells_of_marks_every_day_of_every_run(runs: list[tuple[int, int, int]]) -> None:
    table = pd.DataFrame(
        {
            "stream": [r[0] for r in runs],
            "first_day": [r[1] for r in runs],
            "last_day": [min(r[1] + r[2], 19) for r in runs],
        },
        dtype=np.int64,
    )
    expected = np.zeros((5, 20), dtype=bool)
    for stream, first, last in table.itertuples(index=False):  # the obvious definition
        expected[stream, first : last + 1] = True
    np.testing.assert_array_equal(model.cells_of(table, (5, 20)), expected)


def _busy_grid(seed: int) -> model.StreamGrid:
    rng = np.random.default_rng(seed)
    days = pd.date_range(START, periods=200, freq="D")
    weekday = days.day_of_week < 5
    frames = []
    for c in range(3):
        for direction in ("incoming", "outgoing"):
            counts = np.where(weekday, rng.poisson(3.0, len(days)), 0)
            when = np.repeat(days.to_numpy(), counts) + np.timedelta64(10, "h")
            frames.append(
                pd.DataFrame(
                    {
                        "contact_address": f"c{c}@example.com",
                        "sent_at_utc": pd.to_datetime(when).tz_localize("UTC"),
                        "direction": direction,
                        "folder_path": "Inbox" if direction == "incoming" else "Sent Items",
                    }
                )
            )
    events = pd.concat(frames, ignore_index=True)
    events["message_row_id"] = np.arange(len(events))
    return model.build_grid(
        events, timezone="UTC", country=None, quiet_periods=None, vacations=None, min_messages=10
    )


def test_a_refit_of_some_streams_leaves_the_others_as_they_were() -> None:
    grid = _busy_grid(3)
    nothing = np.zeros_like(grid.span)
    first = model.fit_streams(grid, nothing)
    exclude = nothing.copy()
    row = int(np.flatnonzero(grid.keys["contact_address"].eq("c1@example.com").to_numpy())[0])
    exclude[row, 50:70] = True  # one stream loses twenty days
    changed = exclude.any(axis=1)
    partial = model.fit_streams(grid, exclude, previous=first, rows=changed)
    whole = model.fit_streams(grid, exclude, previous=first)
    # the other streams keep their fit; the refitted one is the whole refit's but for the
    # mailbox's weekday profile, which the partial refit takes from the previous fit
    np.testing.assert_array_equal(partial.mu[~changed], first.mu[~changed])
    np.testing.assert_allclose(partial.mu[changed], whole.mu[changed], rtol=1e-2)
    assert partial.silence_dispersion[row] == pytest.approx(whole.silence_dispersion[row], rel=1e-2)


def test_evaluating_only_the_runs_that_can_matter_changes_no_verdict() -> None:
    # the bound spares most runs the exact mixture; with a threshold of 1 every run is computed
    # exactly, and the verdicts at the mailbox's threshold are the same
    grid = _busy_grid(5)
    fit = model.fit_streams(grid, np.zeros_like(grid.span))
    runs = model.find_candidates(grid, fit, threshold=1e-4, partial_ratio=0.25)
    judged = model.evaluate_runs(grid, fit, runs, alpha=0.01)
    everything = model.evaluate_runs(grid, fit, runs, alpha=0.01, threshold=1.0)
    threshold = float(judged["threshold"].iloc[0])
    exact = everything["probability"].to_numpy()
    assert np.all(judged["probability"].to_numpy() <= exact * (1 + 1e-9))  # a bound, or exact
    sure = judged["probability"].to_numpy() <= np.sqrt(threshold)
    np.testing.assert_allclose(judged["probability"].to_numpy()[sure], exact[sure])
    again = model.judge_runs(fit, everything, threshold)
    np.testing.assert_array_equal(judged["significant"].to_numpy(), again["significant"].to_numpy())


def _silence_after(first_mail_days: int, seed: int) -> tuple[model.StreamGrid, pd.DataFrame]:
    """A grid of two contacts with mail on weekdays (Poisson, half a message a day) over 300
    days: ``edge@`` writes once on day 0 and then nothing until day 120, ``inner@`` writes
    ``first_mail_days`` days, then nothing for the same 100 days; the run of each's ``all``
    stream (days 1..119 and ``first_mail_days``..``first_mail_days + 118``)."""
    rng = np.random.default_rng(seed)
    days = pd.date_range(START, periods=300, freq="D")
    weekday = days.day_of_week < 5
    counts = {
        name: np.where(weekday, rng.poisson(0.5, len(days)), 0)
        for name in ("edge@example.com", "inner@example.com", "steady@example.com")
    }
    counts["edge@example.com"][0] = 1
    counts["edge@example.com"][1:120] = 0
    counts["inner@example.com"][first_mail_days : first_mail_days + 119] = 0
    frames = [
        pd.DataFrame(
            {
                "contact_address": name,
                "sent_at_utc": pd.to_datetime(
                    np.repeat(days.to_numpy(), c) + np.timedelta64(10, "h")
                ).tz_localize("UTC"),
                "direction": "incoming",
                "folder_path": "Inbox",
            }
        )
        for name, c in counts.items()
    ]
    events = pd.concat(frames, ignore_index=True)
    events["message_row_id"] = np.arange(len(events))
    grid = model.build_grid(
        events, timezone="UTC", country=None, quiet_periods=None, vacations=None, min_messages=10
    )
    keys = grid.keys
    row = {
        name: int(np.flatnonzero(keys["contact_address"].eq(name) & keys["stream"].eq("all"))[0])
        for name in counts
    }
    runs = pd.DataFrame(
        {
            "stream": [row["edge@example.com"], row["inner@example.com"]],
            "first_day": [1, first_mail_days],
            "last_day": [119, first_mail_days + 118],
            "method": "zero",
        }
    )
    return grid, runs


def test_a_silence_with_no_timeline_on_one_side_is_no_gap() -> None:
    # the same 119 silent days (85 business days, ~29 messages expected at the rate around
    # them): after forty days of mail they are a gap; after a single message on the
    # timeline's first day nothing tells a loss from a contact who had not begun writing yet
    grid, runs = _silence_after(first_mail_days=40, seed=7)
    exclude = model.cells_of(runs, grid.span.shape)  # as the detector's later passes do
    fit = model.fit_streams(grid, exclude)
    judged = model.evaluate_runs(grid, fit, runs, alpha=0.01, exclude=exclude)
    edge, inner = judged.itertuples(index=False)
    assert inner.significant  # p about 1e-6 against a threshold of about 3e-5
    assert not edge.significant and edge.probability == 1.0


def _plain_run_totals(
    grid: model.StreamGrid,
    fit: model.StreamFit,
    exclude: np.ndarray,
    runs: pd.DataFrame,
    flank_days: int = 28,
) -> np.ndarray:
    """The twelve totals of :func:`model._run_totals`, each run summed on its own days."""
    n_days = grid.counts.shape[1]
    out = np.zeros((12, len(runs)))
    for j, (s, a, b) in enumerate(runs[["stream", "first_day", "last_day"]].to_numpy()):
        lo, hi = max(a - flank_days, 0), min(b + 1 + flank_days, n_days)
        y, mu, span = grid.counts[s].astype(float), fit.mu[s], grid.span[s]
        shape = fit.shape(grid.days, np.array([s]), span[None, :])[0]
        usable = span & ~exclude[s]
        partner = grid.counterpart[s]
        other = grid.counts[partner] if partner >= 0 else np.zeros(n_days)
        weighted = mu * (1.0 + fit.silence_dispersion[s] * other)
        run, left, right = slice(a, b + 1), slice(lo, a), slice(b + 1, hi)
        out[:, j] = [
            mu[run].sum(),
            y[run].sum(),
            shape[run].sum(),
            (y * usable)[left].sum(),
            (y * usable)[right].sum(),
            (usable & (y > 0))[left].sum(),
            (usable & (y > 0))[right].sum(),
            (shape * usable)[left].sum(),
            (shape * usable)[right].sum(),
            weighted[run].sum(),
            shape[left].sum(),
            shape[right].sum(),
        ]
    return out


@pytest.mark.parametrize("excluded", [False, True])
@pytest.mark.parametrize("rows_per_block", [None, 1, 2])
def test_run_totals_are_the_sums_over_each_run_and_its_flanks(
    excluded: bool, rows_per_block: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # blocks of one or two streams hold only streams with a counterpart, only streams without
    # one, or both: each way of summing the weighted expected mail is taken
    if rows_per_block is not None:
        whole = model.row_blocks
        monkeypatch.setattr(
            model, "row_blocks", lambda n, columns: whole(n, columns, rows_per_block * columns)
        )
    grid = _busy_grid(11)
    assert (grid.counterpart >= 0).any() and (grid.counterpart < 0).any()
    rng = np.random.default_rng(3)
    exclude = np.zeros_like(grid.span)
    if excluded:
        exclude[rng.integers(0, len(exclude), 4), 60:75] = True
    fit = model.fit_streams(grid, exclude)
    n_runs = 300
    first = rng.integers(0, grid.counts.shape[1] - 10, n_runs)
    runs = pd.DataFrame(
        {
            "stream": rng.integers(0, len(grid.counts), n_runs),
            "first_day": first,
            "last_day": first + rng.integers(0, 10, n_runs),
        }
    )
    expected = _plain_run_totals(grid, fit, exclude, runs)
    for table in (runs, runs.sort_values(["stream", "first_day"], kind="stable")):
        s, a, b = (
            table[c].to_numpy().astype(np.int64) for c in ("stream", "first_day", "last_day")
        )
        left_lo, right_hi = np.maximum(a - 28, 0), np.minimum(b + 29, grid.counts.shape[1])
        got = model._run_totals(grid, fit, exclude, s, a, b, left_lo, right_hi)
        want = expected[:, table.index.to_numpy()]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def test_with_columns_is_assign_without_the_copy() -> None:
    runs = pd.DataFrame(
        {
            "stream": np.array([3, 1, 2]),
            "first_day": np.array([5, 6, 7]),
            "method": pd.Categorical.from_codes([0, 1, 0], categories=pd.Index(model.METHODS)),
        },
        index=[10, 4, 7],
    )
    columns: dict[str, np.ndarray | float] = {
        "first_day": np.array([1, 2, 3]),  # replaced in its place
        "probability": np.array([0.5, 0.25, 1.0]),
        "threshold": 0.01,  # a scalar fills its column
        "significant": np.array([True, False, True]),
    }
    got = model.with_columns(runs, columns)
    pd.testing.assert_frame_equal(got, runs.assign(**columns))
    assert np.shares_memory(got["stream"].to_numpy(), runs["stream"].to_numpy())


def _burst_beside_silence(burst: float, seed: int) -> tuple[model.StreamGrid, pd.DataFrame]:
    """One contact writing on weekdays (Poisson, one message a day) over 300 days, silent on
    days 140..160 and writing ``burst`` times as much in the two weeks either side of it; its
    ``all`` stream's silent run."""
    rng = np.random.default_rng(seed)
    days = pd.date_range(START, periods=300, freq="D")
    weekday = days.day_of_week < 5
    rate = np.where(weekday, 1.0, 0.0)
    rate[126:140] *= burst
    rate[161:175] *= burst
    counts = rng.poisson(rate)
    counts[140:161] = 0
    events = pd.DataFrame(
        {
            "contact_address": "a@example.com",
            "sent_at_utc": pd.to_datetime(
                np.repeat(days.to_numpy(), counts) + np.timedelta64(10, "h")
            ).tz_localize("UTC"),
            "direction": "incoming",
            "folder_path": "Inbox",
        }
    )
    events["message_row_id"] = np.arange(len(events))
    grid = model.build_grid(
        events, timezone="UTC", country=None, quiet_periods=None, vacations=None, min_messages=10
    )
    keys = grid.keys
    row = int(
        np.flatnonzero(keys["contact_address"].eq("a@example.com") & keys["stream"].eq("all"))[0]
    )
    runs = pd.DataFrame({"stream": [row], "first_day": [140], "last_day": [160], "method": "zero"})
    return grid, runs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_burst_beside_a_silence_is_held_to_the_weeks_around_it(seed: int) -> None:
    # two busy weeks (four times the contact's rate) either side of a three-week silence: the
    # near flanks alone would hold the silence to the burst's rate; the far flanks (six weeks)
    # hold it closer to the contact's own. Without the burst both flanks say the same.
    expected_test = {}
    for burst in (4.0, 1.0):
        grid, runs = _burst_beside_silence(burst, seed)
        exclude = model.cells_of(runs, grid.span.shape)
        fit = model.fit_streams(grid, exclude)
        for far in (0, 42):  # 0: the near flanks only
            judged = model.evaluate_runs(
                grid, fit, runs, alpha=0.01, threshold=1.0, exclude=exclude, far_flank_days=far
            )
            expected_test[burst, far] = float(judged["expected_test"].iloc[0])
    assert expected_test[4.0, 42] < 0.9 * expected_test[4.0, 0]
    assert expected_test[1.0, 42] == pytest.approx(expected_test[1.0, 0], rel=0.1)


def test_an_outgoing_run_is_trimmed_off_a_vacation_and_the_weekends_beside_it() -> None:
    from pstlib.analytics._calendar import day_table
    from pstlib.analytics._gap_rules import trim_vacations

    # 1-28 January 2024 (Mon 1st), a vacation Mon 15th to Fri 19th. An outgoing silence from
    # Wed 10th to Sun 21st is the gap up to the vacation only (10th-12th: the weekend 13th-14th
    # goes with the vacation, as does the one after it); one from Sat 20th to Wed 24th starts
    # on Mon 22nd; a weekend far from any vacation (Sat 6th) stays; stream 1 is not chosen.
    days = day_table(
        pd.Timestamp("2024-01-01"),
        pd.Timestamp("2024-01-28"),
        country=None,
        vacations=pd.DataFrame(
            {"start": [pd.Timestamp("2024-01-15")], "end": [pd.Timestamp("2024-01-19")]}
        ),
    )
    n = len(days)
    grid = model.StreamGrid(
        keys=pd.DataFrame(),
        counts=np.zeros((2, n), dtype=np.int32),
        span=np.ones((2, n), dtype=bool),
        days=days,
    )
    runs = pd.DataFrame(
        {"stream": [0, 0, 0, 1], "first_day": [9, 19, 5, 9], "last_day": [20, 23, 9, 20]}
    )
    kept = trim_vacations(grid, runs, np.array([True, False]))
    ends = kept[["first_day", "last_day"]].to_numpy().tolist()
    assert ends == [[9, 11], [21, 23], [5, 9], [9, 20]]
