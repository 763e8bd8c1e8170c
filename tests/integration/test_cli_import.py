"""`pstlib import` and `pstlib verify` through the CLI against the local Dataverse over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pstlib.cli import main
from pstlib.standin import StandinConfig, StandinServer
from pstlib.synth import synthesize


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StandinServer]:
    with StandinServer(StandinConfig(db_path=str(tmp_path / "dv.sqlite"))) as running:
        running.start()
        yield running


def _dataverse_args(server: StandinServer) -> list[str]:
    return [
        "--dataverse-url", server.url, "--tenant", "standin-tenant",
        "--client-id", "standin-client", "--token-url", server.token_url,
    ]  # fmt: skip


def test_import_then_verify_balances(server: StandinServer, tmp_path: Path) -> None:
    made = synthesize(tmp_path / "mail", seed=2, contacts=6, years=0.4, formats=("mbox",))
    store = str(tmp_path / "store.sqlite")
    runner = CliRunner(env={"PSTLIB_CLIENT_SECRET": "standin-secret"})
    imported = runner.invoke(
        main,
        ["import", str(made.mbox_path), "--store", store, "--owner", made.owner_address, "--json",
         *_dataverse_args(server)],
    )  # fmt: skip
    assert imported.exit_code == 0, imported.output
    doc = json.loads(imported.stdout)
    assert doc["outcomes"] == {"imported": made.messages}
    assert server.db.count("emails") == made.messages

    verified = runner.invoke(
        main, ["verify", doc["session_id"], "--store", store, *_dataverse_args(server)]
    )
    assert verified.exit_code == 0, verified.output
    result = json.loads(verified.stdout)
    assert result["balanced"] is True
    assert result["verified"] == result["acknowledged"] == made.messages

    again = runner.invoke(
        main,
        ["import", str(made.mbox_path), "--store", store, "--owner", made.owner_address, "--json",
         *_dataverse_args(server)],
    )  # fmt: skip
    assert json.loads(again.stdout)["outcomes"] == {"duplicate": made.messages}
    assert server.db.count("emails") == made.messages  # nothing twice


def test_import_without_a_secret_fails_with_one_line(server: StandinServer, tmp_path: Path) -> None:
    made = synthesize(tmp_path / "mail", seed=2, contacts=2, years=0.1, formats=("mbox",))
    runner = CliRunner(env={"PSTLIB_CLIENT_SECRET": None})
    result = runner.invoke(
        main, ["import", str(made.mbox_path), "--store", str(tmp_path / "s.sqlite"),
               *_dataverse_args(server)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "PSTLIB_CLIENT_SECRET" in result.output


def test_assess_target_needs_no_dataverse(tmp_path: Path) -> None:
    made = synthesize(tmp_path / "mail", seed=4, contacts=3, years=0.2, formats=("mbox",))
    result = CliRunner().invoke(
        main, ["import", str(made.mbox_path), "--store", str(tmp_path / "s.sqlite"),
               "--target", "assess", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outcomes"] == {"read": made.messages}
