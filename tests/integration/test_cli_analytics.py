"""`pstlib gaps`, `senders` and `network` on a scanned synthetic mailbox, through the CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pandas as pd
import pytest
from click.testing import CliRunner

from pstlib import views
from pstlib.cli import main
from pstlib.importer.session import scan
from pstlib.store import Store
from pstlib.synth import synthesize


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli-analytics")
    made = synthesize(tmp / "mail", seed=5, contacts=25, years=1.5, formats=("mbox",))
    path = tmp / "store.sqlite"
    with Store.open(path) as store:
        assert made.mbox_path is not None
        scan([made.mbox_path], store, mailbox_owner=made.owner_address)
    return path


def test_gaps_json_equals_the_library(store_path: Path) -> None:
    result = CliRunner().invoke(main, ["gaps", "--store", str(store_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = pd.DataFrame(json.loads(result.stdout))
    with Store.open(store_path) as store:
        expected = views.gaps(store)
    assert len(rows) == len(expected)
    assert set(rows.columns) >= {
        "contact_address",
        "start",
        "end",
        "business_days",
        "severity",
        "kind",
    }
    assert rows["contact_address"].tolist() == expected["contact_address"].astype(str).tolist()


def test_gaps_csv_has_a_header_and_a_row_per_gap(store_path: Path) -> None:
    result = CliRunner().invoke(main, ["gaps", "--store", str(store_path), "--format", "csv"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("contact_address,start,end,business_days")
    with Store.open(store_path) as store:
        assert len(lines) - 1 == len(views.gaps(store))


def test_senders_table_lists_every_correspondent(store_path: Path) -> None:
    result = CliRunner().invoke(main, ["senders", "--store", str(store_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    with Store.open(store_path) as store:
        profiles = views.sender_profiles(store)
    assert len(rows) == len(profiles) > 25  # the contacts plus newsletters, one-offs...
    assert {r["sender_class"] for r in rows} >= {"internal_colleague", "newsletter"}


@pytest.mark.parametrize("fmt", ["graphml", "gexf", "json"])
def test_network_export_reads_back(store_path: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"net.{fmt}"
    result = CliRunner().invoke(
        main, ["network", "--store", str(store_path), "--format", fmt, "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    if fmt == "graphml":
        graph = nx.read_graphml(out)
    elif fmt == "gexf":
        graph = nx.read_gexf(out)
    else:
        graph = nx.node_link_graph(json.loads(out.read_text()), edges="links")
    with Store.open(store_path) as store:
        expected = views.network_graph(store)
    assert graph.number_of_nodes() == expected.number_of_nodes()
    assert graph.number_of_edges() == expected.number_of_edges()


def test_gaps_without_an_owner_says_so(tmp_path: Path, mail_dir: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store.open(path) as store:
        scan([mail_dir / "perceval_mbox_complex.mbox"], store)  # no --owner given
    result = CliRunner().invoke(main, ["gaps", "--store", str(path)])
    assert result.exit_code == 1
    assert "no mailbox owner" in result.output
