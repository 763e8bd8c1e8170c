"""Planting holes: which windows lose which mail, and the owner's vacations.

A window runs from the first to the last of ``business_days`` consecutive business days, inclusive,
as whole UTC calendar days (the weekends and holidays inside it are in it too). A contact gap takes
the messages whose counterpart (``contact_address``) is that contact: both directions (``full``), a
random fraction of both (``partial``), only the owner's (``sent_only``) or only the contact's
(``received_only``). An ``archive`` gap takes every message in its window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from pstlib.synth.config import GAP_KINDS, GapPlan, SynthConfig
from pstlib.synth.rates import BoolArray, Calendar

INCOMING, OUTGOING = 0, 1


@dataclass(frozen=True, slots=True)
class Window:
    """Business days ``[first_bday, first_bday + business_days)`` of the calendar."""

    first_bday: int
    business_days: int

    def day_range(self, calendar: Calendar) -> tuple[int, int]:
        """(first day index, last day index), inclusive."""
        bdays = calendar.business_days
        return int(bdays[self.first_bday]), int(bdays[self.first_bday + self.business_days - 1])


@dataclass(frozen=True, slots=True)
class PlannedGap:
    contact: int  # row in people; -1 for an archive gap
    kind: str  # full | partial | sent_only | received_only | archive
    window: Window
    loss_fraction: float


def _place(
    rng: np.random.Generator, n_bdays: int, length: int, taken: list[Window], margin: int
) -> Window | None:
    """A window of ``length`` business days clear of ``taken`` (by ``margin``), or None."""
    if length > n_bdays:
        return None
    for _ in range(30):
        first = int(rng.integers(0, n_bdays - length + 1))
        if all(
            first + length + margin <= w.first_bday
            or w.first_bday + w.business_days + margin <= first
            for w in taken
        ):
            return Window(first, length)
    return None


def plan_vacations(
    config: SynthConfig, calendar: Calendar, rng: np.random.Generator
) -> list[Window]:
    """The owner's vacations, apart from each other by at least four weeks, in date order."""
    n_bdays = len(calendar.business_days)
    count = round(config.vacations_per_year * config.years)
    lo, hi = config.vacation_business_days
    taken: list[Window] = []
    for _ in range(count):
        window = _place(rng, n_bdays, int(rng.integers(lo, hi + 1)), taken, margin=20)
        if window is not None:
            taken.append(window)
    return sorted(taken, key=lambda w: w.first_bday)


def vacation_mask(vacations: list[Window], calendar: Calendar) -> BoolArray:
    mask = np.zeros(calendar.days, dtype=bool)
    for w in vacations:
        first, last = w.day_range(calendar)
        mask[first : last + 1] = True
    return mask


def plan_gaps(
    people: pd.DataFrame, plan: GapPlan, calendar: Calendar, rng: np.random.Generator
) -> list[PlannedGap]:
    """Contact gaps for a share of the steady correspondents (drawn with weights
    ``base_rate ** plan.volume_weighting``), then the archive-wide gaps."""
    n_bdays = len(calendar.business_days)
    eligible = np.flatnonzero((people["sender_class"] != "one_off").to_numpy())
    # weighted draw without replacement (Efraimidis-Spirakis keys): busier contacts first
    rate = people["base_rate_per_business_day"].to_numpy()[eligible]
    weight = np.maximum(rate, 1e-12) ** plan.volume_weighting
    keys = np.log(rng.random(len(eligible))) / weight
    chosen = np.sort(eligible[np.argsort(-keys)][: round(plan.contact_share * len(eligible))])
    weights = np.asarray(plan.kind_weights, dtype=float) / sum(plan.kind_weights)
    lo, hi = np.log(plan.min_business_days), np.log(plan.max_business_days + 1)
    gaps: list[PlannedGap] = []
    for contact in chosen:
        n = 1 + int(plan.max_per_contact > 1 and rng.random() < plan.second_gap_share)
        taken: list[Window] = []
        for _ in range(min(n, plan.max_per_contact)):
            length = min(int(np.exp(rng.uniform(lo, hi))), plan.max_business_days)
            kind = str(GAP_KINDS[int(rng.choice(len(GAP_KINDS), p=weights))])
            loss = float(rng.uniform(*plan.partial_loss)) if kind == "partial" else 1.0
            window = _place(rng, n_bdays, max(length, plan.min_business_days), taken, margin=10)
            if window is not None:
                taken.append(window)
                gaps.append(PlannedGap(int(contact), kind, window, round(loss, 4)))
    archive: list[Window] = []
    for _ in range(plan.archive_gaps):
        length = int(rng.integers(plan.archive_business_days[0], plan.archive_business_days[1] + 1))
        window = _place(rng, n_bdays, length, archive, margin=10)
        if window is not None:
            archive.append(window)
            gaps.append(PlannedGap(-1, "archive", window, 1.0))
    return gaps


def apply_gaps(
    gaps: list[PlannedGap],
    calendar: Calendar,
    t_s: npt.NDArray[np.int64],
    contact: npt.NDArray[np.int64],
    direction: npt.NDArray[np.int8],
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.int64], list[int]]:
    """The gap each message is removed by (-1: kept) and each gap's count of messages removed.

    Gaps apply in order; a message already taken by an earlier gap counts for that gap only.
    """
    removed_by = np.full(len(t_s), -1, dtype=np.int64)
    counts: list[int] = []
    for i, gap in enumerate(gaps):
        first, last = gap.window.day_range(calendar)
        a, b = calendar.start_s + first * 86400, calendar.start_s + (last + 1) * 86400
        hit = (t_s >= a) & (t_s < b) & (removed_by < 0)
        if gap.kind != "archive":
            hit &= contact == gap.contact
        if gap.kind == "sent_only":
            hit &= direction == OUTGOING
        elif gap.kind == "received_only":
            hit &= direction == INCOMING
        elif gap.kind == "partial":
            idx = np.flatnonzero(hit)
            hit[idx[rng.random(len(idx)) >= gap.loss_fraction]] = False
        removed_by[hit] = i
        counts.append(int(hit.sum()))
    return removed_by, counts
