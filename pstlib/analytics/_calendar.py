"""The day table behind the timeline model: one row per calendar day, with what kind of day it is.

A day is a *business day* when it is a Monday to Friday that is not a public holiday of the
configured
country. Public holidays come from the ``holidays`` package; organisation-wide quiet periods and
owner vacations are passed in as DataFrames of inclusive ``start``/``end`` dates.
"""

from __future__ import annotations

import holidays
import numpy as np
import pandas as pd

from pstlib.errors import MissingColumnsError

PERIOD_COLUMNS = ["start", "end"]


def require_columns(function: str, frame: pd.DataFrame, columns: list[str]) -> None:
    """Raise :class:`MissingColumnsError` naming every column of ``columns`` that ``frame``
    lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingColumnsError(function, missing)


def local_dates(sent_at_utc: pd.Series, timezone: str) -> pd.Series:
    """The calendar date (naive midnight) of each timestamp in ``timezone``."""
    stamps = pd.to_datetime(sent_at_utc, utc=True)
    local = stamps.dt.tz_convert(timezone).dt.tz_localize(None).dt.normalize()
    return local.astype("datetime64[ns]")


def holiday_dates(country: str | None, start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """Public holidays of ``country`` (ISO code, optionally ``"DE-BY"`` for a subdivision)."""
    if not country:
        return pd.DatetimeIndex([], dtype="datetime64[ns]")
    code, _, subdiv = country.partition("-")
    table = holidays.country_holidays(
        code, subdiv=subdiv or None, years=range(start.year, end.year + 1)
    )
    return pd.DatetimeIndex(sorted(pd.Timestamp(d) for d in table), dtype="datetime64[ns]")


def period_mask(dates: pd.DatetimeIndex, periods: pd.DataFrame | None, function: str) -> np.ndarray:
    """True on each of ``dates`` that falls inside one of the inclusive ``start``..``end``
    periods."""
    if periods is None or periods.empty:
        return np.zeros(len(dates), dtype=bool)
    require_columns(function, periods, PERIOD_COLUMNS)
    starts = pd.to_datetime(periods["start"]).dt.tz_localize(None).to_numpy("datetime64[ns]")
    ends = pd.to_datetime(periods["end"]).dt.tz_localize(None).to_numpy("datetime64[ns]")
    values = dates.to_numpy("datetime64[ns]")
    # +1 on each start, -1 the day after each end; a running sum > 0 is "inside a period"
    edges = np.zeros(len(values) + 1, dtype=np.int64)
    np.add.at(edges, np.searchsorted(values, starts, side="left"), 1)
    np.add.at(edges, np.searchsorted(values, ends, side="right"), -1)
    return np.cumsum(edges[:-1]) > 0


def day_table(
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    country: str | None,
    quiet_periods: pd.DataFrame | None = None,
    vacations: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per calendar day from ``start`` to ``end`` inclusive.

    Returns columns ``date``, ``weekday`` (0 = Monday), ``is_weekend``, ``is_holiday``, ``is_quiet``
    (organisation-wide quiet period), ``is_vacation`` (owner vacation) and ``is_business_day``
    (weekday, not a public holiday).
    """
    dates = pd.DatetimeIndex(pd.date_range(start, end, freq="D"), dtype="datetime64[ns]")
    weekday = dates.day_of_week.to_numpy()
    is_holiday = dates.isin(holiday_dates(country, start, end))
    return pd.DataFrame(
        {
            "date": dates,
            "weekday": weekday,
            "is_weekend": weekday >= 5,
            "is_holiday": is_holiday,
            "is_quiet": period_mask(dates, quiet_periods, "quiet_periods"),
            "is_vacation": period_mask(dates, vacations, "vacations"),
            "is_business_day": (weekday < 5) & ~is_holiday,
        }
    )
