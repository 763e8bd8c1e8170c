"""What a report shows, loaded once: a session's frames and the analyses run on them.

:class:`ReportData` reads the store with :mod:`pstlib.store.load`, calls the analytics functions and
keeps each result, so a notebook asks for ``data.gaps()`` in three cells and the model runs once.
Analyses always run on the real data; what a method returns is pseudonymised when the report is
(tokens are stable, so a pseudonymised table still adds up to the real one). With ``cache_dir`` the
loaded frames and the expensive analyses are also kept on disk for the other notebooks of the same
report run (the pipeline gives each run its own cache directory).

Date filters (``start_date``/``end_date``) apply to the mail analyses (timeline, senders, network,
volume); the session document (outcomes, errors, success rate) always covers the whole session.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import networkx as nx
import pandas as pd

from pstlib.analytics import network, senders, threading, timeline
from pstlib.analytics.imports import SessionSummary, summarize_session
from pstlib.errors import StoreError
from pstlib.reports import views
from pstlib.reports.pseudonymise import Pseudonymiser
from pstlib.store import Store, load

T = TypeVar("T")

MESSAGE_COLUMNS = [
    "message_row_id", "session_id", "source_id", "item_id", "subject", "sender_address",
    "sender_name", "sent_at_utc", "received_at_utc", "size_bytes", "attachment_count",
    "folder_path", "folder_role", "direction", "outcome", "item_kind", "message_class",
    "internet_message_id", "in_reply_to", "references", "conversation_index",
    "conversation_topic", "auto_submitted", "precedence", "list_id", "list_unsubscribe",
    "processed_at_utc",
]
OPERATIONS_COLUMNS = ["session_id", "source_id", "item_id", "outcome", "processed_at_utc"]


def latest_session(sessions: pd.DataFrame) -> str | None:
    """The most recently started session, preferring completed ones (None for an empty store)."""
    if sessions.empty:
        return None
    done = sessions[sessions["status"].astype("string").eq("completed").fillna(False)]
    pool = done if len(done) else sessions
    return str(pool.sort_values("started_at_utc", kind="stable")["session_id"].iloc[-1])


class ReportData:
    """One session's frames and analyses for a report (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        session_id: str | None = None,
        *,
        start_date: str | None = None,
        end_date: str | None = None,
        timezone: str = "UTC",
        country: str | None = None,
        pseudonymiser: Pseudonymiser | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.store = store
        self._sessions = load.load_sessions(store)
        chosen = session_id or latest_session(self._sessions)
        if chosen is None:
            raise StoreError(f"no session in {store.url}: scan or import some mail first")
        if chosen not in set(self._sessions["session_id"].astype(str)):
            raise StoreError(f"no session {chosen} in {store.url}")
        self.session_id = chosen
        self.start_date = start_date
        self.end_date = end_date
        self.timezone = timezone
        self.country = country
        self.pseudonymiser = pseudonymiser
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memo: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------- plumbing
    def _key(self, name: str) -> str:
        scope = "|".join(str(v) for v in (self.store.url, self.session_id, self.start_date,
                                          self.end_date, self.timezone, self.country, name))
        return hashlib.sha256(scope.encode("utf-8")).hexdigest()[:24]

    def _cached(self, name: str, compute: Callable[[], T], *, disk: bool = False) -> T:
        if name in self._memo:
            return self._memo[name]  # type: ignore[no-any-return]
        path = self.cache_dir / f"{name}-{self._key(name)}.pkl" if disk and self.cache_dir else None
        if path is None:
            value = compute()
        else:
            # one notebook computes, the others of the run wait for it and read its result
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.with_suffix(".lock").open("a+b") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    if path.exists():
                        with path.open("rb") as fh:
                            value = pickle.load(fh)  # this run's own cache, written just below
                    else:
                        value = compute()
                        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
                        with os.fdopen(fd, "wb") as fh:
                            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
                        Path(tmp).replace(path)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        self._memo[name] = value
        return value

    def shown(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` as the report may show it: pseudonymised when the report is."""
        return self.pseudonymiser.frame(frame) if self.pseudonymiser else frame

    def _view(self, name: str, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        return self._cached(f"shown:{name}", lambda: self.shown(compute()))

    # ------------------------------------------------------------------------------ raw frames
    @property
    def session(self) -> dict[str, Any]:
        return self._cached("session", lambda: self.store.get_session(self.session_id))

    @property
    def owner_address(self) -> str:
        """The mailbox owner of the session (as recorded by the scan, else the top outgoing sender)."""
        owner = self.session.get("mailbox_owner")
        if owner:
            return str(owner).lower()
        messages = self.raw_messages()
        outgoing = messages[messages["direction"].astype("string").eq("outgoing").fillna(False)]
        counts = outgoing["sender_address"].astype("string").str.lower().value_counts()
        return str(counts.index[0]) if len(counts) else ""

    def raw_session_messages(self) -> pd.DataFrame:
        """Every message row of the session (no date filter), the columns the reports use."""
        return self._cached(
            "messages",
            lambda: load.load_messages(self.store, self.session_id, columns=MESSAGE_COLUMNS),
            disk=True,
        )

    def raw_messages(self) -> pd.DataFrame:
        """The session's messages within the report's date range."""
        return self._cached("messages_in_range", lambda: views.filter_dates(
            self.raw_session_messages(), self.start_date, self.end_date))

    def raw_recipients(self) -> pd.DataFrame:
        return self._cached("recipients",
                            lambda: load.load_recipients(self.store, self.session_id), disk=True)

    def raw_table(self, table: str, *, whole_store: bool = False) -> pd.DataFrame:
        """A store table (``errors``, ``contacts``, ``batches``...) of the session or the store."""
        scope = None if whole_store else self.session_id
        return self._cached(f"table:{table}:{whole_store}",
                            lambda: load.load_table(self.store, table, scope))

    def raw_events(self) -> pd.DataFrame:
        return self._cached("events", lambda: timeline.contact_events(
            self.raw_messages(), self.raw_recipients(), self.owner_address), disk=True)

    def raw_gaps(self) -> pd.DataFrame:
        return self._cached("gaps", lambda: timeline.detect_gaps(
            self.raw_events(), country=self.country, timezone=self.timezone), disk=True)

    def raw_completeness(self) -> pd.DataFrame:
        return self._cached("completeness", lambda: timeline.score_completeness(
            self.raw_events(), self.raw_gaps()))

    def raw_threads(self) -> pd.DataFrame:
        return self._cached("threads", lambda: threading.thread_messages(self.raw_messages()),
                            disk=True)

    def raw_pairs(self) -> pd.DataFrame:
        return self._cached("pairs", lambda: threading.reply_pairs(
            self.raw_messages(), self.raw_threads()), disk=True)

    def raw_profiles(self) -> pd.DataFrame:
        return self._cached("profiles", lambda: senders.profile_senders(
            self.raw_messages(), self.raw_recipients(), self.raw_pairs(),
            owner_address=self.owner_address or None, threads=self.raw_threads()), disk=True)

    def raw_graph(self) -> nx.DiGraph:
        return self._cached("graph", lambda: network.build_graph(
            self.raw_messages(), self.raw_recipients()), disk=True)

    def raw_hubs(self) -> pd.DataFrame:
        return self._cached("hubs", lambda: network.find_hubs(self.raw_graph()), disk=True)

    # ------------------------------------------------------------------------ what reports show
    def sessions(self) -> pd.DataFrame:
        """Every session in the store, newest first (``summary_json``/``options_json`` left out)."""
        return self._view("sessions", lambda: self._sessions.drop(
            columns=["summary_json", "options_json"]).sort_values(
            "started_at_utc", ascending=False, kind="stable").reset_index(drop=True))

    def summary(self) -> SessionSummary:
        """The session document (:func:`pstlib.analytics.imports.summarize_session`)."""
        return self._cached("summary", lambda: summarize_session(
            self.session, load.load_sources(self.store, self.session_id),
            self.raw_session_messages(), self.raw_table("errors"), self.raw_table("contacts"),
            self.raw_table("batches")))

    def success_rate(self) -> float:
        return views.success_rate(self.summary())

    def key_figures(self, *, completeness: bool = True) -> pd.DataFrame:
        """Headline numbers (:func:`views.key_figures`); ``completeness`` adds the mailbox's score
        (which runs the gap model)."""
        return views.key_figures(self.summary(),
                                 self.raw_completeness() if completeness else None)

    def outcomes(self) -> pd.DataFrame:
        """Messages per outcome: ``outcome, message_count``."""
        counts = self.summary().outcomes
        return pd.DataFrame({"outcome": list(counts), "message_count": list(counts.values())})

    def breakdown(self) -> pd.DataFrame:
        """Messages by message class, item kind and folder role: ``dimension, value, count``."""
        summary = self.summary()
        parts = {"message_class": summary.by_message_class, "item_kind": summary.by_item_kind,
                 "folder_role": summary.by_folder_role}
        rows = [(d, k, v) for d, counts in parts.items() for k, v in counts.items()]
        return pd.DataFrame(rows, columns=["dimension", "value", "message_count"])

    def sources(self) -> pd.DataFrame:
        return self._view("sources", lambda: load.load_sources(self.store, self.session_id))

    def errors(self) -> pd.DataFrame:
        return self._view("errors", lambda: self.raw_table("errors"))

    def contacts(self) -> pd.DataFrame:
        return self._view("contacts", lambda: self.raw_table("contacts"))

    def batches(self) -> pd.DataFrame:
        return self._view("batches", lambda: self.raw_table("batches"))

    def throughput(self) -> pd.DataFrame:
        return views.throughput_per_minute(self.raw_session_messages())

    def coverage(self) -> pd.DataFrame:
        return self._view("coverage", lambda: timeline.coverage_by_contact(
            self.raw_events(), timezone=self.timezone))

    def gaps(self) -> pd.DataFrame:
        return self._view("gaps", lambda: timeline.rank_gaps(self.raw_gaps(), self._importance()))

    def recommendations(self) -> pd.DataFrame:
        columns = ["contact_address", "start", "end", "kind", "severity", "recommendation"]
        if self.raw_gaps().empty:  # (recommend_sources needs dated gaps: none, nothing to do)
            return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
        return self._view("recommendations", lambda: timeline.recommend_sources(
            self.raw_events(), self.raw_gaps())[columns])

    def completeness(self) -> pd.DataFrame:
        return self._view("completeness", self.raw_completeness)

    def calendar(self) -> pd.DataFrame:
        return self._cached("calendar", lambda: views.calendar_days(
            self.raw_messages(), self.raw_gaps()))

    def contact_timeline(self, contacts: list[str]) -> pd.DataFrame:
        """Coverage and completeness of the given contacts (all when the list is empty)."""
        wanted = [c.strip().lower() for c in contacts]
        table = timeline.coverage_by_contact(self.raw_events(), timezone=self.timezone).merge(
            self.raw_completeness(), on="contact_address", how="left")
        if wanted:
            table = table[table["contact_address"].isin(wanted)]
        return self.shown(table.reset_index(drop=True))

    def _importance(self) -> pd.DataFrame:
        profiles = self.raw_profiles()
        return pd.DataFrame({"contact_address": profiles["sender_address"],
                             "importance": 0.1 + profiles["importance_score"]})

    def profiles(self) -> pd.DataFrame:
        return self._view("profiles", self.raw_profiles)

    def sender_classes(self) -> pd.DataFrame:
        """Senders and messages per sender class: ``sender_class, senders, message_count``."""
        return (
            self.raw_profiles()
            .groupby("sender_class", observed=False)
            .agg(senders=("sender_address", "size"), message_count=("message_count", "sum"))
            .reset_index()
        )

    def trends(self, freq: str = "MS") -> pd.DataFrame:
        return self._cached(f"trends:{freq}", lambda: senders.volume_trends(
            self.raw_messages(), freq=freq))

    def peaks(self) -> pd.DataFrame:
        return senders.peak_times(self.raw_messages(), tz=self.timezone)

    def pairs(self) -> pd.DataFrame:
        return self._view("pairs", self.raw_pairs)

    def graph(self) -> nx.DiGraph:
        """The correspondence graph, its nodes pseudonymised when the report is."""
        graph = self.raw_graph()
        if self.pseudonymiser is None:
            return graph
        p = self.pseudonymiser
        return self._cached("shown:graph", lambda: nx.relabel_nodes(
            graph, {v: p.address(str(v)) for v in graph.nodes}, copy=True))

    def hubs(self) -> pd.DataFrame:
        return self._view("hubs", self.raw_hubs)

    def communities(self) -> pd.DataFrame:
        return self._view("communities", lambda: self._cached(
            "communities", lambda: network.find_communities(self.raw_graph()), disk=True))

    def relationships(self) -> pd.DataFrame:
        return self._view("relationships", lambda: network.relationship_strength(
            self.raw_graph()))

    # ------------------------------------------------------------------- operations (all sessions)
    def operations(self, freq: str = "D") -> pd.DataFrame:
        """Per day (or week, ``freq="W-MON"``) across every session in the date range."""
        return self._cached(f"operations:{freq}", lambda: views.daily_operations(
            self._ops_sessions(), self._ops_messages(), self.raw_table("errors", whole_store=True),
            self.raw_table("contacts", whole_store=True), freq=freq))

    def _ops_sessions(self) -> pd.DataFrame:
        sessions = self._sessions
        keep = pd.Series(True, index=sessions.index)
        if self.start_date:
            keep &= sessions["started_at_utc"] >= pd.Timestamp(self.start_date, tz="UTC")
        if self.end_date:
            keep &= sessions["started_at_utc"] < pd.Timestamp(self.end_date, tz="UTC") + pd.Timedelta(days=1)
        return sessions[keep.to_numpy(bool)]

    def _ops_messages(self) -> pd.DataFrame:
        return self._cached("ops_messages", lambda: load.load_messages(
            self.store, columns=OPERATIONS_COLUMNS), disk=True)

    def error_resolution(self) -> pd.DataFrame:
        """Every error in the store with whether a later session resolved it."""
        return self._view("error_resolution", lambda: views.resolve_errors(
            self.raw_table("errors", whole_store=True), self._ops_messages(),
            self.raw_table("sources", whole_store=True)))

    def system_health(self) -> pd.DataFrame:
        counts = self._ops_messages()["session_id"].value_counts().rename_axis(
            "session_id").reset_index(name="message_count")
        return views.system_health(self._ops_sessions(),
                                   self.raw_table("batches", whole_store=True),
                                   self.raw_table("metrics", whole_store=True), counts)

    # --------------------------------------------------------------------------------- freshness
    def freshness(self) -> dict[str, str]:
        """When the data was recorded: the session's start and end, the store's latest session."""
        latest = self._sessions["started_at_utc"].max()
        ended = self.session.get("ended_at_utc")
        return {
            "session": self.session_id,
            "session_started_utc": _iso(self.session.get("started_at_utc")),
            "session_ended_utc": _iso(ended) if ended is not None else "still running",
            "latest_session_started_utc": _iso(latest),
        }


def _iso(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")
