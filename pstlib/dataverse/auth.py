"""Access tokens for the Dataverse Web API: OAuth 2.0 client credentials, one small interface.

Dataverse takes a bearer token for the resource ``<environment url>/.default`` ("Use OAuth
authentication with Microsoft Dataverse"; "Use the Dataverse Web API"). Two providers, one call
(:meth:`TokenProvider.token`):

* :class:`MsalTokenProvider` — the real tenant, through ``msal.ConfidentialClientApplication``
  with the tenant authority (``https://login.microsoftonline.com/<tenant>`` unless configured);
  MSAL keeps and reuses the token until it nears expiry.
* :class:`ClientCredentialsTokenProvider` — the same client-credentials form post
  (``grant_type=client_credentials``, ``client_id``, ``client_secret``, ``scope``) sent with
  httpx to a given ``token_url``. MSAL accepts only https authorities; this serves the plain-HTTP
  local stand-in. It caches the token until ``refresh_margin_s`` before it expires.

The client secret comes from :meth:`DataverseSettings.client_secret` (environment or keyring) at the
moment a token is requested; neither provider writes it anywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from pstlib.config import DataverseSettings
from pstlib.dataverse.throttle import Clock, SystemClock
from pstlib.errors import ConfigError, DataverseError


class TokenProvider(Protocol):
    """Gives a bearer token for Dataverse; ``refresh=True`` asks for a new one (after a 401)."""

    def token(self, *, refresh: bool = False) -> str: ...


def scope_for(url: str) -> str:
    """The client-credentials scope of an environment: ``<url>/.default``."""
    return url.rstrip("/") + "/.default"


class MsalTokenProvider:
    """Client credentials through MSAL against the tenant authority (https only)."""

    def __init__(self, settings: DataverseSettings, *, app: Any | None = None) -> None:
        if app is None and not (settings.tenant_id or settings.authority):
            raise ConfigError("Dataverse settings need a tenant_id or an authority for MSAL")
        if app is None and not settings.client_id:
            raise ConfigError("Dataverse settings need a client_id")
        self._settings = settings
        self._app = app
        self._lock = threading.Lock()

    def _application(self) -> Any:
        if self._app is None:
            import msal

            authority = (
                self._settings.authority
                or f"https://login.microsoftonline.com/{self._settings.tenant_id}"
            )
            self._app = msal.ConfidentialClientApplication(
                self._settings.client_id,
                authority=authority,
                client_credential=self._settings.client_secret(),
            )
        return self._app

    def token(self, *, refresh: bool = False) -> str:
        scopes = [scope_for(self._settings.url)]
        with self._lock:
            app = self._application()
            if refresh:  # drop the cached access tokens so MSAL asks the authority again
                for item in app.token_cache.find("AccessToken"):
                    app.token_cache.remove_at(item)
            result = app.acquire_token_for_client(scopes=scopes)
        if not isinstance(result, dict) or "access_token" not in result:
            error = result.get("error", "") if isinstance(result, dict) else ""
            detail = result.get("error_description", "") if isinstance(result, dict) else ""
            raise DataverseError(401, str(error or "token_error"), str(detail or "no token"))
        return str(result["access_token"])


class ClientCredentialsTokenProvider:
    """The client-credentials form post done directly with httpx (for http:// token endpoints)."""

    def __init__(
        self,
        token_url: str,
        *,
        client_id: str,
        scope: str,
        secret: Callable[[], str],
        http: httpx.Client | None = None,
        clock: Clock | None = None,
        refresh_margin_s: float = 120.0,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.scope = scope
        self._secret = secret
        self._http = http or httpx.Client(timeout=30.0)
        self._owns_http = http is None
        self._clock: Clock = clock or SystemClock()
        self._margin = refresh_margin_s
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    @classmethod
    def for_settings(
        cls, settings: DataverseSettings, token_url: str, **kwargs: Any
    ) -> ClientCredentialsTokenProvider:
        return cls(
            token_url,
            client_id=settings.client_id,
            scope=scope_for(settings.url),
            secret=settings.client_secret,
            **kwargs,
        )

    def token(self, *, refresh: bool = False) -> str:
        with self._lock:
            now = self._clock.monotonic()
            if not refresh and self._token and now < self._expires_at - self._margin:
                return self._token
            response = self._http.post(
                self.token_url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.client_id,
                    "client_secret": self._secret(),
                    "scope": self.scope,
                },
                headers={"Accept": "application/json"},
            )
            try:
                doc = response.json()
            except ValueError:
                doc = {}
            if response.status_code != 200 or "access_token" not in doc:
                raise DataverseError(
                    response.status_code,
                    str(doc.get("error", "token_error")),
                    str(doc.get("error_description", response.text[:300])),
                )
            self._token = str(doc["access_token"])
            self._expires_at = now + float(doc.get("expires_in", 3600))
            return self._token

    def close(self) -> None:
        if self._owns_http:
            self._http.close()


def token_provider_for(
    settings: DataverseSettings, *, token_url: str | None = None, http: httpx.Client | None = None
) -> TokenProvider:
    """MSAL for the tenant; the direct form post when a ``token_url`` is given (the stand-in)."""
    token_url = token_url or settings.token_url
    if token_url:
        return ClientCredentialsTokenProvider.for_settings(settings, token_url, http=http)
    return MsalTokenProvider(settings)
