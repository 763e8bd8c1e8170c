"""Resume: an import killed with SIGKILL at 20 random moments, run again each time, ends with every
message in Dataverse exactly once and exactly one final outcome per message in the store."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pstlib.config import DataverseSettings
from pstlib.dataverse import ClientCredentialsTokenProvider, DataverseClient
from pstlib.dataverse.mapping import activity_id_for
from pstlib.dataverse.throttle import RetryPolicy
from pstlib.importer.reconcile import reconcile
from pstlib.importer.run import ImportOptions, import_mail
from pstlib.standin.db import StandinDB
from pstlib.store import Store, load

OWNER = "alex.wilber@contoso.com"
KILLS = 20
SEED = 20240611
SECRET_ENV = "PSTLIB_RESUME_SECRET"


def mailbox(tmp_path: Path) -> Path:
    synth = pytest.importorskip("pstlib.synth")
    result = synth.synthesize(tmp_path / "synth", seed=7, contacts=16, years=0.75, formats=("mbox",))
    assert result.mbox_path is not None
    return Path(result.mbox_path)


def import_once(store_path: str, url: str, token_url: str, paths: list[str]) -> None:
    """The child: the same command every time (it resumes the interrupted session by itself)."""
    os.environ[SECRET_ENV] = "standin-secret"
    settings = DataverseSettings(
        url=url, tenant_id="standin-tenant", client_id="standin-client", secret_env=SECRET_ENV
    )
    tokens = ClientCredentialsTokenProvider.for_settings(settings, token_url)
    policy = RetryPolicy(base_backoff_s=0.01, max_backoff_s=0.05)
    options = ImportOptions(mailbox_owner=OWNER, batch_messages=8, flush_every_s=0.2)
    with Store.open(store_path) as store, DataverseClient(
        settings, token_provider=tokens, policy=policy
    ) as client:
        import_mail(paths, store, options, client=client)


def start_standin(db_path: Path) -> tuple[subprocess.Popen[str], str, str]:
    """The stand-in in its own process (so that this one has no threads when it forks)."""
    code = (
        "from pstlib.standin import StandinConfig, run_standin\n"
        f"run_standin(config=StandinConfig(db_path={str(db_path)!r}, latency_s=0.05, "
        f"operation_time_s=0.02, seed={SEED}))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    return proc, url, f"{url}/standin-tenant/oauth2/v2.0/token"


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(tmp_path: Path) -> None:
    mbox = mailbox(tmp_path)
    store_path = tmp_path / "store.sqlite"
    db_path = tmp_path / "standin.sqlite"
    rng = random.Random(SEED)
    fork = multiprocessing.get_context("fork")
    standin, url, token_url = start_standin(db_path)
    args = (str(store_path), url, token_url, [str(mbox)])
    started = time.monotonic()
    landed = 0
    try:
        for _ in range(KILLS):
            child = fork.Process(target=import_once, args=args)
            child.start()
            child.join(rng.uniform(0.05, 0.6))
            if child.exitcode is not None:  # finished before the kill: the session is complete
                assert child.exitcode == 0
                break
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join()
            landed += 1
        else:
            child = fork.Process(target=import_once, args=args)  # the same command, to the end
            child.start()
            child.join(120)
            assert child.exitcode == 0
    finally:
        standin.kill()
        standin.wait()
    elapsed = time.monotonic() - started

    with Store.open(store_path) as store:
        sessions = load.load_sessions(store)
        assert list(sessions["status"]) == ["completed"]  # every run resumed the one session
        session_id = str(sessions["session_id"].iloc[0])
        messages = load.load_messages(store, session_id)
        chain = reconcile(store, session_id)
    # exactly one final outcome per message, nothing pending or failed
    assert not messages.duplicated(["source_id", "item_id"]).any()
    assert set(messages["outcome"].astype(str)) <= {"imported", "duplicate", "skipped"}
    assert chain.read == chain.found == len(messages) > 200
    assert chain.to_send == chain.sent == chain.acknowledged
    # the stand-in holds every imported message exactly once, and nothing else
    imported = messages[messages["outcome"] == "imported"]
    db = StandinDB(str(db_path))
    emails = db.rows("emails")
    ids = [e["activityid"] for e in emails]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(imported["activity_id"])
    assert set(imported["dedupe_key"].map(activity_id_for)) == set(ids)
    mids = [e["messageid"] for e in emails if e.get("messageid")]
    assert len(mids) == len(set(mids))
    assert all(e.get("statecode") == 1 for e in emails)  # every one completed
    db.close()
    assert landed == KILLS, f"only {landed} kills landed before the import finished"
    assert elapsed < 60


def test_a_reader_s_warnings_do_not_make_a_source_look_finished(tmp_path: Path) -> None:
    # An earlier run read a file's 10 items (source finished "read", 10 found): 7 imported, m7
    # still pending when it was killed, m8 and m9 unreadable (read errors, no rows). m0 and m7
    # had a bad date: the reader's warnings name items that were read, so they do not count as
    # unread, and the file is read again to send m7. Once m7 is imported, it is done.
    from pstlib.errors import SourceError
    from pstlib.importer.run import _load_resumed, _Run
    from pstlib.models import Message
    from pstlib.store.schema import Outcome

    with Store.open(tmp_path / "s.sqlite") as store:
        session_id = store.begin_session("dataverse", {})
        source_id = store.add_source(session_id, "a.mbox", "mbox", 1, None)
        with store.writer(session_id) as writer:
            for n in range(8):
                outcome = Outcome.PENDING if n == 7 else Outcome.IMPORTED
                writer.add_message(source_id, Message("a.mbox", f"m{n}"), outcome)
            for n in (8, 9):
                err = SourceError("a.mbox", "unreadable", code="unreadable_item", item=f"m{n}")
                writer.add_error("read", err, source_id=source_id, item=f"m{n}")
            for n in (0, 7):
                warning = SourceError("a.mbox", "bad date", code="bad_date", item=f"m{n}")
                writer.add_error("warning", warning, source_id=source_id, item=f"m{n}")
        store.finish_source(source_id, "read", 10, None)
        run = SimpleNamespace(resumed=_load_resumed(store, session_id))
        assert not _Run._source_done(run, source_id, (source_id, "read", 10))  # type: ignore[arg-type]
        with store.writer(session_id) as writer:
            writer.update_outcomes(
                [{"source_id": source_id, "item_id": "m7", "outcome": "imported"}]
            )
        run = SimpleNamespace(resumed=_load_resumed(store, session_id))
        assert _Run._source_done(run, source_id, (source_id, "read", 10))  # type: ignore[arg-type]
