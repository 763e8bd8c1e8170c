"""Conversation threads and reply pairs: who answered which message, and how long it took.

:func:`thread_messages` rebuilds the thread tree of every message with the JWZ algorithm
(https://www.jwz.org/doc/threading.html) over whole columns: Message-IDs, ``In-Reply-To`` and
``References`` (normalised: ``<>`` stripped, lower-cased) link a message to its parent; a parent that
is not in the archive becomes an empty *container* that still holds its thread together. Where the
ids say nothing, Outlook's ``conversation_index`` does (its first 22 bytes, 44 hex characters, name
the conversation; each reply appends 5 bytes, so the parent's index is the reply's minus its last 10
hex characters), and, as a last resort, roots that share a ``conversation_topic`` share a thread.

:func:`reply_pairs` turns the parent links into (parent, reply) pairs between two different people,
with the delay, leaving out machines: auto-replies, bulk mail and automated senders (see
:func:`flag_automated_messages`).

Every function takes the store's ``messages`` frame (see :mod:`pstlib.store.load`) and never
mutates it. No Python loop runs over messages: links are resolved with factorised keys and numpy
pointer jumping, so a million messages thread in seconds.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from pstlib.analytics.imports import require_columns

__all__ = [
    "AUTOMATED_LOCAL_PART",
    "CONVERSATION_ROOT_HEX",
    "THREAD_COLUMNS",
    "flag_automated_messages",
    "reply_pairs",
    "thread_messages",
]

I64 = npt.NDArray[np.int64]
CONVERSATION_ROOT_HEX = 44  # 22 bytes: the conversation's own part of a conversation index
CONVERSATION_CHILD_HEX = 10  # 5 bytes appended by each reply
AUTOMATED_LOCAL_PART = (
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|notifications?|notify|alerts?|mailer[-_.]?daemon"
    r"|postmaster|bounces?|auto[-_.]?(?:mailer|reply|notify))(?:[-_.+\d].*)?$"
)
"""Local parts (before the ``@``) of addresses no person reads: ``no-reply``, ``notifications``..."""

THREAD_INPUT = [
    "message_row_id",
    "internet_message_id",
    "in_reply_to",
    "references",
    "conversation_index",
    "conversation_topic",
]
THREAD_COLUMNS = [
    "message_row_id",
    "thread_id",
    "parent_message_row_id",
    "depth",
    "linked_by",
    "duplicate_of_message_row_id",
]
LINKS = ("references", "in_reply_to", "conversation_index", "inferred", "topic", "none")
PAIR_COLUMNS = [
    "thread_id",
    "parent_message_row_id",
    "reply_message_row_id",
    "parent_sender_address",
    "replier_address",
    "parent_sent_at_utc",
    "reply_sent_at_utc",
    "reply_delay_s",
]


# ---------------------------------------------------------------------------------------------
# normalisation


def _objects(values: pd.Series) -> npt.NDArray[np.object_]:
    """A column as a numpy object array, missing values as None."""
    return np.asarray(values.astype(object).where(values.notna(), None), dtype=object)


def _normalise_ids(values: pd.Series) -> pd.Series:
    """Message-IDs as bare lower-case strings (``<A@B>`` -> ``a@b``), missing as ``pd.NA``."""
    text = values.astype("string").str.strip().str.strip("<>").str.strip().str.lower()
    return text.mask(text == "")


def _first_id(values: pd.Series) -> pd.Series:
    """The first Message-ID in a header such as ``In-Reply-To: <id> (message from ...)``."""
    text = values.astype("string")
    bracketed = text.str.extract(r"<\s*([^<>\s]+)\s*>", expand=False)
    bare = text.str.strip().str.split(r"\s+", regex=True).str[0]
    return _normalise_ids(bracketed.fillna(bare))


def _reference_lists(values: pd.Series) -> pd.DataFrame:
    """``References`` exploded: one row per (message position ``pos``, ``order``, ``ref``).

    Bracketed ids are taken as they are; a header without brackets is split on blanks and commas.
    """
    text = values.astype("string").reset_index(drop=True)
    present = text.notna() & (text.str.strip() != "")
    text = text[present]
    has_brackets = text.str.contains("<", regex=False)
    tokens = pd.concat(
        [
            text[has_brackets].str.findall(r"<\s*([^<>]*?)\s*>"),
            text[~has_brackets].str.split(r"[\s,]+", regex=True),
        ]
    ).sort_index()
    long = tokens.explode().rename("ref")
    refs = _normalise_ids(long.astype("string"))
    frame = pd.DataFrame({"pos": refs.index.to_numpy(np.int64), "ref": refs.to_numpy(object)})
    frame = frame[refs.notna().to_numpy()]
    return frame.assign(order=frame.groupby("pos").cumcount())


def _conversation_index(values: pd.Series) -> pd.Series:
    """Hex conversation indexes (lower-case), missing when shorter than the 22-byte root."""
    text = values.astype("string").str.strip().str.lower()
    valid = text.str.fullmatch(r"[0-9a-f]+").fillna(False) & (
        text.str.len() >= CONVERSATION_ROOT_HEX
    ).fillna(False)
    return text.where(valid)


# ---------------------------------------------------------------------------------------------
# the tree


def _break_cycles(parent: I64) -> I64:
    """``parent`` with one link cut in every cycle (JWZ never adds a link that closes a loop)."""
    parent = parent.copy()
    n = len(parent)
    while True:
        up = np.where(parent >= 0, parent, np.arange(n))
        for _ in range(max(1, int(np.ceil(np.log2(max(n, 2))))) + 1):
            up = up[up]
        stuck = parent[up] >= 0  # no root above: nodes in a cycle or hanging below one
        if not stuck.any():
            return parent
        # up[stuck] lies on a cycle; cut the link of the smallest node of each cycle (rare: a
        # loop needs malformed headers, so this walks only the few cycle members)
        on_cycle = np.unique(up[stuck])
        seen: set[int] = set()
        for start in on_cycle.tolist():
            if start in seen:
                continue
            members = [start]
            node = int(parent[start])
            while node != start:
                members.append(node)
                node = int(parent[node])
            seen.update(members)
            parent[min(members)] = -1


def _roots_and_depths(parent: I64) -> tuple[I64, I64]:
    """Root and depth (links to the root) of every node, by pointer doubling."""
    n = len(parent)
    up = np.where(parent >= 0, parent, np.arange(n))
    depth = (parent >= 0).astype(np.int64)
    while True:
        nxt = up[up]
        if np.array_equal(nxt, up):
            return up, depth
        depth = depth + depth[up]  # up's own distance to its ancestor (0 at a root)
        up = nxt


def thread_messages(messages: pd.DataFrame) -> pd.DataFrame:
    """Place every message in its conversation thread (JWZ over whole columns).

    Needs ``message_row_id, internet_message_id, in_reply_to, references, conversation_index,
    conversation_topic``.

    A message's parent is the last id in its ``References``, else its ``In-Reply-To``, else (no ids)
    the message whose ``conversation_index`` is its own minus the last 5 bytes. A parent missing from
    the archive becomes a container whose own parent comes from the earlier ``References`` entries
    (or the shorter conversation index) of the messages that cite it; a message without a parent of
    its own may get one the same way (JWZ step 1B). Loops from malformed headers are cut. Thread
    roots that have no conversation index but share a ``conversation_topic`` are one thread.
    A Message-ID seen more than once belongs to its first row (by position); the others are copies.

    Returns one row per message, in input order: ``message_row_id``; ``thread_id`` (an opaque
    string: the root's Message-ID, ``ci:<hex>``, ``topic:<topic>`` or ``row:<message_row_id>``);
    ``parent_message_row_id`` (Int64; NA for a root or when the parent is missing from the archive);
    ``depth`` (links from the thread's root, missing containers included: 0 for a root);
    ``linked_by`` (how the parent was found: references, in_reply_to, conversation_index, inferred
    (from other messages' References), topic or none); ``duplicate_of_message_row_id`` (Int64: the
    first row with the same Message-ID, else NA).
    """
    require_columns("thread_messages", messages, THREAD_INPUT)
    n = len(messages)
    row_id = messages["message_row_id"].to_numpy(np.int64)
    mid = _normalise_ids(messages["internet_message_id"]).reset_index(drop=True)
    irt = _first_id(messages["in_reply_to"]).reset_index(drop=True)
    ci = _conversation_index(messages["conversation_index"]).reset_index(drop=True)
    topic = messages["conversation_topic"].astype("string").str.strip().str.lower()
    topic = topic.mask(topic == "").reset_index(drop=True)
    refs = _reference_lists(messages["references"])
    refs = refs[refs["ref"].to_numpy() != _objects(mid)[refs["pos"].to_numpy()]]

    # each message's own parent key: last reference, else In-Reply-To, else the shorter index
    last_ref = pd.Series(pd.NA, index=range(n), dtype="string")
    last = refs.drop_duplicates("pos", keep="last")
    last_ref.iloc[last["pos"].to_numpy()] = last["ref"].to_numpy()
    irt = irt.mask(irt == mid)
    ci_len = ci.str.len().fillna(0).to_numpy(np.int64)
    ci_parent = ("ci:" + ci.str.slice(0, -CONVERSATION_CHILD_HEX)).where(
        pd.Series(ci_len > CONVERSATION_ROOT_HEX)
    )
    own_parent = last_ref.fillna(irt).fillna(ci_parent)
    link = np.select(
        [last_ref.notna().to_numpy(), irt.notna().to_numpy(), ci_parent.notna().to_numpy()],
        ["references", "in_reply_to", "conversation_index"],
        "none",
    )

    # keys: a message is known by its Message-ID, else its index, else its row; the index of a
    # message that has an id is an alias for it
    row_key = "row:" + pd.Series(row_id.astype(str), dtype="string")
    primary = mid.fillna("ci:" + ci).fillna(row_key)
    alias = ("ci:" + ci).where(mid.notna() & ci.notna())
    # chains: consecutive References, and every 5-byte step of each conversation index
    refs_next = refs.assign(child=refs.groupby("pos")["ref"].shift(-1)).dropna(subset=["child"])
    ci_steps = []
    for k in range(CONVERSATION_ROOT_HEX, int(ci_len.max(initial=0)), CONVERSATION_CHILD_HEX):
        longer = ci[ci_len >= k + CONVERSATION_CHILD_HEX]  # one step per level, not per message
        ci_steps.append(
            pd.DataFrame(
                {
                    "pos": longer.index.to_numpy(np.int64),
                    "ref": _objects("ci:" + longer.str.slice(0, k)),
                    "child": _objects("ci:" + longer.str.slice(0, k + CONVERSATION_CHILD_HEX)),
                }
            )
        )
    chains = pd.concat([refs_next[["pos", "ref", "child"]], *ci_steps], ignore_index=True)
    codes, keys = pd.factorize(
        np.concatenate(
            [
                _objects(primary),
                _objects(alias),
                _objects(own_parent),
                _objects(chains["ref"]),
                _objects(chains["child"]),
            ]
        ),
        use_na_sentinel=True,
    )
    k = len(keys)
    c_primary = codes[:n]
    c_alias = codes[n : 2 * n]
    c_parent = codes[2 * n : 3 * n]
    m = len(chains)
    c_chain_parent = codes[3 * n : 3 * n + m]
    c_chain_child = codes[3 * n + m :]

    # the first row holding a key owns it; an alias points at its message unless another
    # message has that key as its own
    first_pos = np.full(k, -1, dtype=np.int64)
    uniq, first = np.unique(c_primary, return_index=True)
    first_pos[uniq] = first
    node_of = np.arange(k, dtype=np.int64)
    has_alias = np.flatnonzero(c_alias >= 0)
    a_codes, a_first = np.unique(c_alias[has_alias], return_index=True)
    free = first_pos[a_codes] < 0
    node_of[a_codes[free]] = c_primary[has_alias[a_first[free]]]
    canonical = first_pos[c_primary] == np.arange(n)

    # parent links: chains first (the first citation wins), then every message's own header
    parent = np.full(k, -1, dtype=np.int64)
    child_nodes = node_of[c_chain_child]
    parent_nodes = node_of[c_chain_parent]
    distinct = child_nodes != parent_nodes
    child_nodes, parent_nodes = child_nodes[distinct], parent_nodes[distinct]
    uniq_child, first_cite = np.unique(child_nodes, return_index=True)
    parent[uniq_child] = parent_nodes[first_cite]
    own = canonical & (c_parent >= 0)
    parent[c_primary[own]] = node_of[c_parent[own]]
    parent[parent == np.arange(k)] = -1
    parent = _break_cycles(parent)
    root, depth = _roots_and_depths(parent)

    # thread ids: the root's key; roots without a conversation index group by topic
    node = c_primary  # a copy shares its first row's node
    msg_root = root[node]
    root_pos = first_pos[msg_root]  # the message at the root (-1: a missing container)
    root_is_msg = root_pos >= 0
    safe_root_pos = np.where(root_is_msg, root_pos, 0)
    by_topic = (
        root_is_msg
        & ci.isna().to_numpy()[safe_root_pos]
        & topic.notna().to_numpy()[safe_root_pos]
    )
    thread_key = np.asarray(keys, dtype=object)[msg_root]
    topic_key = _objects("topic:" + topic)[safe_root_pos]
    thread_id = np.where(by_topic, topic_key, thread_key)

    parent_node = parent[node]
    parent_pos = np.where(parent_node >= 0, first_pos[np.maximum(parent_node, 0)], -1)
    parent_row = pd.array(
        np.where(parent_pos >= 0, row_id[np.maximum(parent_pos, 0)], 0), dtype="Int64"
    )
    parent_row[parent_pos < 0] = pd.NA
    own_link = link[first_pos[c_primary]]
    # a root joined to an earlier root of the same topic
    joined = pd.Series(thread_id).where(by_topic & (parent_node < 0) & canonical)
    joined_by_topic = (joined.groupby(joined).cumcount() > 0).to_numpy() & joined.notna().to_numpy()
    linked_by = np.where(
        parent_node < 0,
        np.where(joined_by_topic, "topic", "none"),
        np.where(
            own_link != "none",
            own_link,
            np.where(c_alias[first_pos[c_primary]] >= 0, "conversation_index", "inferred"),
        ),
    )
    # a link cut as part of a loop leaves the message a root
    linked_by = np.where((parent_node < 0) & (own_link != "none"), "none", linked_by)
    duplicate_of = pd.array(row_id[first_pos[c_primary]], dtype="Int64")
    duplicate_of[canonical] = pd.NA
    return pd.DataFrame(
        {
            "message_row_id": row_id,
            "thread_id": pd.array(thread_id, dtype="string"),
            "parent_message_row_id": parent_row,
            "depth": depth[node],
            "linked_by": pd.Categorical(linked_by, categories=LINKS),
            "duplicate_of_message_row_id": duplicate_of,
        },
        columns=THREAD_COLUMNS,
    )


# ---------------------------------------------------------------------------------------------
# machines and reply pairs


def flag_automated_messages(messages: pd.DataFrame) -> pd.DataFrame:
    """Which messages a machine sent, from their headers and sender address.

    Needs ``message_row_id, sender_address, auto_submitted, precedence, list_id,
    list_unsubscribe``.

    Returns ``message_row_id`` and four booleans: ``is_auto_reply`` (``Auto-Submitted:
    auto-replied``), ``is_auto_generated`` (any other ``Auto-Submitted`` but ``no``),
    ``is_bulk`` (``Precedence: bulk | list | junk``, or a ``List-Id`` or ``List-Unsubscribe``
    header: list and marketing mail), ``is_noreply_address`` (the local part matches
    :data:`AUTOMATED_LOCAL_PART`: no-reply, notifications, alerts, mailer-daemon...).
    """
    require_columns(
        "flag_automated_messages",
        messages,
        [
            "message_row_id",
            "sender_address",
            "auto_submitted",
            "precedence",
            "list_id",
            "list_unsubscribe",
        ],
    )
    auto = messages["auto_submitted"].astype("string").str.strip().str.lower()
    precedence = messages["precedence"].astype("string").str.strip().str.lower()
    local = messages["sender_address"].astype("string").str.lower().str.partition("@")[0]
    has = {c: messages[c].astype("string").str.strip().fillna("") != "" for c in ("list_id",
           "list_unsubscribe")}
    return pd.DataFrame(
        {
            "message_row_id": messages["message_row_id"].to_numpy(),
            "is_auto_reply": auto.str.startswith("auto-replied").fillna(False).to_numpy(bool),
            "is_auto_generated": (
                auto.notna() & (auto != "") & (auto != "no") & ~auto.str.startswith("auto-replied")
            )
            .fillna(False)
            .to_numpy(bool),
            "is_bulk": (
                precedence.isin(["bulk", "list", "junk"]).fillna(False)
                | has["list_id"]
                | has["list_unsubscribe"]
            ).to_numpy(bool),
            "is_noreply_address": local.str.fullmatch(AUTOMATED_LOCAL_PART)
            .fillna(False)
            .to_numpy(bool),
        }
    )


def _machine_senders(messages: pd.DataFrame, flags: pd.DataFrame) -> pd.Series:
    """Senders whose mail is mostly auto-generated, or whose address is a no-reply one.

    (Bulk mail is left out message by message: a vendor's promotions do not make its people
    machines.)
    """
    machine = flags["is_auto_generated"] | flags["is_noreply_address"]
    sender = messages["sender_address"].astype("string").str.lower().to_numpy(object)
    share = pd.Series(machine.to_numpy(float)).groupby(sender).mean()
    return share[share >= 0.5].index.to_series()


def reply_pairs(
    messages: pd.DataFrame, threads: pd.DataFrame, *, exclude_automated: bool = True
) -> pd.DataFrame:
    """Every reply to a message in the archive by someone other than its sender, with the delay.

    ``messages`` needs ``message_row_id, sender_address, sent_at_utc, auto_submitted, precedence,
    list_id, list_unsubscribe`` (``received_at_utc`` stands in for a missing ``sent_at_utc`` when
    present); ``threads`` is :func:`thread_messages`' result (``message_row_id, thread_id,
    parent_message_row_id``; ``duplicate_of_message_row_id`` when present drops the copies).

    A pair is a message and its parent (both in the archive) from two different addresses. With
    ``exclude_automated`` (the default) it leaves out replies that are auto-replies, auto-generated
    or bulk, and pairs where either side's sender is a machine (half their mail or more is
    auto-generated, or a no-reply address: :func:`flag_automated_messages`). A reply dated
    before its parent (skewed clocks) is dropped.

    Returns ``thread_id, parent_message_row_id, reply_message_row_id, parent_sender_address,
    replier_address, parent_sent_at_utc, reply_sent_at_utc, reply_delay_s`` (float seconds), one row
    per reply, sorted by ``reply_message_row_id``. Addresses are lower-case.
    """
    columns = ["message_row_id", "sender_address", "sent_at_utc"]
    if exclude_automated:
        columns += ["auto_submitted", "precedence", "list_id", "list_unsubscribe"]
    require_columns("reply_pairs", messages, columns)
    require_columns(
        "reply_pairs", threads, ["message_row_id", "thread_id", "parent_message_row_id"]
    )
    when = messages["sent_at_utc"]
    if "received_at_utc" in messages.columns:
        when = when.fillna(messages["received_at_utc"])
    base = pd.DataFrame(
        {
            "message_row_id": messages["message_row_id"].to_numpy(np.int64),
            "sender_address": messages["sender_address"].astype("string").str.strip().str.lower(),
            "sent_at_utc": when.to_numpy(),
        }
    )
    keep = pd.Series(True, index=base.index)
    if exclude_automated:
        flags = flag_automated_messages(messages).reset_index(drop=True)
        machines = _machine_senders(messages, flags)
        keep = ~(flags["is_auto_reply"] | flags["is_auto_generated"] | flags["is_bulk"])
        keep &= ~base["sender_address"].isin(machines).fillna(False)
    links = threads[["message_row_id", "thread_id", "parent_message_row_id"]]
    if "duplicate_of_message_row_id" in threads.columns:
        links = links[threads["duplicate_of_message_row_id"].isna().to_numpy()]
    parents = base.rename(
        columns={
            "message_row_id": "parent_message_row_id",
            "sender_address": "parent_sender_address",
            "sent_at_utc": "parent_sent_at_utc",
        }
    ).assign(parent_ok=keep.to_numpy())
    pairs = (
        # replies: kept messages with a parent in the archive
        base[keep.to_numpy()]
        .rename(
            columns={
                "message_row_id": "reply_message_row_id",
                "sender_address": "replier_address",
                "sent_at_utc": "reply_sent_at_utc",
            }
        )
        .merge(
            links.dropna(subset=["parent_message_row_id"]).rename(
                columns={"message_row_id": "reply_message_row_id"}
            ),
            on="reply_message_row_id",
        )
        .astype({"parent_message_row_id": "int64"})
        # the parent's sender and date; the parent must be a person's mail too
        .merge(parents, on="parent_message_row_id")
        .loc[lambda d: d["parent_ok"]]
        # two different, known people
        .loc[lambda d: (d["replier_address"] != d["parent_sender_address"]).fillna(False)]
        .assign(
            reply_delay_s=lambda d: (
                (d["reply_sent_at_utc"] - d["parent_sent_at_utc"]).dt.total_seconds()
            )
        )
        .loc[lambda d: d["reply_delay_s"] >= 0]
        .sort_values("reply_message_row_id")
    )
    return pairs[PAIR_COLUMNS].reset_index(drop=True)
