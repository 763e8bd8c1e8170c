"""`pstlib scan`, `sessions`, `export` and `synth` through click's runner and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from pstlib.cli import main
from pstlib.store import Store, load

pytestmark = pytest.mark.corpus

# items per file as ../shared/corpus/README.md lists them (pypff column), and item errors
CORPUS_ITEMS = {
    "asposenet_Chunks_Test_part1.pst": (49, 12),
    "asposenet_Outlook.pst": (17, 0),
    "asposenet_PersonalStorage.pst": (0, 0),
    "asposenet_SampleContacts.pst": (6, 0),
    "asposenet_SampleOstFile.ost": (92, 0),
    "gopst_32-bit.pst": (1, 0),
    "gopst_test-from-aspose.ost": (18, 0),
    "javalibpst_dist-list.pst": (4, 0),
    "javalibpst_passworded.pst": (3, 0),
    "pstsdk_sample1.pst": (1, 0),
    "pstsdk_sample2.pst": (1, 0),
    "pstsdk_submessage.pst": (1, 0),
    "pstsdk_test_ansi.pst": (1, 0),
    "pstsdk_test_unicode.pst": (2, 0),
    "rubymsg_200_recipients.pst": (1, 0),
    "rubymsg_attachAndInline.pst": (1, 0),
    "rubymsg_msgInMsg.pst": (1, 0),
    "tika_testPST.pst": (7, 0),
    "tika_testPST_variousBodyTypes.pst": (4, 0),
}
TRUNCATED = ("derived_header_only_pstsdk_sample1.pst", "derived_truncated_tika_testPST.pst")


@pytest.fixture(scope="module")
def corpus_scan(pst_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The whole PST folder scanned once through the CLI, with --json."""
    store = tmp_path_factory.mktemp("scan") / "store.sqlite"
    result = CliRunner().invoke(main, ["scan", str(pst_dir), "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    return {"doc": json.loads(result.stdout), "store": store}


def test_scan_json_counts_every_item_of_the_corpus(corpus_scan: dict[str, object]) -> None:
    doc = corpus_scan["doc"]
    assert isinstance(doc, dict)
    readable = sum(items for items, _ in CORPUS_ITEMS.values())
    item_errors = sum(errs for _, errs in CORPUS_ITEMS.values())
    assert doc["totals"]["messages"] == readable
    assert doc["totals"]["items_found"] == readable + item_errors
    assert doc["totals"]["sources"] == len(CORPUS_ITEMS) + len(TRUNCATED)
    assert doc["totals"]["sources_failed"] == len(TRUNCATED)
    # README: IPM.Note 31+14+80+1+1+1+1+1+1+7+4 (Chunks, Outlook, OST, pstsdk x3, rubymsg x3, tika x2)
    assert doc["by_message_class"]["IPM.Note"] == 31 + 14 + 80 + 3 + 3 + 7 + 4
    assert doc["by_message_class"]["IPM.Contact"] == 9 + 1 + 6 + 18 + 1 + 1
    assert doc["by_message_class"]["IPM.Post"] == 3
    assert doc["errors"]["by_code"]["truncated"] == 2
    assert doc["errors"]["by_code"]["unreadable_item"] == 12
    assert sum(doc["by_folder_role"].values()) == readable
    assert doc["date_range"]["earliest"].startswith("2004-08")  # gopst_32-bit.pst, the oldest


def test_scan_store_has_one_row_per_item_per_file(corpus_scan: dict[str, object]) -> None:
    with Store.open(corpus_scan["store"]) as store:  # type: ignore[arg-type]
        sources = load.load_sources(store)
        messages = load.load_messages(
            store, columns=["source_id", "subject", "sender_address", "received_at_utc"]
        )
        errors = load.load_errors(store)
    per_file = messages.groupby("source_id").size()
    for row in sources.itertuples():
        name = Path(row.path).name
        if name in TRUNCATED:
            assert row.status == "failed"
            assert name in (
                errors.loc[errors["source_id"] == row.source_id, "cause"].iloc[0] + name
            )
            continue
        items, item_errors = CORPUS_ITEMS[name]
        assert per_file.get(row.source_id, 0) == items, name
        assert row.items_found == items + item_errors, name
    # README: earliest and latest delivery over the corpus (pypff's delivery_time)
    assert messages["received_at_utc"].min().floor("s") == pd.Timestamp(
        "2004-08-24 19:42:33", tz="UTC"
    )
    assert messages["received_at_utc"].max().floor("s") == pd.Timestamp(
        "2021-11-23 00:24:09", tz="UTC"
    )
    tika = messages[messages["subject"] == "Re: Feature Generators"]
    assert set(tika["sender_address"]) == {"kottmann@gmail.com"}


def test_truncated_pst_error_names_the_file(pst_dir: Path, tmp_path: Path) -> None:
    target = pst_dir / TRUNCATED[1]
    result = CliRunner().invoke(main, ["scan", str(target), "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 0  # a bad file is recorded, not fatal
    assert TRUNCATED[1] in result.output or TRUNCATED[1] in result.stderr
    with Store.open(tmp_path / "s.sqlite") as store:
        errors = load.load_errors(store)
    assert errors["code"].tolist() == ["truncated"]
    assert TRUNCATED[1] in errors["cause"].iloc[0] or TRUNCATED[1] in errors["file"].iloc[0]


def test_mail_folder_scans_with_readme_counts(mail_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "mail.sqlite"
    result = CliRunner().invoke(main, ["scan", str(mail_dir), "--store", str(store), "--json", "--processes", "1"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["totals"]["messages"] == 3564  # README: 24 files, 3,564 messages
    assert doc["totals"]["sources"] == 24
    # every message is read; what the readers only warn about is recorded too, naming the file:
    # the spam's undecodable charsets, malformed headers and dates no parser reads (README:
    # "spam has Dates in year 0102 and 2020, plus 2 unparseable dates"), and the perceval
    # edge case's bad date
    with Store.open(store) as st:
        errors = load.load_errors(st)
    found = sorted(
        (Path(f).name, c) for f, c in zip(errors["file"], errors["code"].astype(str), strict=True)
    )
    assert found == sorted(
        [("spamassassin_spam_1.mbox", "unknown_charset")] * 3
        + [("spamassassin_spam_1.mbox", "bad_date")] * 2
        + [("spamassassin_spam_1.mbox", "malformed_header")] * 2
        + [("perceval_mbox_no_fields.mbox", "bad_date")]
    )
    assert doc["errors"]["total"] == len(found)
    assert set(errors["stage"].astype(str)) == {"warning"}  # each item itself was read


def test_sessions_and_export(corpus_scan: dict[str, object], tmp_path: Path) -> None:
    store = str(corpus_scan["store"])
    runner = CliRunner()
    listed = runner.invoke(main, ["sessions", "--store", store, "--json"])
    assert listed.exit_code == 0
    sessions = json.loads(listed.stdout)
    assert len(sessions) == 1 and sessions[0]["status"] == "completed"
    out = tmp_path / "messages.parquet"
    exported = runner.invoke(
        main, ["export", "messages", "--store", store, "--format", "parquet", "-o", str(out)]
    )
    assert exported.exit_code == 0, exported.output
    assert len(pd.read_parquet(out)) == sum(items for items, _ in CORPUS_ITEMS.values())
    csv = runner.invoke(main, ["export", "sources", "--store", store, "--format", "csv"])
    assert csv.exit_code == 0 and csv.stdout.splitlines()[0].startswith("source_id")


def test_bad_arguments_exit_non_zero_with_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["scan", str(tmp_path / "nope.pst")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    unknown = runner.invoke(main, ["export", "nonsense", "--store", str(tmp_path / "s.sqlite")])
    assert unknown.exit_code == 1
    assert unknown.output.count("\n") == 1 and "nonsense" in unknown.output


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output and "--help" in result.output


def test_scan_as_a_real_subprocess(pst_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pstlib.cli",
            "scan",
            str(pst_dir / "tika_testPST.pst"),
            "--store",
            str(tmp_path / "s.sqlite"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["totals"]["messages"] == 7
    assert doc["by_message_class"] == {"IPM.Note": 7}
