"""The cast of a synthetic mailbox: who writes to the owner, how often, and how fast they answer.

:func:`build_people` returns one row per correspondent (never the owner) with the parameters that
generate their mail. Names come from small lists, some with non-ASCII letters; company domains are
Microsoft's fictional companies (contoso, fabrikam, ...) so that nothing points at a real mailbox.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from pstlib.models import SENDER_CLASSES
from pstlib.synth.config import SynthConfig

FIRST_NAMES: tuple[tuple[str, str], ...] = (
    ("Adele", "adele"),
    ("Ben", "ben"),
    ("Chloe", "chloe"),
    ("Daniel", "daniel"),
    ("Emma", "emma"),
    ("Farid", "farid"),
    ("Grace", "grace"),
    ("Hiro", "hiro"),
    ("Isabel", "isabel"),
    ("Jonas", "jonas"),
    ("Karen", "karen"),
    ("Liam", "liam"),
    ("Maya", "maya"),
    ("Noah", "noah"),
    ("Olivia", "olivia"),
    ("Priya", "priya"),
    ("Quentin", "quentin"),
    ("Rosa", "rosa"),
    ("Samuel", "samuel"),
    ("Tara", "tara"),
    ("Umar", "umar"),
    ("Vera", "vera"),
    ("Wei", "wei"),
    ("Yara", "yara"),
)
FIRST_NAMES_INTL: tuple[tuple[str, str], ...] = (
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Björn", "bjorn"),
    ("Łukasz", "lukasz"),
    ("Søren", "soren"),
    ("François", "francois"),
    ("Ólafur", "olafur"),
    ("Ağca", "agca"),
    ("Јована", "jovana"),
    ("美咲", "misaki"),
)
LAST_NAMES: tuple[tuple[str, str], ...] = (
    ("Adams", "adams"),
    ("Baker", "baker"),
    ("Chen", "chen"),
    ("Diaz", "diaz"),
    ("Evans", "evans"),
    ("Fischer", "fischer"),
    ("Garcia", "garcia"),
    ("Hughes", "hughes"),
    ("Ito", "ito"),
    ("Jensen", "jensen"),
    ("Khan", "khan"),
    ("Larsen", "larsen"),
    ("Moreau", "moreau"),
    ("Nakamura", "nakamura"),
    ("Okafor", "okafor"),
    ("Patel", "patel"),
    ("Rossi", "rossi"),
    ("Silva", "silva"),
    ("Turner", "turner"),
    ("Vargas", "vargas"),
)
LAST_NAMES_INTL: tuple[tuple[str, str], ...] = (
    ("Müller", "muller"),
    ("Núñez", "nunez"),
    ("Østergaard", "ostergaard"),
    ("Wójcik", "wojcik"),
    ("Çelik", "celik"),
    ("Dvořák", "dvorak"),
    ("O'Brien", "obrien"),
    ("Иванова", "ivanova"),
    ("山田", "yamada"),
)
COMPANIES: tuple[str, ...] = (
    "fabrikam.com",
    "adventure-works.com",
    "northwindtraders.com",
    "tailspintoys.com",
    "wingtiptoys.com",
    "woodgrovebank.com",
    "alpineskihouse.com",
    "adatum.com",
    "treyresearch.net",
    "margiestravel.com",
    "humongousinsurance.com",
    "cohovineyard.com",
    "blueyonderairlines.com",
    "relecloud.com",
    "fourthcoffee.com",
    "lucernepublishing.com",
    "wideworldimporters.com",
    "southridgevideo.com",
    "cpandl.com",
    "graphicdesigninstitute.com",
)
VENDORS: tuple[str, ...] = (
    "litware.com",
    "proseware.com",
    "lamnahealthcare.com",
    "consolidatedmessenger.com",
    "fineartschool.net",
    "baldwinmuseumofscience.com",
    "thephone-company.com",
    "firstupconsultants.com",
)
VENDOR_MAILBOXES: tuple[str, ...] = ("sales", "billing", "accounts", "support", "orders")
NEWSLETTERS: tuple[str, ...] = ("weekly", "digest", "insights", "briefing", "update", "news")
AUTOMATED: tuple[tuple[str, str], ...] = (
    ("no-reply", "No Reply"),
    ("notifications", "Notifications"),
    ("alerts", "Alerts"),
    ("noreply", "Service Desk"),
    ("do-not-reply", "Reports"),
)
ONE_OFF_DOMAINS: tuple[str, ...] = ("example.com", "example.net", "example.org")
UTC_OFFSETS_MIN: tuple[int, ...] = (-480, -300, -240, 0, 60, 120, 180, 330, 480, 540, 600)
ROLES: dict[str, tuple[str, ...]] = {
    "internal_colleague": (
        "Engineer",
        "Analyst",
        "Account Manager",
        "Director",
        "Assistant",
        "Consultant",
    ),
    "key_external": ("Customer Sponsor", "Partner Lead", "Buyer", "CFO"),
    "external": ("Customer", "Partner", "Consultant", "Recruiter", "Auditor"),
    "vendor": ("Supplier",),
    "newsletter": ("Newsletter",),
    "automated": ("System",),
    "one_off": ("Unknown",),
}
# class -> (rate multiplier, sent share, owner reply prob, contact reply prob, importance low, high)
CLASS_PARAMS: dict[str, tuple[float, float, float, float, float, float]] = {
    "internal_colleague": (1.5, 0.45, 0.35, 0.40, 0.3, 0.8),
    "key_external": (3.0, 0.50, 0.55, 0.50, 0.75, 1.0),
    "external": (0.6, 0.40, 0.30, 0.35, 0.1, 0.6),
    "vendor": (0.4, 0.20, 0.10, 0.30, 0.1, 0.4),
    "newsletter": (0.0, 0.0, 0.0, 0.0, 0.05, 0.05),
    "automated": (0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "one_off": (0.0, 0.0, 0.30, 0.50, 0.0, 0.1),
}
HUMAN_CLASSES = frozenset({"internal_colleague", "key_external", "external", "vendor", "one_off"})


def _class_counts(config: SynthConfig) -> list[int]:
    """Split ``config.contacts`` by the share weights (largest remainder, so they sum exactly)."""
    w = np.asarray(config.class_shares, dtype=float)
    raw = w / w.sum() * config.contacts
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: config.contacts - int(counts.sum())]] += 1
    return [int(c) for c in counts] + [config.one_off_count]


def _person_name(rng: np.random.Generator, intl_share: float) -> tuple[str, str, str]:
    """(display name, ascii first, ascii last)."""
    firsts = FIRST_NAMES_INTL if rng.random() < intl_share else FIRST_NAMES
    lasts = LAST_NAMES_INTL if rng.random() < intl_share else LAST_NAMES
    first = firsts[int(rng.integers(len(firsts)))]
    last = lasts[int(rng.integers(len(lasts)))]
    return f"{first[0]} {last[0]}", first[1], last[1]


def build_people(config: SynthConfig, rng: np.random.Generator) -> pd.DataFrame:
    """One row per correspondent: identity, class, and the parameters of their mail.

    Returns columns ``address, name, first_name, sender_class, role, importance, domain,
    utc_offset_min, base_rate_per_business_day, sent_share, dispersion_shape, trend_log_per_year,
    change_day, change_factor, newsletter_weekday, owner_reply_prob, contact_reply_prob`` and the
    reply-delay mixtures
    ``{owner,contact}_delay_{fast_share,fast_mu,fast_sigma,slow_mu,slow_sigma}``
    (log-seconds); ``change_day`` is a day index into the period (-1: no change point).
    """
    taken = {config.owner_address_normalised}
    rows: list[dict[str, object]] = []
    companies = np.asarray(COMPANIES)
    company_w = 1.0 / np.arange(1, len(companies) + 1)  # a few big customers, a long tail
    company_w /= company_w.sum()

    def unique(local: str, domain: str) -> str:
        address, n = f"{local}@{domain}", 1
        while address in taken:
            n += 1
            address = f"{local}{n}@{domain}"
        taken.add(address)
        return address

    for cls, count in zip(SENDER_CLASSES, _class_counts(config), strict=True):
        for _ in range(count):
            display, first_ascii, last_ascii = _person_name(rng, config.non_ascii_name_share)
            first = display.split(" ")[0]
            offset = int(rng.choice(UTC_OFFSETS_MIN))
            if cls == "internal_colleague":
                domain = config.internal_domain
                offset = config.owner_utc_offset_min if rng.random() < 0.8 else offset
                address = unique(f"{first_ascii}.{last_ascii}", domain)
            elif cls in ("key_external", "external"):
                domain = str(rng.choice(companies, p=company_w))
                address = unique(f"{first_ascii}.{last_ascii}", domain)
            elif cls == "vendor":
                domain = str(rng.choice(VENDORS))
                if rng.random() < 0.5:
                    local = str(rng.choice(VENDOR_MAILBOXES))
                    display = f"{domain.split('.')[0].title()} {local.title()}"
                    first = display
                else:
                    local = f"{first_ascii}.{last_ascii}"
                address = unique(local, domain)
            elif cls == "newsletter":
                company = str(rng.choice(companies[:8]))
                domain = f"news.{company}"
                local = str(rng.choice(NEWSLETTERS))
                address = unique(local, domain)
                display = f"{company.split('.')[0].title()} {local.title()}"
                first = display
            elif cls == "automated":
                local, label = AUTOMATED[int(rng.integers(len(AUTOMATED)))]
                base = config.internal_domain if rng.random() < 0.4 else str(rng.choice(companies))
                domain = f"{rng.choice(('notifications', 'alerts', 'it', 'mail'))}.{base}"
                address = unique(local, domain)
                display = f"{base.split('.')[0].title()} {label}"
                first = display
            else:  # one_off
                domain = str(rng.choice(ONE_OFF_DOMAINS))
                address = unique(f"{first_ascii}.{last_ascii}", domain)
            rows.append(
                {
                    "address": address,
                    "name": display,
                    "first_name": first,
                    "sender_class": cls,
                    "role": str(rng.choice(ROLES[cls])),
                    "domain": domain,
                    "utc_offset_min": offset,
                }
            )
    people = pd.DataFrame(rows)
    return people.assign(**_rate_parameters(people["sender_class"].to_numpy(), config, rng))


def _rate_parameters(
    classes: npt.NDArray[np.object_], config: SynthConfig, rng: np.random.Generator
) -> dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]]:
    """The generating parameters per correspondent, vectorised over the class column."""
    n = len(classes)
    params = np.array([CLASS_PARAMS[c] for c in classes], dtype=float).reshape(n, 6)
    mult, sent_share, p_owner, p_contact, imp_lo, imp_hi = params.T
    is_news = classes == "newsletter"
    is_auto = classes == "automated"
    is_one_off = classes == "one_off"
    steady = ~(is_news | is_auto | is_one_off)

    importance = imp_lo + (imp_hi - imp_lo) * rng.random(n)
    lognormal = np.exp(rng.normal(0.0, config.rate_sigma, n))
    rate = config.rate_median_per_business_day * mult * lognormal * (0.6 + 0.8 * importance)
    # newsletters: weekly (one issue per week) or daily on weekdays; automated: heavy-tailed
    rate = np.where(is_news, np.where(rng.random(n) < 0.7, 0.2, 1.0), rate)
    rate = np.where(is_auto, 0.3 * np.exp(rng.normal(0.0, 1.2, n)), rate)
    rate = np.where(is_one_off, 0.0, rate)

    lo, hi = config.dispersion_range
    shape = np.where(steady, lo + (hi - lo) * rng.random(n), np.where(is_auto, 1.0, 1e6))
    sent = np.clip(sent_share + rng.normal(0.0, 0.08, n), 0.05, 0.8) * steady
    trend = np.where(steady | is_auto, rng.normal(0.0, config.trend_sigma_per_year, n), 0.0)

    days = max(round(config.years * 365.25), 1)
    has_change = (rng.random(n) < config.change_point_share) & ~is_one_off & (days >= 30)
    change_day = np.where(has_change, rng.integers(int(0.15 * days), int(0.85 * days) + 1, n), -1)
    change_factor = np.where(
        has_change, np.clip(np.exp(rng.normal(0.0, config.change_factor_sigma, n)), 0.2, 5.0), 1.0
    )

    def jitter(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.where(p > 0, np.clip(p + rng.normal(0.0, 0.08, n), 0.02, 0.95), 0.0)

    out: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64]] = {
        "importance": np.round(importance, 3),
        "base_rate_per_business_day": rate,
        "sent_share": sent,
        "dispersion_shape": shape,
        "trend_log_per_year": trend,
        "change_day": change_day.astype(np.int64),
        "change_factor": change_factor,
        "newsletter_weekday": np.where(is_news & (rate < 0.5), rng.integers(0, 5, n), -1),
        "owner_reply_prob": jitter(p_owner),
        "contact_reply_prob": jitter(p_contact),
    }
    # reply delays: a log-normal mixture, fast (minutes) and slow (hours to days); the owner answers
    # important people faster
    for side, speed in (("owner", 1.0 - 0.5 * importance), ("contact", np.ones(n))):
        out[f"{side}_delay_fast_share"] = np.clip(
            0.55 + 0.3 * rng.random(n) - 0.15 * (speed - 0.75), 0.3, 0.9
        )
        out[f"{side}_delay_fast_mu"] = np.log(60.0 * (8.0 + 25.0 * rng.random(n)) * (0.5 + speed))
        out[f"{side}_delay_fast_sigma"] = 0.6 + 0.4 * rng.random(n)
        out[f"{side}_delay_slow_mu"] = np.log(3600.0 * (3.0 + 20.0 * rng.random(n)) * (0.5 + speed))
        out[f"{side}_delay_slow_sigma"] = 0.8 + 0.5 * rng.random(n)
    return out
