"""The generator's settings: one frozen :class:`SynthConfig` (with its :class:`GapPlan`).

Every knob has a default that gives a plausible office mailbox; one seed with one config gives
byte-identical output. Rates are in messages per *business day* (Mon-Fri, not a public holiday).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any

from pstlib.errors import ConfigError

GAP_KINDS = ("full", "partial", "sent_only", "received_only")


@dataclass(frozen=True, slots=True)
class GapPlan:
    """Which holes to plant in the archive.

    ``contact_share`` of the contacts with a steady relationship (every class but ``one_off``) get
    one planted gap, and a further one with ``second_gap_share`` (up to ``max_per_contact``). The
    contacts are drawn without replacement with weights ``base_rate ** volume_weighting``: at the
    default 1 a busy correspondent is likelier to lose mail (a lost folder or export holds more of
    a busy contact's mail, and only there can a gap be told from chance); 0 draws uniformly.
    A gap's length is log-uniform in ``[min_business_days, max_business_days]``; its kind is
    drawn with ``kind_weights`` (``full``, ``partial``, ``sent_only``, ``received_only``); a
    partial gap loses each message in its window with a probability drawn uniformly from
    ``partial_loss``.
    ``archive_gaps`` archive-wide holes (every contact, both directions: a lost PST or folder
    period) are planted on top, with lengths uniform in ``archive_business_days``.
    """

    contact_share: float = 0.3
    second_gap_share: float = 0.25
    max_per_contact: int = 2
    volume_weighting: float = 1.0
    min_business_days: int = 1
    max_business_days: int = 60
    kind_weights: tuple[float, float, float, float] = (0.35, 0.25, 0.2, 0.2)
    partial_loss: tuple[float, float] = (0.3, 0.9)
    archive_gaps: int = 1
    archive_business_days: tuple[int, int] = (3, 20)

    def __post_init__(self) -> None:
        if not 0.0 <= self.contact_share <= 1.0 or not 0.0 <= self.second_gap_share <= 1.0:
            raise ConfigError("GapPlan shares must lie in [0, 1]")
        if self.volume_weighting < 0:
            raise ConfigError("GapPlan.volume_weighting must be >= 0")
        if not 1 <= self.min_business_days <= self.max_business_days:
            raise ConfigError("GapPlan needs 1 <= min_business_days <= max_business_days")
        if len(self.kind_weights) != len(GAP_KINDS) or min(self.kind_weights) < 0:
            raise ConfigError(f"GapPlan.kind_weights needs {len(GAP_KINDS)} weights >= 0")
        if sum(self.kind_weights) <= 0:
            raise ConfigError("GapPlan.kind_weights must not all be zero")
        lo, hi = self.partial_loss
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError("GapPlan.partial_loss needs 0 < low <= high <= 1")
        if (
            self.archive_gaps < 0
            or not 1 <= self.archive_business_days[0] <= self.archive_business_days[1]
        ):
            raise ConfigError("GapPlan archive gaps need a count >= 0 and 1 <= low <= high days")


@dataclass(frozen=True, slots=True)
class SynthConfig:
    """Everything that shapes a synthetic mailbox. ``contacts`` counts every correspondent with a
    steady relationship (colleagues, externals, vendors, newsletters, automated senders), split by
    the ``share_*`` weights; ``one_offs`` senders who write once come on top (default
    ``contacts // 4``)."""

    seed: int = 0
    contacts: int = 200
    years: float = 2.0
    start_date: date = date(2023, 1, 2)
    owner_address: str = "alex.wilber@contoso.com"
    owner_name: str = "Alex Wilber"
    owner_utc_offset_min: int = 60
    internal_domain: str = "contoso.com"
    holiday_country: str = "US"
    holiday_subdivision: str | None = None
    # the mix of correspondents (normalised weights)
    share_colleagues: float = 0.30
    share_key_external: float = 0.08
    share_external: float = 0.40
    share_vendors: float = 0.08
    share_newsletters: float = 0.08
    share_automated: float = 0.06
    one_offs: int | None = None
    non_ascii_name_share: float = 0.15
    # daily volumes
    rate_median_per_business_day: float = 0.12
    rate_sigma: float = 1.0
    dispersion_range: tuple[float, float] = (0.5, 3.0)
    weekend_factor: float = 0.06
    holiday_factor: float = 0.05
    trend_sigma_per_year: float = 0.25
    change_point_share: float = 0.25
    change_factor_sigma: float = 0.7
    # the owner's time off
    vacations_per_year: float = 2.0
    vacation_business_days: tuple[int, int] = (5, 15)
    # threads
    reply_rounds: int = 3
    reply_decay: float = 0.5
    extra_to_share: float = 0.12
    cc_share: float = 0.25
    gaps: GapPlan = field(default_factory=GapPlan)

    def __post_init__(self) -> None:
        if self.contacts < 1:
            raise ConfigError("SynthConfig.contacts must be >= 1")
        if not 0.0 < self.years <= 50.0:
            raise ConfigError("SynthConfig.years must lie in (0, 50]")
        shares = self.class_shares
        if min(shares) < 0 or sum(shares) <= 0:
            raise ConfigError("SynthConfig share_* weights must be >= 0 and not all zero")
        if "@" not in self.owner_address:
            raise ConfigError(f"SynthConfig.owner_address is no address: {self.owner_address!r}")
        if self.one_offs is not None and self.one_offs < 0:
            raise ConfigError("SynthConfig.one_offs must be >= 0")
        lo, hi = self.vacation_business_days
        if self.vacations_per_year < 0 or not 1 <= lo <= hi:
            raise ConfigError("SynthConfig vacations need a rate >= 0 and 1 <= low <= high days")
        if self.reply_rounds < 0 or not 0.0 <= self.reply_decay <= 1.0:
            raise ConfigError("SynthConfig needs reply_rounds >= 0 and reply_decay in [0, 1]")
        if not 0.0 < self.dispersion_range[0] <= self.dispersion_range[1]:
            raise ConfigError("SynthConfig.dispersion_range needs 0 < low <= high")

    @property
    def class_shares(self) -> tuple[float, ...]:
        """The weights of the steady classes, in :data:`SENDER_CLASSES` order (one_off excluded)."""
        return (
            self.share_colleagues,
            self.share_key_external,
            self.share_external,
            self.share_vendors,
            self.share_newsletters,
            self.share_automated,
        )

    @property
    def one_off_count(self) -> int:
        return self.contacts // 4 if self.one_offs is None else self.one_offs

    @property
    def owner_address_normalised(self) -> str:
        return self.owner_address.strip().lower()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (dates as ISO strings, the gap plan nested)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, date):
                value = value.isoformat()
            elif isinstance(value, GapPlan):
                value = {g.name: _jsonable(getattr(value, g.name)) for g in fields(value)}
            out[f.name] = _jsonable(value)
        return out


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
