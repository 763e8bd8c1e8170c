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
mutates it. No Python loop runs over messages, and no column becomes an array of Python objects:
header text is parsed with Arrow's string kernels (the store's text columns are Arrow-backed
already), keys are dictionary-encoded to integers once, and the tree is resolved on those integers
by numpy pointer jumping, so a million messages thread in about a second. Text that repeats
(addresses, headers such as ``Precedence``) is normalised once per distinct value, not per message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pstlib.analytics.imports import require_columns

__all__ = [
    "AUTOMATED_LOCAL_PART",
    "CONVERSATION_ROOT_HEX",
    "THREAD_COLUMNS",
    "address_codes",
    "flag_automated_messages",
    "reply_pairs",
    "text_array",
    "thread_messages",
]

I64 = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
TEXT = pa.large_string()
CONVERSATION_ROOT_HEX = 44  # 22 bytes: the conversation's own part of a conversation index
CONVERSATION_CHILD_HEX = 10  # 5 bytes appended by each reply
AUTOMATED_LOCAL_PART = (
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|notifications?|notify|alerts?|mailer[-_.]?daemon"
    r"|postmaster|bounces?|auto[-_.]?(?:mailer|reply|notify))(?:[-_.+\d].*)?$"
)
"""Local parts (before the ``@``) of addresses no person reads: ``no-reply``, ``notifications``..."""

# Python's ``\s`` on text (what str.strip() and str.split() treat as blank); RE2's ``\s`` is ASCII
_BLANK = r"\t-\r\x{1c}-\x{1f}\x{85}\pZ"
# the same characters spelled out: trimming a given set is several times faster in Arrow than its
# Unicode-aware utf8_trim_whitespace, which strips exactly these
_BLANKS = "".join(chr(c) for c in (*range(0x09, 0x0E), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680))
_BLANKS += "".join(chr(c) for c in (*range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000))
_ASCII_BLANKS = "".join(c for c in _BLANKS if c.isascii())

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
NO_LINK = LINKS.index("none")
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
# text as Arrow arrays


