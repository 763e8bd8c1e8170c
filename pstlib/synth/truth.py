"""The ground truth of a synthetic mailbox, and its ``truth.json`` form.

:class:`GroundTruth` holds four tables and a small ``meta`` dict:

``contacts``     one row per correspondent: identity, ``sender_class``, the generating rate
                 parameters, messages generated/kept by direction, ``retained_fraction`` (kept /
                 generated before any gap) and the true reply delays (from the kept reply pairs).
``gaps``         one row per planted gap: ``gap_id, contact_address`` (None: archive-wide),
                 ``kind, start_date, end_date`` (inclusive, UTC days), ``business_days,
                 loss_fraction, messages_removed, expected_messages_missed``.
``vacations``    one row per owner vacation: dates, ``business_days, received_messages,
                 sent_messages`` (excluding auto-replies: always 0) and ``auto_replies``.
``reply_pairs``  one row per reply whose parent and reply are both in the mailbox:
                 ``parent_message_id, reply_message_id, delay_s, replier`` (owner | contact),
                 ``replier_address, contact_address``. Auto-replies are not reply pairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pstlib.synth.config import SynthConfig
from pstlib.synth.gaps import PlannedGap, Window
from pstlib.synth.rates import Calendar, holiday_factors, weekly_profiles

TRUTH_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class GroundTruth:
    meta: dict[str, Any]
    contacts: pd.DataFrame
    gaps: pd.DataFrame
    vacations: pd.DataFrame
    reply_pairs: pd.DataFrame

    @property
    def sender_classes(self) -> dict[str, str]:
        """address -> class (``owner`` for the mailbox owner)."""
        classes = dict(zip(self.contacts["address"], self.contacts["sender_class"], strict=True))
        return {self.meta["owner_address"]: "owner", **classes}

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form written as ``truth.json`` (NaN -> null)."""
        return {
            "schema_version": TRUTH_SCHEMA_VERSION,
            "meta": self.meta,
            "sender_classes": self.sender_classes,
            "contacts": _records(self.contacts),
            "gaps": _records(self.gaps),
            "vacations": _records(self.vacations),
            "reply_pairs": _records(self.reply_pairs),
        }

    def write_json(self, path: Path) -> Path:
        """Write :meth:`to_dict` as JSON: one top-level key per line, one table row per line."""
        parts = []
        for key, value in self.to_dict().items():
            if isinstance(value, list) and value:
                rows = ",\n  ".join(json.dumps(v, ensure_ascii=False) for v in value)
                parts.append(f" {json.dumps(key)}: [\n  {rows}\n ]")
            else:
                parts.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
        path.write_text("{\n" + ",\n".join(parts) + "\n}\n", encoding="utf-8")
        return path


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", double_precision=10))
    return records


