"""Settings: one frozen object, built at the edge (the CLI, a notebook's parameters cell) and passed down.

Nothing here reads the environment at import time. Secrets are read only when asked for, from the
environment (or the OS keyring where one is configured), never from the store or a report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pstlib.errors import ConfigError

DEFAULT_STORE = Path("pstlib.sqlite")


def store_url(store: str | Path) -> str:
    """A SQLAlchemy URL for ``store``: a URL is kept as it is, a path becomes a SQLite file URL."""
    text = str(store)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


@dataclass(frozen=True, slots=True)
class DataverseSettings:
    """Where and as whom to reach Dataverse. The client secret is looked up only when needed."""

    url: str
    tenant_id: str = ""
    client_id: str = ""
    authority: str | None = None  # defaults to https://login.microsoftonline.com/<tenant>
    token_url: str | None = (
        None  # a direct client-credentials endpoint (the local stand-in over HTTP)
    )
    secret_env: str = "PSTLIB_CLIENT_SECRET"
    api_version: str = "v9.2"

    def client_secret(self) -> str:
        secret = os.environ.get(self.secret_env)
        if secret:
            return secret
        try:
            import keyring  # optional

            found = keyring.get_password("pstlib", self.client_id)
            secret = str(found) if found else None
        except Exception:  # keyring absent or no backend: fall through to the error below
            secret = None
        if not secret:
            raise ConfigError(
                f"no client secret: set the environment variable {self.secret_env} "
                f"or store it with `keyring set pstlib {self.client_id}`"
            )
        return secret


@dataclass(frozen=True, slots=True)
class Settings:
    store: str = str(DEFAULT_STORE)
    mailbox_owner: str | None = None  # whose mailbox this is: decides sent vs received
    holiday_country: str = "US"
    options: dict[str, str] = field(default_factory=dict)
