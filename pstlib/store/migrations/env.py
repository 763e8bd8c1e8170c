"""Alembic environment for the pstlib store.

pstlib runs migrations in code (:func:`pstlib.store.db.upgrade_store`), handing over an open
connection in ``config.attributes["connection"]``. Run from the command line with
``alembic -c pstlib/store/alembic.ini ...``, it connects to ``sqlalchemy.url`` itself.
No logging is configured here: that is the application's business.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from pstlib.store.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url", ""))
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
    engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"), target_metadata=metadata
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
