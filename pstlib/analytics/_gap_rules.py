"""From significant runs to reported gaps and vacations: clustering, kinds, attribution.

The helpers here take the fitted :class:`~pstlib.analytics._timeline_model.StreamGrid` and
:class:`~pstlib.analytics._timeline_model.StreamFit` and whole tables of runs; none loops over runs,
streams or contacts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pstlib.analytics._timeline_model import (
    MAILBOX,
    StreamFit,
    StreamGrid,
    cells_of,
    evaluate_runs,
    runs_of,
)

# stream family → the kind of gap a run in it suggests, before the window's directions are compared
KIND_OF_STREAM = {
    "all": "full",
    "outgoing": "sent_only",
    "incoming": "received_only",
    "folder": "folder",
}
KIND_PRIORITY = {
    "archive_wide": 0,
    "full": 1,
    "sent_only": 2,
    "received_only": 2,
    "folder": 3,
    "partial": 4,
}


def stream_row(grid: StreamGrid, contact: pd.Series, stream: str, part: str = "") -> np.ndarray:
    """Row of ``grid`` of each contact's ``stream`` (-1 where the stream is not modelled)."""
    index = grid.index
    wanted = pd.MultiIndex.from_arrays(
        [
            contact.astype("string").to_numpy(),
            np.full(len(contact), stream),
            np.full(len(contact), part),
        ]
    )
    rows: np.ndarray = index.get_indexer(wanted)
    return rows


