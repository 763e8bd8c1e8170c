"""Who writes to the mailbox: sender profiles, classes, importance, reply times and trends.

Every function takes the store's ``messages`` (and, where it helps, ``recipients``) frames as
:mod:`pstlib.store.load` returns them, never mutates them, and returns a DataFrame. The mailbox
owner is ``owner_address`` where given, else the most frequent sender of ``outgoing`` mail.
Reply times come from :func:`pstlib.analytics.threading.reply_pairs`; pass ``pairs`` (and
``threads``) to reuse them, else they are computed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats  # type: ignore[import-untyped]

from pstlib.analytics.imports import require_columns
from pstlib.analytics.threading import (
    address_codes,
    flag_automated_messages,
    most_frequent,
    reply_pairs,
    text_array,
    thread_messages,
)
from pstlib.models import SENDER_CLASSES

__all__ = [
    "IMPORTANCE_WEIGHTS",
    "SENDER_CLASSES",
    "ClassificationRules",
    "classify_senders",
    "peak_times",
    "profile_senders",
    "volume_trends",
]

IMPORTANCE_WEIGHTS: dict[str, float] = {
    "volume": 0.4,
    "reciprocity": 0.2,
    "recency": 0.2,
    "replies": 0.2,
}
"""Weights of the four parts of :func:`profile_senders`' ``importance_score`` (they sum to 1)."""

DAY_S = 86_400.0
MONTH_DAYS = 365.25 / 12
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
ROLE_LOCAL_PART = (
    r"^(?:sales|billing|accounts?|accounting|invoices?|orders?|support|help|helpdesk|info"
    r"|service|customer[-_.]?service|customercare|quotes?|purchasing|ar|ap|payments?|shop|store)"
    r"(?:[-_.+\d].*)?$"
)
TRANSACTION_SUBJECT = (
    r"(?i)\b(?:invoice|quote|quotation|order|receipt|renewal|payment|purchase|remittance"
    r"|statement|subscription|shipment|delivery)\b"
)
MESSAGE_COLUMNS = [
    "message_row_id",
    "sender_address",
    "sent_at_utc",
    "subject",
    "auto_submitted",
    "precedence",
    "list_id",
    "list_unsubscribe",
]
THREAD_INPUT = [
    "internet_message_id",
    "in_reply_to",
    "references",
    "conversation_index",
    "conversation_topic",
]
FloatArray = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ClassificationRules:
    """The thresholds of :func:`classify_senders` (defaults calibrated on :mod:`pstlib.synth`).

    ``automated_share``: share of a sender's mail with ``Auto-Submitted`` (not ``no``) that makes
    it a machine. ``newsletter_share``: share that is bulk/list mail (``Precedence: bulk|list``,
    ``List-Id``, ``List-Unsubscribe``) that makes it a newsletter (``..._when_written_to`` when the
    owner has written to the sender: a vendor whose mail is mostly promotions stays a vendor).
    ``vendor_bulk_share``: a smaller share of bulk mail from an otherwise personal sender
    (promotions). ``vendor_subject_share``: share of a sender's own thread-starting mail with a
    transactional subject (invoice, quote, order...). ``rate_prior`` and ``rate_prior_weight``:
    reply rates are shrunk towards ``rate_prior`` as if ``rate_prior_weight`` more messages had been
    seen (three messages give no reliable rate). ``engagement_weights``: intercept and weights of
    the engagement logit (log relative volume, owner's reply rate, sender's reply rate), fitted by
    logistic regression on the key_external and external senders of six pstlib.synth mailboxes
    (seeds 1-5 with 150 contacts and seed 7 with 120, two years each: 97% of them right).
    """

    automated_share: float = 0.5
    newsletter_share: float = 0.5
    newsletter_share_when_written_to: float = 0.9
    vendor_bulk_share: float = 0.05
    vendor_subject_share: float = 0.3
    rate_prior: float = 0.35
    rate_prior_weight: float = 5.0
    engagement_weights: tuple[float, float, float, float] = (-12.5, 1.7, 14.4, 9.6)


# ---------------------------------------------------------------------------------------------
# shared pieces


def _owner_of(messages: pd.DataFrame, owner_address: str | None) -> str | None:
    """The owner's address: as given, else the most frequent sender of outgoing mail."""
    if owner_address:
        return owner_address.strip().lower()
    if "direction" not in messages.columns:
        return None
    outgoing = messages.loc[(messages["direction"] == "outgoing").fillna(False).to_numpy()]
    senders = outgoing["sender_address"].astype("string").str.strip().str.lower().dropna()
    return str(senders.mode().iloc[0]) if len(senders) else None


