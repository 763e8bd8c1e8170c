"""pstlib.reports' pure parts on tiny inline data whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from pstlib.analytics.imports import SessionSummary
from pstlib.reports import views
from pstlib.reports.context import frame_html
from pstlib.reports.errors import ReportError
from pstlib.reports.excel import guard_csv, write_json, write_workbook
from pstlib.reports.pseudonymise import Pseudonymiser
from pstlib.reports.registry import REPORTS, load_spec
from pstlib.reports.render import external_references, table_of_contents

UTC = "UTC"


def _summary(**outcomes: int) -> SessionSummary:
    return SessionSummary(
        session_id="s1", status="completed", target="assess", started_at_utc=None,
        ended_at_utc=None, duration_s=None, software_version="0", host="h", sources=1,
        sources_failed=0, items_found=sum(outcomes.values()), messages_read=sum(outcomes.values()),
        outcomes=outcomes, by_message_class={}, by_item_kind={}, by_folder_role={},
        earliest_sent_at_utc=None, latest_sent_at_utc=None, size_bytes=0,
        errors_total=outcomes.get("failed", 0) + 1, errors_by_code={})


# ------------------------------------------------------------------------------ pseudonymise
def test_tokens_are_stable_keyed_and_keep_the_domain() -> None:
    p, other = Pseudonymiser("k1"), Pseudonymiser("k2")
    token = p.address("Alex.Wilber@Contoso.com")
    assert token == p.address("alex.wilber@contoso.com")  # normalised: same person, same token
    assert token.endswith("@contoso.com") and token.startswith("person-")
    assert token != other.address("alex.wilber@contoso.com")  # another key, another token
    assert Pseudonymiser("k1", keep_domains=False).address("a@b.com").endswith(".invalid")
    assert p.address("*") == "*"


def test_frame_pseudonymises_names_addresses_subjects_and_free_text() -> None:
    p = Pseudonymiser("k")
    frame = pd.DataFrame({
        "sender_address": ["a@x.com", None], "sender_name": ["Alice", "Bob"],
        "subject": ["Lunch with Alice", ""], "recommendation": ["look for a@x.com", "none"],
        "message_count": [3, 1], "weekday_name": ["Mon", "Tue"],
    })
    out = p.frame(frame)
    assert out.loc[0, "sender_name"] == out.loc[0, "sender_address"].split("@")[0]
    assert out.loc[1, "sender_name"] == p.name("Bob")  # no address: the name's own token
    assert out.loc[0, "subject"].startswith("subject-") and out.loc[1, "subject"] == ""
    assert out.loc[0, "recommendation"] == f"look for {p.address('a@x.com')}"
    assert out["message_count"].tolist() == [3, 1] and out["weekday_name"].tolist() == ["Mon", "Tue"]
    assert frame.loc[0, "sender_address"] == "a@x.com"  # input untouched


# --------------------------------------------------------------------------------------- views
def test_success_rate_counts_duplicates_and_lost_items() -> None:
    # 8 imported + 1 duplicate out of 10 messages and 1 item lost before it had a row: 9/11
    assert views.success_rate(_summary(imported=8, duplicate=1, failed=1)) == pytest.approx(9 / 11)


def test_calendar_days_marks_mailbox_gap_days() -> None:
    messages = pd.DataFrame({
        "sent_at_utc": pd.to_datetime(["2024-01-01 10:00", "2024-01-01 11:00", "2024-01-10 09:00"],
                                      utc=True),
        "received_at_utc": pd.NaT})
    gaps = pd.DataFrame({"contact_address": ["*"], "start": [pd.Timestamp("2024-01-03")],
                         "end": [pd.Timestamp("2024-01-04")]})
    cal = views.calendar_days(messages, gaps)
    assert len(cal) == 10 and cal["message_count"].tolist()[0] == 2
    assert cal.loc[cal["in_gap"], "date"].dt.day.tolist() == [3, 4]
    assert cal["week"].tolist() == [0] * 7 + [1] * 3  # 2024-01-01 is a Monday


def test_daily_operations_counts_per_day() -> None:
    day = pd.Timestamp("2024-03-01 09:00", tz=UTC)
    sessions = pd.DataFrame({"session_id": ["s1"], "started_at_utc": [day]})
    messages = pd.DataFrame({"outcome": ["imported", "failed", "imported"],
                             "processed_at_utc": [day, day, day + pd.Timedelta(days=1)]})
    errors = pd.DataFrame({"at_utc": [day]})
    contacts = pd.DataFrame({"action": ["created", "matched"], "at_utc": [day, day]})
    table = views.daily_operations(sessions, messages, errors, contacts)
    assert table["imported"].tolist() == [1, 1] and table["failed"].tolist() == [1, 0]
    assert table["errors"].tolist() == [1, 0] and table["contacts_created"].tolist() == [1, 0]


def test_resolve_errors_finds_a_later_success() -> None:
    t0 = pd.Timestamp("2024-03-01", tz=UTC)
    errors = pd.DataFrame({"error_id": [1, 2], "session_id": ["s1", "s1"], "source_id": [1, 1],
                           "file": ["a.pst", "a.pst"], "item": ["i1", "i2"], "at_utc": [t0, t0]})
    sources = pd.DataFrame({"source_id": [1, 2], "path": ["a.pst", "a.pst"],
                            "status": ["read", "read"], "started_at_utc": [t0, t0],
                            "session_id": ["s1", "s2"]})
    messages = pd.DataFrame({"source_id": [2], "item_id": ["i1"], "outcome": ["imported"],
                             "processed_at_utc": [t0 + pd.Timedelta(hours=1)],
                             "session_id": ["s2"]})
    out = views.resolve_errors(errors, messages, sources)
    assert out["resolved"].tolist() == [True, False]
    assert out["resolved_in_session"].tolist()[0] == "s2"


# ------------------------------------------------------------------------------- html / excel
def test_frame_html_escapes_mail_text() -> None:
    markup = frame_html(pd.DataFrame({"subject": ["<script>alert(1)</script>"]}))
    assert "<script>" not in markup and "&lt;script&gt;" in markup


def test_toc_and_external_references() -> None:
    page = '<h2 id="A-b">A &amp; b<a class="anchor-link" href="#A-b">¶</a></h2><h3 id="c">c</h3>'
    toc = table_of_contents(page)
    assert 'href="#A-b">A &amp; b</a>' in toc and 'href="#c"' in toc
    assert external_references('<script src="https://cdn.x/require.js"></script>')
    assert external_references('<img src="data:image/png;base64,AAAA">') == []


def test_workbook_writes_text_never_formulas(tmp_path: Path) -> None:
    frame = pd.DataFrame({"subject": ['=HYPERLINK("http://x","y")', "+1", "ok"],
                          "n": np.array([1, 2, 3]), "at": pd.to_datetime(["2024-01-01"] * 3,
                                                                          utc=True)})
    path = write_workbook({"t": frame}, tmp_path / "b.xlsx", about={"title": "x"})
    sheet = openpyxl.load_workbook(path)["t"]
    assert sheet["A2"].data_type == "s" and sheet["A2"].value.startswith("=HYPERLINK")
    assert sheet.freeze_panes == "A2" and sheet.auto_filter.ref == "A1:C4"
    assert sheet["B2"].number_format == "#,##0"
    assert guard_csv(frame)["subject"].tolist()[:2] == ["'=HYPERLINK(\"http://x\",\"y\")", "'+1"]
    doc = json.loads(write_json({"t": frame}, tmp_path / "t.json").read_text())
    assert doc["tables"]["t"][0]["subject"].startswith("=HYPERLINK")


# ------------------------------------------------------------------------------------ registry
def test_spec_builds_a_custom_report() -> None:
    report = load_spec({"name": "board", "formats": ["html"], "sections": ["Key figures"],
                        "filters": {"top_n": 5}})
    assert report.notebook == REPORTS["executive-summary"].notebook
    assert report.parameters["top_n"] == 5 and report.formats == ("html",)
    with pytest.raises(ReportError, match="unknown filter"):
        load_spec({"filters": {"password": "x"}})
    with pytest.raises(ReportError, match="unknown format"):
        load_spec({"formats": ["docx"]})


def test_xlsx_keeps_values_types_and_drops_what_xml_cannot_hold(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "text": ["a\x07b", None, "<&>"],  # a bell (illegal in XML) is dropped, markup escaped
        "flag": pd.array([True, None, False], dtype="boolean"),
        "count": pd.array([1, None, 3], dtype="Int64"),
        "share_rate": [0.5, float("nan"), float("inf")],  # not finite: an empty cell
        "day": pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
        "mixed": [1, "x", pd.Timestamp("2024-01-01 12:00", tz="UTC")],
    })
    path = write_workbook({"t": frame}, tmp_path / "b.xlsx")
    sheet = openpyxl.load_workbook(path)["t"]
    assert [c.value for c in sheet["A"]] == ["text", "ab", None, "<&>"]
    assert [c.value for c in sheet["B"]][1:] == [True, None, False]
    assert [c.value for c in sheet["C"]][1:] == [1, None, 3]
    assert sheet["D2"].value == 0.5 and sheet["D2"].number_format == "0.0%"
    assert sheet["D3"].value is None and sheet["D4"].value is None
    assert sheet["E2"].value == pd.Timestamp("2024-01-01") and sheet["E2"].number_format == "yyyy-mm-dd"
    assert sheet["F2"].value == 1 and sheet["F3"].data_type == "s"
    assert sheet["F4"].value == pd.Timestamp("2024-01-01 12:00")  # UTC, as Excel has no zones
    assert sheet["A1"].font.b and sheet.column_dimensions["A"].width >= 6


def test_schedule_runs_the_first_gap_report_first_and_the_other_gap_reports_last() -> None:
    from pstlib.reports.execute import schedule

    order = [r.name for r in schedule(list(REPORTS.values()))]
    gap_users = [n for n in order if REPORTS[n].analyses]
    assert order[0] == "timeline"  # computes the gap model while the others run
    assert order[-len(gap_users) + 1:] == gap_users[1:]  # find it cached
    assert order.index("detailed-analytics") < order.index("dashboard")  # most tables first


def test_figure_text_alternative_names_titles_and_axes() -> None:
    from matplotlib.figure import Figure

    from pstlib.reports.theme import _png_with_alt, describe

    figure = Figure()
    left, right = figure.subplots(1, 2)
    left.set_title("Top senders")
    left.set_xlabel("messages")
    right.set_ylabel("replies")
    assert describe(figure) == "Chart: Top senders (messages); replies"
    figure.suptitle("Mail <b>")
    assert describe(figure).startswith("Chart: Mail <b>; Top senders")
    png, metadata = _png_with_alt(figure) or (b"", {})
    assert png.startswith(b"\x89PNG") and metadata == {"alt": describe(figure)}
    assert describe(Figure()) == "Chart" and _png_with_alt(Figure()) is None
