"""pstlib.analytics.network on a tiny hand-made mailbox whose graph is known."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pstlib.analytics.network import (
    build_graph,
    export_graph,
    find_communities,
    find_hubs,
    relationship_strength,
)
from pstlib.errors import MissingColumnsError

T0 = pd.Timestamp("2024-01-01 09:00", tz="UTC")


@pytest.fixture
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ann writes to Bo three times (Cy in Cc once), Bo to Ann once; Dee and Eve talk only to each
    other; Ann writes once to herself (no edge)."""
    sends = [
        ("ann@x.com", "Ann", 0, [("to", "bo@x.com"), ("cc", "cy@x.com")]),
        ("ann@x.com", "Ann", 24, [("to", "bo@x.com"), ("to", "BO@x.com")]),  # listed twice
        ("ann@x.com", "Ann", 48, [("to", "bo@x.com")]),
        ("bo@x.com", None, 72, [("to", "ann@x.com")]),
        ("dee@y.com", "Dee", 10, [("to", "eve@y.com")]),
        ("eve@y.com", "Eve", 11, [("to", "dee@y.com")]),
        ("ann@x.com", "Ann", 12, [("to", "ann@x.com")]),
    ]
    messages = pd.DataFrame(
        {
            "message_row_id": np.arange(1, len(sends) + 1, dtype=np.int64),
            "sender_address": pd.array([s[0] for s in sends], dtype="string"),
            "sender_name": pd.array([s[1] for s in sends], dtype="string"),
            "sent_at_utc": [T0 + pd.Timedelta(hours=s[2]) for s in sends],
        }
    )
    recipients = pd.DataFrame(
        [
            {"message_row_id": i + 1, "kind": kind, "address": address, "name": None}
            for i, s in enumerate(sends)
            for kind, address in s[3]
        ]
    )
    return messages, recipients


