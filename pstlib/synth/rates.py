"""Daily volumes: the calendar, each correspondent's expected daily rate, and the drawn counts.

The expected number of messages a correspondent starts on day *d* in one direction is

    base_rate × weekly_profile[weekday] × holiday_factor × exp(trend × (t - mid)) × step(d) × share

where ``step`` multiplies by ``change_factor`` from ``change_day`` on (a change point, not a
gap) and ``share`` is ``sent_share`` for the owner's mail and ``1 - sent_share`` for the
correspondent's. A day's count is gamma-Poisson (negative binomial with shape
``dispersion_shape``), with one gamma draw per correspondent and day shared by both directions, so
busy days are busy both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import holidays
import numpy as np
import numpy.typing as npt
import pandas as pd

from pstlib.synth.config import SynthConfig

OFFICE_PROFILE = np.array([1.0, 1.05, 1.05, 1.0, 0.9])  # Mon..Fri, mean 1.0
AUTOMATED_WEEKEND = 0.7
AUTOMATED_HOLIDAY = 0.8
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Calendar:
    """The period, one entry per calendar day (UTC days)."""

    start: date
    days: int
    weekday: IntArray  # 0 = Monday
    is_holiday: BoolArray
    is_business: BoolArray
    holiday_names: dict[date, str]

    @property
    def start_s(self) -> int:
        """The period's first second, as POSIX seconds."""
        return int((self.start - date(1970, 1, 1)).days) * 86400

    @property
    def end_s(self) -> int:
        """One past the period's last second."""
        return self.start_s + self.days * 86400

    @property
    def business_days(self) -> IntArray:
        """The day indices of the business days, in order."""
        return np.flatnonzero(self.is_business).astype(np.int64)

    def date_of(self, day: int) -> date:
        return self.start + timedelta(days=int(day))


def build_calendar(config: SynthConfig) -> Calendar:
    """Days from ``config.start_date`` for ``config.years`` years, with weekends and public holidays
    of ``config.holiday_country`` (the ``holidays`` package)."""
    days = max(round(config.years * 365.25), 1)
    start = config.start_date
    first_weekday = start.weekday()
    weekday = ((np.arange(days) + first_weekday) % 7).astype(np.int64)
    end = start + timedelta(days=days - 1)
    country = holidays.country_holidays(
        config.holiday_country,
        subdiv=config.holiday_subdivision,
        years=range(start.year, end.year + 1),
    )
    names = {d: str(n) for d, n in sorted(country.items()) if start <= d <= end}
    is_holiday = np.zeros(days, dtype=bool)
    is_holiday[[(d - start).days for d in names]] = True
    return Calendar(start, days, weekday, is_holiday, (weekday < 5) & ~is_holiday, names)


def weekly_profiles(people: pd.DataFrame, config: SynthConfig) -> FloatArray:
    """(contacts × 7) weekday multipliers; the business-day mean of an office profile is 1."""
    n = len(people)
    cls = people["sender_class"].to_numpy()
    office = np.concatenate([OFFICE_PROFILE, [config.weekend_factor, 0.7 * config.weekend_factor]])
    prof = np.tile(office, (n, 1))
    prof[cls == "automated"] = [1.0] * 5 + [AUTOMATED_WEEKEND] * 2
    weekly_day = people["newsletter_weekday"].to_numpy()
    news = cls == "newsletter"
    prof[news] = [1.0] * 5 + [0.0, 0.0]  # daily newsletters: every weekday
    weekly = np.flatnonzero(news & (weekly_day >= 0))
    prof[weekly] = 0.0
    prof[weekly, weekly_day[weekly]] = 5.0  # five business days' worth of rate on its one day
    return prof


def holiday_factors(people: pd.DataFrame, config: SynthConfig) -> FloatArray:
    cls = people["sender_class"].to_numpy()
    return np.select(
        [cls == "automated", cls == "newsletter"], [AUTOMATED_HOLIDAY, 1.0], config.holiday_factor
    ).astype(float)


def expected_rates(
    people: pd.DataFrame, calendar: Calendar, config: SynthConfig, vacation: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """Expected thread starts per day, (contacts × days) each: received (from the correspondent)
    and sent (by the owner; zero on the owner's vacation days)."""
    profile = weekly_profiles(people, config)[:, calendar.weekday]
    holiday = np.where(calendar.is_holiday[None, :], holiday_factors(people, config)[:, None], 1.0)
    t_years = (np.arange(calendar.days) + 0.5) / 365.25
    trend = np.exp(
        people["trend_log_per_year"].to_numpy()[:, None] * (t_years - t_years.mean())[None, :]
    )
    change_day = people["change_day"].to_numpy()
    step = np.where(
        (change_day[:, None] >= 0) & (np.arange(calendar.days)[None, :] >= change_day[:, None]),
        people["change_factor"].to_numpy()[:, None],
        1.0,
    )
    total = (
        people["base_rate_per_business_day"].to_numpy()[:, None] * profile * holiday * trend * step
    )
    sent_share = people["sent_share"].to_numpy()[:, None]
    return total * (1.0 - sent_share), total * sent_share * ~vacation[None, :]


def draw_counts(
    lam_in: FloatArray, lam_out: FloatArray, people: pd.DataFrame, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Gamma-Poisson counts for both directions; newsletters are regular (no noise)."""
    shape = people["dispersion_shape"].to_numpy()[:, None]
    burst = rng.gamma(shape, 1.0 / shape, size=lam_in.shape)
    counts_in = rng.poisson(lam_in * burst).astype(np.int64)
    counts_out = rng.poisson(lam_out * burst).astype(np.int64)
    news = (people["sender_class"] == "newsletter").to_numpy()
    counts_in[news] = np.floor(lam_in[news] + 0.5).astype(np.int64)
    return counts_in, counts_out


def thread_factors(
    people: pd.DataFrame, config: SynthConfig, vacation: BoolArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Expected messages per thread start, by direction: (in per received start, out per received
    start, in per sent start, out per sent start), each (contacts × days) — the owner does not reply
    on vacation days. Replies are attributed to their thread's start day."""
    p_o = people["owner_reply_prob"].to_numpy()[:, None] * ~vacation[None, :]
    p_c = people["contact_reply_prob"].to_numpy()[:, None] * np.ones((1, len(vacation)))
    result = []
    for first_out in (False, True):
        n_in = np.zeros_like(p_c) + (0.0 if first_out else 1.0)
        n_out = np.zeros_like(p_c) + (1.0 if first_out else 0.0)
        alive = np.ones_like(p_c)
        out_turn = not first_out  # who replies next: the owner replies to received mail
        for r in range(config.reply_rounds):
            alive = alive * (p_o if out_turn else p_c) * config.reply_decay**r
            if out_turn:
                n_out = n_out + alive
            else:
                n_in = n_in + alive
            out_turn = not out_turn
        result += [n_in, n_out]
    return result[0], result[1], result[2], result[3]
