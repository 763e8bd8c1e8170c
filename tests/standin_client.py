"""A pstlib Dataverse client for the local stand-in, as the integration tests make it."""

from __future__ import annotations

from typing import Any

import pytest

from pstlib.config import DataverseSettings
from pstlib.dataverse import ClientCredentialsTokenProvider, DataverseClient, RetryPolicy

SECRET_ENV = "PSTLIB_TEST_STANDIN_SECRET"
FAST = RetryPolicy(base_backoff_s=0.01, max_backoff_s=0.05)
"""Retries in hundredths of a second: the stand-in's faults, not the test, set the pace."""


def standin_settings(server: Any, monkeypatch: pytest.MonkeyPatch) -> DataverseSettings:
    """Settings for the stand-in ``server``, with its client secret in the environment."""
    monkeypatch.setenv(SECRET_ENV, "standin-secret")
    return DataverseSettings(
        url=server.url,
        tenant_id="standin-tenant",
        client_id="standin-client",
        secret_env=SECRET_ENV,
    )


def standin_client(server: Any, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> DataverseClient:
    """A client of the stand-in ``server`` (retry policy :data:`FAST` unless ``kw`` says)."""
    settings = standin_settings(server, monkeypatch)
    tokens = ClientCredentialsTokenProvider.for_settings(settings, server.token_url)
    kw.setdefault("policy", FAST)
    return DataverseClient(settings, token_provider=tokens, **kw)
