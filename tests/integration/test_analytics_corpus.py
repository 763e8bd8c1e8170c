"""Every sender, threading and network analysis runs on the real corpus (PST, OST, mbox, EML).

The corpus is scanned once per module into a temporary store, read back with the loaders, and each
function is run on it; the checks are on shape and sanity, the right answers being unknown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import networkx as nx
import pandas as pd
import pytest

from pstlib.analytics.network import (
    build_graph,
    export_graph,
    find_communities,
    find_hubs,
    relationship_strength,
)
from pstlib.analytics.senders import classify_senders, peak_times, profile_senders, volume_trends
from pstlib.analytics.threading import flag_automated_messages, reply_pairs, thread_messages
from pstlib.importer.session import scan
from pstlib.store import Store, load_messages, load_recipients

pytestmark = [pytest.mark.corpus, pytest.mark.slow]


@pytest.fixture(scope="module")
def corpus(
    mail_dir: Path, pst_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    path = tmp_path_factory.mktemp("corpus") / "store.sqlite"
    with Store.open(path) as store:
        scan([mail_dir, pst_dir], store)
        yield load_messages(store), load_recipients(store)


def test_threading_runs_on_the_corpus(corpus: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    messages, _ = corpus
    threads = thread_messages(messages)
    assert len(threads) == len(messages)
    assert threads["thread_id"].notna().all()
    assert (threads["depth"] >= 0).all()
    linked = threads["parent_message_row_id"].dropna()
    assert linked.isin(messages["message_row_id"]).all()
    assert (threads["parent_message_row_id"] != threads["message_row_id"]).fillna(True).all()
    pairs = reply_pairs(messages, threads)
    assert (pairs["reply_delay_s"] >= 0).all()
    assert (pairs["replier_address"] != pairs["parent_sender_address"]).all()
    assert len(flag_automated_messages(messages)) == len(messages)


def test_sender_analyses_run_on_the_corpus(corpus: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    messages, recipients = corpus
    profile = profile_senders(messages, recipients)
    assert profile["sender_address"].is_unique
    assert profile["importance_score"].between(0, 10).all()
    assert profile["class_confidence"].between(0, 1).all()
    assert set(profile["trend"].astype(str)) <= {"increasing", "stable", "decreasing"}
    classes = classify_senders(messages, recipients)
    assert set(classes["sender_address"]) == set(profile["sender_address"])
    trends = volume_trends(messages)
    assert trends["message_count"].sum() == messages["sent_at_utc"].notna().sum() + (
        messages["sent_at_utc"].isna() & messages["received_at_utc"].notna()
    ).sum()
    assert len(volume_trends(messages, freq="W-MON")) >= len(trends)
    peaks = peak_times(messages)
    assert len(peaks) == 168
    assert peaks["message_count"].sum() == trends["message_count"].sum()


def test_network_analyses_run_on_the_corpus(
    corpus: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    graph = build_graph(*corpus)
    assert graph.number_of_nodes() > 0
    strength = relationship_strength(graph)
    assert strength["strength"].between(0, 1).all()
    hubs = find_hubs(graph)
    assert len(hubs) == graph.number_of_nodes()
    communities = find_communities(graph, seed=0)
    assert set(communities["address"]) == set(graph.nodes)
    for fmt in ("graphml", "gexf", "json"):
        assert export_graph(graph, tmp_path / f"corpus.{fmt}", fmt).stat().st_size > 0
    assert nx.read_graphml(tmp_path / "corpus.graphml").number_of_nodes() == len(hubs)
