"""Token providers: MSAL client credentials (with a stand-in for the MSAL application object)."""

from __future__ import annotations

from typing import Any

import pytest

from pstlib.config import DataverseSettings
from pstlib.dataverse.auth import (
    ClientCredentialsTokenProvider,
    MsalTokenProvider,
    scope_for,
    token_provider_for,
)
from pstlib.errors import ConfigError, DataverseError

SETTINGS = DataverseSettings(url="https://org.crm.dynamics.com/", tenant_id="t", client_id="c")


class FakeCache:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = [{"secret": "cached"}]

    def find(self, kind: str) -> list[dict[str, str]]:
        assert kind == "AccessToken"
        return list(self.items)

    def remove_at(self, item: dict[str, str]) -> None:
        self.items.remove(item)


class FakeApp:
    """Answers like msal.ConfidentialClientApplication.acquire_token_for_client."""

    def __init__(self, result: dict[str, Any]) -> None:
        self.result = result
        self.token_cache = FakeCache()
        self.scopes: list[list[str]] = []

    def acquire_token_for_client(self, scopes: list[str]) -> dict[str, Any]:
        self.scopes.append(scopes)
        return self.result


def test_scope_is_the_environment_default() -> None:
    assert scope_for("https://org.crm.dynamics.com/") == "https://org.crm.dynamics.com/.default"


def test_msal_provider_asks_for_the_default_scope_and_refreshes_by_dropping_the_cache() -> None:
    app = FakeApp({"access_token": "tok", "expires_in": 3599})
    provider = MsalTokenProvider(SETTINGS, app=app)
    assert provider.token() == "tok"
    assert app.scopes == [["https://org.crm.dynamics.com/.default"]]
    assert app.token_cache.items  # a normal call leaves MSAL's cache alone
    provider.token(refresh=True)
    assert app.token_cache.items == []


def test_msal_errors_become_dataverse_errors() -> None:
    app = FakeApp({"error": "invalid_client", "error_description": "AADSTS7000215: bad secret"})
    with pytest.raises(DataverseError) as caught:
        MsalTokenProvider(SETTINGS, app=app).token()
    assert (caught.value.status, caught.value.code) == (401, "invalid_client")


def test_provider_choice_and_required_settings() -> None:
    assert isinstance(token_provider_for(SETTINGS), MsalTokenProvider)
    direct = token_provider_for(SETTINGS, token_url="http://127.0.0.1:1/t/oauth2/v2.0/token")
    assert isinstance(direct, ClientCredentialsTokenProvider)
    assert direct.scope == "https://org.crm.dynamics.com/.default"
    direct.close()
    with pytest.raises(ConfigError):
        MsalTokenProvider(DataverseSettings(url="https://x", client_id="c"))