def _utc(value: object) -> pd.Timestamp:
    """A timestamp in UTC (a naive one is taken as UTC)."""
    stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _domain(addresses: pd.Series) -> pd.Series:
    # (the part after the last "@", the whole address without one; rpartition fails when empty)
    return addresses.astype("string").str.rsplit("@", n=1).str[-1].astype("string").str.lower()


def _when(messages: pd.DataFrame) -> pd.Series:
    when = messages["sent_at_utc"]
    if "received_at_utc" in messages.columns:
        when = when.fillna(messages["received_at_utc"])
    return when


def _threads_and_pairs(
    messages: pd.DataFrame, threads: pd.DataFrame | None, pairs: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    if threads is None:
        threads = thread_messages(messages)
    if pairs is None:
        pairs = reply_pairs(messages, threads)
    return threads, pairs


@dataclass(frozen=True)
class _Senders:
    """Every message's sender as a code into ``addresses`` (normalised, sorted; -1: none), worked
    out once and shared by the features, the names and the trends.

    Per-sender sums then are ``np.bincount`` over the codes rather than group-bys over a million
    address strings, and sorted codes keep the address order a group-by on the text would give.
    """

    code: I64
    addresses: pd.Index
    owner: int  # the owner's code, -1 when unknown or not a sender

    @classmethod
    def of(cls, messages: pd.DataFrame, owner: str | None) -> _Senders:
        raw, distinct = address_codes(messages["sender_address"])
        order = np.argsort(distinct.to_numpy(object), kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        code = np.where(raw >= 0, rank[np.maximum(raw, 0)] if len(rank) else 0, -1)
        addresses = pd.Index(distinct.to_numpy(object)[order], name="sender_address")
        at = addresses.get_indexer([owner]) if owner is not None else np.array([-1])
        return cls(code.astype(np.int64), addresses, int(at[0]))

    def codes_of(self, values: pd.Series) -> I64:
        """Codes of other addresses (recipients) in this sender space (-1: never a sender)."""
        raw, distinct = address_codes(values)
        known = self.addresses.get_indexer(pd.Index(distinct.to_numpy(object))).astype(np.int64)
        return np.where(raw >= 0, known[np.maximum(raw, 0)] if len(known) else -1, -1)

    def others(self) -> npt.NDArray[np.bool_]:
        """Which codes are senders other than the owner (the rows of every per-sender result)."""
        keep = np.ones(len(self.addresses), dtype=bool)
        if self.owner >= 0:
            keep[self.owner] = False
        return keep


def _thread_codes(messages: pd.DataFrame, threads: pd.DataFrame) -> I64:
    """Each message's thread as an integer (-1: none), matched by ``message_row_id``."""
    codes, _ = pd.factorize(threads["thread_id"])
    ids = messages["message_row_id"].to_numpy(np.int64)
    thread_ids = threads["message_row_id"].to_numpy(np.int64)
    if len(ids) == len(thread_ids) and np.array_equal(ids, thread_ids):
        return codes.astype(np.int64)
    at = pd.Index(thread_ids).get_indexer(ids)
    return np.where(at >= 0, codes[np.maximum(at, 0)] if len(codes) else -1, -1).astype(np.int64)


def _per_sender_times(code: I64, when: pd.Series, size: int) -> tuple[pd.Series, pd.Series]:
    """First and last ``when`` per sender code (NaT for none), as UTC timestamps."""
    frame = pd.DataFrame({"code": code, "when": when.array})
    grouped = frame.groupby("code")["when"]
    first = grouped.min().reindex(range(size))
    last = grouped.max().reindex(range(size))
    return first.reset_index(drop=True), last.reset_index(drop=True)


def _sender_features(
    messages: pd.DataFrame,
    recipients: pd.DataFrame | None,
    threads: pd.DataFrame,
    pairs: pd.DataFrame,
    owner: str | None,
    senders: _Senders | None = None,
) -> pd.DataFrame:
    """One row per sender (the owner left out), indexed by ``sender_address`` (sorted)."""
    senders = senders or _Senders.of(messages, owner)
    size = len(senders.addresses)
    flags = flag_automated_messages(messages)
    when = _when(messages).reset_index(drop=True)
    # the mail of each sender (the owner's own left out)
    code = senders.code
    mail = (code >= 0) & (code != senders.owner)
    mc = code[mail]
    count = np.bincount(mc, minlength=size)

    def share(flag: pd.Series) -> FloatArray:
        hits = np.bincount(mc, weights=flag.to_numpy(np.float64)[mail], minlength=size)
        return hits / np.maximum(count, 1)

    root = (threads["parent_message_row_id"].isna() & (threads["depth"] == 0)).to_numpy(bool)
    first_at, last_at = _per_sender_times(mc, when[mail], size)
    # transactional subjects among the threads a sender starts with personal (non-bulk) mail
    starter = mail & root & ~flags["is_bulk"].to_numpy(bool)
    # (RE2 straight over the subjects, as pandas' str.contains runs it on the Arrow-backed text:
    # subjects repeat too little for matching each distinct one once to pay for the hashing)
    subjects = text_array(messages["subject"]).filter(pa.array(starter))
    transactional = pc.fill_null(
        pc.match_substring_regex(subjects, TRANSACTION_SUBJECT), False
    ).to_numpy(zero_copy_only=False)
    started = np.bincount(code[starter], minlength=size)
    transactional_share = np.bincount(
        code[starter], weights=transactional.astype(np.float64), minlength=size
    )
    transactional_share = np.where(started > 0, transactional_share / np.maximum(started, 1), 0.0)
    # the owner's mail to each sender, and the threads they share
    thread = _thread_codes(messages, threads)
    to_code, to_at = _owner_mail_to(messages, recipients, senders)
    both = np.concatenate([mc, to_code])
    both_thread = np.concatenate([thread[mail], thread[to_at]])
    has = both_thread >= 0
    width = int(both_thread.max(initial=0)) + 1
    shared = pd.unique(both[has] * width + both_thread[has])  # (sender, thread) pairs
    thread_count = np.bincount(shared // width, minlength=size)
    sent_to_count = np.bincount(to_code, minlength=size)
    first_to, last_to = _per_sender_times(to_code, when.iloc[to_at], size)
    # replies: the owner's to this sender's mail, and this sender's to the owner's
    owner_side = pairs["replier_address"] == owner if owner else pd.Series(False, pairs.index)
    to_owner = pairs["parent_sender_address"] == owner if owner else pd.Series(True, pairs.index)
    by_owner = pairs[owner_side.to_numpy(bool)].groupby("parent_sender_address")["reply_delay_s"]
    by_sender = pairs[(~owner_side & to_owner).to_numpy(bool)].groupby("replier_address")[
        "reply_delay_s"
    ]
    index = senders.addresses
    features = pd.DataFrame(
        {
            "message_count": count,
            "first_message_at_utc": first_at.array,
            "last_message_at_utc": last_at.array,
            "auto_generated_share": share(flags["is_auto_generated"]),
            "bulk_share": share(flags["is_bulk"]),
            "noreply_address": share(flags["is_noreply_address"]) > 0,
            "threads_started": np.bincount(code[mail & root], minlength=size),
            "transactional_share": transactional_share,
            "thread_count": thread_count,
            "sent_to_count": sent_to_count,
            "first_sent_to_at_utc": first_to.array,
            "last_sent_to_at_utc": last_to.array,
        },
        index=index,
    )
    replies = pd.DataFrame(
        {
            "owner_reply_count": by_owner.size(),
            "owner_reply_delay_mean_s": by_owner.mean(),
            "owner_reply_delay_median_s": by_owner.median(),
            "sender_reply_count": by_sender.size(),
            "sender_reply_delay_mean_s": by_sender.mean(),
            "sender_reply_delay_median_s": by_sender.median(),
        }
    )
    replies = replies.set_axis(replies.index.astype(object)).reindex(index.astype(object))
    features = features.assign(**{c: replies[c].to_numpy() for c in replies.columns}).fillna(
        {"owner_reply_count": 0, "sender_reply_count": 0}
    )
    columns = [
        "message_count", "first_message_at_utc", "last_message_at_utc", "auto_generated_share",
        "bulk_share", "noreply_address", "threads_started", "transactional_share", "thread_count",
        "sent_to_count", "first_sent_to_at_utc", "last_sent_to_at_utc", "owner_reply_count",
        "owner_reply_delay_mean_s", "owner_reply_delay_median_s", "sender_reply_count",
        "sender_reply_delay_mean_s", "sender_reply_delay_median_s",
    ]  # fmt: skip
    return features.loc[senders.others() & (count > 0), columns].astype(
        {
            "sent_to_count": "int64",
            "owner_reply_count": "int64",
            "sender_reply_count": "int64",
            "thread_count": "int64",
            "threads_started": "int64",
            "message_count": "int64",
        }
    )


def _owner_mail_to(
    messages: pd.DataFrame, recipients: pd.DataFrame | None, senders: _Senders
) -> tuple[I64, I64]:
    """The owner's mail to each sender: one (sender code, message position) per message and
    recipient (an address listed twice on a message counts once; the owner left out)."""
    empty = np.zeros(0, dtype=np.int64)
    if recipients is None or senders.owner < 0:
        return empty, empty
    require_columns("profile_senders", recipients, ["message_row_id", "address"])
    own = np.flatnonzero(senders.code == senders.owner)
    at = pd.Index(messages["message_row_id"].to_numpy(np.int64)[own]).get_indexer(
        recipients["message_row_id"].to_numpy(np.int64)
    )
    to = senders.codes_of(recipients["address"])
    keep = (at >= 0) & (to >= 0) & (to != senders.owner)
    width = len(senders.addresses)
    pairs = pd.unique(own[at[keep]] * width + to[keep])  # (message, recipient) once each
    return (pairs % width).astype(np.int64), (pairs // width).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# classification


def classify_senders(
    messages: pd.DataFrame,
    recipients: pd.DataFrame | None = None,
    pairs: pd.DataFrame | None = None,
    *,
    owner_address: str | None = None,
    threads: pd.DataFrame | None = None,
    rules: ClassificationRules | None = None,
) -> pd.DataFrame:
    """Sort every sender into one of :data:`SENDER_CLASSES`, with a confidence in [0, 1].

    ``messages`` needs ``message_row_id, sender_address, sent_at_utc, subject, auto_submitted,
    precedence, list_id, list_unsubscribe`` and, unless ``threads`` (:func:`thread_messages`) is
    given, the threading columns; ``recipients`` (``message_row_id, address``) adds the owner's mail
    to each sender. The rules, first match wins (thresholds in :class:`ClassificationRules`):

    1. ``automated``: a no-reply local part (no-reply, notifications, alerts, mailer-daemon...) or
       ``automated_share`` of the mail auto-generated (``Auto-Submitted``). Confidence: 0.95 for
       the address, else the auto-generated share.
    2. ``newsletter``: ``newsletter_share`` of the mail bulk or list mail (``Precedence``,
       ``List-Id``, ``List-Unsubscribe``; ``newsletter_share_when_written_to`` if the owner writes
       to them). Confidence: the bulk share.
    3. ``internal_colleague``: the owner's domain (or a subdomain). Confidence 0.95.
    4. ``one_off``: every message to and from them lies in one thread. Confidence 0.6, 0.8 when
       they wrote only once.
    5. ``vendor``: a role mailbox (sales, billing, accounts, orders, support...), or some bulk
       mail (``vendor_bulk_share``: promotions), or ``vendor_subject_share`` of the threads they
       start with a transactional subject (invoice, quote, order, receipt...). Confidence: 0.5
       plus 0.25 per signal seen, at most 0.95.
    6. ``key_external`` when the engagement probability is at least 0.5, else ``external``. The
       engagement probability is the logistic of ``w0 + w1·ln(volume / median volume) +
       w2·owner_reply_rate + w3·sender_reply_rate`` (``engagement_weights``): volume is the
       sender's two-way mail per month of the archive, against the median of the senders reaching
       this rule; ``owner_reply_rate`` is the owner's replies per thread the sender starts,
       ``sender_reply_rate`` the sender's replies per message the owner sends them, both shrunk
       towards ``rate_prior``. Confidence: the probability of the class chosen.

    Returns ``sender_address, sender_class`` (categorical, :data:`SENDER_CLASSES` order),
    ``class_confidence`` and the evidence: ``message_count, sent_to_count, thread_count,
    auto_generated_share, bulk_share, transactional_share, noreply_address, owner_reply_rate,
    sender_reply_rate, engagement_probability``. Without an owner (none given, no ``direction``) no one
    is internal and both reply rates are the prior.
    """
    require_columns("classify_senders", messages, MESSAGE_COLUMNS)
    if threads is None:
        require_columns("classify_senders", messages, THREAD_INPUT)
    rules = rules or ClassificationRules()
    owner = _owner_of(messages, owner_address)
    threads, pairs = _threads_and_pairs(messages, threads, pairs)
    features = _sender_features(messages, recipients, threads, pairs, owner)
    return _classify(features, owner, rules).reset_index()


def _classify(
    features: pd.DataFrame, owner: str | None, rules: ClassificationRules
) -> pd.DataFrame:
    f = features
    address = f.index.to_series()
    domain = _domain(address)
    owner_domain = owner.rpartition("@")[2] if owner else None
    internal = (
        (domain == owner_domain) | domain.str.endswith("." + owner_domain).fillna(False)
        if owner_domain
        else pd.Series(False, index=f.index)
    ).to_numpy(bool)
    local = address.str.split("@", n=1).str[0]
    role = local.str.fullmatch(ROLE_LOCAL_PART).fillna(False).to_numpy(bool)
    automated = f["noreply_address"].to_numpy(bool) | (
        f["auto_generated_share"].to_numpy() >= rules.automated_share
    )
    newsletter = f["bulk_share"].to_numpy() >= np.where(
        f["sent_to_count"].to_numpy() > 0,
        rules.newsletter_share_when_written_to,
        rules.newsletter_share,
    )
    one_off = f["thread_count"].to_numpy() <= 1
    some_bulk = f["bulk_share"].to_numpy() >= rules.vendor_bulk_share
    transactional = f["transactional_share"].to_numpy() >= rules.vendor_subject_share
    vendor_signals = role.astype(int) + some_bulk.astype(int) + transactional.astype(int)

    # engagement of the people left: volume against the typical external, and answers both ways
    months = _span_months(f)
    volume = (f["message_count"] + f["sent_to_count"]).to_numpy(float) / months
    person = ~(automated | newsletter | internal | one_off | (vendor_signals > 0))
    reference = float(np.median(volume[person])) if person.any() else 1.0
    prior, weight = rules.rate_prior, rules.rate_prior_weight
    owner_rate = (f["owner_reply_count"] + prior * weight) / (f["threads_started"] + weight)
    sender_rate = (f["sender_reply_count"] + prior * weight) / (f["sent_to_count"] + weight)
    if owner is None:  # no one known to answer: both rates at the prior
        owner_rate = pd.Series(prior, index=f.index)
        sender_rate = pd.Series(prior, index=f.index)
    w0, w_volume, w_owner, w_sender = rules.engagement_weights
    logit = (
        w0
        + w_volume * np.log(np.maximum(volume, 1e-9) / max(reference, 1e-9))
        + w_owner * owner_rate.to_numpy(float)
        + w_sender * sender_rate.to_numpy(float)
    )
    engagement = 1 / (1 + np.exp(-logit))
    key = engagement >= 0.5
    conditions = [automated, newsletter, internal, one_off, vendor_signals > 0, key]
    names = ["automated", "newsletter", "internal_colleague", "one_off", "vendor", "key_external"]
    label = np.select(conditions, names, "external")
    confidence = np.select(
        conditions,
        [
            np.where(f["noreply_address"].to_numpy(bool), 0.95, f["auto_generated_share"]),
            f["bulk_share"].to_numpy(),
            np.full(len(f), 0.95),
            np.where(f["message_count"].to_numpy() <= 1, 0.8, 0.6),
            np.minimum(0.5 + 0.25 * vendor_signals, 0.95),
            engagement,
        ],
        1 - engagement,
    )
    return pd.DataFrame(
        {
            "sender_class": pd.Categorical(label, categories=SENDER_CLASSES),
            "class_confidence": np.round(confidence.astype(float), 3),
            "message_count": f["message_count"],
            "sent_to_count": f["sent_to_count"],
            "thread_count": f["thread_count"],
            "auto_generated_share": f["auto_generated_share"].astype(float),
            "bulk_share": f["bulk_share"].astype(float),
            "transactional_share": f["transactional_share"].astype(float),
            "noreply_address": f["noreply_address"].astype(bool),
            "owner_reply_rate": owner_rate.astype(float),
            "sender_reply_rate": sender_rate.astype(float),
            "engagement_probability": engagement,
        },
        index=f.index.rename("sender_address"),
    )


def _span_months(f: pd.DataFrame) -> FloatArray:
    """Months of the whole archive (first to last message of anyone), at least one."""
    first = pd.concat([f["first_message_at_utc"], f["first_sent_to_at_utc"]]).min()
    last = pd.concat([f["last_message_at_utc"], f["last_sent_to_at_utc"]]).max()
    if pd.isna(first) or pd.isna(last):
        return np.ones(len(f))
    span = (last - first).total_seconds() / DAY_S / MONTH_DAYS
    return np.full(len(f), max(span, 1.0))


# ---------------------------------------------------------------------------------------------
# profiles


def profile_senders(
    messages: pd.DataFrame,
    recipients: pd.DataFrame | None = None,
    pairs: pd.DataFrame | None = None,
    *,
    owner_address: str | None = None,
    now: pd.Timestamp | None = None,
    threads: pd.DataFrame | None = None,
    rules: ClassificationRules | None = None,
    trend_min_messages: int = 5,
    trend_alpha: float = 0.05,
) -> pd.DataFrame:
    """One row per sender (the owner left out): volume, reply times, importance, trend and class.

    ``messages`` needs what :func:`classify_senders` needs plus ``sender_name``; ``recipients``
    (``message_row_id, address``) adds the owner's mail to each sender; ``pairs`` and ``threads``
    (:mod:`pstlib.analytics.threading`) are computed when not given. ``now`` (UTC) is the date
    recency counts from: by default the archive's last message, so the result does not change with
    the day it is computed.

    Returns, sorted by ``importance_score`` (highest first):

    - ``sender_address, sender_name`` (the name they use most), ``sender_domain``;
    - ``message_count`` (mail from them), ``sent_to_count`` (the owner's mail to them: 0 without
      ``recipients``), ``first_contact_at_utc, last_contact_at_utc`` (either way),
      ``active_months`` (first to last contact, at least 1), ``messages_per_month``
      (``message_count / active_months``), ``days_since_last_contact``;
    - ``owner_reply_count, owner_reply_delay_mean_s, owner_reply_delay_median_s``: how fast the
      owner answers this sender's mail; ``sender_reply_count, sender_reply_delay_mean_s,
      sender_reply_delay_median_s``: how fast the sender answers the owner's (NaN: no replies);
    - ``importance_score`` (0-10): ``10 × (0.4·volume + 0.2·reciprocity + 0.2·recency +
      0.2·replies)`` (:data:`IMPORTANCE_WEIGHTS`) where volume is ``ln(1 + message_count +
      sent_to_count)`` over the largest such value, reciprocity ``2·min(in, out) / (in + out)``
      (1: as much mail each way), recency ``0.5 ** (days_since_last_contact / 90)`` and replies
      the share of their messages the owner answered (at most 1);
    - ``trend`` (increasing | decreasing | stable), ``trend_rho, trend_p_value, trend_months``:
      Spearman's rank correlation of the sender's monthly message counts with time, from their
      first month to the archive's last (months without mail count as 0), two-sided p-value from
      the t distribution; a trend needs ``p < trend_alpha`` and at least ``trend_min_messages``
      messages and four months, else it is ``stable``;
    - ``sender_class, class_confidence`` from :func:`classify_senders`.
    """
    require_columns("profile_senders", messages, [*MESSAGE_COLUMNS, "sender_name"])
    if threads is None:
        require_columns("profile_senders", messages, THREAD_INPUT)
    rules = rules or ClassificationRules()
    owner = _owner_of(messages, owner_address)
    threads, pairs = _threads_and_pairs(messages, threads, pairs)
    senders = _Senders.of(messages, owner)
    f = _sender_features(messages, recipients, threads, pairs, owner, senders)
    classes = _classify(f, owner, rules)
    when = _when(messages)
    now_ts = _utc(now if now is not None else when.max())

    first = pd.concat([f["first_message_at_utc"], f["first_sent_to_at_utc"]], axis=1).min(axis=1)
    last = pd.concat([f["last_message_at_utc"], f["last_sent_to_at_utc"]], axis=1).max(axis=1)
    active_months = ((last - first).dt.total_seconds() / DAY_S / MONTH_DAYS).clip(lower=1.0)
    days_since = -(last - now_ts).dt.total_seconds() / DAY_S
    exchanged = (f["message_count"] + f["sent_to_count"]).astype(float)
    largest = float(np.log1p(exchanged.max())) if len(f) else 1.0
    parts: dict[str, pd.Series] = {
        "volume": exchanged.transform(np.log1p) / max(largest, 1e-9),
        "reciprocity": 2 * f[["message_count", "sent_to_count"]].min(axis=1) / exchanged,
        "recency": 0.5 ** (days_since.clip(lower=0) / 90.0),
        "replies": (f["owner_reply_count"] / f["message_count"]).clip(upper=1.0),
    }
    importance = pd.Series(0.0, index=f.index)
    for part, weight in IMPORTANCE_WEIGHTS.items():
        importance += 10 * weight * parts[part].fillna(0.0)
    trend = _monthly_trend(
        when.reset_index(drop=True),
        senders,
        senders.addresses.isin(f.index),
        min_messages=trend_min_messages,
        alpha=trend_alpha,
    )
    profile = pd.DataFrame(
        {
            "sender_name": _usual_names(messages, senders).reindex(f.index),
            "sender_domain": _domain(f.index.to_series()),
            "message_count": f["message_count"],
            "sent_to_count": f["sent_to_count"],
            "first_contact_at_utc": first,
            "last_contact_at_utc": last,
            "active_months": active_months.round(3),
            "messages_per_month": (f["message_count"] / active_months).round(3),
            "days_since_last_contact": days_since.round(3),
            "owner_reply_count": f["owner_reply_count"],
            "owner_reply_delay_mean_s": f["owner_reply_delay_mean_s"],
            "owner_reply_delay_median_s": f["owner_reply_delay_median_s"],
            "sender_reply_count": f["sender_reply_count"],
            "sender_reply_delay_mean_s": f["sender_reply_delay_mean_s"],
            "sender_reply_delay_median_s": f["sender_reply_delay_median_s"],
            "importance_score": importance.round(2),
            "trend": trend["trend"],
            "trend_rho": trend["trend_rho"],
            "trend_p_value": trend["trend_p_value"],
            "trend_months": trend["trend_months"],
            "sender_class": classes["sender_class"],
            "class_confidence": classes["class_confidence"],
        },
        index=f.index.rename("sender_address"),
    )
    return (
        profile.reset_index()
        .sort_values(["importance_score", "sender_address"], ascending=[False, True])
        .reset_index(drop=True)
    )


def _usual_names(messages: pd.DataFrame, senders: _Senders) -> pd.Series:
    """The display name each sender uses most (ties: the one seen last), by sender address."""
    name_code, names = _codes_of_text(messages["sender_name"])
    code = senders.code
    usable = np.flatnonzero((code >= 0) & (code != senders.owner) & (name_code >= 0))
    if not len(usable):
        return pd.Series(dtype="string")
    sender, name = most_frequent(code, name_code, usable)
    return pd.Series(
        names.take(name).to_numpy(),
        index=senders.addresses[sender],
        dtype="string",
    )


def _codes_of_text(values: pd.Series) -> tuple[I64, pd.Series]:
    """Stripped non-empty text as codes (-1: missing or blank) and its distinct values."""
    raw, distinct = pd.factorize(values.astype("string"))
    stripped = pd.Series(distinct, dtype="string").str.strip()
    codes, uniques = pd.factorize(stripped.mask(stripped == ""))
    out = np.where(raw >= 0, codes[np.maximum(raw, 0)] if len(codes) else -1, -1)
    return out.astype(np.int64), pd.Series(uniques, dtype="string")


def _monthly_trend(
    when: pd.Series,
    senders: _Senders,
    rows: npt.NDArray[np.bool_],
    *,
    min_messages: int,
    alpha: float,
) -> pd.DataFrame:
    """Spearman trend of monthly counts per sender, vectorised over a senders × months matrix;
    one row per sender code where ``rows`` is set."""
    index = senders.addresses[rows]
    out = pd.DataFrame(
        {
            "trend": pd.Categorical(
                ["stable"] * len(index), categories=["increasing", "stable", "decreasing"]
            ),
            "trend_rho": np.nan,
            "trend_p_value": np.nan,
            "trend_months": 0,
        },
        index=index,
    )
    code = senders.code
    valid = (code >= 0) & (code != senders.owner) & when.notna().to_numpy(bool)
    if not valid.any():
        return out
    stamp = when[valid]
    month = (stamp.dt.year * 12 + stamp.dt.month - 1).to_numpy(np.int64)
    month = month - month.min()
    n_months = int(month.max()) + 1
    counts_all = np.bincount(code[valid], minlength=len(senders.addresses))
    eligible = np.flatnonzero(counts_all >= min_messages)
    if not len(eligible):
        return out
    rank = np.full(len(senders.addresses), -1, dtype=np.int64)
    rank[eligible] = np.arange(len(eligible))
    codes = rank[code[valid]]
    keep = codes >= 0
    grid = (
        np.bincount(codes[keep] * n_months + month[keep], minlength=len(eligible) * n_months)
        .reshape(len(eligible), n_months)
        .astype(np.float64)
    )
    first = np.argmax(grid > 0, axis=1)
    column = np.arange(n_months)
    active = column[None, :] >= first[:, None]
    grid[~active] = np.nan
    months = active.sum(axis=1)
    ranks = stats.rankdata(grid, axis=1, nan_policy="omit")
    time_rank = np.where(active, column[None, :] - first[:, None] + 1.0, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = ranks - np.nanmean(ranks, axis=1, keepdims=True)
        dt = time_rank - np.nanmean(time_rank, axis=1, keepdims=True)
        rho = np.nansum(dx * dt, axis=1) / np.sqrt(
            np.nansum(dx * dx, axis=1) * np.nansum(dt * dt, axis=1)
        )
        rho = np.clip(rho, -1.0, 1.0)
        df = months - 2
        t_stat = rho * np.sqrt(df / np.maximum(1 - rho**2, 1e-12))
        p_value = np.where(df >= 2, 2 * stats.t.sf(np.abs(t_stat), np.maximum(df, 1)), np.nan)
    p_value = np.where(np.isfinite(rho), p_value, np.nan)
    significant = p_value < alpha
    label = np.where(significant & (rho > 0), "increasing", "stable")
    label = np.where(significant & (rho < 0), "decreasing", label)
    found = pd.DataFrame(
        {
            "trend": pd.Categorical(label, categories=["increasing", "stable", "decreasing"]),
            "trend_rho": rho,
            "trend_p_value": p_value,
            "trend_months": months,
        },
        index=senders.addresses[eligible],
    )
    shared = found.index.intersection(index)
    out.loc[shared, ["trend_rho", "trend_p_value", "trend_months"]] = found.loc[
        shared, ["trend_rho", "trend_p_value", "trend_months"]
    ]
    out.loc[shared, "trend"] = found.loc[shared, "trend"]
    return out


# ---------------------------------------------------------------------------------------------
# volume over time


def volume_trends(messages: pd.DataFrame, freq: str = "MS") -> pd.DataFrame:
    """Messages per period (``freq``: a pandas offset alias, ``MS`` months, ``W-MON`` weeks...).

    Needs ``sent_at_utc`` and ``sender_address`` (``received_at_utc`` stands in for a missing
    ``sent_at_utc``, ``direction`` splits incoming from outgoing when present). Returns one row per
    period from the first to the last, empty periods included: ``period_start_utc,
    message_count, incoming_count, outgoing_count`` (0 without ``direction``), ``sender_count``
    (distinct senders) and ``message_count_rolling_3`` (mean of this and the two periods before).
    """
    require_columns("volume_trends", messages, ["sent_at_utc", "sender_address"])
    when = _when(messages)
    direction = (
        messages["direction"].astype("string")
        if "direction" in messages.columns
        else pd.Series(pd.NA, index=messages.index, dtype="string")
    )
    frame = pd.DataFrame(
        {
            "incoming": (direction == "incoming").fillna(False).to_numpy(int),
            "outgoing": (direction == "outgoing").fillna(False).to_numpy(int),
            "sender_address": messages["sender_address"].astype("string").str.lower().to_numpy(),
            "one": 1,
        },
        index=pd.DatetimeIndex(when.to_numpy(), name="period_start_utc"),
    )
    frame = frame[frame.index.notna()]
    if frame.empty:
        return pd.DataFrame(
            {
                "period_start_utc": pd.Series(dtype="datetime64[us, UTC]"),
                "message_count": pd.Series(dtype="int64"),
                "incoming_count": pd.Series(dtype="int64"),
                "outgoing_count": pd.Series(dtype="int64"),
                "sender_count": pd.Series(dtype="int64"),
                "message_count_rolling_3": pd.Series(dtype="float64"),
            }
        )
    periods = frame.resample(freq)
    return (
        pd.DataFrame(
            {
                "message_count": periods["one"].sum(),
                "incoming_count": periods["incoming"].sum(),
                "outgoing_count": periods["outgoing"].sum(),
                "sender_count": periods["sender_address"].nunique(),
            }
        )
        .astype("int64")
        .assign(message_count_rolling_3=lambda d: d["message_count"].rolling(3, 1).mean())
        .reset_index()
    )


def peak_times(messages: pd.DataFrame, *, tz: str = "UTC") -> pd.DataFrame:
    """When mail is sent: counts per weekday × hour of day (in ``tz``, an IANA zone name).

    Needs ``sent_at_utc`` (``received_at_utc`` stands in where missing). Returns all 168 cells,
    Monday 00:00 first: ``weekday`` (0 = Monday), ``weekday_name`` (Mon..Sun), ``hour`` (0-23),
    ``message_count`` and ``share`` (of all dated messages). ``.pivot(index="weekday_name",
    columns="hour", values="message_count")`` gives the heat map.
    """
    require_columns("peak_times", messages, ["sent_at_utc"])
    local = _when(messages).dropna().dt.tz_convert(tz)
    cell = (local.dt.day_of_week * 24 + local.dt.hour).to_numpy(np.int64)
    counts = np.bincount(cell, minlength=168)
    total = counts.sum()
    weekday = np.repeat(np.arange(7), 24)
    return pd.DataFrame(
        {
            "weekday": weekday,
            "weekday_name": pd.Categorical(np.asarray(WEEKDAYS)[weekday], categories=WEEKDAYS),
            "hour": np.tile(np.arange(24), 7),
            "message_count": counts.astype(np.int64),
            "share": counts / total if total else np.zeros(168),
        }
    )
