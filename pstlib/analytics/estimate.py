"""How long will an import take? Durations estimated from past sessions' rates, with an interval.

``estimate_duration`` fits past sessions (messages and bytes) and predicts a planned import;
``estimate_error`` measures that estimate on held-back sessions (leave-one-out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats  # type: ignore[import-untyped]

from pstlib.analytics.imports import require_columns
from pstlib.errors import PstlibError


def measure_session_workload(sessions: pd.DataFrame, messages: pd.DataFrame) -> pd.DataFrame:
    """Per session: how long it ran and how much mail it handled (the input of estimates).

    Needs ``sessions``: ``session_id, target, status, started_at_utc, ended_at_utc``;
    ``messages``: ``session_id, size_bytes``. Returns ``session_id, target, status,
    duration_s`` (NaN while running), ``message_count``, ``size_bytes``, ``messages_per_s`` and
    ``mb_per_s`` (MB = 10^6 bytes; NaN without a duration).
    """
    require_columns(
        "measure_session_workload",
        sessions,
        ["session_id", "target", "status", "started_at_utc", "ended_at_utc"],
    )
    require_columns("measure_session_workload", messages, ["session_id", "size_bytes"])
    per_session = (
        messages.assign(session_id=messages["session_id"].astype("string"))
        .groupby("session_id")["size_bytes"]
        .agg(["size", "sum"])
    )
    ids = sessions["session_id"].astype("string")
    duration = (sessions["ended_at_utc"] - sessions["started_at_utc"]).dt.total_seconds()
    table = pd.DataFrame(
        {
            "session_id": ids.to_numpy(),
            "target": sessions["target"].astype("string").to_numpy(),
            "status": sessions["status"].astype("string").to_numpy(),
            "duration_s": duration.to_numpy(float),
            "message_count": ids.map(per_session["size"]).fillna(0).to_numpy(np.int64),
            "size_bytes": ids.map(per_session["sum"]).fillna(0).to_numpy(np.int64),
        }
    )
    running = table["duration_s"].where(table["duration_s"] > 0)
    return table.assign(
        messages_per_s=table["message_count"] / running,
        mb_per_s=table["size_bytes"] / 1e6 / running,
    )


@dataclass(frozen=True, slots=True)
class DurationEstimate:
    """A planned import's expected duration (the model's median) and its prediction interval.

    ``low_s``/``high_s`` are NaN when the sessions leave no degrees of freedom for an interval.
    """

    seconds: float
    low_s: float
    high_s: float
    basis: str


@dataclass(frozen=True, slots=True)
class EstimateError:
    """How well :func:`estimate_duration` predicted sessions it had not seen (leave-one-out).

    ``predictions``: ``session_id, duration_s, predicted_s, low_s, high_s,
    absolute_percentage_error, covered`` (``covered`` NA where there was no interval).
    """

    sessions: int
    median_absolute_percentage_error: float
    coverage: float
    level: float
    basis: str
    predictions: pd.DataFrame


def _usable_sessions(past_sessions: pd.DataFrame) -> pd.DataFrame:
    durations = past_sessions["duration_s"].astype(float)
    counts = past_sessions["message_count"].astype(float)
    return past_sessions[((durations > 0) & (counts > 0)).fillna(False).to_numpy(bool)]


def _design(
    message_count: npt.NDArray[np.float64], size_bytes: npt.NDArray[np.float64], sessions: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], str]:
    """The model for ``sessions`` past sessions: (design matrix, offset, description).

    log duration = b0 + b1 log messages + b2 log MB with 6 or more sessions; b0 + b1 log
    messages with 4 or 5; else log duration = log messages + b0 (a constant rate).
    """
    log_messages = np.log(np.maximum(message_count, 1.0))
    log_mb = np.log(np.maximum(size_bytes, 1.0) / 1e6)
    ones = np.ones_like(log_messages)
    if sessions >= 6:
        return (
            np.column_stack([ones, log_messages, log_mb]),
            np.zeros_like(log_messages),
            "log-linear fit of duration on messages and bytes",
        )
    if sessions >= 4:
        return (
            np.column_stack([ones, log_messages]),
            np.zeros_like(log_messages),
            "log-linear fit of duration on messages",
        )
    return ones[:, None], log_messages, "mean log rate (seconds per message)"


def _columns(frame: pd.DataFrame) -> tuple[npt.NDArray[np.float64], ...]:
    return (
        frame["duration_s"].to_numpy(float),
        frame["message_count"].to_numpy(float),
        frame["size_bytes"].to_numpy(float),
    )


def estimate_duration(
    past_sessions: pd.DataFrame, planned_messages: int, planned_bytes: int, *, level: float = 0.9
) -> DurationEstimate:
    """How long an import of ``planned_messages`` (``planned_bytes``) will take, from the past.

    ``past_sessions`` needs ``duration_s, message_count, size_bytes`` (see
    :func:`measure_session_workload`; pass sessions of the same target and setup, completed,
    since an assess session reads far faster than an import writes). Sessions without a duration
    or messages are left out. The model is fitted on logarithms, by least squares (see
    ``basis``): on messages and bytes with 6+ sessions, on messages with 4-5, a constant rate
    with fewer. ``seconds`` is the model's median, ``low_s``/``high_s`` the ``level`` prediction
    interval (Student t on the residuals; NaN with a single session). Raises
    :class:`~pstlib.errors.PstlibError` without any usable session.
    """
    require_columns("estimate_duration", past_sessions, ["duration_s", "message_count", "size_bytes"])
    usable = _usable_sessions(past_sessions)
    n = len(usable)
    if n == 0:
        raise PstlibError(
            "estimate_duration needs at least one past session with a duration and messages"
        )
    duration, count, size = _columns(usable)
    design, offset, model = _design(count, size, n)
    new_design, new_offset, _ = _design(
        np.array([float(planned_messages)]), np.array([float(planned_bytes)]), n
    )
    target = np.log(duration) - offset
    pinv = np.linalg.pinv(design)
    beta = pinv @ target
    centre = float(new_design[0] @ beta + new_offset[0])
    dof = n - design.shape[1]
    basis = f"{model}, {n} session(s)"
    if dof < 1:
        return DurationEstimate(float(np.exp(centre)), float("nan"), float("nan"), basis)
    residuals = target - design @ beta
    variance = float(residuals @ residuals) / dof
    leverage = float(new_design[0] @ (pinv @ pinv.T) @ new_design[0])
    half = float(stats.t.ppf((1 + level) / 2, dof)) * np.sqrt(variance * (1 + leverage))
    return DurationEstimate(
        float(np.exp(centre)),
        float(np.exp(centre - half)),
        float(np.exp(centre + half)),
        f"{basis}, {level:.0%} prediction interval",
    )


def estimate_error(past_sessions: pd.DataFrame, *, level: float = 0.9) -> EstimateError:
    """Leave-one-out test of :func:`estimate_duration`: each session predicted from the others.

    Needs ``past_sessions``: ``duration_s, message_count, size_bytes`` (``session_id`` is kept
    when present). With n usable sessions each is predicted by the model estimate_duration
    fits on n - 1 (closed form: the fit on all n less each session's leverage, no refitting).
    Returns the median absolute percentage error of the predictions and the share of actual
    durations inside their ``level`` interval (NaN where no interval can be had).
    """
    require_columns("estimate_error", past_sessions, ["duration_s", "message_count", "size_bytes"])
    usable = _usable_sessions(past_sessions)
    n = len(usable)
    duration, count, size = _columns(usable)
    design, offset, model = _design(count, size, n - 1)
    p = design.shape[1]
    target = np.log(duration) - offset if n else np.zeros(0)
    nan = np.full(n, np.nan)
    predicted, low, high = nan, nan, nan
    if n >= 2:
        pinv = np.linalg.pinv(design)
        residuals = target - design @ (pinv @ target)
        leverage = np.einsum("ij,ji->i", design, pinv)
        free = np.where(leverage < 1 - 1e-9, 1 - leverage, np.nan)
        # a session's own residual had it been left out, and the fit's spread without it
        held_out = residuals / free
        predicted = np.exp(np.log(duration) - held_out)
        dof = n - 1 - p
        if dof >= 1:
            rss = float(residuals @ residuals) - residuals**2 / free
            spread = np.sqrt(np.maximum(rss, 0.0) / dof / free)
            half = float(stats.t.ppf((1 + level) / 2, dof)) * spread
            low = predicted * np.exp(-half)
            high = predicted * np.exp(half)
    ape = np.abs(predicted - duration) / duration
    has_interval = ~np.isnan(low)
    covered = pd.Series((duration >= low) & (duration <= high), dtype="boolean").where(
        pd.Series(has_interval), pd.NA
    )
    ids = (
        usable["session_id"].astype("string").to_numpy()
        if "session_id" in usable.columns
        else pd.Series(usable.index.astype(str), dtype="string").to_numpy()
    )
    predictions = pd.DataFrame(
        {
            "session_id": ids,
            "duration_s": duration,
            "predicted_s": predicted,
            "low_s": low,
            "high_s": high,
            "absolute_percentage_error": ape,
            "covered": covered.to_numpy(),
        }
    )
    return EstimateError(
        sessions=n,
        median_absolute_percentage_error=float(np.nanmedian(ape)) if n >= 2 else float("nan"),
        coverage=float(covered.mean()) if has_interval.any() else float("nan"),
        level=level,
        basis=f"leave-one-out, {model} on {max(n - 1, 0)} session(s) each",
        predictions=predictions,
    )
