"""The main job end to end on embedded defaults: what `make demo` runs.

A seeded synthetic mailbox is generated, a local Dataverse (the stand-in) is started on 127.0.0.1,
the mailbox is scanned (assess) and imported into it as a recorded session, every email is read back
and reconciled, and every report is rendered (HTML, PDF, Excel, JSON, CSV). Everything lands under
one folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pstlib.config import DataverseSettings
from pstlib.dataverse import DataverseClient
from pstlib.importer.contacts import ContactPolicy, CreateContacts
from pstlib.importer.reconcile import Reconciliation, verify_session
from pstlib.importer.run import ImportOptions, import_mail
from pstlib.importer.session import ProgressCallback, scan
from pstlib.reports import run_reports
from pstlib.standin import StandinConfig, StandinServer
from pstlib.store import Store
from pstlib.synth import synthesize

DEMO_SECRET_ENV = "PSTLIB_DEMO_STANDIN_SECRET"


@dataclass(frozen=True)
class DemoResult:
    out_dir: Path
    store_path: Path
    mailbox_path: Path
    assess_session: str
    import_session: str
    reconciliation: Reconciliation
    reports_index: Path | None = None


def run_demo(
    out_dir: Path,
    *,
    seed: int = 7,
    contacts: int = 40,
    years: float = 2.0,
    say: Callable[[str], None] = lambda _: None,
    progress: Callable[[str], Any] | None = None,
) -> DemoResult:
    """Generate, scan, import into the local Dataverse, verify; return where everything is.

    ``progress(label)`` may return a context manager yielding a progress callback (the CLI's bar).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    mail = out_dir / "mailbox"
    say(f"generating a synthetic mailbox in {mail}")
    made = synthesize(mail, seed=seed, contacts=contacts, years=years, formats=("mbox", "eml"))
    mbox = made.mbox_path or mail / "mailbox.mbox"
    store_path = out_dir / "pstlib.sqlite"
    for stale in out_dir.glob("pstlib.sqlite*"):
        stale.unlink()
    (out_dir / "dataverse.sqlite").unlink(missing_ok=True)

    with Store.open(store_path) as store:
        say(f"scanning {made.messages} messages (assess) into {store_path}")
        assess = _with_progress(
            progress,
            "scan",
            lambda tick: scan([mbox], store, mailbox_owner=made.owner_address, on_progress=tick),
        )
        config = StandinConfig(db_path=str(out_dir / "dataverse.sqlite"))
        with StandinServer(config) as server:
            server.start()
            say(f"importing into the local Dataverse at {server.url}")
            client_id, secret = config.clients[0]
            os.environ[DEMO_SECRET_ENV] = secret  # the stand-in's published demo secret
            settings = DataverseSettings(
                url=server.url, tenant_id=config.tenant, client_id=client_id,
                secret_env=DEMO_SECRET_ENV, token_url=server.token_url,
            )  # fmt: skip
            options = ImportOptions(
                target="dataverse", mailbox_owner=made.owner_address, batch_messages=200,
                contacts=ContactPolicy(create=CreateContacts.EXTERNAL),
            )  # fmt: skip
            with DataverseClient(settings) as client:
                imported = _with_progress(
                    progress,
                    "import",
                    lambda tick: import_mail(
                        [mbox], store, options, client=client, on_progress=tick
                    ),
                )
                say("reading every email back from Dataverse (verify)")
                reconciliation = verify_session(store, imported, client)
    reports_dir = out_dir / "reports"
    say(f"rendering every report to {reports_dir}")
    run = run_reports("all", store_path, reports_dir, session_id=imported)
    return DemoResult(out_dir, store_path, mbox, assess, imported, reconciliation, run.index)


def _with_progress(
    progress: Callable[[str], Any] | None,
    label: str,
    work: Callable[[ProgressCallback | None], str],
) -> str:
    if progress is None:
        return work(None)
    with progress(label) as tick:
        return work(tick)
