"""Who talks to whom: the correspondence graph, relationship strength, hubs and communities.

:func:`build_graph` makes a weighted :class:`networkx.DiGraph` from the store's ``messages`` and
``recipients`` frames: a node per address, an edge sender → recipient whose ``weight`` is the
number of messages. Edges are aggregated with pandas first, so networkx sees one call per edge,
never per message. Attributes are GraphML-safe (numbers and strings, times as ISO 8601 strings).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from operator import methodcaller
from pathlib import Path
from typing import Any, Literal

import networkx as nx
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse  # type: ignore[import-untyped]

from pstlib.analytics.imports import require_columns
from pstlib.analytics.threading import address_codes, most_frequent
from pstlib.errors import PstlibError

__all__ = [
    "STRENGTH_WEIGHTS",
    "build_graph",
    "export_graph",
    "find_communities",
    "find_hubs",
    "relationship_strength",
]

STRENGTH_WEIGHTS: dict[str, float] = {"volume": 0.5, "reciprocity": 0.3, "recency": 0.2}
"""Weights of :func:`relationship_strength`'s ``strength`` (they sum to 1)."""

EXACT_BETWEENNESS_MAX_NODES = 2000
BETWEENNESS_SAMPLES = 256
GraphFormat = Literal["graphml", "gexf", "json"]
I64 = npt.NDArray[np.int64]


def _iso(values: pd.Series) -> pd.Series:
    """UTC timestamps as ``2024-05-01T09:30:00Z`` strings ("" where missing)."""
    text = values.dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return pd.Series(text.astype("string").fillna(""), index=values.index)


