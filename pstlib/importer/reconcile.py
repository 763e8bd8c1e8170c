"""Reconciliation, one session's chain of custody: found = read = sent = acknowledged = verified.

* **found**: items the sources held (``sources.items_found``; a file that could not be opened at
  all is listed, its items unknown);
* **read**: items recorded as messages (an unreadable item is found but not read: listed);
* of those, duplicates and skipped items are *accounted* (not sent, on purpose, with the reason);
  the rest are **to send**;
* **sent**: handed to Dataverse under their deterministic activity id;
* **acknowledged**: Dataverse answered (``imported``, with the id it holds);
* **verified**: read back from Dataverse by :func:`verify_session` and found as sent.

:func:`reconcile_session` is a pure function of the session's loaded tables; every item that drops
out of the chain is a row of :attr:`Reconciliation.differences`. An assess session stops at *read*.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from pstlib.analytics.imports import require_columns
from pstlib.dataverse.mapping import normalise_messageid
from pstlib.errors import DataverseError
from pstlib.store import Store, load

log = logging.getLogger(__name__)

DIFFERENCE_COLUMNS = [
    "stage", "source_id", "path", "item_id", "dedupe_key", "activity_id", "outcome", "reason",
]
MESSAGE_COLUMNS = [
    "message_row_id", "source_id", "item_id", "dedupe_key", "outcome", "outcome_detail",
    "activity_id", "dataverse_id", "verified",
]
ACCOUNTED = ("duplicate", "skipped")


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The counts of the chain and every item missing from a link of it."""

    session_id: str
    target: str
    found: int
    read: int
    unreadable: int
    accounted: dict[str, int]  # duplicate / skipped: not sent, on purpose
    to_send: int
    sent: int | None
    acknowledged: int | None
    verified: int | None
    checked: int | None  # how many were read back (a sample, or all)
    differences: pd.DataFrame  # DIFFERENCE_COLUMNS, one row per item (or source) dropped

    @property
    def balanced(self) -> bool:
        """Nothing dropped out of the chain."""
        return self.differences.empty

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "target": self.target,
            "found": self.found,
            "read": self.read,
            "unreadable": self.unreadable,
            "accounted": self.accounted,
            "to_send": self.to_send,
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "verified": self.verified,
            "checked": self.checked,
            "balanced": self.balanced,
            "differences": len(self.differences),
        }


def reconcile_session(
    session: Mapping[str, Any],
    sources: pd.DataFrame,
    messages: pd.DataFrame,
    errors: pd.DataFrame,
) -> Reconciliation:
    """The chain of custody of one session from its rows (pure; nothing is modified).

    ``sources`` needs ``source_id``, ``path``, ``status``, ``items_found``, ``error``;
    ``messages`` the :data:`MESSAGE_COLUMNS`; ``errors`` ``stage``, ``source_id``, ``item``,
    ``cause``. Returns counts and the differences (:data:`DIFFERENCE_COLUMNS`).
    """
    require_columns("reconcile_session", sources, ["source_id", "path", "status", "items_found"])
    require_columns("reconcile_session", messages, MESSAGE_COLUMNS)
    require_columns("reconcile_session", errors, ["stage", "source_id", "item", "cause"])
    target = str(session["target"])
    paths = sources.set_index("source_id")["path"]
    outcome = messages["outcome"].astype("string")
    read_errors = errors[errors["stage"].astype("string") == "read"]

    # files that could not be opened: their items are unknown
    unopened = (
        sources[sources["status"].astype("string") == "failed"]
        .assign(stage="open", reason=lambda f: f.get("error", "not opened"))
        .reindex(columns=DIFFERENCE_COLUMNS)
    )
    # items found but unreadable
    unreadable = (
        read_errors.rename(columns={"item": "item_id", "cause": "reason"})
        .assign(stage="read", path=lambda f: f["source_id"].map(paths))
        .reindex(columns=DIFFERENCE_COLUMNS)
    )
    # items a source counted that are neither recorded nor unreadable (a run stopped mid-file)
    per_source = (
        sources.set_index("source_id")["items_found"].astype("Float64").fillna(0)
        .sub(messages.groupby("source_id").size().reindex(paths.index, fill_value=0))
        .sub(read_errors.groupby("source_id").size().reindex(paths.index, fill_value=0))
    )
    unrecorded = (
        per_source[per_source > 0].rename("missing").reset_index()
        .assign(
            stage="read",
            path=lambda f: f["source_id"].map(paths),
            reason=lambda f: f["missing"].astype(int).astype(str) + " item(s) found, not recorded",
        )
        .reindex(columns=DIFFERENCE_COLUMNS)
    )
    frames = [unopened, unreadable, unrecorded]

    accounted = {o: int((outcome == o).sum()) for o in ACCOUNTED}
    intended = messages[~outcome.isin(ACCOUNTED)]
    sent = acknowledged = verified = checked = None
    if target == "dataverse":
        was_sent = intended["activity_id"].notna()
        acked = (intended["outcome"].astype("string") == "imported") & intended[
            "dataverse_id"
        ].notna()
        verified_flag = intended["verified"].astype("boolean")
        sent, acknowledged = int(was_sent.sum()), int(acked.sum())
        checked = int((acked & verified_flag.notna()).sum())
        verified = int((acked & verified_flag.fillna(False)).sum())

        def dropped(mask: pd.Series, stage: str, default: str) -> pd.DataFrame:
            return (
                intended[mask]
                .assign(
                    stage=stage,
                    path=lambda f: f["source_id"].map(paths),
                    reason=lambda f: f["outcome_detail"].fillna(default),
                )
                .reindex(columns=DIFFERENCE_COLUMNS)
            )

        frames += [
            dropped(~was_sent, "send", "not sent"),
            dropped(was_sent & ~acked, "acknowledge", "no acknowledgement"),
            dropped(acked & (verified_flag == False), "verify", "not found as sent"),  # noqa: E712
        ]
    differences = pd.concat(
        [f.astype(object) for f in frames if not f.empty]
        or [pd.DataFrame(columns=DIFFERENCE_COLUMNS)],
        ignore_index=True,
    )
    return Reconciliation(
        session_id=str(session["session_id"]),
        target=target,
        found=int(sources["items_found"].fillna(0).sum()),
        read=len(messages),
        unreadable=len(read_errors),
        accounted=accounted,
        to_send=len(intended),
        sent=sent,
        acknowledged=acknowledged,
        verified=verified,
        checked=checked,
        differences=differences,
    )


