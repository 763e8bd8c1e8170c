"""Stores the notebook tests run on: a small synthetic mailbox, a hostile one, the PST corpus."""

from __future__ import annotations

import mailbox
from email.message import EmailMessage
from pathlib import Path

import pytest

from pstlib.importer.session import scan
from pstlib.store import Store
from pstlib.synth import synthesize

HOSTILE = (
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '=HYPERLINK("http://x","y")',
)


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A scanned synthetic mailbox (20 contacts, one year): the store path and its session."""
    root = tmp_path_factory.mktemp("demo")
    result = synthesize(root / "mail", seed=7, contacts=20, years=1, formats=("mbox",))
    path = root / "store.sqlite"
    with Store.open(path) as store:
        session = scan([result.mbox_path], store, mailbox_owner=result.owner_address)
    return path, session


@pytest.fixture(scope="session")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An mbox whose subjects, names and addresses are attacks on HTML and spreadsheets."""
    root = tmp_path_factory.mktemp("hostile")
    box = mailbox.mbox(root / "hostile.mbox")
    for i in range(60):
        attack = HOSTILE[i % len(HOSTILE)]
        msg = EmailMessage()
        msg["From"] = f'"{attack}" <sender{i % 4}@evil.example>'
        msg["To"] = '"=cmd|\' /C calc\'!A0" <owner@corp.example>'
        msg["Subject"] = f"{attack} {i}"
        msg["Date"] = f"Mon, {1 + i % 28:02d} Jan 2024 10:{i % 60:02d}:00 +0000"
        msg["Message-ID"] = f"<m{i}@evil.example>"
        msg.set_content(f"body {attack}")
        box.add(msg)
    box.flush()
    path = root / "store.sqlite"
    with Store.open(path) as store:
        scan([root / "hostile.mbox"], store, mailbox_owner="owner@corp.example")
    return path


@pytest.fixture(scope="session")
def corpus_store(tmp_path_factory: pytest.TempPathFactory, pst_dir: Path) -> Path:
    """The shared PST corpus, scanned (bad files recorded as errors)."""
    path = tmp_path_factory.mktemp("corpus") / "store.sqlite"
    with Store.open(path) as store:
        scan([pst_dir], store)
    return path