def build_graph(messages: pd.DataFrame, recipients: pd.DataFrame) -> nx.DiGraph:
    """The correspondence graph: sender → recipient, weighted by messages.

    ``messages`` needs ``message_row_id, sender_address, sent_at_utc`` (``sender_name`` names the
    nodes when present); ``recipients`` needs ``message_row_id, kind, address``. Addresses are
    lower-cased; a message to oneself adds no edge; a recipient listed twice on one message counts
    once. ``message_row_id`` is the store's key: unique in ``messages``.

    Edge attributes: ``weight`` (messages), ``to_count, cc_count, bcc_count``,
    ``first_at_utc, last_at_utc`` (ISO strings). Node attributes: ``name`` (the display name seen
    most, else ""), ``domain``, ``messages_sent`` and ``messages_received`` (messages, not edges).

    Everything is aggregated on integer codes first (addresses normalised once per distinct
    value, message positions instead of joins), so networkx is handed one finished edge list.
    """
    require_columns("build_graph", messages, ["message_row_id", "sender_address", "sent_at_utc"])
    require_columns("build_graph", recipients, ["message_row_id", "kind", "address"])
    when = messages["sent_at_utc"]
    if "received_at_utc" in messages.columns:
        when = when.fillna(messages["received_at_utc"])
    # addresses as integer codes in sorted order (so sorting codes sorts the addresses)
    source_raw, source_names = address_codes(messages["sender_address"])
    target_raw, target_names = address_codes(recipients["address"])
    labels = np.unique(
        np.concatenate([source_names.to_numpy(object), target_names.to_numpy(object)])
    )
    source = _recode(source_raw, source_names, labels)
    target = _recode(target_raw, target_names, labels)
    # microseconds since the epoch (mail dates run from year 1 to 9999; nanoseconds overflow)
    stamp = pd.DatetimeIndex(when.array).as_unit("us").asi8  # NaT: the smallest int64
    # one row per (message, recipient) of a known sender: the first listing of each recipient
    at = pd.Index(messages["message_row_id"].to_numpy(np.int64)).get_indexer(
        recipients["message_row_id"].to_numpy(np.int64)
    )
    kind_code, kinds = pd.factorize(recipients["kind"])
    kind = pd.Series(np.asarray(kinds, dtype=object), dtype="string").str.lower()

    def kind_is(name: str) -> npt.NDArray[np.float64]:
        flag = np.append((kind == name).fillna(False).to_numpy(np.float64), 0.0)
        return flag[np.where(kind_code >= 0, kind_code, len(kind))]

    listed = np.flatnonzero((target >= 0) & (at >= 0))
    key = at[listed] * len(labels) + target[listed]
    listed = listed[~pd.Series(key).duplicated().to_numpy()]
    listed = listed[(source[at[listed]] >= 0) & (source[at[listed]] != target[listed])]
    msg = at[listed]
    # per (sender, recipient) pair, numbered in sorted order: sums by bincount, extremes by
    # ufunc.at (a group-by's answer without building a frame of a million rows)
    group, pair = pd.factorize(source[msg] * len(labels) + target[listed], sort=True)
    size = len(pair)
    never, undated = np.iinfo(np.int64).max, np.iinfo(np.int64).min  # NaT: the smallest
    first = np.full(size, never, dtype=np.int64)
    np.minimum.at(first, group, np.where(stamp[msg] == undated, never, stamp[msg]))
    last = np.full(size, undated, dtype=np.int64)
    np.maximum.at(last, group, stamp[msg])
    edges = {
        "pair": np.asarray(pair, dtype=np.int64),
        "weight": np.bincount(group, minlength=size),
        "first": first,
        "last": last,
        **{
            f"{name}_count": np.bincount(group, weights=kind_is(name)[listed], minlength=size)
            .round()
            .astype(np.int64)
            for name in ("to", "cc", "bcc")
        },
    }
    # nodes: senders in message order, then recipients in listing order
    sent = source[source >= 0]
    order = pd.unique(np.concatenate([sent, target[listed]]))
    names = _names(messages, source, labels)
    graph = nx.DiGraph()
    graph.add_nodes_from(
        (
            address,
            {
                "name": name,
                "domain": _xml_text(address.rpartition("@")[2]),
                "messages_sent": int(out),
                "messages_received": int(into),
            },
        )
        for address, name, out, into in zip(
            labels[order].tolist(),
            names[order].tolist(),
            np.bincount(sent, minlength=len(labels))[order].tolist(),
            np.bincount(target[listed], minlength=len(labels))[order].tolist(),
            strict=True,
        )
    )
    pair = edges["pair"]
    first_text, last_text = _iso_us(edges["first"]), _iso_us(edges["last"])
    graph.add_edges_from(
        (
            source,
            target,
            {
                "weight": weight,
                "to_count": to,
                "cc_count": cc,
                "bcc_count": bcc,
                "first_at_utc": f,
                "last_at_utc": la,
            },
        )
        for source, target, weight, to, cc, bcc, f, la in zip(
            labels[pair // len(labels)].tolist(),
            labels[pair % len(labels)].tolist(),
            edges["weight"].tolist(),
            edges["to_count"].tolist(),
            edges["cc_count"].tolist(),
            edges["bcc_count"].tolist(),
            first_text,
            last_text,
            strict=True,
        )
    )
    return graph


def _recode(codes: I64, names: pd.Series, labels: npt.NDArray[np.object_]) -> I64:
    """Codes into ``names`` as codes into the sorted ``labels`` (-1 stays -1)."""
    position = np.searchsorted(labels, names.to_numpy(object)).astype(np.int64)
    out = np.full(len(codes), -1, dtype=np.int64)
    known = codes >= 0
    out[known] = position[codes[known]]
    return out


def _iso_us(stamps: npt.NDArray[np.int64]) -> list[str]:
    """Microseconds since the epoch as ``2024-05-01T09:30:00Z`` ("" for the NaT sentinels).

    Arrow writes the text (its timestamp-to-string cast, ``2024-05-01 09:30:00``, with the
    ``T`` and the ``Z`` put in), four times faster than numpy's ``datetime_as_string``; the
    seconds are floored, as numpy's conversion to whole seconds does before the epoch.
    """
    valid = (stamps != np.iinfo(np.int64).min) & (stamps != np.iinfo(np.int64).max)
    seconds = np.where(valid, stamps, 0) // 1_000_000
    text = pa.array(seconds, pa.int64()).cast(pa.timestamp("s")).cast(pa.large_string())
    blank = pa.scalar("", pa.large_string())
    text = pc.binary_join_element_wise(
        pc.replace_substring(text, " ", "T", max_replacements=1),
        pa.scalar("Z", pa.large_string()),
        blank,
    )
    out: list[str] = pc.if_else(pa.array(valid), text, blank).to_pylist()
    return out


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(value: str) -> str:
    """``value`` without the characters XML 1.0 cannot hold (mail is hostile input)."""
    return _XML_INVALID.sub("\ufffd", value)


def _plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    """Python ints, floats and XML-safe strings only (GraphML and JSON write nothing else)."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        key = str(name)
        if isinstance(value, np.integer):
            out[key] = int(value)
        elif isinstance(value, np.floating):
            out[key] = float(value)
        elif value is None or value is pd.NA:
            out[key] = ""
        else:
            out[key] = value if isinstance(value, int | float) else _xml_text(str(value))
    return out


def _names(
    messages: pd.DataFrame, source: I64, labels: npt.NDArray[np.object_]
) -> npt.NDArray[Any]:
    """The display name each address sends under most (ties: the one seen last), "" for none;
    one per label, XML-safe."""
    names = np.full(len(labels), "", dtype=object)
    if "sender_name" not in messages.columns:
        return names
    text = messages["sender_name"].astype("string").str.strip()
    name_code, distinct = pd.factorize(text.mask(text == ""))
    usable = np.flatnonzero((source >= 0) & (name_code >= 0))
    address, name = most_frequent(source, name_code.astype(np.int64), usable)
    names[address] = [_xml_text(str(v)) for v in np.asarray(distinct, dtype=object)[name]]
    return names


def _edge_lists(
    graph: nx.DiGraph, attributes: Mapping[str, Any]
) -> tuple[list[Any], I64, I64, list[list[Any]]]:
    """The graph's nodes (``list(graph.nodes)``) and every edge, in ``graph.edges`` order, as
    (row, column) positions in them and, for each of ``attributes`` (name: default when an edge
    lacks it), the list of its values.

    One pass over the adjacency dicts with the loops in C (``map``, ``chain``): what
    ``graph.edges(data=...)`` gives, without a Python-level step per edge (for 200,000 edges
    0.04 s against 0.3).
    """
    nodes = list(graph.nodes)
    adjacency = graph.adj  # node order; each node's successors in the order edges were added
    counts = np.fromiter(map(len, adjacency.values()), dtype=np.int64, count=len(nodes))
    m = int(counts.sum())
    index = {v: i for i, v in enumerate(nodes)}
    col = np.fromiter(
        map(index.__getitem__, chain.from_iterable(adjacency.values())), dtype=np.int64, count=m
    )
    row = np.repeat(np.arange(len(nodes), dtype=np.int64), counts)
    data = list(chain.from_iterable(map(methodcaller("values"), adjacency.values())))
    values = [
        list(map(methodcaller("get", name, default), data)) for name, default in attributes.items()
    ]
    return nodes, row, col, values


def _adjacency(graph: nx.DiGraph) -> tuple[list[Any], I64, I64, npt.NDArray[np.float64]]:
    """The graph's nodes and every edge as (row, column, weight) positions in them, in
    ``graph.edges`` order (the order networkx's own sparse matrices are built in, so results
    match them exactly)."""
    nodes, row, col, (weight,) = _edge_lists(graph, {"weight": 1})
    return nodes, row, col, np.asarray(weight, dtype=np.float64).reshape(-1)


_ISO_SECOND = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"
_ISO_PARTS = (
    (0, 4, pc.year),
    (5, 7, pc.month),
    (8, 10, pc.day),
    (11, 13, pc.hour),
    (14, 16, pc.minute),
    (17, 19, pc.second),
)


def _parse_times(values: list[Any]) -> pd.Series:
    """Edge times as UTC timestamps ("" and missing: NaT), as :func:`pandas.to_datetime` reads
    them. build_graph's own strings (``2024-05-01T09:30:00Z``, every one) are parsed by Arrow,
    ten times faster, and checked field by field (Arrow would roll 30 February over into March,
    where pandas refuses it); anything else is left to pandas."""
    try:
        text = pa.array(values, type=pa.large_string())
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.large_string()), text)
        if (
            text.null_count < len(text)
            and pc.all(pc.match_substring_regex(text, _ISO_SECOND)).as_py()
        ):
            parsed = pc.strptime(text, format="%Y-%m-%dT%H:%M:%SZ", unit="us")
            if all(
                pc.all(
                    pc.equal(pc.cast(pc.utf8_slice_codeunits(text, a, b), pa.int64()), part(parsed))
                ).as_py()
                for a, b, part in _ISO_PARTS
            ):
                return pd.Series(parsed.cast(pa.timestamp("us", tz="UTC")).to_pandas())
    except (pa.ArrowException, TypeError, ValueError):
        pass  # not build_graph's strings (other types, other formats): pandas reads them
    frame = pd.Series(values, dtype=object).replace("", None)
    try:
        return pd.to_datetime(frame, utc=True, format="ISO8601")
    except (ValueError, TypeError):
        return pd.to_datetime(frame, utc=True)


def relationship_strength(
    source: nx.DiGraph | tuple[pd.DataFrame, pd.DataFrame],
    *,
    now: pd.Timestamp | None = None,
    half_life_days: float = 90.0,
) -> pd.DataFrame:
    """How strong each relationship (an unordered pair of addresses) is, from 0 to 1.

    ``source`` is a graph from :func:`build_graph` or its ``(messages, recipients)`` frames.
    ``now`` (UTC) is the date recency counts from: by default the latest message in the graph.

    ``strength = 0.5·volume + 0.3·reciprocity + 0.2·recency`` (:data:`STRENGTH_WEIGHTS`) where
    volume is ``ln(1 + message_count) / ln(1 + the largest message_count)``, reciprocity
    ``2·min(a→b, b→a) / message_count`` (1: as much each way, 0: one way only) and recency
    ``0.5 ** (days since the last message / half_life_days)``.

    Returns, strongest first: ``address_a, address_b`` (a < b), ``messages_a_to_b,
    messages_b_to_a, message_count, first_at_utc, last_at_utc`` (timestamps),
    ``days_since_last, volume_score, reciprocity, recency, strength``.
    """
    graph = source if isinstance(source, nx.DiGraph) else build_graph(*source)
    columns = [
        "address_a",
        "address_b",
        "messages_a_to_b",
        "messages_b_to_a",
        "message_count",
        "first_at_utc",
        "last_at_utc",
        "days_since_last",
        "volume_score",
        "reciprocity",
        "recency",
        "strength",
    ]
    nodes, row, col, (weight, first_text, last_text) = _edge_lists(
        graph, {"weight": np.nan, "first_at_utc": "", "last_at_utc": ""}
    )
    if not len(row):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    # addresses as codes of their sorted text: a pair is (smaller, larger) text, grouped on codes
    labels = np.asarray([str(v) for v in nodes], dtype=object)
    names, code = np.unique(labels, return_inverse=True)
    source_c, target_c = code[row], code[col]
    forward = source_c < target_c
    weights = np.asarray(weight)
    edges = pd.DataFrame(
        {
            "pair": np.where(forward, source_c, target_c) * len(names)
            + np.where(forward, target_c, source_c),
            "a_to_b": np.where(forward, weights, 0).astype(np.int64),
            "b_to_a": np.where(forward, 0, weights).astype(np.int64),
            "first": _parse_times(first_text),
            "last": _parse_times(last_text),
        }
    )
    grouped = edges.groupby("pair", sort=True).agg(
        messages_a_to_b=("a_to_b", "sum"),
        messages_b_to_a=("b_to_a", "sum"),
        first_at_utc=("first", "min"),
        last_at_utc=("last", "max"),
    )
    pair = grouped.index.to_numpy(np.int64)
    text = pd.Series(names).array  # (the text dtype pandas gives a column of str)
    pairs = pd.DataFrame(
        {
            "address_a": text.take(pair // len(names)),
            "address_b": text.take(pair % len(names)),
            **{c: grouped[c].array for c in grouped.columns},
        }
    )
    latest = now if now is not None else pairs["last_at_utc"].max()
    now_ts = pd.Timestamp(latest)  # type: ignore[arg-type]
    now_ts = now_ts.tz_localize("UTC") if now_ts.tzinfo is None else now_ts.tz_convert("UTC")
    total = pairs["messages_a_to_b"] + pairs["messages_b_to_a"]
    days = -(pairs["last_at_utc"] - now_ts).dt.total_seconds() / 86_400.0
    scored = pairs.assign(
        message_count=total,
        days_since_last=days,
        volume_score=np.log1p(total) / max(float(np.log1p(total.max())), 1e-9),
        reciprocity=2 * np.minimum(pairs["messages_a_to_b"], pairs["messages_b_to_a"]) / total,
        recency=(0.5 ** (days.clip(lower=0) / half_life_days)).fillna(0.0),
    )
    strength = sum(
        STRENGTH_WEIGHTS[k] * scored[c]
        for k, c in (
            ("volume", "volume_score"),
            ("reciprocity", "reciprocity"),
            ("recency", "recency"),
        )
    )
    return (
        scored.assign(strength=strength)
        .sort_values(["strength", "address_a", "address_b"], ascending=[False, True, True])
        .reset_index(drop=True)[columns]
    )


def find_hubs(
    graph: nx.DiGraph, *, betweenness_samples: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """Central addresses: degrees, weighted degrees, betweenness and PageRank per node.

    Betweenness is on the unweighted graph and normalised; it is exact up to
    :data:`EXACT_BETWEENNESS_MAX_NODES` nodes, else estimated from ``betweenness_samples``
    (default :data:`BETWEENNESS_SAMPLES`) source nodes drawn with ``seed``. PageRank follows the
    edge weights (damping 0.85).

    Returns, by PageRank (highest first): ``address, name, degree`` (distinct correspondents,
    either way), ``in_degree, out_degree, weighted_in_degree`` (messages received),
    ``weighted_out_degree`` (messages sent, counted per recipient), ``betweenness, pagerank``.
    """
    columns = [
        "address",
        "name",
        "degree",
        "in_degree",
        "out_degree",
        "weighted_in_degree",
        "weighted_out_degree",
        "betweenness",
        "pagerank",
    ]
    if graph.number_of_nodes() == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    nodes, row, col, weight = _adjacency(graph)
    n = len(nodes)
    if betweenness_samples is None and n <= EXACT_BETWEENNESS_MAX_NODES:
        k = None
    else:
        k = min(betweenness_samples or BETWEENNESS_SAMPLES, n)
    betweenness = _betweenness(graph, nodes, k, seed, row, col)
    pagerank = _pagerank(row, col, weight, n)
    # distinct correspondents either way (a self-loop counts twice, as networkx counts it)
    low, high = np.minimum(row, col), np.maximum(row, col)
    pair = pd.unique(low * n + high)
    low, high = pair // n, pair % n
    degree = np.bincount(low, minlength=n) + np.bincount(high, minlength=n)
    frame = pd.DataFrame(
        {
            "address": nodes,
            "name": [str(graph.nodes[v].get("name", "")) for v in nodes],
            "degree": degree.astype(np.int64),
            "in_degree": np.bincount(col, minlength=n).astype(np.int64),
            "out_degree": np.bincount(row, minlength=n).astype(np.int64),
            "weighted_in_degree": np.bincount(col, weights=weight, minlength=n),
            "weighted_out_degree": np.bincount(row, weights=weight, minlength=n),
            "betweenness": betweenness,
            "pagerank": pagerank,
        }
    ).astype({"weighted_in_degree": "int64", "weighted_out_degree": "int64"})
    return frame.sort_values(["pagerank", "address"], ascending=[False, True]).reset_index(
        drop=True
    )


def _betweenness(
    graph: nx.DiGraph, nodes: list[Any], k: int | None, seed: int, row: I64, col: I64
) -> npt.NDArray[np.float64]:
    """``nx.betweenness_centrality(graph, k=k, seed=seed, normalized=True)``, computed as Brandes'
    algorithm over a batch of sources at once: one sparse matrix product per BFS level forward
    (path counts) and one per level back (dependencies), instead of a Python loop over every
    edge of every source. Same sources (``random.Random(seed).sample``), same scaling.
    """
    n = len(nodes)
    if k == n:
        k = None
    if k is None:
        sources = np.arange(n)
    else:
        position = {v: i for i, v in enumerate(nodes)}
        sampled = random.Random(seed).sample(list(graph.nodes()), k)
        sources = np.fromiter((position[v] for v in sampled), dtype=np.int64, count=k)
    forward = sparse.coo_array((np.ones(len(row)), (row, col)), shape=(n, n)).tocsr()
    forward.data[:] = 1.0
    backward = forward.T.tocsr()
    total = np.zeros(n)
    batch = max(1, min(256, 4_000_000 // max(n, 1)))
    for begin in range(0, len(sources), batch):
        rows = sources[begin : begin + batch]
        b = len(rows)
        sigma = np.zeros((b, n))
        dist = np.full((b, n), -1, dtype=np.int32)
        sigma[np.arange(b), rows] = 1.0
        dist[np.arange(b), rows] = 0
        frontier = sigma.copy()
        level = 0
        while True:
            reached = np.asarray(backward @ frontier.T).T  # paths into each node from the level
            new = (reached > 0) & (dist < 0)
            if not new.any():
                break
            level += 1
            dist[new] = level
            sigma[new] = reached[new]
            frontier = np.where(new, reached, 0.0)
        delta = np.zeros((b, n))
        safe_sigma = np.where(sigma > 0, sigma, 1.0)
        for depth in range(level, 0, -1):
            coeff = np.where(dist == depth, (1.0 + delta) / safe_sigma, 0.0)
            pulled = np.asarray(forward @ coeff.T).T  # sum over each node's successors
            parents = dist == depth - 1
            delta[parents] += (sigma * pulled)[parents]
        delta[np.arange(b), rows] = 0.0
        total += delta.sum(axis=0)
    scale_rest, scale_source = 1.0, 1.0
    big_n = n - 1  # pairs (s, t) through v: v is neither end
    if big_n >= 2:
        if k is None:
            scale_rest = scale_source = 1.0 / (big_n * (big_n - 1))
        else:
            scale_rest = 1.0 / (k * (big_n - 1))
            scale_source = 1.0 / ((k - 1) * (big_n - 1)) if k > 1 else float("nan")
    scale = np.full(n, scale_rest)
    if k is not None:
        scale[sources] = scale_source
    result: npt.NDArray[np.float64] = total * scale
    return result


def _pagerank(
    row: I64, col: I64, weight: npt.NDArray[np.float64], n: int, alpha: float = 0.85
) -> npt.NDArray[np.float64]:
    """``nx.pagerank(graph, weight="weight")`` (networkx's own SciPy power iteration, step for
    step: same matrix, same updates, same stopping rule) on the adjacency already built, rather
    than a second pass of networkx over every edge; 1/n each for a graph without edges."""
    if len(row) == 0:
        return np.full(n, 1.0 / n)
    matrix = sparse.coo_array((weight, (row, col)), shape=(n, n), dtype=float).tocsr()
    out_weight = matrix.sum(axis=1)
    out_weight[out_weight != 0] = 1.0 / out_weight[out_weight != 0]
    matrix = sparse.dia_array((out_weight.T, 0), shape=matrix.shape).tocsr() @ matrix
    x = np.repeat(1.0 / n, n)
    p = np.repeat(1.0 / n, n)
    dangling = np.where(out_weight == 0)[0]
    for _ in range(100):
        last = x
        x = alpha * (x @ matrix + sum(x[dangling]) * p) + (1 - alpha) * p
        if np.absolute(x - last).sum() < n * 1.0e-6:
            return np.asarray(x, dtype=np.float64)
    raise nx.PowerIterationFailedConvergence(100)


def find_communities(graph: nx.DiGraph, seed: int = 0, *, resolution: float = 1.0) -> pd.DataFrame:
    """Groups of addresses that mostly write to each other (Louvain, seeded).

    The communities of :func:`networkx.community.louvain_communities` (default threshold) on the
    undirected graph whose edge weight is the messages both ways, with the same ``seed``: the
    same algorithm making the same moves in the same order (:func:`_louvain`), with the graph
    kept as integer arrays. Returns ``address, community_id`` (0 = the largest community, then
    by size and first address), ``community_size``, sorted by community then address.
    """
    nodes, row, col, weight = _adjacency(graph)
    n = len(nodes)
    # the undirected graph: messages both ways summed, each pair where networkx first meets it
    pair = np.minimum(row, col) * n + np.maximum(row, col)
    group, first = _first_seen(pair)
    summed = np.bincount(group, weights=weight, minlength=len(first)).astype(np.float64)
    groups = _louvain(n, row[first], col[first], summed, seed=seed, resolution=resolution)
    labels = np.asarray([*nodes, None], dtype=object)[:n]  # (a 1-d array even of tuples)
    ordered = sorted(
        (sorted(map(str, labels[sorted(g)].tolist())) for g in groups),
        key=lambda g: (-len(g), g[0]),
    )
    rows = [(address, i, len(g)) for i, g in enumerate(ordered) for address in g]
    return pd.DataFrame(rows, columns=["address", "community_id", "community_size"]).astype(
        {"community_id": "int64", "community_size": "int64"}
    )


def _first_seen(keys: I64) -> tuple[I64, I64]:
    """Each key's group (numbered in order of first appearance) and where each group first is."""
    codes, _ = pd.factorize(keys)
    first = np.flatnonzero(~pd.Series(codes).duplicated().to_numpy())
    return codes.astype(np.int64), first


@dataclass(frozen=True)
class _Level:
    """An undirected weighted graph of nodes ``0..n-1`` as networkx would hold it: ``source,
    target, weight`` one entry per neighbour (a self-loop once), each node's neighbours in the
    order their edges were added; ``edges`` the positions of ``graph.edges()`` (each edge once,
    from its first node)."""

    n: int
    source: I64
    target: I64
    weight: npt.NDArray[np.float64]

    @classmethod
    def of(cls, n: int, a: I64, b: I64, weight: npt.NDArray[np.float64]) -> _Level:
        """The graph made by adding the edges ``(a[i], b[i], weight[i])`` in order."""
        loop = a == b
        order_of_edge = np.arange(len(a))
        source = np.concatenate([a, b[~loop]])
        target = np.concatenate([b, a[~loop]])
        added = np.concatenate([order_of_edge, order_of_edge[~loop]])
        order = np.lexsort((added, source))
        return cls(n, source[order], target[order], np.concatenate([weight, weight[~loop]])[order])

    def edges(self) -> tuple[I64, I64, npt.NDArray[np.float64]]:
        keep = self.target >= self.source
        return self.source[keep], self.target[keep], self.weight[keep]

    def degrees(self) -> npt.NDArray[np.float64]:
        """``graph.degree(weight="weight")``: neighbour weights in order, a self-loop twice."""
        degree = np.bincount(self.source, weights=self.weight, minlength=self.n).astype(np.float64)
        loop = self.source == self.target
        degree[self.source[loop]] += self.weight[loop]
        return degree


def _modularity(level: _Level, communities: list[set[int]], resolution: float) -> float:
    """:func:`networkx.community.modularity` of ``communities`` on ``level``, vectorised (it
    decides only when Louvain stops: the gain against ``threshold``)."""
    degree = level.degrees()
    deg_sum = float(np.sum(degree))
    community = np.empty(level.n, dtype=np.int64)
    for i, members in enumerate(communities):
        community[list(members)] = i
    a, b, weight = level.edges()
    inside = community[a] == community[b]
    internal = np.bincount(community[a][inside], weights=weight[inside], minlength=len(communities))
    degree_sum = np.bincount(community, weights=degree, minlength=len(communities))
    contribution = internal / (deg_sum / 2) - resolution * degree_sum * degree_sum / deg_sum**2
    return float(np.sum(contribution))


def _louvain(
    n: int,
    a: I64,
    b: I64,
    weight: npt.NDArray[np.float64],
    *,
    seed: int,
    resolution: float = 1.0,
    threshold: float = 1e-7,
) -> list[set[int]]:
    """``networkx.community.louvain_communities`` of the undirected graph on nodes ``0..n-1``
    made by adding the edges ``(a[i], b[i], weight[i])`` in order, the same ``seed``.

    networkx's algorithm step for step (its ``louvain_partitions``, ``_one_level`` and
    ``_gen_graph``: same random node order, same neighbour order, same gains, same ties), so the
    communities are its own; the graph is held in integer arrays and each level's aggregation is
    vectorised instead of a networkx graph rebuilt edge by edge. Only the modularity that decides
    when to stop is summed in another order.
    """
    partition: list[set[int]] = [{u} for u in range(n)]
    if len(a) == 0:
        return partition
    rng = random.Random(seed)
    original = _Level.of(n, a, b, weight)
    mod = _modularity(original, partition, resolution)
    level = _Level.of(n, *original.edges())  # louvain_partitions works on a copy
    m = sum(level.degrees().tolist()) / 2
    members: list[set[int]] = [{u} for u in range(n)]  # original nodes under each level node
    partition, inner, improvement = _one_level(level, m, partition, members, resolution, rng)
    improvement = True
    while improvement:
        found = [set(s) for s in partition]
        new_mod = _modularity(level, inner, resolution)
        if new_mod - mod <= threshold:
            return found
        mod = new_mod
        level, members = _aggregate(level, inner, members)
        partition, inner, improvement = _one_level(level, m, partition, members, resolution, rng)
    return found  # no node moved at the last level: its partition is the one found before


def _aggregate(
    level: _Level, inner: list[set[int]], members: list[set[int]]
) -> tuple[_Level, list[set[int]]]:
    """networkx's ``_gen_graph``: a node per community, edge weights summed in edge order; and
    the original nodes under each new node."""
    community = np.empty(level.n, dtype=np.int64)
    for i, part in enumerate(inner):
        community[list(part)] = i
    a, b, weight = level.edges()
    ca, cb = community[a], community[b]
    group, first = _first_seen(np.minimum(ca, cb) * len(inner) + np.maximum(ca, cb))
    summed = np.bincount(group, weights=weight, minlength=len(first)).astype(np.float64)
    gathered = [set().union(*(members[u] for u in part)) for part in inner]
    return _Level.of(len(inner), ca[first], cb[first], summed), gathered


def _one_level(
    level: _Level,
    m: float,
    partition: list[set[int]],
    members: list[set[int]],
    resolution: float,
    rng: random.Random,
) -> tuple[list[set[int]], list[set[int]], bool]:
    """networkx's ``_one_level`` (undirected): move nodes, in a seeded random order, to the
    neighbouring community with the largest modularity gain until none moves.

    The same moves for a fraction of the work. networkx sums each node's neighbour weights per
    community (``weights2com``: every neighbour of every node on every pass, the sweep's whole
    cost); here each node's sums are kept from one visit to the next:

    - with weights that are positive whole numbers (message counts; their total below 2**53),
      float sums are exact in any order, so a move from A to B updates its neighbours' sums in
      place (minus the weight in A, plus in B, A dropped at zero): the very values networkx
      would sum. Only the order of the dict differs, and it matters only on a tie of the best
      gain, where networkx keeps the community it met first among the neighbours: ties are
      settled by that order, looked up then;
    - otherwise a move only marks its neighbours' sums stale, summed afresh at their next visit.

    Only the gains, which follow every move through ``stot``, are worked out at each visit.
    networkx's ``setdefault`` of the node's own community when no neighbour is in it is left
    out: that community's gain is ``X + 0.0 - X``, exactly 0.0, never above the best so far.
    """
    n = level.n
    node2com = list(range(n))
    inner: list[set[int]] = [{u} for u in range(n)]
    degrees = level.degrees().tolist()
    stot = list(degrees)
    weight = level.weight
    exact = bool(
        len(weight) == 0
        or (weight.min() > 0 and np.all(np.round(weight) == weight) and weight.sum() < 2.0**53)
    )
    not_loop = level.source != level.target
    bounds = np.searchsorted(level.source[not_loop], np.arange(n + 1)).tolist()
    nbr_all = level.target[not_loop].tolist()
    wt_all = level.weight[not_loop].tolist()
    nbrs = [
        (nbr_all[bounds[u] : bounds[u + 1]], wt_all[bounds[u] : bounds[u + 1]]) for u in range(n)
    ]
    summed: list[dict[int, float] | None] = [None] * n  # weights2com per node, while valid
    rand_nodes = list(range(n))
    rng.shuffle(rand_nodes)
    scale = 2 * m**2
    nb_moves = 1
    improvement = False
    while nb_moves > 0:
        nb_moves = 0
        for u in rand_nodes:
            weights2com = summed[u]
            if weights2com is None:
                weights2com = {}
                for nbr, wt in zip(*nbrs[u], strict=True):
                    com = node2com[nbr]
                    weights2com[com] = weights2com.get(com, 0.0) + wt
                summed[u] = weights2com
            current = node2com[u]
            best_mod = 0.0
            best_com = current
            tied: list[int] | None = None  # communities as good as best_com (exact sums only)
            degree = degrees[u]
            stot[current] -= degree
            own = weights2com.get(current, 0.0)
            remove_cost = -own / m + resolution * (stot[current] * degree) / scale
            chosen = False
            for nbr_com, wt in weights2com.items():
                gain = remove_cost + wt / m - resolution * (stot[nbr_com] * degree) / scale
                if gain > best_mod:
                    best_mod = gain
                    best_com = nbr_com
                    chosen = True
                    tied = None
                elif exact and chosen and gain == best_mod:
                    tied = [best_com, nbr_com] if tied is None else [*tied, nbr_com]
            if tied is not None:  # networkx's dict order: the first met among the neighbours
                among = set(tied)
                best_com = next(node2com[v] for v in nbrs[u][0] if node2com[v] in among)
            stot[best_com] += degree
            if best_com != current:
                com_nodes = members[u]
                partition[current].difference_update(com_nodes)
                inner[current].remove(u)
                partition[best_com].update(com_nodes)
                inner[best_com].add(u)
                improvement = True
                nb_moves += 1
                node2com[u] = best_com
                for nbr, wt in zip(*nbrs[u], strict=True):
                    sums = summed[nbr]
                    if sums is None:
                        continue
                    if not exact:  # u's old community is in them: summed afresh when visited
                        summed[nbr] = None
                        continue
                    left = sums[current] - wt
                    if left == 0.0:
                        del sums[current]
                    else:
                        sums[current] = left
                    sums[best_com] = sums.get(best_com, 0.0) + wt
    return [p for p in partition if p], [p for p in inner if p], improvement


def export_graph(graph: nx.DiGraph, path: Path | str, fmt: GraphFormat = "graphml") -> Path:
    """Write ``graph`` as GraphML, GEXF or node-link JSON (``fmt``); return the path written.

    Attributes that GraphML cannot hold (None, timestamps, other objects) are written as strings
    ("" for None), so any graph exports, not only :func:`build_graph`'s; characters XML cannot
    hold (control characters from hostile mail) become U+FFFD.
    """
    target = Path(path)
    clean = nx.DiGraph()
    clean.add_nodes_from(
        (_xml_text(str(v)), _plain(dict(data))) for v, data in graph.nodes(data=True)
    )
    clean.add_edges_from(
        (_xml_text(str(u)), _xml_text(str(v)), _plain(dict(data)))
        for u, v, data in graph.edges(data=True)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "graphml":
        nx.write_graphml(clean, target)
    elif fmt == "gexf":
        nx.write_gexf(clean, target)
    elif fmt == "json":
        data = nx.node_link_data(clean, edges="links")
        target.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    else:
        raise PstlibError(f"unknown graph format {fmt!r} (graphml, gexf or json)")
    return target