def load_truth(path: Path | str) -> GroundTruth:
    """Read a ``truth.json`` written by :func:`pstlib.synth.write_mailbox` back into tables."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    tables = {
        name: pd.DataFrame.from_records(
            data[name], columns=list(data[name][0]) if data[name] else None
        )
        for name in ("contacts", "gaps", "vacations", "reply_pairs")
    }
    return GroundTruth(data["meta"], **tables)


def build_truth(
    config: SynthConfig,
    people: pd.DataFrame,
    cal: Calendar,
    vacations: list[Window],
    gaps: list[PlannedGap],
    removed_counts: list[int],
    kept: pd.DataFrame,
    removed: pd.DataFrame,
    exp_in: npt.NDArray[np.float64],
    exp_out: npt.NDArray[np.float64],
) -> GroundTruth:
    """The truth tables from the kept and the removed messages."""
    pairs = _reply_pairs(kept)
    meta = {
        "seed": config.seed,
        "owner_address": config.owner_address_normalised,
        "owner_name": config.owner_name,
        "start_date": cal.start.isoformat(),
        "end_date": cal.date_of(cal.days - 1).isoformat(),
        "days": cal.days,
        "business_days": int(cal.is_business.sum()),
        "holidays": [{"date": d.isoformat(), "name": n} for d, n in cal.holiday_names.items()],
        "messages_generated": len(kept) + len(removed),
        "messages_kept": len(kept),
        "messages_removed": len(removed),
        "times": "UTC; a day is a UTC calendar day; gap and vacation end dates are inclusive",
        "config": config.to_dict(),
    }
    return GroundTruth(
        meta,
        _contacts(config, people, cal, kept, removed, pairs, exp_in, exp_out),
        _gaps(people, cal, gaps, removed_counts, exp_in, exp_out),
        _vacations(cal, vacations, kept),
        pairs,
    )


def _reply_pairs(kept: pd.DataFrame) -> pd.DataFrame:
    replies = kept.loc[kept["message_kind"] == "reply"]
    parents = kept[["message_id", "sent_at_utc"]].rename(
        columns={"message_id": "parent_message_id", "sent_at_utc": "parent_sent_at_utc"}
    )
    return (
        replies.merge(
            parents, left_on="in_reply_to", right_on="parent_message_id"
        )  # kept parents only
        .assign(
            delay_s=lambda d: (
                (d["sent_at_utc"] - d["parent_sent_at_utc"]).dt.total_seconds().astype("int64")
            ),
            replier=lambda d: np.where(d["direction"] == "outgoing", "owner", "contact"),
        )
        .rename(columns={"message_id": "reply_message_id", "sender_address": "replier_address"})
        .sort_values("reply_message_id")[
            [
                "parent_message_id",
                "reply_message_id",
                "delay_s",
                "replier",
                "replier_address",
                "contact_address",
            ]
        ]
        .reset_index(drop=True)
    )


def _contacts(
    config: SynthConfig,
    people: pd.DataFrame,
    cal: Calendar,
    kept: pd.DataFrame,
    removed: pd.DataFrame,
    pairs: pd.DataFrame,
    exp_in: npt.NDArray[np.float64],
    exp_out: npt.NDArray[np.float64],
) -> pd.DataFrame:
    def counts(df: pd.DataFrame, direction: str) -> pd.Series:
        return (
            df.loc[df["direction"] == direction, "contact_address"]
            .value_counts()
            .reindex(people["address"], fill_value=0)
            .reset_index(drop=True)
        )

    stats = (
        pairs.groupby(["contact_address", "replier"])["delay_s"]
        .agg(["count", "median", "mean"])
        .unstack("replier")
    )
    reply_cols: dict[str, pd.Series] = {}
    for side in ("owner", "contact"):
        for agg, label in (("count", "count"), ("median", "median_s"), ("mean", "mean_s")):
            series = stats[(agg, side)] if (agg, side) in stats.columns else pd.Series(dtype=float)
            values = series.reindex(people["address"]).reset_index(drop=True)
            reply_cols[f"{side}_reply_{label}"] = (
                values.fillna(0).astype("int64") if agg == "count" else values
            )
    change_day = people["change_day"].to_numpy()
    profile = weekly_profiles(people, config)
    frame_out = people.drop(columns=["first_name", "change_day", "newsletter_weekday"]).assign(
        weekly_profile=pd.Series(
            [[round(float(x), 4) for x in row] for row in profile], dtype=object
        ),
        holiday_factor=holiday_factors(people, config),
        change_point_date=pd.Series(
            [cal.date_of(int(d)).isoformat() if d >= 0 else None for d in change_day], dtype=object
        ),
        incoming_generated=counts(kept, "incoming") + counts(removed, "incoming"),
        outgoing_generated=counts(kept, "outgoing") + counts(removed, "outgoing"),
        incoming_kept=counts(kept, "incoming"),
        outgoing_kept=counts(kept, "outgoing"),
        expected_incoming=exp_in.sum(axis=1),
        expected_outgoing=exp_out.sum(axis=1),
        **reply_cols,
    )
    generated = frame_out["incoming_generated"] + frame_out["outgoing_generated"]
    retained = frame_out["incoming_kept"] + frame_out["outgoing_kept"]
    return frame_out.assign(
        messages_generated=generated,
        messages_kept=retained,
        retained_fraction=(retained / generated.where(generated > 0)),
    )


def _gaps(
    people: pd.DataFrame,
    cal: Calendar,
    gaps: list[PlannedGap],
    removed_counts: list[int],
    exp_in: npt.NDArray[np.float64],
    exp_out: npt.NDArray[np.float64],
) -> pd.DataFrame:
    rows = []
    address = people["address"].tolist()
    classes = people["sender_class"].tolist()
    for i, (gap, removed) in enumerate(zip(gaps, removed_counts, strict=True)):
        first, last = gap.window.day_range(cal)
        span = slice(first, last + 1)
        if gap.kind == "archive":
            expected = float(exp_in[:, span].sum() + exp_out[:, span].sum())
        else:
            take_in = gap.kind in ("full", "partial", "received_only")
            take_out = gap.kind in ("full", "partial", "sent_only")
            expected = float(
                take_in * exp_in[gap.contact, span].sum()
                + take_out * exp_out[gap.contact, span].sum()
            )
        rows.append(
            {
                "gap_id": i,
                "contact_address": address[gap.contact] if gap.contact >= 0 else None,
                "sender_class": classes[gap.contact] if gap.contact >= 0 else None,
                "kind": gap.kind,
                "start_date": cal.date_of(first).isoformat(),
                "end_date": cal.date_of(last).isoformat(),
                "business_days": gap.window.business_days,
                "calendar_days": last - first + 1,
                "loss_fraction": gap.loss_fraction,
                "messages_removed": removed,
                "expected_messages_missed": expected * gap.loss_fraction,
            }
        )
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def _vacations(cal: Calendar, vacations: list[Window], kept: pd.DataFrame) -> pd.DataFrame:
    rows = []
    t = kept["sent_at_utc"]
    for i, w in enumerate(vacations):
        first, last = w.day_range(cal)
        a = pd.Timestamp(cal.date_of(first), tz="UTC")
        b = pd.Timestamp(cal.date_of(last + 1), tz="UTC")
        inside = kept.loc[(t >= a) & (t < b)]
        outgoing = inside["direction"] == "outgoing"
        auto = inside["message_kind"] == "auto_reply"
        rows.append(
            {
                "vacation_id": i,
                "start_date": cal.date_of(first).isoformat(),
                "end_date": cal.date_of(last).isoformat(),
                "business_days": w.business_days,
                "calendar_days": last - first + 1,
                "received_messages": int((~outgoing).sum()),
                "sent_messages": int((outgoing & ~auto).sum()),
                "auto_replies": int(auto.sum()),
            }
        )
    return pd.DataFrame(rows, columns=VACATION_COLUMNS)


GAP_COLUMNS = [
    "gap_id",
    "contact_address",
    "sender_class",
    "kind",
    "start_date",
    "end_date",
    "business_days",
    "calendar_days",
    "loss_fraction",
    "messages_removed",
    "expected_messages_missed",
]
VACATION_COLUMNS = [
    "vacation_id",
    "start_date",
    "end_date",
    "business_days",
    "calendar_days",
    "received_messages",
    "sent_messages",
    "auto_replies",
]