def reconcile(store: Store, session_id: str) -> Reconciliation:
    """Load one session's rows from ``store`` and reconcile them."""
    return reconcile_session(
        store.get_session(session_id),
        load.load_sources(store, session_id),
        load.load_messages(store, session_id, columns=MESSAGE_COLUMNS),
        load.load_errors(store, session_id),
    )


class EmailReader(Protocol):
    """What :func:`verify_session` needs of :class:`~pstlib.dataverse.DataverseClient`."""

    def get_emails(
        self,
        activity_ids: Iterable[str],
        *,
        select: Sequence[str] | None = None,
        on_error: Callable[[str, DataverseError], None] | None = None,
    ) -> dict[str, dict[str, Any] | None]: ...


def verify_session(
    store: Store,
    session_id: str,
    client: EmailReader,
    *,
    sample: int | None = None,
    seed: int = 0,
) -> Reconciliation:
    """Read imported emails back from Dataverse and record ``verified`` for each; reconcile.

    An email is verified when Dataverse holds a row with its activity id and (where the message
    has one) the same ``messageid``. ``sample`` reads back only that many (seeded random choice).
    The rows are read many per request (:meth:`~pstlib.dataverse.DataverseClient.get_emails`:
    ``GET`` operations in ``$batch`` requests), so even a large session stays far below the
    "number of requests" limit. A read that fails is recorded as an error (stage ``verify``) and
    leaves the message unchecked.
    """
    rows = load.load_messages(
        store,
        session_id,
        columns=["message_row_id", "internet_message_id", "outcome", "dataverse_id"],
    )
    imported = rows[
        (rows["outcome"].astype("string") == "imported") & rows["dataverse_id"].notna()
    ]
    chosen = list(
        zip(
            imported["message_row_id"].astype(int),
            imported["dataverse_id"].astype(str),
            imported["internet_message_id"].astype(object),
            strict=True,
        )
    )
    if sample is not None and sample < len(chosen):
        chosen = random.Random(seed).sample(chosen, sample)

    errors: dict[str, DataverseError] = {}
    found = client.get_emails(
        [activity_id for _, activity_id, _ in chosen],
        select=["activityid", "messageid"],
        on_error=errors.__setitem__,
    )
    updates: list[dict[str, Any]] = []
    failures: list[tuple[int, DataverseError]] = []
    for row_id, activity_id, expected in chosen:
        if activity_id not in found:
            failures.append(
                (row_id, errors.get(activity_id) or DataverseError(0, "not_read", activity_id))
            )
            continue
        row = found[activity_id]
        if row is None:
            updates.append({"message_row_id": row_id, "verified": False})
            continue
        want = normalise_messageid(expected if isinstance(expected, str) else None)
        got = normalise_messageid(row.get("messageid"))
        updates.append({"message_row_id": row_id, "verified": want is None or want == got})
    with store.writer(session_id) as writer:
        for row_id, err in failures:
            writer.add_error("verify", err, item=str(row_id))
        writer.flush()
        if updates:
            writer.update_outcomes(updates)
    return reconcile(store, session_id)
