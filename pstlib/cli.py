"""The ``pstlib`` command: one group, each command parses its arguments and calls one library function.

User-facing output (progress bars, summaries) lives here and nowhere else in the package.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from pstlib import __version__
from pstlib.config import DEFAULT_STORE
from pstlib.errors import PstlibError

STORE_OPTION = click.option(
    "--store",
    default=str(DEFAULT_STORE),
    show_default=True,
    envvar="PSTLIB_STORE",
    help="Analytics store: a SQLite file path or a SQLAlchemy URL (postgresql+psycopg://...).",
)
PROCESSES_OPTION = click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="Reader processes, one file each at a time (default: one per CPU, at most one a file).",
)


class _Group(click.Group):
    """Turns pstlib's own errors into a one-line reason and exit code 1 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PstlibError as err:
            click.echo(f"pstlib: error: {err}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pstlib")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Import Outlook PST/OST, mbox and EML mail into Dataverse, and prove it complete."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # nbconvert's notes on figures without alt text are not the reader's concern
        logging.getLogger("traitlets").setLevel(logging.ERROR)


@contextmanager
def _progress_bar(desc: str, unit: str = "msg") -> Iterator[Callable[[Any], None]]:
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, disable=None, file=sys.stderr, dynamic_ncols=True)
    seen: dict[str, int] = {"source": -1}

    def tick(progress: Any) -> None:
        if progress.error:
            bar.write(f"pstlib: {progress.error}", file=sys.stderr)
        if progress.source_index != seen["source"]:
            seen["source"] = progress.source_index
            bar.set_postfix_str(f"file {progress.source_index + 1}/{progress.source_count}")
        bar.update(progress.messages)

    try:
        yield tick
    finally:
        bar.close()


def _print_summary(doc: dict[str, Any]) -> None:
    totals = doc["totals"]
    lines = [
        f"session {doc['session_id']} ({doc['target']}, {doc['status']})",
        f"  sources     {totals['sources']} ({totals['sources_failed']} failed)",
        f"  items found {totals['items_found']}",
        f"  messages    {totals['messages']} recorded, {doc['errors']['total']} errors",
        "  outcomes    " + (", ".join(f"{k} {v}" for k, v in doc["outcomes"].items()) or "-"),
    ]
    for label, key in (("by class", "by_message_class"), ("by folder", "by_folder_role")):
        counts = ", ".join(f"{k} {v}" for k, v in doc[key].items()) or "-"
        lines.append(f"  {label:<11} {counts}")
    span = doc["date_range"]
    lines.append(f"  date range  {span['earliest'] or '-'} .. {span['latest'] or '-'}")
    if doc["errors"]["by_code"]:
        codes = ", ".join(f"{k} {v}" for k, v in doc["errors"]["by_code"].items())
        lines.append(f"  errors      {codes}")
    click.echo("\n".join(lines))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@STORE_OPTION
@click.option("--owner", help="The mailbox owner's address (decides sent vs received).")
@click.option("--json", "as_json", is_flag=True, help="Print the session document as JSON.")
@PROCESSES_OPTION
def scan(paths: tuple[Path, ...], store: str, owner: str | None, as_json: bool,
         processes: int | None) -> None:
    """Read PST/OST, mbox and EML files (or folders of them) into an assess session.

    Nothing is written anywhere but the store. Bad files and unreadable items are reported and
    recorded; the rest is still read.
    """
    from pstlib.importer.session import scan as run_scan
    from pstlib.importer.session import summarize
    from pstlib.store import Store

    with Store.open(store) as st, _progress_bar("scan") as tick:
        session_id = run_scan(paths, st, mailbox_owner=owner, on_progress=tick,
                              processes=processes)
        doc = summarize(st, session_id).to_dict()
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        _print_summary(doc)