def test_edges_count_messages_and_keep_their_first_and_last_time(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    graph = build_graph(*frames)
    assert set(graph.nodes) == {"ann@x.com", "bo@x.com", "cy@x.com", "dee@y.com", "eve@y.com"}
    ann_bo = graph["ann@x.com"]["bo@x.com"]
    assert ann_bo["weight"] == 3  # BO@x.com twice on one message counts once
    assert (ann_bo["to_count"], ann_bo["cc_count"], ann_bo["bcc_count"]) == (3, 0, 0)
    assert ann_bo["first_at_utc"] == "2024-01-01T09:00:00Z"
    assert ann_bo["last_at_utc"] == "2024-01-03T09:00:00Z"
    assert graph["ann@x.com"]["cy@x.com"]["cc_count"] == 1
    assert not graph.has_edge("ann@x.com", "ann@x.com")
    assert graph.nodes["ann@x.com"]["messages_sent"] == 4  # the note to herself included
    assert graph.nodes["bo@x.com"]["messages_received"] == 3
    assert graph.nodes["bo@x.com"]["name"] == ""  # never named
    assert graph.nodes["dee@y.com"]["domain"] == "y.com"


def test_relationship_strength_is_volume_reciprocity_and_recency(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    strength = relationship_strength(frames, now=T0 + pd.Timedelta(hours=72))
    ann_bo = strength.set_index(["address_a", "address_b"]).loc[("ann@x.com", "bo@x.com")]
    assert (ann_bo["messages_a_to_b"], ann_bo["messages_b_to_a"]) == (3, 1)
    assert ann_bo["reciprocity"] == 0.5  # 2·min(3, 1) / 4
    assert ann_bo["volume_score"] == 1.0  # the largest pair
    assert ann_bo["recency"] == 1.0  # the last message is "now"
    assert ann_bo["strength"] == pytest.approx(0.5 * 1 + 0.3 * 0.5 + 0.2 * 1)
    ann_cy = strength.set_index(["address_a", "address_b"]).loc[("ann@x.com", "cy@x.com")]
    assert ann_cy["reciprocity"] == 0.0  # one way only
    assert ann_cy["recency"] == pytest.approx(0.5 ** (3 / 90))  # three days old
    assert strength["strength"].between(0, 1).all()
    assert strength["strength"].is_monotonic_decreasing
    # a graph and its frames give the same answer
    pd.testing.assert_frame_equal(
        strength, relationship_strength(build_graph(*frames), now=T0 + pd.Timedelta(hours=72))
    )


def test_hubs_rank_the_best_connected_address_first(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    hubs = find_hubs(build_graph(*frames)).set_index("address")
    ann = hubs.loc["ann@x.com"]
    assert (ann["degree"], ann["in_degree"], ann["out_degree"]) == (2, 1, 2)
    assert (ann["weighted_in_degree"], ann["weighted_out_degree"]) == (1, 4)  # 3 to Bo + 1 to Cy
    # Ann is the only path between Bo and Cy (Bo -> Ann -> Cy): the only non-zero betweenness
    assert ann["betweenness"] > 0
    assert (hubs.drop(index="ann@x.com")["betweenness"] == 0).all()
    assert hubs["pagerank"].sum() == pytest.approx(1.0)
    sampled = find_hubs(build_graph(*frames), betweenness_samples=3, seed=1)
    assert len(sampled) == 5


def test_communities_split_the_two_groups(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    communities = find_communities(build_graph(*frames), seed=0)
    groups = communities.groupby("community_id")["address"].apply(set).tolist()
    assert groups == [{"ann@x.com", "bo@x.com", "cy@x.com"}, {"dee@y.com", "eve@y.com"}]
    assert communities["community_size"].tolist() == [3, 3, 3, 2, 2]


@pytest.mark.parametrize("fmt", ["graphml", "gexf", "json"])
def test_export_writes_a_file_networkx_reads_back(
    frames: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path, fmt: str
) -> None:
    graph = build_graph(*frames)
    graph.nodes["ann@x.com"]["note"] = None  # not GraphML-safe: written as ""
    graph.nodes["ann@x.com"]["seen"] = T0  # a timestamp: written as a string
    graph.nodes["bo@x.com"]["name"] = "Bo\x07\x00"  # hostile control characters: replaced
    path = export_graph(graph, tmp_path / f"graph.{fmt}", fmt)  # type: ignore[arg-type]
    if fmt == "graphml":
        back = nx.read_graphml(path)
    elif fmt == "gexf":
        back = nx.read_gexf(path)
    else:
        back = nx.node_link_graph(json.loads(path.read_text(encoding="utf-8")), edges="links")
    assert back.number_of_nodes() == 5
    assert back.number_of_edges() == graph.number_of_edges()
    assert int(back["ann@x.com"]["bo@x.com"]["weight"]) == 3
    assert back.nodes["bo@x.com"]["name"] == "Bo\ufffd\ufffd"
    assert isinstance(graph.nodes["ann@x.com"]["seen"], pd.Timestamp)  # the input is left alone


def test_build_graph_names_missing_columns(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    messages, recipients = frames
    with pytest.raises(MissingColumnsError, match="kind"):
        build_graph(messages, recipients.drop(columns=["kind"]))


edge_lists = st.lists(
    st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(1, 5)), min_size=1, max_size=40
)


def _digraph(edges: list[tuple[int, int, int]]) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(f"n{i}@x.com" for i in (7, 3, 9, 0))  # some isolated, out of order
    for u, v, w in edges:
        graph.add_edge(f"n{u}@x.com", f"n{v}@x.com", weight=w)
    return graph


@settings(max_examples=40, deadline=None)
@given(edge_lists)
def test_hub_measures_are_networkx_own(edges: list[tuple[int, int, int]]) -> None:
    # find_hubs builds its sparse matrices once itself; the numbers must be networkx's
    graph = _digraph(edges)
    hubs = find_hubs(graph).set_index("address")
    pagerank = nx.pagerank(graph, weight="weight")
    assert hubs["pagerank"].to_dict() == pytest.approx(pagerank, rel=1e-12, abs=1e-15)
    assert hubs["degree"].to_dict() == dict(graph.to_undirected(as_view=True).degree())
    assert hubs["in_degree"].to_dict() == dict(graph.in_degree())
    assert hubs["weighted_out_degree"].to_dict() == dict(graph.out_degree(weight="weight"))
    betweenness = nx.betweenness_centrality(graph, normalized=True)
    assert hubs["betweenness"].to_dict() == pytest.approx(betweenness, abs=1e-12)


def _louvain_of(graph: nx.DiGraph, seed: int) -> list[list[str]]:
    """networkx's Louvain communities of the messages both ways (the undirected graph built
    edge by edge, as networkx meets them), sorted."""
    undirected = nx.Graph()
    undirected.add_nodes_from(graph.nodes)
    for u, v, w in graph.edges(data="weight"):
        if undirected.has_edge(u, v):
            undirected[u][v]["weight"] += w
        else:
            undirected.add_edge(u, v, weight=w)
    return sorted(map(sorted, nx.community.louvain_communities(undirected, seed=seed)))


@settings(max_examples=30, deadline=None)
@given(edge_lists, st.integers(0, 3))
def test_communities_are_louvain_on_the_messages_both_ways(
    edges: list[tuple[int, int, int]], seed: int
) -> None:
    graph = _digraph(edges)
    found = find_communities(graph, seed=seed).groupby("community_id")["address"].apply(set)
    assert sorted(map(sorted, found)) == _louvain_of(graph, seed)


def _random_digraph(seed: int, nodes: int, edges: int) -> nx.DiGraph:
    """A mailbox-like graph: a few busy addresses, many quiet ones, message-count weights."""
    rng = np.random.default_rng(seed)
    graph = nx.DiGraph()
    graph.add_nodes_from(f"a{i}@x.com" for i in rng.permutation(nodes))
    busy = rng.zipf(1.6, size=(edges, 2)) % nodes
    for u, v in busy.tolist():
        if graph.has_edge(f"a{u}@x.com", f"a{v}@x.com"):
            graph[f"a{u}@x.com"][f"a{v}@x.com"]["weight"] += 1
        else:
            graph.add_edge(f"a{u}@x.com", f"a{v}@x.com", weight=int(rng.integers(1, 20)))
    return graph


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_communities_equal_networkx_louvain_on_a_large_graph(seed: int) -> None:
    # many passes, many moves: the per-node sums kept between visits must never go stale
    graph = _random_digraph(seed, nodes=400, edges=6000)
    expected = _louvain_of(graph, seed)
    found = find_communities(graph, seed=seed).groupby("community_id")["address"].apply(set)
    assert len(expected) > 1
    assert sorted(map(sorted, found)) == expected


def test_relationship_strength_on_a_large_graph_matches_the_edges() -> None:
    # pairs summed both ways from graph.edges, recomputed here edge by edge
    graph = _random_digraph(3, nodes=200, edges=3000)
    for i, (_, _, data) in enumerate(graph.edges(data=True)):
        data["first_at_utc"] = f"2024-01-{1 + i % 28:02d}T09:30:00Z"
        data["last_at_utc"] = "" if i % 7 == 0 else f"2024-03-{1 + i % 28:02d}T10:00:00Z"
    strength = relationship_strength(graph).set_index(["address_a", "address_b"])
    expected: dict[tuple[str, str], list[Any]] = {}
    for u, v, data in graph.edges(data=True):
        a, b = sorted((u, v))
        pair = expected.setdefault((a, b), [0, 0, set(), set()])
        pair[0 if u < v else 1] += data["weight"]  # a self-loop counts as b -> a
        pair[2].add(data["first_at_utc"])
        pair[3].add(data["last_at_utc"])
    assert len(strength) == len(expected)
    for (a, b), (ab, ba, first, last) in expected.items():
        row = strength.loc[(a, b)]
        assert (row["messages_a_to_b"], row["messages_b_to_a"]) == (ab, ba)
        assert row["first_at_utc"] == pd.Timestamp(min(first))
        stamps = sorted(t for t in last if t)
        assert (
            row["last_at_utc"] == pd.Timestamp(stamps[-1])
            if stamps
            else pd.isna(row["last_at_utc"])
        )


@pytest.mark.parametrize(
    "undirected",
    [nx.cycle_graph(30), nx.grid_2d_graph(6, 7), nx.complete_bipartite_graph(5, 6)],
    ids=["cycle", "grid", "bipartite"],
)
@pytest.mark.parametrize("weight", [1, 0.7], ids=["counts", "fractions"])
def test_communities_settle_tied_gains_as_networkx(undirected: nx.Graph, weight: float) -> None:
    # equal weights everywhere: many moves tie on the best gain, where networkx keeps the
    # community it met first (whole-number weights take the sums kept in place, others not)
    graph = nx.DiGraph()
    for u, v in undirected.edges():
        graph.add_edge(f"{u}@x.com", f"{v}@x.com", weight=weight)
    for seed in range(4):
        found = find_communities(graph, seed=seed).groupby("community_id")["address"].apply(set)
        assert sorted(map(sorted, found)) == _louvain_of(graph, seed)


def test_edge_times_are_written_as_numpy_writes_them() -> None:
    # Arrow writes the ISO strings: whole seconds floored (before 1970 too), years 1 to 9999
    from pstlib.analytics.network import _iso_us

    nat, never = np.iinfo(np.int64).min, np.iinfo(np.int64).max  # build_graph's sentinels
    stamps = np.array(
        [
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
            -1,
            0,
            -1_000_001,
            17_145_558_005,
            nat,
            never,
        ],
        dtype=np.int64,
    )
    seconds = stamps[:-2].astype("datetime64[us]").astype("datetime64[s]")
    expected = [f"{t}Z" for t in np.datetime_as_string(seconds, unit="s")] + ["", ""]
    assert _iso_us(stamps) == expected
    assert expected[:3] == ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z"]
