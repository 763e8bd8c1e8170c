"""``pstlib report``: run reports from the registry (or a TOML spec) on a store.

The lead registers it in :mod:`pstlib.cli` with ``main.add_command(report)``.
"""

from __future__ import annotations

from pathlib import Path

import click

from pstlib.config import DEFAULT_STORE


@click.command()
@click.argument("names", nargs=-1)
@click.option("--store", default=str(DEFAULT_STORE), show_default=True, envvar="PSTLIB_STORE",
              help="Analytics store: a SQLite file path or a SQLAlchemy URL.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports"),
              show_default=True, help="Folder for the outputs (an index.html links them).")
@click.option("--session", "session_id", help="The session to report on (default: the latest).")
@click.option("--format", "formats", default="html,pdf,xlsx,json,csv", show_default=True,
              help="Comma-separated output formats.")
@click.option("--pseudonymise", is_flag=True,
              help="Replace people's names and addresses by stable tokens "
                   "(key: $PSTLIB_PSEUDONYM_KEY).")
@click.option("--spec", type=click.Path(exists=True, path_type=Path),
              help="A TOML spec of a custom report.")
@click.option("--from", "start_date", help="Mail from this date (YYYY-MM-DD).")
@click.option("--to", "end_date", help="Mail up to this date (YYYY-MM-DD).")
def report(names: tuple[str, ...], store: str, out_dir: Path, session_id: str | None,
           formats: str, pseudonymise: bool, spec: Path | None, start_date: str | None,
           end_date: str | None) -> None:
    """Render reports (NAMES, or all of them) to HTML, PDF, Excel, JSON and CSV."""
    from pstlib.reports import run_reports

    selected: list[str] | str = list(names) if names else ([] if spec else "all")
    extra = {k: v for k, v in (("start_date", start_date), ("end_date", end_date)) if v}
    run = run_reports(selected, store, out_dir, session_id=session_id,
                      formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
                      pseudonymise=pseudonymise, spec=spec, parameters=extra)
    for out in run.reports:
        click.echo(f"{out.name:<20} {out.duration_s:5.1f} s  {len(out.paths)} format(s)")
    click.echo(f"wrote {run.index}")
