"""Reading many files in worker processes (pstlib.sources.parallel.read_files) and the scan on top.

Every result arrives exactly once with its file, in its file's order; a worker killed mid-file costs
that file only (recorded as a failure); workers that cannot start cost nothing.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pstlib.errors import SourceError
from pstlib.importer.session import scan
from pstlib.models import Message
from pstlib.sources import discover_sources
from pstlib.sources import parallel as parallel_module
from pstlib.sources.parallel import (
    CHUNK_ITEMS,
    FileDone,
    FileEvent,
    FileItems,
    FileOpened,
    _Pool,
    read_files,
)
from pstlib.store import Store, load

pytestmark = pytest.mark.corpus


def _key(result: Message | SourceError) -> tuple[str, ...]:
    if isinstance(result, SourceError):
        return ("error", result.code, result.item or "")
    return ("message", result.item_id, result.dedupe_key)


@dataclass
class FileLog:
    """What arrived for one file: its open and done events, its results in arrival order."""

    opened: list[FileOpened] = field(default_factory=list)
    done: list[FileDone] = field(default_factory=list)
    items: list[tuple[str, ...]] = field(default_factory=list)


def _by_file(events: list[FileEvent]) -> dict[int, FileLog]:
    files: dict[int, FileLog] = defaultdict(FileLog)
    for event in events:
        entry = files[event.index]
        if isinstance(event, FileOpened):
            entry.opened.append(event)
        elif isinstance(event, FileItems):
            entry.items.extend(_key(r) for r in event.results)
        else:
            entry.done.append(event)
    return files


@pytest.fixture(scope="module")
def corpus_files(pst_dir: Path, mail_dir: Path) -> list[Path]:
    return discover_sources([pst_dir, mail_dir])


def test_workers_deliver_what_one_process_reads(corpus_files: list[Path]) -> None:
    alone = _by_file(list(read_files(corpus_files, processes=1)))
    events = list(read_files(corpus_files, processes=2))
    # results travel in bounded chunks (memory stays flat whatever the file size)
    assert max(len(e.results) for e in events if isinstance(e, FileItems)) <= CHUNK_ITEMS
    parallel = _by_file(events)
    assert set(parallel) == set(range(len(corpus_files)))
    for index in range(len(corpus_files)):
        one, many = alone[index], parallel[index]
        # one open and one done per file, the same results in the same order
        assert len(many.opened) == len(many.done) == 1
        assert many.items == one.items, corpus_files[index].name
        done = many.done[0]
        assert done.found == len(many.items)
        assert done.failure is None
        opened = many.opened[0]
        assert (opened.kind, opened.sha256) == (one.opened[0].kind, one.opened[0].sha256)
    # the truncated PSTs fail to open in a worker as they do here
    failed = {corpus_files[i].name for i, f in parallel.items() if f.opened[0].error}
    assert failed == {
        "derived_header_only_pstsdk_sample1.pst",
        "derived_truncated_tika_testPST.pst",
    }


def test_a_killed_worker_costs_only_its_file(corpus_files: list[Path]) -> None:
    # The OST (92 items) repeated: the first worker to send one of its chunks is killed. That
    # file ends with a reader_died failure counting what arrived; every other file is whole.
    ost = next(p for p in corpus_files if p.name == "asposenet_SampleOstFile.ost")
    small = next(p for p in corpus_files if p.name == "tika_testPST.pst")
    files = [ost, small, ost, small, small, ost]
    pool = _Pool(files, 2, attachment_data=False)
    events: list[FileEvent] = []
    victim: int | None = None
    for event in pool.events():
        events.append(event)
        if victim is None and isinstance(event, FileItems) and files[event.index] == ost:
            victim = event.index
            worker = next(w for w in pool.workers if w.assigned and w.assigned[0] == victim)
            os.kill(worker.process.pid, signal.SIGKILL)
    by_file = _by_file(events)
    assert victim is not None and set(by_file) == set(range(len(files)))
    for index, entry in by_file.items():
        done = entry.done
        assert len(done) == 1
        items = entry.items
        assert len(set(items)) == len(items)  # nothing twice
        if index == victim:
            assert done[0].failure is not None
            assert done[0].failure.code == "reader_died"
            assert "exit code -9" in done[0].failure.cause
            assert done[0].found == len(items)
        else:
            assert done[0].failure is None
            assert len(items) == (92 if files[index] == ost else 7)


def test_workers_that_cannot_start_leave_the_reading_here(
    corpus_files: list[Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(
        parallel_module, "_WORKER_CODE", "import sys; sys.exit(3)  # {path}{task}{result}{data}"
    )
    files = [p for p in corpus_files if p.suffix == ".pst"][:5]
    with caplog.at_level(logging.WARNING, logger="pstlib.sources.parallel"):
        parallel = _by_file(list(read_files(files, processes=2)))
    alone = _by_file(list(read_files(files, processes=1)))
    assert {i: f.items for i, f in parallel.items()} == {i: f.items for i, f in alone.items()}
    assert all(f.done[0].failure is None for f in parallel.values())
    assert "failed to start (exit code 3)" in caplog.text


def test_scan_records_the_same_session_with_workers_or_without(
    corpus_files: list[Path], tmp_path: Path
) -> None:
    def recorded(processes: int) -> tuple[object, ...]:
        with Store.open(tmp_path / f"s{processes}.sqlite") as store:
            session_id = scan(corpus_files, store, processes=processes)
            sources = load.load_sources(store, session_id)
            path_of = dict(zip(sources["source_id"], sources["path"], strict=True))
            messages = load.load_messages(store, session_id)
            errors = load.load_errors(store, session_id)
            return (
                sorted(
                    (path_of[s], i, k, c)
                    for s, i, k, c in zip(
                        messages["source_id"],
                        messages["item_id"],
                        messages["dedupe_key"],
                        messages["content_sha256"],
                        strict=True,
                    )
                ),
                sorted(
                    (str(path_of.get(s)), c, str(i))
                    for s, c, i in zip(
                        errors["source_id"], errors["code"], errors["item"], strict=True
                    )
                ),
                sorted(
                    zip(
                        sources["path"],
                        sources["status"],
                        sources["items_found"],
                        sources["sha256"].astype(str),
                        strict=True,
                    )
                ),
            )

    alone, parallel = recorded(1), recorded(2)
    assert len(parallel[0]) == 3774  # every message of the corpus, once
    assert parallel == alone


@pytest.mark.parametrize("processes", [1, 2])
def test_scan_records_what_readers_only_warn_about(tmp_path: Path, processes: int) -> None:
    # Two mbox files (so that workers read them when processes=2); the second message of
    # b.mbox has a date no parser understands: it is read, and its bad_date is an error row.
    good = "From a@example.com Mon Jan  1 00:00:00 2024\nFrom: a@example.com\nSubject: ok\n"
    good += "Date: Mon, 1 Jan 2024 10:00:00 +0000\nMessage-ID: <ok-{n}@example.com>\n\nbody\n\n"
    (tmp_path / "a.mbox").write_text(good.format(n=1))
    bad = "From b@example.com Mon Jan  1 00:00:00 2024\nFrom: b@example.com\nSubject: bad\n"
    bad += "Date: the day after tomorrow\nMessage-ID: <bad@example.com>\n\nbody\n\n"
    (tmp_path / "b.mbox").write_text(good.format(n=2) + bad)
    with Store.open(tmp_path / "s.sqlite") as store:
        session_id = scan([tmp_path / "a.mbox", tmp_path / "b.mbox"], store, processes=processes)
        messages = load.load_messages(store, session_id)
        errors = load.load_errors(store, session_id)
    assert sorted(messages["internet_message_id"]) == [
        "<bad@example.com>",
        "<ok-1@example.com>",
        "<ok-2@example.com>",
    ]
    (row,) = errors.itertuples()
    assert row.code == "bad_date" and row.stage == "warning"
    assert str(row.file).endswith("b.mbox") and "the day after tomorrow" in row.cause


def test_ordered_workers_deliver_the_files_one_after_another(corpus_files: list[Path]) -> None:
    # what an import needs (the copy in the earlier file is the one imported): every event of
    # a file before any of the next one's, each file whole, with workers reading ahead
    alone = _by_file(list(read_files(corpus_files, processes=1)))
    events = list(read_files(corpus_files, processes=2, ordered=True))
    order = [event.index for event in events]
    assert order == sorted(order) and set(order) == set(range(len(corpus_files)))
    ordered = _by_file(events)
    for index, entry in ordered.items():
        assert entry.items == alone[index].items, corpus_files[index].name
        assert len(entry.opened) == len(entry.done) == 1


def _mbox(path: Path, numbers: range, bad_date_at: int | None = None) -> Path:
    text = ""
    for n in numbers:
        date = "the day after tomorrow" if n == bad_date_at else "Mon, 1 Jan 2024 10:00:00 +0000"
        text += (
            f"From a@example.com Mon Jan  1 00:00:00 2024\nFrom: a@example.com\n"
            f"To: owner@contoso.com\nSubject: m{n}\nDate: {date}\n"
            f"Message-ID: <m{n}@example.com>\n\nbody {n}\n\n"
        )
    path.write_text(text)
    return path


@pytest.mark.parametrize("processes", [1, 2])
def test_an_import_reads_in_workers_and_keeps_the_order_of_its_files(
    tmp_path: Path, processes: int
) -> None:
    # The first file holds copies of 40 of the second's 400 messages. However the reader
    # processes interleave, the first file's copies are the ones imported and the second's
    # their duplicates; the bad date the second file's reader warns about is an error row.
    from pstlib.importer.run import ImportOptions, import_mail

    first = _mbox(tmp_path / "a.mbox", range(0, 400, 10))
    second = _mbox(tmp_path / "b.mbox", range(400), bad_date_at=7)
    options = ImportOptions(target="assess", mailbox_owner="owner@contoso.com",
                            processes=processes)  # fmt: skip
    with Store.open(tmp_path / "s.sqlite") as store:
        session_id = import_mail([first, second], store, options, client=None)
        messages = load.load_messages(store, session_id)
        sources = load.load_sources(store, session_id)
        errors = load.load_errors(store, session_id)
    path = messages["source_id"].map(sources.set_index("source_id")["path"].astype(str))
    outcome = messages["outcome"].astype(str)
    in_first = path.str.endswith("a.mbox")
    assert (outcome[in_first] == "read").sum() == 40
    copies = ~in_first & messages["item_id"].astype(int).mod(10).eq(0)
    assert (outcome[copies] == "duplicate").sum() == 40
    assert (outcome[~in_first & ~copies] == "read").sum() == 360
    assert sorted(sources["status"].astype(str)) == ["read", "read"]
    assert sorted(sources["items_found"].astype(int)) == [40, 400]
    (row,) = errors.itertuples()
    assert row.code == "bad_date" and row.stage == "warning" and str(row.file).endswith("b.mbox")


def test_an_import_goes_on_when_a_reader_dies(
    corpus_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libpff taking its process down on a hostile file: the reader of the first file is killed
    # after its first chunk. That file is recorded failed (reader_died) with what arrived; the
    # next file is read whole by a fresh reader, and the session completes.
    from pstlib.importer import run as importer_run
    from pstlib.importer.run import ImportOptions, import_mail

    ost = next(p for p in corpus_files if p.name == "asposenet_SampleOstFile.ost")
    small = next(p for p in corpus_files if p.name == "tika_testPST.pst")

    def killing(paths: list[Path], **options: bool) -> object:
        pool = _Pool(list(paths), 1, options["attachment_data"], ordered=True)
        killed = False
        for event in pool.events():
            yield event
            if not killed and isinstance(event, FileItems):
                killed = True
                os.kill(pool.workers[0].process.pid, signal.SIGKILL)

    monkeypatch.setattr(importer_run, "read_files", lambda paths, **kw: killing(paths, **kw))
    options = ImportOptions(target="assess", mailbox_owner="owner@contoso.com")
    with Store.open(tmp_path / "s.sqlite") as store:
        session_id = import_mail([ost, small], store, options, client=None)
        session = store.get_session(session_id)
        sources = load.load_sources(store, session_id).set_index("path")
        errors = load.load_errors(store, session_id)
        messages = load.load_messages(store, session_id)
    assert session["status"] == "completed"
    assert sources.loc[str(ost), "status"] == "failed"
    assert sources.loc[str(small), "status"] == "read"
    assert sources.loc[str(small), "items_found"] == 7
    died = errors[errors["code"].astype(str) == "reader_died"]
    assert len(died) == 1 and "exit code -9" in str(died["cause"].iloc[0])
    found = int(sources.loc[str(ost), "items_found"])
    assert 0 < found < 92
    # every item that arrived has its row or its read error, and none twice
    item_errors = errors[errors["item"].notna() & (errors["stage"].astype(str) == "read")]
    assert len(messages) + len(item_errors) == found + 7
    assert not messages.duplicated(["source_id", "item_id"]).any()


def test_ordered_files_keep_their_order_when_a_worker_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second worker to start exits before it is ready: its files are read here, each in
    # its turn, not after the other worker's files (which would break the order an import's
    # deduplication relies on).
    paths = [_mbox(tmp_path / f"{n}.mbox", range(n * 10, n * 10 + 10)) for n in range(4)]
    flag = tmp_path / "first-started"
    first_only = (
        f"import os, sys\ntry:\n    os.close(os.open({str(flag)!r}, os.O_CREAT | os.O_EXCL))\n"
        "except FileExistsError:\n    sys.exit(3)\n"
    )
    monkeypatch.setattr(
        parallel_module,
        "_WORKER_CODE",
        first_only + parallel_module._WORKER_CODE.replace("; ", "\n"),
    )
    events = list(read_files(paths, processes=2, ordered=True, background=True))
    order = [event.index for event in events]
    assert order == sorted(order) and set(order) == {0, 1, 2, 3}
    by_file = _by_file(events)
    assert all(len(by_file[i].items) == 10 and not by_file[i].done[0].failure for i in range(4))
