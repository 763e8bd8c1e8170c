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
from pathlib import Path
from typing import Any, Literal, cast

import networkx as nx
import numpy as np
import numpy.typing as npt
import pandas as pd

from pstlib.analytics.imports import require_columns
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


def _iso(values: pd.Series) -> pd.Series:
    """UTC timestamps as ``2024-05-01T09:30:00Z`` strings ("" where missing)."""
    text = values.dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return pd.Series(text.astype("string").fillna(""), index=values.index)


def build_graph(messages: pd.DataFrame, recipients: pd.DataFrame) -> nx.DiGraph:
    """The correspondence graph: sender → recipient, weighted by messages.

    ``messages`` needs ``message_row_id, sender_address, sent_at_utc`` (``sender_name`` names the
    nodes when present); ``recipients`` needs ``message_row_id, kind, address``. Addresses are
    lower-cased; a message to oneself adds no edge; a recipient listed twice on one message counts
    once.

    Edge attributes: ``weight`` (messages), ``to_count, cc_count, bcc_count``,
    ``first_at_utc, last_at_utc`` (ISO strings). Node attributes: ``name`` (the display name seen
    most, else ""), ``domain``, ``messages_sent`` and ``messages_received`` (messages, not edges).
    """
    require_columns("build_graph", messages, ["message_row_id", "sender_address", "sent_at_utc"])
    require_columns("build_graph", recipients, ["message_row_id", "kind", "address"])
    when = messages["sent_at_utc"]
    if "received_at_utc" in messages.columns:
        when = when.fillna(messages["received_at_utc"])
    # addresses as integer codes in sorted order (so sorting codes sorts the addresses)
    source_text = messages["sender_address"].astype("string").str.strip().str.lower()
    target_text = recipients["address"].astype("string").str.strip().str.lower()
    codes, addresses = pd.factorize(
        pd.concat([source_text, target_text], ignore_index=True), sort=True
    )
    source_code, target_code = codes[: len(source_text)], codes[len(source_text) :]
    # microseconds since the epoch (mail dates run from year 1 to 9999; nanoseconds overflow)
    stamp = pd.DatetimeIndex(when.to_numpy()).as_unit("us").asi8  # NaT: the smallest int64
    sent = pd.DataFrame(
        {
            "message_row_id": messages["message_row_id"].to_numpy(np.int64),
            "source": source_code,
            "at": stamp,
        }
    ).loc[lambda d: d["source"] >= 0]
    kind = recipients["kind"].astype("string").str.lower()
    edges_long = (
        pd.DataFrame(
            {
                "message_row_id": recipients["message_row_id"].to_numpy(np.int64),
                "target": target_code,
                "to": (kind == "to").fillna(False).to_numpy(np.int64),
                "cc": (kind == "cc").fillna(False).to_numpy(np.int64),
                "bcc": (kind == "bcc").fillna(False).to_numpy(np.int64),
            }
        )
        .loc[lambda d: d["target"] >= 0]
        .drop_duplicates(["message_row_id", "target"])
        .merge(sent, on="message_row_id")
        .loc[lambda d: d["source"] != d["target"]]
    )
    nat = np.iinfo(np.int64).min
    edges = (
        edges_long.assign(
            at_first=lambda d: d["at"].where(d["at"] != nat, np.iinfo(np.int64).max),
            at_last=lambda d: d["at"],
        )
        .groupby(["source", "target"], sort=True)
        .agg(
            weight=("message_row_id", "size"),
            first=("at_first", "min"),
            last=("at_last", "max"),
            to_count=("to", "sum"),
            cc_count=("cc", "sum"),
            bcc_count=("bcc", "sum"),
        )
        .reset_index()
    )
    received = edges_long.drop_duplicates(["target", "message_row_id"]).groupby("target").size()
    order = pd.unique(np.concatenate([sent["source"].to_numpy(), edges_long["target"].to_numpy()]))
    labels = np.asarray(addresses.astype(object))
    nodes = pd.DataFrame(index=pd.Index(labels[order], name="address"))
    nodes = nodes.assign(
        name=_names(messages).reindex(nodes.index).fillna("").astype(str),
        domain=[str(a).rpartition("@")[2] for a in nodes.index],
        messages_sent=sent.groupby("source").size().reindex(order, fill_value=0).to_numpy(),
        messages_received=received.reindex(order, fill_value=0).to_numpy(),
    ).astype({"messages_sent": "int64", "messages_received": "int64"})
    graph = nx.DiGraph()
    graph.add_nodes_from(
        (address, _plain(row)) for address, row in zip(
            nodes.index, nodes.to_dict("records"), strict=True
        )
    )
    first, last = _iso_us(edges["first"].to_numpy()), _iso_us(edges["last"].to_numpy())
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
            labels[edges["source"].to_numpy()].tolist(),
            labels[edges["target"].to_numpy()].tolist(),
            edges["weight"].tolist(),
            edges["to_count"].tolist(),
            edges["cc_count"].tolist(),
            edges["bcc_count"].tolist(),
            first,
            last,
            strict=True,
        )
    )
    return graph


def _iso_us(stamps: npt.NDArray[np.int64]) -> list[str]:
    """Microseconds since the epoch as ``2024-05-01T09:30:00Z`` ("" for the NaT sentinels)."""
    valid = (stamps != np.iinfo(np.int64).min) & (stamps != np.iinfo(np.int64).max)
    seconds = np.where(valid, stamps, 0).astype("datetime64[us]").astype("datetime64[s]")
    text = np.char.add(np.datetime_as_string(seconds, unit="s"), "Z")
    out: list[str] = np.where(valid, text, "").tolist()
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