def window_counts(
    grid: StreamGrid, fit: StreamFit, rows: np.ndarray, first: np.ndarray, last: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(observed, expected) of stream ``rows`` over ``first..last``; NaN where ``rows`` is -1.

    Prefix sums of the streams asked for only (a few of a large grid)."""
    needed, local = np.unique(np.maximum(rows, 0), return_inverse=True)
    local = local.reshape(-1)
    cum_y = np.zeros((len(needed), grid.counts.shape[1] + 1), dtype=np.int64)
    np.cumsum(grid.counts[needed], axis=1, out=cum_y[:, 1:])
    cum_mu = np.zeros((len(needed), grid.counts.shape[1] + 1))
    np.cumsum(fit.mu[needed], axis=1, out=cum_mu[:, 1:])
    observed = (cum_y[local, last + 1] - cum_y[local, first]).astype(float)
    expected = cum_mu[local, last + 1] - cum_mu[local, first]
    missing = rows < 0
    return np.where(missing, np.nan, observed), np.where(missing, np.nan, expected)


def cluster_windows(runs: pd.DataFrame, by: str) -> pd.DataFrame:
    """Merge overlapping ``first_day..last_day`` windows within each ``by`` group.

    Returns the input with a ``cluster`` column and ``cluster_first``/``cluster_last`` bounds.
    """
    ordered = runs.sort_values([by, "first_day", "last_day"]).reset_index(drop=True)
    reach = ordered.groupby(by)["last_day"].cummax()
    previous_reach = reach.groupby(ordered[by]).shift(1)
    new_cluster = previous_reach.isna() | (ordered["first_day"] > previous_reach)
    cluster = new_cluster.cumsum()
    bounds = ordered.groupby(cluster).agg(
        cluster_first=("first_day", "min"), cluster_last=("last_day", "max")
    )
    return ordered.assign(cluster=cluster).join(bounds, on="cluster")


def trim_to_days(
    keep: np.ndarray, first: np.ndarray, last: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move each window's ends inwards to its first and last day where ``keep`` is True.

    Returns ``(first, last, ok)``; ``ok`` is False for a window without such a day (its ends are
    then left as they were).
    """
    idx = np.arange(len(keep))
    # next kept day at or after d, previous at or before d
    nxt = np.minimum.accumulate(np.where(keep, idx, len(idx))[::-1])[::-1]
    prv = np.maximum.accumulate(np.where(keep, idx, -1))
    new_first, new_last = nxt[first], prv[last]
    ok = new_first <= new_last
    return np.where(ok, new_first, first), np.where(ok, new_last, last), ok


def trim_to_business_days(
    grid: StreamGrid, first: np.ndarray, last: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move each window's ends inwards to its first and last business day (if it has one)."""
    new_first, new_last, _ = trim_to_days(grid.days["is_business_day"].to_numpy(), first, last)
    return new_first, new_last


def trim_vacations(grid: StreamGrid, runs: pd.DataFrame, streams: np.ndarray) -> pd.DataFrame:
    """Trim the owner's vacation days off both ends of the runs of ``streams`` (a mask of rows).

    The owner's own mail stops on vacation, so a silence of the outgoing mail that runs into a
    vacation is the gap only up to it. A vacation inside a run stays in it: the model expects
    (almost) no sent mail there, so it neither makes nor hides the gap around it. A run wholly
    inside vacations is dropped. The weekends and holidays next to a vacation are trimmed with
    it: the owner's silence goes on over them (the first working day after it is where a loss
    would show), and a run reaching over them would stretch a lost file's gap beside the vacation
    into the vacation's days.
    """
    days = grid.days
    vacation = days["is_vacation"].to_numpy()
    anchor = days["is_business_day"].to_numpy() | vacation  # days that are not weekend-like
    idx = np.arange(len(vacation))
    before = np.maximum.accumulate(np.where(anchor, idx, -1))
    after = np.minimum.accumulate(np.where(anchor, idx, len(idx))[::-1])[::-1]
    padded = np.append(vacation, False)  # index -1 and len: no vacation there
    beside = ~anchor & (padded[before] | padded[after])
    return trim_off(runs, vacation | beside, streams)


def trim_off(runs: pd.DataFrame, days: np.ndarray, streams: np.ndarray) -> pd.DataFrame:
    """Trim the ``days`` (a day mask) off both ends of the runs of ``streams`` (a mask of rows);
    a run with no other day is dropped, one with such days inside keeps them."""
    if runs.empty:
        return runs
    chosen = streams[runs["stream"].to_numpy()]
    first, last, ok = trim_to_days(~days, runs["first_day"].to_numpy(), runs["last_day"].to_numpy())
    trimmed = runs.assign(
        first_day=np.where(chosen, first, runs["first_day"]),
        last_day=np.where(chosen, last, runs["last_day"]),
    )
    kept: pd.DataFrame = trimmed[~chosen | ok]
    return kept


def infer_vacations(grid: StreamGrid, fit: StreamFit, runs: pd.DataFrame) -> pd.DataFrame:
    """Owner vacations among the improbably silent runs of the mailbox's outgoing mail.

    A vacation stops the owner's own mail while received mail goes on, often answered by
    auto-replies; a lost file stops both. So a silent run of the mailbox's outgoing stream is a
    vacation when auto-replies were sent in it and its probability is within the square root of
    the mailbox's threshold (the auto-replies are evidence of their own), or when it is significant
    and received mail kept at least half its expected volume. Returns ``start, end, business_days,
    sent_expected, sent_observed, received_ratio, auto_replies, evidence``.
    """
    keys = grid.keys
    mailbox_out = keys["contact_address"].eq(MAILBOX) & keys["stream"].eq("outgoing")
    out_rows = np.flatnonzero(mailbox_out.to_numpy())
    # the owner sends nothing on vacation (auto-replies aside): silent runs, not merely sparse ones
    # a silence answered by auto-replies needs less to be a vacation than one without: the
    # auto-replies are evidence of their own, so a run within the square root of the threshold
    # will do there, while a silence without them must pass the mailbox's test
    likely = runs["significant"] | (runs["probability"] <= np.sqrt(runs["threshold"]))
    low = runs[likely & runs["stream"].isin(out_rows) & runs["method"].eq("zero")]
    columns = [
        "start",
        "end",
        "business_days",
        "sent_expected",
        "sent_observed",
        "received_ratio",
        "auto_replies",
        "evidence",
    ]
    if low.empty:
        return pd.DataFrame(columns=columns)
    # the owner's quiet days, less those on which received mail stopped too (a lost file, not a
    # vacation: an archive gap next to a vacation must not merge into it)
    in_rows = np.flatnonzero(
        (keys["contact_address"].eq(MAILBOX) & keys["stream"].isin(["incoming", "all"])).to_numpy()
    )
    lost = runs[runs["significant"] & runs["stream"].isin(in_rows)]
    n_days = len(grid.days)
    quiet = cells_of(low.assign(stream=0), (1, n_days))[0]
    strict = cells_of(low[low["significant"]].assign(stream=0), (1, n_days))[0]
    lost_days = cells_of(lost.assign(stream=0), (1, n_days))[0]
    _, run_first, run_last = runs_of((quiet & ~lost_days)[None, :])
    if len(run_first) == 0:
        return pd.DataFrame(columns=columns)
    merged = pd.DataFrame({"first_day": run_first, "last_day": run_last})
    first, last = trim_to_business_days(
        grid, merged["first_day"].to_numpy(), merged["last_day"].to_numpy()
    )
    mailbox = pd.Series([MAILBOX] * len(merged))
    sent_rows = stream_row(grid, mailbox, "outgoing")
    sent_obs, sent_exp = window_counts(grid, fit, sent_rows, first, last)
    in_obs, in_exp = window_counts(grid, fit, stream_row(grid, mailbox, "incoming"), first, last)
    auto, _ = window_counts(grid, fit, stream_row(grid, mailbox, "auto_reply"), first, last)
    auto = np.nan_to_num(auto)
    received_ratio = in_obs / np.maximum(in_exp, 1e-9)
    cum_strict = np.concatenate([[0], np.cumsum(strict)])
    significant = (cum_strict[last + 1] - cum_strict[first]) > 0
    evidence = np.where(
        auto > 0,
        "auto_replies",
        np.where((received_ratio >= 0.5) & significant, "received_continues", ""),
    )
    dates = grid.days["date"].to_numpy()
    business = np.concatenate([[0], np.cumsum(grid.days["is_business_day"].to_numpy())])
    table = pd.DataFrame(
        {
            "start": dates[first],
            "end": dates[last],
            "business_days": business[last + 1] - business[first],
            "sent_expected": sent_exp,
            "sent_observed": sent_obs,
            "received_ratio": received_ratio,
            "auto_replies": auto.astype(np.int64),
            "evidence": evidence,
        }
    )
    return table[table["evidence"] != ""].reset_index(drop=True)


def classify_clusters(
    grid: StreamGrid,
    fit: StreamFit,
    runs: pd.DataFrame,
    *,
    alpha: float,
    threshold: float,
    exclude: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per cluster of overlapping significant runs of a contact, with its kind.

    The kind compares the directions over the cluster's window: ``full`` when (almost) nothing of
    the contact came through, ``sent_only``/``received_only`` when one direction stopped and the
    other kept at least half its volume, ``folder`` when a folder stream's run is in the cluster,
    ``partial`` otherwise. Each cluster is then evaluated again over its window on the stream its
    kind names and on the contact's ``all``, ``incoming`` and ``outgoing`` streams, and kept when one
    of them passes ``threshold`` (reported on the kind's stream if that passes, else on the most
    improbable). ``exclude``d cells (other gaps) are left out of the windows' flanks.
    """
    names = grid.keys[["contact_address", "stream", "part"]].rename(
        columns={"stream": "stream_name"}
    )
    keyed = runs.join(names, on="stream")
    keyed = keyed[keyed["stream_name"].isin(list(KIND_OF_STREAM))]
    if keyed.empty:
        return keyed.assign(kind=pd.Series(dtype="string"))
    clusters = cluster_windows(keyed, "contact_address")
    folder_part = clusters[clusters["stream_name"].eq("folder")].groupby("cluster")["part"].first()
    per = clusters.groupby("cluster").agg(
        contact_address=("contact_address", "first"),
        first_day=("cluster_first", "first"),
        last_day=("cluster_last", "first"),
    )
    per = per.assign(folder_path=folder_part.reindex(per.index).fillna(""))
    first, last = per["first_day"].to_numpy(), per["last_day"].to_numpy()
    contact = per["contact_address"]
    ratios = {}
    for stream in ("all", "incoming", "outgoing"):  # three fixed streams, not a loop over data
        obs, exp = window_counts(grid, fit, stream_row(grid, contact, stream), first, last)
        ratios[stream] = obs / np.maximum(exp, 1e-9)
    is_mailbox = contact.eq(MAILBOX).to_numpy()
    kind = np.select(
        [
            (ratios["all"] <= 0.05) & is_mailbox,
            ratios["all"] <= 0.05,
            (ratios["outgoing"] <= 0.1) & (ratios["incoming"] >= 0.5),
            (ratios["incoming"] <= 0.1) & (ratios["outgoing"] >= 0.5),
            per["folder_path"].ne("").to_numpy(),
        ],
        ["archive_wide", "full", "sent_only", "received_only", "folder"],
        "partial",
    )
    per = per.assign(kind=kind)
    eval_stream = np.select(
        [per["kind"].eq("sent_only"), per["kind"].eq("received_only")],
        ["outgoing", "incoming"],
        "all",
    )
    rows = stream_row(grid, contact, "all")
    for stream in ("outgoing", "incoming"):  # the two direction streams
        rows = np.where(eval_stream == stream, stream_row(grid, contact, stream), rows)
    folder_rows = stream_row_parts(grid, contact, per["folder_path"])
    rows = np.where(per["kind"].eq("folder") & (folder_rows >= 0), folder_rows, rows)
    # the cluster is tested on the stream its kind names and on the contact's three main streams:
    # its runs passed the mailbox's test already, so it stands when one of these passes, and is
    # reported on the kind's stream when that one passes (else on the most improbable)
    candidates = [rows] + [stream_row(grid, contact, st) for st in ("all", "incoming", "outgoing")]
    numbered = per.reset_index(drop=True).rename_axis("cluster_id").reset_index()
    tries = pd.concat(
        [numbered.assign(stream=r, choice=i) for i, r in enumerate(candidates)], ignore_index=True
    )
    tries = tries[tries["stream"].to_numpy() >= 0].reset_index(drop=True)
    evaluated = evaluate_runs(grid, fit, tries, alpha=alpha, threshold=threshold, exclude=exclude)
    chosen = (
        evaluated[evaluated["significant"]]
        .assign(other_stream=lambda f: f["choice"].ne(0))
        # per cluster: the kind's own stream first, then the most improbable of the others
        .sort_values(["cluster_id", "other_stream", "probability"], kind="stable")
        .drop_duplicates("cluster_id")
    )
    return chosen.drop(columns=["cluster_id", "choice", "other_stream"]).reset_index(drop=True)


def drop_inside(runs: pd.DataFrame, days: np.ndarray, streams: np.ndarray) -> pd.DataFrame:
    """Drop the runs of ``streams`` (a mask of rows) that lie wholly on ``days`` (a day mask).

    A contact's run inside an archive-wide gap is that gap's share, reported once for the mailbox
    and attributed to the contacts; a run that reaches beyond it stays whole (its days inside the
    gap are then left out of its test, see :func:`pstlib.analytics.timeline.detect_gaps`).
    """
    if runs.empty:
        return runs
    cum = np.concatenate([[0], np.cumsum(days)])
    first, last = runs["first_day"].to_numpy(), runs["last_day"].to_numpy()
    inside = (cum[last + 1] - cum[first]) == (last - first + 1)
    kept: pd.DataFrame = runs[~(inside & streams[runs["stream"].to_numpy()])]
    return kept


def stream_row_parts(grid: StreamGrid, contact: pd.Series, part: pd.Series) -> np.ndarray:
    """Row of each (contact, folder) stream of ``grid`` (-1 where not modelled)."""
    index = grid.index
    wanted = pd.MultiIndex.from_arrays(
        [
            contact.astype("string").to_numpy(),
            np.full(len(contact), "folder"),
            part.astype("string").to_numpy(),
        ]
    )
    rows: np.ndarray = index.get_indexer(wanted)
    return rows


def attribute_archive_gaps(
    grid: StreamGrid, fit: StreamFit, archive: pd.DataFrame, *, min_expected: float = 0.5
) -> pd.DataFrame:
    """Each contact's share of every archive-wide gap: one row per (gap, contact) whose timeline
    spans the gap and who was expected to send or receive at least ``min_expected`` messages in
    it."""
    keys = grid.keys
    contacts = keys[keys["stream"].eq("all") & keys["contact_address"].ne(MAILBOX)]
    pairs = archive[["first_day", "last_day"]].merge(
        contacts[["contact_address", "first_day", "last_day"]]
        .rename(columns={"first_day": "span_first", "last_day": "span_last"})
        .assign(stream=contacts.index.to_numpy()),
        how="cross",
    )
    inside = (pairs["span_first"] < pairs["first_day"]) & (pairs["span_last"] > pairs["last_day"])
    pairs = pairs[inside]
    observed, expected = window_counts(
        grid,
        fit,
        pairs["stream"].to_numpy(),
        pairs["first_day"].to_numpy(),
        pairs["last_day"].to_numpy(),
    )
    out = pairs.assign(observed_messages=observed, expected_messages=expected)
    return out[out["expected_messages"] >= min_expected].reset_index(drop=True)
