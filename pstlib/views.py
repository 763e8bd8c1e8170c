"""Analyses applied to a store: load one session's rows, call the analysis, return its result.

The analyses themselves (``pstlib.analytics``) take DataFrames and know nothing of the store; the
loaders (``pstlib.store.load``) know nothing of the analyses. This module is the one place that joins
them, so that the CLI, the notebooks and the reports ask the same question the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import pandas as pd

from pstlib.errors import StoreError
from pstlib.store import Store, load

MESSAGE_COLUMNS = [
    "message_row_id", "session_id", "source_id", "item_id", "internet_message_id", "in_reply_to",
    "references", "conversation_topic", "conversation_index", "subject", "sender_address",
    "sender_name", "sent_at_utc", "received_at_utc", "size_bytes", "attachment_count",
    "message_class", "item_kind", "importance", "folder_path", "folder_role", "direction",
    "list_id", "list_unsubscribe", "auto_submitted", "precedence", "outcome", "processed_at_utc",
]  # fmt: skip


@dataclass(frozen=True)
class MailFrames:
    """The mail of one session (or of the whole store): messages, recipients and the owner."""

    session_id: str | None
    owner_address: str | None
    messages: pd.DataFrame
    recipients: pd.DataFrame


def latest_session(store: Store) -> str:
    """The id of the newest session in ``store``; StoreError when it has none."""
    sessions = load.load_sessions(store)
    if sessions.empty:
        raise StoreError(f"{store.url} has no sessions yet: run `pstlib scan` or `pstlib import`")
    return str(sessions.sort_values("started_at_utc")["session_id"].iloc[-1])


def mail_frames(
    store: Store, session_id: str | None = None, *, mail_only: bool = True
) -> MailFrames:
    """Load one session's messages and recipients (the newest session when ``session_id`` is None).

    ``mail_only`` keeps mail and meeting items (contacts, appointments... are not correspondence).
    The mailbox owner is the session's ``mailbox_owner``.
    """
    session_id = session_id or latest_session(store)
    session = store.get_session(session_id)
    messages, recipients = load.load_mail(store, session_id, columns=MESSAGE_COLUMNS)
    if mail_only:
        messages = messages[messages["item_kind"].isin(["mail", "meeting", "report"])]
    recipients = recipients[recipients["message_row_id"].isin(messages["message_row_id"])]
    owner = session.get("mailbox_owner")
    return MailFrames(session_id, str(owner) if owner else None, messages, recipients)


def gaps(
    store: Store,
    session_id: str | None = None,
    *,
    country: str | None = None,
    owner_address: str | None = None,
) -> pd.DataFrame:
    """The detected gaps of one session's contacts (see :func:`pstlib.analytics.timeline.detect_gaps`)."""
    from pstlib.analytics.timeline import contact_events, detect_gaps

    frames = mail_frames(store, session_id)
    owner = owner_address or frames.owner_address
    if not owner:
        raise StoreError(
            f"session {frames.session_id} has no mailbox owner: pass --owner ADDRESS "
            "(gaps are counted per correspondent of the owner)"
        )
    events = contact_events(frames.messages, frames.recipients, owner.lower())
    return detect_gaps(events, country=country)


def sender_profiles(store: Store, session_id: str | None = None) -> pd.DataFrame:
    """Sender profiles and classes (see :func:`pstlib.analytics.senders.profile_senders`)."""
    from pstlib.analytics.senders import profile_senders

    frames = mail_frames(store, session_id)
    return profile_senders(frames.messages, frames.recipients, owner_address=frames.owner_address)


def network_graph(store: Store, session_id: str | None = None) -> nx.DiGraph:
    """Who writes to whom (see :func:`pstlib.analytics.network.build_graph`)."""
    from pstlib.analytics.network import build_graph

    frames = mail_frames(store, session_id)
    return build_graph(frames.messages, frames.recipients)