def text_array(values: pd.Series) -> pa.Array:
    """A text column as one Arrow ``large_string`` array, missing values as nulls.

    Free for the store's columns (the ``string`` dtype is Arrow-backed); anything else is converted
    as ``astype("string")`` would.
    """
    dtype = values.dtype
    if not (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"):
        values = values.astype(pd.StringDtype("pyarrow"))
    array = pa.array(values.array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(TEXT)


def _strings(array: pa.Array) -> pd.api.extensions.ExtensionArray:
    """An Arrow text array as the pandas ``string`` dtype the loaders use (no copy)."""
    return pd.arrays.ArrowStringArray(array).astype(pd.StringDtype(), copy=False)


def _strip(array: pa.Array) -> pa.Array:
    """``str.strip()`` of every value (only the ASCII blanks to look for when it is all ASCII)."""
    if pc.all(pc.string_is_ascii(array)).as_py() is not False:
        return pc.utf8_trim(array, characters=_ASCII_BLANKS)
    return pc.utf8_trim(array, characters=_BLANKS)


def _lower(array: pa.Array) -> pa.Array:
    """``str.lower()`` of every value (the ASCII kernel, ten times faster, when it is all ASCII)."""
    if pc.all(pc.string_is_ascii(array)).as_py() is not False:
        return pc.ascii_lower(array)
    return pc.utf8_lower(array)


def _null_if_empty(array: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(array, ""), pa.scalar(None, TEXT), array)


def _prefixed(prefix: str, array: pa.Array) -> pa.Array:
    """``prefix + value`` (null stays null)."""
    return pc.binary_join_element_wise(pa.scalar(prefix, TEXT), array, pa.scalar("", TEXT))


def _codes(array: pa.Array | pa.ChunkedArray) -> tuple[I64, pa.Array]:
    """Dictionary codes (-1 for null, in order of first appearance) and the distinct values."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    encoded = array.dictionary_encode()  # nulls stay null (masked), out of the dictionary
    indices = encoded.indices
    if indices.null_count:
        indices = pc.fill_null(indices, -1)
    return indices.to_numpy().astype(np.int64), encoded.dictionary


def _lookup(table: npt.NDArray[Any], codes: I64, missing: Any) -> npt.NDArray[Any]:
    """``table[codes]``, ``missing`` where a code is negative (-1: no value)."""
    out = np.full(len(codes), missing, dtype=table.dtype)
    known = codes >= 0
    out[known] = table[codes[known]]
    return out


def _take(array: pa.Array, positions: I64) -> pa.Array:
    """``array[positions]``, null where a position is negative."""
    return array.take(pa.array(positions, mask=positions < 0))


def most_frequent(keys: I64, values: I64, rows: I64) -> tuple[I64, I64]:
    """Per key, the value seen most often among ``rows`` (positions into ``keys`` and ``values``,
    in order; ties: the value seen last), e.g. the display name each address uses most.
    Returns ``(key, value)`` arrays, one entry per key present, sorted by key."""
    if not len(rows):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    width = int(values[rows].max()) + 1
    pair = keys[rows] * width + values[rows]
    pairs, counts = np.unique(pair, return_counts=True)
    _, reverse_first = np.unique(pair[::-1], return_index=True)
    last_seen = rows[len(pair) - 1 - reverse_first]
    key, value = pairs // width, pairs % width
    best = np.lexsort((-last_seen, -counts, key))
    best = best[np.append(True, key[best][1:] != key[best][:-1])]
    return key[best], value[best]


def address_codes(values: pd.Series) -> tuple[I64, pd.Series]:
    """Addresses (or any repetitive text) as integer codes of their normalised (stripped,
    lower-cased) form: ``codes`` (-1 where missing) and ``uniques`` (the normalised values, a
    ``string`` Series indexed by code).

    Normalising each distinct value once, not each message, is what makes per-sender work cheap:
    a million messages come from a few thousand addresses.
    """
    raw, distinct = _codes(text_array(values))
    normal = _lower(_strip(distinct))
    codes, uniques = _codes(normal)
    return _lookup(codes, raw, -1), pd.Series(_strings(uniques), dtype=pd.StringDtype())


# ---------------------------------------------------------------------------------------------
# normalisation


def _normalise_ids(array: pa.Array) -> pa.Array:
    """Message-IDs as bare lower-case strings (``<A@B>`` -> ``a@b``), missing as null."""
    text = _strip(array)
    text = _strip(pc.utf8_trim(text, characters="<>"))
    return _null_if_empty(_lower(text))


def _first_id(array: pa.Array) -> pa.Array:
    """The first Message-ID in a header such as ``In-Reply-To: <id> (message from ...)``.

    The regular expressions run on the headers present only (most messages have none).
    """
    present = array.is_valid()
    text = array.filter(present)
    # the usual header, one bracketed id and nothing else, needs no regex for the id
    plain = pc.and_(
        pc.string_is_ascii(text), pc.match_substring_regex(text, r"^<[^<>\t-\r \x1c-\x1f]+>$")
    )
    if pc.all(plain).as_py() is not False:
        found = pc.utf8_trim(text, characters="<>")
    else:
        bracketed = pc.extract_regex(text, rf"<[{_BLANK}]*(?P<id>[^<>{_BLANK}]+)[{_BLANK}]*>")
        bare = pc.extract_regex(_strip(text), rf"^(?P<id>[^{_BLANK}]*)")
        found = pc.coalesce(pc.struct_field(bracketed, [0]), pc.struct_field(bare, [0]))
    spread = pc.replace_with_mask(pa.nulls(len(array), TEXT), present, found.cast(TEXT))
    return _normalise_ids(spread)


def _flat_lists(lists: pa.ListArray | pa.LargeListArray) -> tuple[I64, I64, pa.Array]:
    """A list array flattened: each item's list, its place in the list, and the items."""
    parent = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    offsets = lists.offsets.to_numpy().astype(np.int64)
    place = np.arange(len(parent), dtype=np.int64) - (offsets[parent] - offsets[0])
    return parent, place, lists.flatten()


def _reference_lists(array: pa.Array) -> tuple[I64, pa.Array]:
    """``References`` exploded: the message position and the normalised id of every entry, in
    header order (null and empty entries left out).

    Bracketed ids are taken as they are (the text between a ``<`` and the next ``>`` with no ``<``
    inside, as the regex ``<\\s*([^<>]*?)\\s*>`` finds them); a header without brackets is split on
    blanks and commas.
    """
    present = pc.fill_null(pc.not_equal(_strip(array), ""), False)
    at = np.flatnonzero(present.to_numpy(zero_copy_only=False))
    text = array.take(pa.array(at))
    bracketed = pc.fill_null(pc.match_substring(text, "<"), False).to_numpy(zero_copy_only=False)
    # bracketed: every piece before a '>' that holds a '<' ends with one id (after its last '<')
    b_at = at[bracketed]
    split = pc.split_pattern(text.filter(pa.array(bracketed)), ">")
    parent, place, pieces = _flat_lists(split)
    closed = place < pc.list_value_length(split).to_numpy().astype(np.int64)[parent] - 1
    closed &= pc.match_substring(pieces, "<").to_numpy(zero_copy_only=False)
    inner = pc.struct_field(
        pc.extract_regex(pieces.filter(pa.array(closed)), r"<(?P<id>[^<]*)$"), [0]
    )
    b_pos = b_at[parent[closed]]
    # bare: split on blanks and commas
    n_at = at[~bracketed]
    n_parent, _, tokens = _flat_lists(
        pc.split_pattern_regex(text.filter(pa.array(~bracketed)), rf"[{_BLANK},]+")
    )
    pos = np.concatenate([b_pos, n_at[n_parent]])
    refs = _normalise_ids(pa.concat_arrays([inner.cast(TEXT), tokens.cast(TEXT)]))
    order = np.argsort(pos, kind="stable")  # by message, header order kept
    pos, refs = pos[order], refs.take(pa.array(order))
    valid = refs.is_valid().to_numpy(zero_copy_only=False)
    return pos[valid], refs.filter(pa.array(valid))


def _conversation_index(array: pa.Array) -> pa.Array:
    """Hex conversation indexes (lower-case), null when shorter than the 22-byte root."""
    text = _lower(_strip(array))
    valid = pc.and_(
        pc.match_substring_regex(text, r"^[0-9a-f]+$"),
        pc.greater_equal(pc.utf8_length(text), CONVERSATION_ROOT_HEX),
    )
    return pc.if_else(pc.fill_null(valid, False), text, pa.scalar(None, TEXT))


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


def _last_per_group(groups: I64, n: int) -> I64:
    """For each of ``n`` groups, the position of its last item in ``groups`` (sorted), else -1."""
    last = np.full(n, -1, dtype=np.int64)
    if len(groups):
        ends = np.flatnonzero(np.append(groups[1:] != groups[:-1], True))
        last[groups[ends]] = ends
    return last


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
    mid = _normalise_ids(text_array(messages["internet_message_id"]))
    irt = _first_id(text_array(messages["in_reply_to"]))
    ci = _conversation_index(text_array(messages["conversation_index"]))
    topic = _null_if_empty(_lower(_strip(text_array(messages["conversation_topic"]))))
    ref_pos, ref = _reference_lists(text_array(messages["references"]))
    # a message citing itself cites nothing
    cites_other = ~pc.fill_null(pc.equal(ref, mid.take(pa.array(ref_pos))), False).to_numpy(
        zero_copy_only=False
    )
    ref_pos, ref = ref_pos[cites_other], ref.filter(pa.array(cites_other))

    # each message's own parent key: last reference, else In-Reply-To, else the shorter index
    last_ref = _take(ref, _last_per_group(ref_pos, n))
    irt = pc.if_else(pc.fill_null(pc.equal(irt, mid), False), pa.scalar(None, TEXT), irt)
    ci_len = pc.fill_null(pc.utf8_length(ci), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    ci_parent = pc.if_else(
        pa.array(ci_len > CONVERSATION_ROOT_HEX),
        _prefixed("ci:", pc.utf8_slice_codeunits(ci, 0, -CONVERSATION_CHILD_HEX)),
        pa.scalar(None, TEXT),
    )
    own_parent = pc.coalesce(last_ref, irt, ci_parent)
    link = np.select(
        [_valid(last_ref), _valid(irt), _valid(ci_parent)],
        [LINKS.index("references"), LINKS.index("in_reply_to"), LINKS.index("conversation_index")],
        NO_LINK,
    )

    # keys: a message is known by its Message-ID, else its index, else its row; the index of a
    # message that has an id is an alias for it
    ci_key = _prefixed("ci:", ci)
    primary = pc.coalesce(mid, ci_key)
    unnamed = ~_valid(primary)
    if unnamed.any():
        row_keys = _prefixed("row:", pa.array(row_id[unnamed]).cast(TEXT))
        primary = pc.replace_with_mask(primary, pa.array(unnamed), row_keys)
    alias = pc.if_else(pa.array(_valid(mid) & _valid(ci)), ci_key, pa.scalar(None, TEXT))
    # chains: consecutive References, and every 5-byte step of each conversation index
    same_message = ref_pos[1:] == ref_pos[:-1]
    chain_parent = [ref.slice(0, max(len(ref) - 1, 0)).filter(pa.array(same_message))]
    chain_child = [ref.slice(1).filter(pa.array(same_message))]
    for k in range(CONVERSATION_ROOT_HEX, int(ci_len.max(initial=0)), CONVERSATION_CHILD_HEX):
        longer = ci.filter(pa.array(ci_len >= k + CONVERSATION_CHILD_HEX))  # one step per level
        chain_parent.append(_prefixed("ci:", pc.utf8_slice_codeunits(longer, 0, k)))
        chain_child.append(
            _prefixed("ci:", pc.utf8_slice_codeunits(longer, 0, k + CONVERSATION_CHILD_HEX))
        )
    chain_parents = pa.concat_arrays([a.cast(TEXT) for a in chain_parent])
    codes, keys = _codes(
        pa.concat_arrays(
            [primary, alias, own_parent, chain_parents, *(a.cast(TEXT) for a in chain_child)]
        )
    )
    k = len(keys)
    c_primary = codes[:n]
    c_alias = codes[n : 2 * n]
    c_parent = codes[2 * n : 3 * n]
    m = len(chain_parents)
    c_chain_parent = codes[3 * n : 3 * n + m]
    c_chain_child = codes[3 * n + m :]

    # the first row holding a key owns it; an alias points at its message unless another
    # message has that key as its own
    first_pos = np.full(k, -1, dtype=np.int64)
    # codes are numbered in order of first appearance and every message has a primary key, so
    # a row holds its key's first appearance exactly where the running largest code grows
    first = np.flatnonzero(np.diff(np.maximum.accumulate(c_primary), prepend=-1) > 0)
    first_pos[c_primary[first]] = first
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
    by_topic = root_is_msg & ~_valid(ci)[safe_root_pos] & _valid(topic)[safe_root_pos]
    thread_id = pc.if_else(
        pa.array(by_topic),
        _prefixed("topic:", topic.take(pa.array(safe_root_pos))) if n else topic,
        keys.take(pa.array(msg_root)),
    )

    parent_node = parent[node]
    parent_pos = np.where(parent_node >= 0, first_pos[np.maximum(parent_node, 0)], -1)
    parent_row = pd.array(
        np.where(parent_pos >= 0, row_id[np.maximum(parent_pos, 0)], 0), dtype="Int64"
    )
    parent_row[parent_pos < 0] = pd.NA
    own_link = link[first_pos[c_primary]]
    # a root joined to an earlier root of the same topic
    joined = np.flatnonzero(by_topic & (parent_node < 0) & canonical)
    joined_by_topic = np.zeros(n, dtype=bool)
    if len(joined):
        topic_codes, _ = _codes(thread_id.take(pa.array(joined)))
        joined_by_topic[joined] = True
        joined_by_topic[joined[np.unique(topic_codes, return_index=True)[1]]] = False
    linked_by = np.where(
        parent_node < 0,
        np.where(joined_by_topic, LINKS.index("topic"), NO_LINK),
        np.where(
            own_link != NO_LINK,
            own_link,
            np.where(
                c_alias[first_pos[c_primary]] >= 0,
                LINKS.index("conversation_index"),
                LINKS.index("inferred"),
            ),
        ),
    )
    # a link cut as part of a loop leaves the message a root
    linked_by = np.where((parent_node < 0) & (own_link != NO_LINK), NO_LINK, linked_by)
    duplicate_of = pd.array(row_id[first_pos[c_primary]], dtype="Int64")
    duplicate_of[canonical] = pd.NA
    return pd.DataFrame(
        {
            "message_row_id": row_id,
            "thread_id": _strings(thread_id.cast(TEXT)),
            "parent_message_row_id": parent_row,
            "depth": depth[node],
            "linked_by": pd.Categorical.from_codes(
                np.asarray(linked_by, dtype=np.int64), categories=pd.Index(LINKS)
            ),
            "duplicate_of_message_row_id": duplicate_of,
        },
        columns=THREAD_COLUMNS,
    )


def _valid(array: pa.Array) -> BoolArray:
    """Where ``array`` holds a value, as a numpy mask."""
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


# ---------------------------------------------------------------------------------------------
# machines and reply pairs


def distinct_value_flags(
    values: pd.Series, *tests: Callable[[pd.Series], pd.Series]
) -> list[BoolArray]:
    """Each of ``tests`` (text in, booleans out; NA counts as False) applied to each distinct
    value of a text column once, then spread back to every row."""
    codes, distinct = _codes(text_array(values))
    distinct_and_missing = pd.Series(_strings(pa.concat_arrays([distinct, pa.nulls(1, TEXT)])))
    at = np.where(codes >= 0, codes, len(distinct))
    return [test(distinct_and_missing).fillna(False).to_numpy(bool)[at] for test in tests]


def flag_automated_messages(messages: pd.DataFrame) -> pd.DataFrame:
    """Which messages a machine sent, from their headers and sender address.

    Needs ``message_row_id, sender_address, auto_submitted, precedence, list_id,
    list_unsubscribe``.

    Returns ``message_row_id`` and four booleans: ``is_auto_reply`` (``Auto-Submitted:
    auto-replied``), ``is_auto_generated`` (any other ``Auto-Submitted`` but ``no``),
    ``is_bulk`` (``Precedence: bulk | list | junk``, or a ``List-Id`` or ``List-Unsubscribe``
    header: list and marketing mail), ``is_noreply_address`` (the local part matches
    :data:`AUTOMATED_LOCAL_PART`: no-reply, notifications, alerts, mailer-daemon...).
    Each header value is tested once however many messages carry it.
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

    def auto_kind(auto: pd.Series) -> pd.Series:
        return auto.str.strip().str.lower()

    def present(text: pd.Series) -> pd.Series:
        return text.str.strip().fillna("") != ""

    auto_reply, auto_any, auto_no = distinct_value_flags(
        messages["auto_submitted"],
        lambda a: auto_kind(a).str.startswith("auto-replied"),
        lambda a: auto_kind(a).notna() & (auto_kind(a) != ""),
        lambda a: auto_kind(a) == "no",
    )
    (bulk_precedence,) = distinct_value_flags(
        messages["precedence"], lambda p: p.str.strip().str.lower().isin(["bulk", "list", "junk"])
    )
    (list_id,) = distinct_value_flags(messages["list_id"], present)
    (unsubscribe,) = distinct_value_flags(messages["list_unsubscribe"], present)
    bulk = bulk_precedence | list_id | unsubscribe
    (noreply,) = distinct_value_flags(
        messages["sender_address"],
        lambda s: s.str.lower().str.partition("@")[0].str.fullmatch(AUTOMATED_LOCAL_PART),
    )
    return pd.DataFrame(
        {
            "message_row_id": messages["message_row_id"].to_numpy(),
            "is_auto_reply": auto_reply,
            "is_auto_generated": auto_any & ~auto_no & ~auto_reply,
            "is_bulk": bulk,
            "is_noreply_address": noreply,
        }
    )


def _machine_senders(messages: pd.DataFrame, flags: pd.DataFrame) -> pd.Series:
    """Senders whose mail is mostly auto-generated, or whose address is a no-reply one.

    (Bulk mail is left out message by message: a vendor's promotions do not make its people
    machines.)
    """
    machine = (flags["is_auto_generated"] | flags["is_noreply_address"]).to_numpy(np.float64)
    raw, distinct = _codes(text_array(messages["sender_address"]))
    lower, senders = _codes(_lower(distinct))
    code = _lookup(lower, raw, -1)
    known = code >= 0
    counts = np.bincount(code[known], minlength=len(senders))
    share = np.bincount(code[known], weights=machine[known], minlength=len(senders)) / np.maximum(
        counts, 1
    )
    machines: pd.Series = pd.Series(_strings(senders))[share >= 0.5]
    return machines.set_axis(machines.to_numpy()).rename(None)


def _when(messages: pd.DataFrame) -> pd.Series:
    """``sent_at_utc``, with ``received_at_utc`` where it is missing (when present)."""
    when = messages["sent_at_utc"]
    if "received_at_utc" in messages.columns:
        when = when.fillna(messages["received_at_utc"])
    if when.dtype == object:
        when = pd.to_datetime(when, utc=True)
    return when


def reply_pairs(
    messages: pd.DataFrame, threads: pd.DataFrame, *, exclude_automated: bool = True
) -> pd.DataFrame:
    """Every reply to a message in the archive by someone other than its sender, with the delay.

    ``messages`` needs ``message_row_id, sender_address, sent_at_utc, auto_submitted, precedence,
    list_id, list_unsubscribe`` (``received_at_utc`` stands in for a missing ``sent_at_utc`` when
    present); ``threads`` is :func:`thread_messages`' result (``message_row_id, thread_id,
    parent_message_row_id``; ``duplicate_of_message_row_id`` when present drops the copies).
    ``message_row_id`` is the store's key: unique in ``messages``.

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
    when = _when(messages).array
    sender, senders = address_codes(messages["sender_address"])
    keep = np.ones(len(messages), dtype=bool)
    if exclude_automated:
        flags = flag_automated_messages(messages)
        machine = senders.isin(_machine_senders(messages, flags)).fillna(False).to_numpy(bool)
        keep = ~(flags["is_auto_reply"] | flags["is_auto_generated"] | flags["is_bulk"]).to_numpy(
            bool
        )
        keep &= ~_lookup(machine, sender, False)
    # links to a parent in the archive, copies left out; as positions in ``messages``
    linked = threads["parent_message_row_id"].notna().to_numpy(bool)
    if "duplicate_of_message_row_id" in threads.columns:
        linked = linked & threads["duplicate_of_message_row_id"].isna().to_numpy(bool)
    links = threads[linked]
    lookup = pd.Index(messages["message_row_id"].to_numpy(np.int64))
    reply_at = lookup.get_indexer(links["message_row_id"].to_numpy(np.int64))
    parent_at = lookup.get_indexer(links["parent_message_row_id"].to_numpy(np.int64))
    ok = (reply_at >= 0) & (parent_at >= 0)
    reply_at, parent_at, thread_id = reply_at[ok], parent_at[ok], links["thread_id"].array[ok]
    # both sides a person's mail, from two different, known people
    replier, parent_sender = sender[reply_at], sender[parent_at]
    person = keep[reply_at] & keep[parent_at] & (replier >= 0) & (parent_sender >= 0)
    person &= replier != parent_sender
    reply_at, parent_at, thread_id = reply_at[person], parent_at[person], thread_id[person]
    replier, parent_sender = replier[person], parent_sender[person]
    delay = np.asarray((when.take(reply_at) - when.take(parent_at)).total_seconds(), float)
    ids = messages["message_row_id"].to_numpy(np.int64)
    order = np.flatnonzero(delay >= 0)  # NaN (no date) and replies before their parent: out
    order = order[np.argsort(ids[reply_at[order]], kind="stable")]
    reply_at, parent_at = reply_at[order], parent_at[order]
    address = senders.array
    return pd.DataFrame(
        {
            "thread_id": thread_id.take(order),
            "parent_message_row_id": ids[parent_at],
            "reply_message_row_id": ids[reply_at],
            "parent_sender_address": address.take(parent_sender[order]),
            "replier_address": address.take(replier[order]),
            "parent_sent_at_utc": when.take(parent_at),
            "reply_sent_at_utc": when.take(reply_at),
            "reply_delay_s": delay[order],
        },
        columns=PAIR_COLUMNS,
    )