def _dataverse_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options that say where Dataverse is and as whom to reach it (secret: environment)."""
    options = [
        click.option("--dataverse-url", envvar="PSTLIB_DATAVERSE_URL",
                     help="Environment URL, e.g. https://org.crm.dynamics.com (or the stand-in's)."),
        click.option("--tenant", envvar="PSTLIB_TENANT_ID", default="", help="Azure AD tenant id."),
        click.option("--client-id", envvar="PSTLIB_CLIENT_ID", default="",
                     help="Application (client) id of the application user."),
        click.option("--secret-env", default="PSTLIB_CLIENT_SECRET", show_default=True,
                     help="Environment variable holding the client secret (or use the OS keyring)."),
        click.option("--token-url", envvar="PSTLIB_TOKEN_URL",
                     help="Post client credentials here instead of MSAL (the plain-HTTP stand-in)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _client(
    dataverse_url: str | None, tenant: str, client_id: str, secret_env: str, token_url: str | None
) -> Any:
    from pstlib.config import DataverseSettings
    from pstlib.dataverse import DataverseClient

    if not dataverse_url:
        raise click.UsageError("--dataverse-url (or PSTLIB_DATAVERSE_URL) is needed for Dataverse")
    settings = DataverseSettings(
        url=dataverse_url, tenant_id=tenant, client_id=client_id, secret_env=secret_env,
        token_url=token_url,
    )  # fmt: skip
    return DataverseClient(settings)


@main.command(name="import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@STORE_OPTION
@click.option("--target", type=click.Choice(["dataverse", "assess"]), default="dataverse",
              show_default=True, help="assess: no writes anywhere but the store.")  # fmt: skip
@click.option("--owner", help="The mailbox owner's address (decides sent vs received).")
@click.option("--resume", "resume", help="Continue this interrupted session.")
@click.option("--contacts", "create_contacts", type=click.Choice(["all", "external", "never"]),
              default="external", show_default=True, help="Which missing contacts to create.")  # fmt: skip
@click.option("--batch-messages", default=100, show_default=True, help="Emails per $batch request.")
@click.option("--json", "as_json", is_flag=True, help="Print the session document as JSON.")
@PROCESSES_OPTION
@_dataverse_options
def import_(
    paths: tuple[Path, ...], store: str, target: str, owner: str | None, resume: str | None,
    create_contacts: str, batch_messages: int, as_json: bool, processes: int | None,
    dataverse_url: str | None, tenant: str, client_id: str, secret_env: str,
    token_url: str | None,
) -> None:  # fmt: skip
    """Import mail into Dataverse as email activities linked to contacts, as a recorded session.

    Stopped at any moment, the same command (or --resume SESSION) continues it: nothing is
    imported twice and nothing is lost. Every message's outcome is recorded in the store.
    """
    from pstlib.importer.contacts import ContactPolicy, CreateContacts
    from pstlib.importer.run import ImportOptions, import_mail
    from pstlib.importer.session import summarize
    from pstlib.store import Store

    options = ImportOptions(
        target=target, mailbox_owner=owner, batch_messages=batch_messages,
        contacts=ContactPolicy(create=CreateContacts(create_contacts)), processes=processes,
    )  # fmt: skip
    client = (
        _client(dataverse_url, tenant, client_id, secret_env, token_url)
        if target == "dataverse" else None
    )  # fmt: skip
    try:
        with Store.open(store) as st, _progress_bar(f"import ({target})") as tick:
            session_id = import_mail(
                paths, st, options, client=client, on_progress=tick, resume=resume
            )
            doc = summarize(st, session_id).to_dict()
    finally:
        if client is not None:
            client.close()
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        _print_summary(doc)


@main.command()
@click.argument("session_id")
@STORE_OPTION
@click.option("--sample", type=int, help="Read back this many emails at random (default: all).")
@_dataverse_options
def verify(
    session_id: str, store: str, sample: int | None, dataverse_url: str | None, tenant: str,
    client_id: str, secret_env: str, token_url: str | None,
) -> None:  # fmt: skip
    """Read a session's emails back from Dataverse and reconcile: found = read = sent = acknowledged = verified.

    Exits 1 when anything does not balance, listing each item that differs.
    """
    from pstlib.importer.reconcile import verify_session
    from pstlib.store import Store

    client = _client(dataverse_url, tenant, client_id, secret_env, token_url)
    try:
        with Store.open(store) as st:
            result = verify_session(st, session_id, client, sample=sample)
    finally:
        client.close()
    click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    if not result.balanced:
        click.echo(result.differences.to_string(index=False), err=True)
        raise SystemExit(1)


@main.command()
@STORE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def sessions(store: str, as_json: bool) -> None:
    """List the sessions in the store, newest first."""
    from pstlib.store import Store, load

    with Store.open(store) as st:
        frame = load.load_sessions(st)
    frame = frame.sort_values("started_at_utc", ascending=False)
    shown = frame[["session_id", "status", "target", "started_at_utc", "ended_at_utc"]]
    if as_json:
        click.echo(shown.to_json(orient="records", date_format="iso", indent=2))
    elif shown.empty:
        click.echo("no sessions")
    else:
        click.echo(shown.to_string(index=False))


@main.command()
@click.argument("table")
@STORE_OPTION
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "parquet"]),
    default="csv",
    show_default=True,
)
@click.option("--session", "session_id", help="Only this session's rows.")
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    help="Output file (default: stdout for csv/json).",
)
def export(table: str, store: str, fmt: str, session_id: str | None, out: Path | None) -> None:
    """Export a store table (sessions, sources, messages, recipients, ...) as CSV, JSON or Parquet."""
    from pstlib.store import Store
    from pstlib.store.export import export_table

    if out is None and fmt == "parquet":
        raise click.UsageError("--format parquet needs --out FILE")
    with Store.open(store) as st:
        written = export_table(st, table, fmt, out, session_id=session_id)  # type: ignore[arg-type]
    if out is None:
        click.echo(written.read_text(encoding="utf-8"), nl=False)
        written.unlink()
    else:
        click.echo(f"wrote {written}", err=True)


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--seed", default=1, show_default=True, help="Random seed: the same seed gives the same files."
)
@click.option("--contacts", default=40, show_default=True, help="Number of correspondents.")
@click.option(
    "--years", default=1.0, show_default=True, help="Length of the mailbox history in years."
)
@click.option("--country", default="US", show_default=True, help="Public holidays of this country.")
@click.option(
    "--eml/--no-eml", default=True, show_default=True, help="Also write one EML file per message."
)
def synth(out: Path, seed: int, contacts: int, years: float, country: str, eml: bool) -> None:
    """Write a seeded synthetic mailbox (mbox, EML and truth.json with its ground truth)."""
    from pstlib.synth import synthesize

    formats = ("mbox", "eml") if eml else ("mbox",)
    result = synthesize(
        out, seed=seed, contacts=contacts, years=years, holiday_country=country, formats=formats
    )
    click.echo(f"wrote {result.messages} messages to {out}")


def _emit_table(frame: Any, fmt: str, columns: list[str] | None = None) -> None:
    """Print a DataFrame as an aligned table, CSV or JSON records (ISO dates)."""
    shown = frame[columns] if columns else frame
    if fmt == "csv":
        click.echo(shown.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(shown.to_json(orient="records", date_format="iso", indent=2, force_ascii=False))
    elif shown.empty:
        click.echo("none")
    else:
        click.echo(shown.to_string(index=False))


FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
    show_default=True, help="Output format.",
)  # fmt: skip
SESSION_OPTION = click.option("--session", "session_id", help="Session id (default: the newest).")

GAP_COLUMNS = [
    "contact_address", "start", "end", "business_days", "expected_messages", "missed_messages",
    "probability", "severity", "kind",
]  # fmt: skip


@main.command()
@STORE_OPTION
@SESSION_OPTION
@FORMAT_OPTION
@click.option("--owner", help="Mailbox owner's address (default: the session's).")
@click.option(
    "--country", help="Count this country's public holidays as quiet days (e.g. US, GB, DE)."
)
def gaps(
    store: str, session_id: str | None, fmt: str, owner: str | None, country: str | None
) -> None:
    """List the gaps detected in each contact's timeline (start and end dates are inclusive)."""
    from pstlib import views
    from pstlib.store import Store

    with Store.open(store) as st:
        found = views.gaps(st, session_id, country=country, owner_address=owner)
    _emit_table(found, fmt, [c for c in GAP_COLUMNS if c in found.columns])