def _names(messages: pd.DataFrame) -> pd.Series:
    if "sender_name" not in messages.columns:
        return pd.Series(dtype=object)
    frame = pd.DataFrame(
        {
            "address": messages["sender_address"].astype("string").str.strip().str.lower(),
            "name": messages["sender_name"].astype("string").str.strip(),
        }
    ).dropna()
    counts = frame[frame["name"] != ""].value_counts().rename("n").reset_index()
    return (
        counts.sort_values(["address", "n"], ascending=[True, False], kind="stable")
        .drop_duplicates("address")
        .set_index("address")["name"]
        .astype(object)
    )


def _edge_frame(graph: nx.DiGraph) -> pd.DataFrame:
    columns = ["source", "target", "weight", "first_at_utc", "last_at_utc"]
    if graph.number_of_edges() == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    frame = cast(pd.DataFrame, nx.to_pandas_edgelist(graph))
    for column in ("first_at_utc", "last_at_utc"):
        if column not in frame.columns:
            frame[column] = ""
    return frame[columns]


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
    edges = _edge_frame(graph)
    columns = [
        "address_a", "address_b", "messages_a_to_b", "messages_b_to_a", "message_count",
        "first_at_utc", "last_at_utc", "days_since_last", "volume_score", "reciprocity", "recency",
        "strength",
    ]
    if edges.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    source_s = edges["source"].astype(str)
    target_s = edges["target"].astype(str)
    forward = source_s < target_s
    pairs = (
        pd.DataFrame(
            {
                "address_a": np.where(forward, source_s, target_s),
                "address_b": np.where(forward, target_s, source_s),
                "a_to_b": np.where(forward, edges["weight"], 0).astype(np.int64),
                "b_to_a": np.where(forward, 0, edges["weight"]).astype(np.int64),
                "first": pd.to_datetime(edges["first_at_utc"].replace("", None), utc=True),
                "last": pd.to_datetime(edges["last_at_utc"].replace("", None), utc=True),
            }
        )
        .groupby(["address_a", "address_b"], as_index=False)
        .agg(
            messages_a_to_b=("a_to_b", "sum"),
            messages_b_to_a=("b_to_a", "sum"),
            first_at_utc=("first", "min"),
            last_at_utc=("last", "max"),
        )
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
        for k, c in (("volume", "volume_score"), ("reciprocity", "reciprocity"),
                     ("recency", "recency"))
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
        "address", "name", "degree", "in_degree", "out_degree", "weighted_in_degree",
        "weighted_out_degree", "betweenness", "pagerank",
    ]
    if graph.number_of_nodes() == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    nodes = list(graph.nodes)
    n = len(nodes)
    if betweenness_samples is None and n <= EXACT_BETWEENNESS_MAX_NODES:
        k = None
    else:
        k = min(betweenness_samples or BETWEENNESS_SAMPLES, n)
    betweenness = _betweenness(graph, nodes, k, seed)
    pagerank = nx.pagerank(graph, weight="weight") if graph.number_of_edges() else {}
    undirected_degree = dict(graph.to_undirected(as_view=True).degree())
    frame = pd.DataFrame(
        {
            "address": nodes,
            "name": [str(graph.nodes[v].get("name", "")) for v in nodes],
            "degree": [undirected_degree[v] for v in nodes],
            "in_degree": [d for _, d in graph.in_degree(nodes)],
            "out_degree": [d for _, d in graph.out_degree(nodes)],
            "weighted_in_degree": [d for _, d in graph.in_degree(nodes, weight="weight")],
            "weighted_out_degree": [d for _, d in graph.out_degree(nodes, weight="weight")],
            "betweenness": [betweenness.get(v, 0.0) for v in nodes],
            "pagerank": [pagerank.get(v, 1.0 / n) for v in nodes],
        }
    ).astype({"weighted_in_degree": "int64", "weighted_out_degree": "int64"})
    return frame.sort_values(["pagerank", "address"], ascending=[False, True]).reset_index(
        drop=True
    )


def _betweenness(graph: nx.DiGraph, nodes: list[Any], k: int | None, seed: int) -> dict[Any, float]:
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
    adjacency = nx.to_scipy_sparse_array(graph, nodelist=nodes, weight=None, format="csr")
    adjacency.data[:] = 1.0
    forward = adjacency.astype(np.float64)
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
    return dict(zip(nodes, (total * scale).tolist(), strict=True))


def find_communities(
    graph: nx.DiGraph, seed: int = 0, *, resolution: float = 1.0
) -> pd.DataFrame:
    """Groups of addresses that mostly write to each other (Louvain, seeded).

    Runs :func:`networkx.community.louvain_communities` on the undirected graph whose edge weight
    is the messages both ways. Returns ``address, community_id`` (0 = the largest community, then
    by size and first address), ``community_size``, sorted by community then address.
    """
    undirected = nx.Graph()
    undirected.add_nodes_from(graph.nodes)
    for u, v, w in graph.edges(data="weight", default=1):
        if undirected.has_edge(u, v):
            undirected[u][v]["weight"] += w
        else:
            undirected.add_edge(u, v, weight=w)
    groups = nx.community.louvain_communities(
        undirected, weight="weight", resolution=resolution, seed=seed
    )
    ordered = sorted((sorted(map(str, g)) for g in groups), key=lambda g: (-len(g), g[0]))
    rows = [(address, i, len(g)) for i, g in enumerate(ordered) for address in g]
    return pd.DataFrame(rows, columns=["address", "community_id", "community_size"]).astype(
        {"community_id": "int64", "community_size": "int64"}
    )


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