SENDER_COLUMNS = [
    "sender_address", "sender_name", "message_count", "messages_per_month",
    "owner_reply_delay_median_s", "importance_score", "trend", "last_contact_at_utc",
    "sender_class", "class_confidence",
]  # fmt: skip


@main.command()
@STORE_OPTION
@SESSION_OPTION
@FORMAT_OPTION
@click.option("--all-columns", is_flag=True, help="Every profile column, not the main ones.")
def senders(store: str, session_id: str | None, fmt: str, all_columns: bool) -> None:
    """Profile every sender: volume, reply times, importance, trend and class."""
    from pstlib import views
    from pstlib.store import Store

    with Store.open(store) as st:
        profiles = views.sender_profiles(st, session_id)
    _emit_table(profiles, fmt, None if all_columns else SENDER_COLUMNS)


@main.command()
@STORE_OPTION
@SESSION_OPTION
@click.option(
    "--format", "fmt", type=click.Choice(["graphml", "gexf", "json"]), default="graphml",
    show_default=True,
)  # fmt: skip
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Output file.")
def network(store: str, session_id: str | None, fmt: str, out: Path) -> None:
    """Export the communication network (who writes to whom, weighted) as GraphML, GEXF or JSON."""
    from pstlib import views
    from pstlib.analytics.network import export_graph
    from pstlib.store import Store

    with Store.open(store) as st:
        graph = views.network_graph(st, session_id)
    export_graph(graph, out, fmt)  # type: ignore[arg-type]
    click.echo(f"wrote {graph.number_of_nodes()} people, {graph.number_of_edges()} links to {out}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, help="0 picks a free port.")
@click.option(
    "--db",
    "db_path",
    type=click.Path(path_type=Path),
    help="Keep what arrives in this SQLite file.",
)
@click.option(
    "--tls", is_flag=True, help="Serve HTTPS with a generated certificate (printed CA file)."
)
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    help="Multiply every limit window and server time by this (0.01: 5 minutes become 3 s).",
)
@click.option(
    "--operation-time",
    default=0.0,
    show_default=True,
    help="Simulated server execution time per operation, in seconds.",
)
@click.option(
    "--max-requests", default=6000, show_default=True, help="Requests per user per window."
)
@click.option(
    "--max-concurrent", default=52, show_default=True, help="Concurrent requests per user."
)
@click.option(
    "--latency", default=0.0, show_default=True, help="Added latency per request, seconds."
)
@click.option(
    "--error-rate", default=0.0, show_default=True, help="Share of requests answered 503."
)
def standin(
    host: str,
    port: int,
    db_path: Path | None,
    tls: bool,
    time_scale: float,
    operation_time: float,
    max_requests: int,
    max_concurrent: int,
    latency: float,
    error_rate: float,
) -> None:
    """Run a local Dataverse (the documented Web API subset, $batch, limits) until Ctrl-C.

    Use it to rehearse an import against a tenant's service protection limits. Its client id and
    secret are `standin-client` / `standin-secret`; the token URL is <url>/standin-tenant/oauth2/v2.0/token.
    """
    from pstlib.standin import StandinConfig
    from pstlib.standin.server import run_standin

    config = StandinConfig(
        db_path=str(db_path) if db_path else None,
        tls=tls,
        time_scale=time_scale,
        operation_time_s=operation_time,
        max_requests=max_requests,
        max_concurrent=max_concurrent,
        latency_s=latency,
        error_rate=error_rate,
    )
    run_standin(host, port, config)


@main.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("demo"),
    show_default=True,
    help="Folder for the demo's mailbox, store and reports.",
)
@click.option("--seed", default=7, show_default=True, help="Seed of the synthetic mailbox.")
@click.option("--contacts", default=40, show_default=True, help="Correspondents in the mailbox.")
def demo(out: Path, seed: int, contacts: int) -> None:
    """Run the whole job end to end on a synthetic mailbox and a local Dataverse.

    Generates a mailbox, scans it (assess), imports it into the stand-in, reads every email back,
    and prints the session and the reconciliation.
    """
    from pstlib.demo import run_demo
    from pstlib.importer.session import summarize
    from pstlib.store import Store

    steps = iter(range(1, 100))
    result = run_demo(
        out, seed=seed, contacts=contacts, say=lambda text: click.echo(f"{next(steps)}. {text}"),
        progress=_progress_bar,
    )  # fmt: skip
    with Store.open(result.store_path) as st:
        _print_summary(summarize(st, result.import_session).to_dict())
    rec = result.reconciliation
    click.echo(
        f"reconciled: found {rec.found} = read {rec.read} = sent {rec.sent} = acknowledged "
        f"{rec.acknowledged} = verified {rec.verified}: {'balanced' if rec.balanced else 'NOT balanced'}"
    )
    click.echo(f"store:   {result.store_path}")
    click.echo(f"reports: {result.reports_index}")


from pstlib.reports.cli import report  # noqa: E402  (the report command lives with its pipeline)

main.add_command(report)

if __name__ == "__main__":  # pragma: no cover
    main()
