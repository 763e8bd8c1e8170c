"""A local Dataverse Web API on 127.0.0.1: the documented subset pstlib uses, over real HTTP.

``StandinServer(StandinConfig(...)).start()`` returns the base URL (the "environment URL"); the Web
API lives under ``<url>/api/data/v9.2/`` and a client-credentials token endpoint under
``<url>/<tenant>/oauth2/v2.0/token`` (scope ``<url>/.default``). Every API request needs
``Authorization: Bearer <token>``; service protection limits apply per client id.

All durations in :class:`StandinConfig` are Dataverse seconds and are multiplied by ``time_scale``
(``time_scale=0.01`` turns the 300-second window into 3 s), so tests and benchmarks can rehearse
throttling quickly. Fault injection (latency, 503s, dropped connections, 429 storms) is seeded.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import random
import secrets
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pstlib.standin import batch, odata
from pstlib.standin.db import StandinDB
from pstlib.standin.entities import API_PATH, DEFAULT_BLOCKED_EXTENSIONS, Request, Service
from pstlib.standin.limits import Limits, ServiceProtection, Throttled, requests_message
from pstlib.standin.odata import ODataError, Reply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StandinConfig:
    """Every knob of the stand-in. Durations are Dataverse seconds, scaled by ``time_scale``."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    tenant: str = "standin-tenant"
    clients: tuple[tuple[str, str], ...] = (("standin-client", "standin-secret"),)
    token_lifetime_s: int = 3599
    db_path: str | None = None  # None: in memory
    # Service protection API limits (defaults as documented), per client id.
    max_requests: int = 6000
    window_s: float = 300.0
    max_execution_s: float = 1200.0
    max_concurrent: int = 52
    time_scale: float = 1.0
    # simulated server execution time of each operation: a request takes the sum over its
    # operations, its own processing included (more only when that alone takes longer)
    operation_time_s: float = 0.0
    # $batch
    max_batch_requests: int = 1000
    batch_requires_crlf: bool = True
    # Attachments: Organization.MaxUploadFileSize (of the Base64 text) and BlockedAttachments.
    max_upload_bytes: int = 5_242_880
    blocked_extensions: frozenset[str] = DEFAULT_BLOCKED_EXTENSIONS
    # Fault injection, on API requests (numbered from 1 in arrival order).
    seed: int = 0
    latency_s: float = 0.0
    error_rate: float = 0.0  # probability of a 503
    drop_rate: float = 0.0  # probability of closing the connection without a response
    error_on_requests: frozenset[int] = frozenset()
    drop_on_requests: frozenset[int] = frozenset()
    storm_after_requests: int | None = None  # start a 429 storm after this many API requests
    storm_duration_s: float = 0.0
    # HTTPS with a self-signed certificate for 127.0.0.1 (written to tls_dir or a temp dir).
    tls: bool = False
    tls_dir: str | None = None

    @property
    def limits(self) -> Limits:
        return Limits(
            self.max_requests,
            self.window_s,
            self.max_execution_s,
            self.max_concurrent,
            self.time_scale,
        )


@dataclass
class _Token:
    client_id: str
    expires_at: float


@dataclass
class _Faults:
    rng: random.Random
    count: int = 0
    storm_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class StandinServer:
    """The stand-in Dataverse: a threaded HTTP server over a SQLite store; a context manager."""

    def __init__(self, config: StandinConfig | None = None) -> None:
        self.config = config or StandinConfig()
        self.db = StandinDB(self.config.db_path)
        self.url = ""
        self.ca_path: str | None = None
        self.protection = ServiceProtection(self.config.limits)
        self._tokens: dict[str, _Token] = {}
        self._faults = _Faults(random.Random(self.config.seed))
        self._stats: dict[str, int] = {}
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._service: Service | None = None
        self._runner: batch.BatchRunner | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> str:
        """Bind, serve in a background thread, and return the base URL."""
        if self._httpd is not None:
            return self.url
        httpd = _HTTPServer((self.config.host, self.config.port), _Handler)
        httpd.standin = self
        scheme = "http"
        if self.config.tls:
            context, self.ca_path = _tls_context(self.config.tls_dir)
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
            scheme = "https"
        host, port = httpd.server_address[:2]
        self.url = f"{scheme}://{host!s}:{port}"
        self._service = Service(
            self.db,
            self.url,
            max_upload_bytes=self.config.max_upload_bytes,
            blocked_extensions=self.config.blocked_extensions,
        )
        self._runner = batch.BatchRunner(self._service, self.db)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.05,), name="standin", daemon=True
        )
        self._thread.start()
        log.info("Dataverse stand-in listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        """Stop serving and close the socket (the database stays readable)."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> StandinServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def service(self) -> Service:
        """The entity operations (available once started)."""
        if self._service is None:
            raise RuntimeError("start() the stand-in first")
        return self._service

    @property
    def runner(self) -> batch.BatchRunner:
        if self._runner is None:
            raise RuntimeError("start() the stand-in first")
        return self._runner

    # -- addresses ------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        """The Web API root, ``<url>/api/data/v9.2/``."""
        return self.url + API_PATH

    @property
    def authority(self) -> str:
        return f"{self.url}/{self.config.tenant}"

    @property
    def token_url(self) -> str:
        return f"{self.authority}/oauth2/v2.0/token"

    @property
    def scope(self) -> str:
        return f"{self.url}/.default"

    # -- test helpers ---------------------------------------------------------------------------
    def issue_token(self, client_id: str | None = None) -> str:
        """A valid bearer token for ``client_id`` (the first configured client by default)."""
        client = client_id or self.config.clients[0][0]
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = _Token(client, time.monotonic() + self.config.token_lifetime_s)
        return token

    def throttle_for(self, seconds: float) -> None:
        """Start a 429 storm now: every API request is throttled for ``seconds`` real seconds."""
        with self._faults.lock:
            self._faults.storm_until = time.monotonic() + seconds

    def stats(self) -> dict[str, int]:
        """Counters: api_requests, batches, throttled_<code>, faults_503, faults_dropped, ..."""
        with self._lock:
            return dict(self._stats)

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] = self._stats.get(name, 0) + 1

    # -- token endpoint -------------------------------------------------------------------------
    def token_reply(self, tenant: str, form: dict[str, list[str]], basic: str | None) -> Reply:
        """client_credentials grant as the Microsoft identity platform answers it."""

        def oauth_error(status: int, error: str, description: str) -> Reply:
            body = {"error": error, "error_description": description}
            return Reply(status, [("Content-Type", "application/json")], json.dumps(body).encode())

        def first(name: str) -> str:
            return form.get(name, [""])[0]

        if tenant != self.config.tenant:
            return oauth_error(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
        if first("grant_type") != "client_credentials":
            return oauth_error(
                400,
                "unsupported_grant_type",
                "AADSTS70003: The app requested an unsupported grant type.",
            )
        client_id, secret = first("client_id"), first("client_secret")
        if basic:
            client_id, _, secret = base64.b64decode(basic).decode().partition(":")
            client_id, secret = unquote(client_id), unquote(secret)
        known = dict(self.config.clients)
        if client_id not in known:
            return oauth_error(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the "
                f"directory '{tenant}'.",
            )
        if not secrets.compare_digest(known[client_id], secret):
            return oauth_error(
                401,
                "invalid_client",
                f"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in "
                f"the request is the client secret value, not the client secret ID, for a secret "
                f"added to app '{client_id}'.",
            )
        scope = first("scope").strip()
        if scope.rstrip("/") not in (f"{self.url}/.default", f"{self.url}//.default"):
            return oauth_error(
                400,
                "invalid_scope",
                f"AADSTS500011: The resource principal named {scope.removesuffix('/.default')} "
                f"was not found in the tenant named {tenant}.",
            )
        token = self.issue_token(client_id)
        lifetime = self.config.token_lifetime_s
        body = {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }
        return Reply(
            200,
            [
                ("Content-Type", "application/json; charset=utf-8"),
                ("Cache-Control", "no-store, no-cache"),
            ],
            json.dumps(body).encode(),
        )

    def openid_configuration(self, tenant: str) -> Reply:
        base = f"{self.url}/{tenant}"
        body = {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "issuer": f"{base}/v2.0",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "grant_types_supported": ["client_credentials"],
        }
        return Reply(200, [("Content-Type", "application/json")], json.dumps(body).encode())

    # -- Web API --------------------------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> str | None:
        """The client id of a valid bearer token, or None."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        with self._lock:
            found = self._tokens.get(token.strip())
        if found is None or found.expires_at < time.monotonic():
            return None
        return found.client_id

    def unauthorized(self) -> Reply:
        challenge = (
            f"Bearer authorization_uri={self.authority}/oauth2/authorize, resource_id={self.url}/"
        )
        return odata.ODataError(
            401,
            "",
            "The user is not authenticated (RequestIsNotAuthenticated): "
            "send Authorization: Bearer <access token>.",
        ).reply([("WWW-Authenticate", challenge)])

    def inject_fault(self) -> str | None:
        """Decide this API request's fault: "drop", "error", "storm:<seconds>" or None."""
        config = self.config
        faults = self._faults
        with faults.lock:
            faults.count += 1
            number = faults.count
            drop_draw, error_draw = faults.rng.random(), faults.rng.random()
            now = time.monotonic()
            if (
                config.storm_after_requests is not None
                and number == config.storm_after_requests + 1
            ):
                faults.storm_until = now + config.storm_duration_s * config.time_scale
            storm_left = faults.storm_until - now
        if number in config.drop_on_requests or drop_draw < config.drop_rate:
            return "drop"
        if config.latency_s > 0:
            time.sleep(config.latency_s * config.time_scale)
        if number in config.error_on_requests or error_draw < config.error_rate:
            return "error"
        if storm_left > 0:
            return f"storm:{storm_left}"
        return None

    def handle_api(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> Reply | None:
        """Answer one API request; None means drop the connection."""
        self._count("api_requests")
        fault = self.inject_fault()
        if fault == "drop":
            self._count("faults_dropped")
            return None
        if fault == "error":
            self._count("faults_503")
            return ODataError(503, "0x80040216", "An unexpected error occurred.").reply()
        user = self.authenticate(headers.get("authorization"))
        if user is None:
            self._count("unauthorized")
            return self.unauthorized()
        if fault is not None:
            self._count("throttled_storm")
            wait = Throttled(
                "0x80072322",
                requests_message(self.config.limits),
                float(fault.split(":", 1)[1]),
                self.config.time_scale,
            )
            return _throttled_reply(wait)
        try:
            self.protection.admit(user)
        except Throttled as throttled:
            self._count(f"throttled_{throttled.code}")
            return _throttled_reply(throttled)
        started = time.monotonic()
        operations = 0
        try:
            reply, operations = self._execute(
                method, path, query, {**headers, "x-standin-user": user}, body
            )
        finally:
            # A request takes the configured execution time of each operation it ran, its own
            # processing (parsing, the operations, the answer) included, more only when that
            # processing alone takes longer; one sleep per request, so that a $batch of N
            # operations takes N times the configured time, not N sleeps each ending a little late.
            left = operations * self.operation_s - (time.monotonic() - started)
            if left > 0:
                time.sleep(left)
            self.protection.release(user, time.monotonic() - started)
        reply.headers.append(
            (
                "x-ms-ratelimit-burst-remaining-xrm-requests",
                str(self.protection.remaining_requests(user)),
            )
        )
        return reply

    @property
    def operation_s(self) -> float:
        """The execution time of one operation, in real seconds."""
        return self.config.operation_time_s * self.config.time_scale

    def _execute(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> tuple[Reply, int]:
        """The request's reply and the number of operations it ran."""
        if path.strip("/") != "$batch":
            return self.service.handle(Request(method, path, query, headers, body)).reply, 1
        self._count("batches")
        if method != "POST":
            return ODataError(405, "0x80060888", "$batch accepts only POST.").reply(), 0
        try:
            items = batch.parse_batch(
                body, headers.get("content-type", ""), require_crlf=self.config.batch_requires_crlf
            )
        except ODataError as error:
            return error.reply(), 0
        total = batch.count_requests(items)
        if total > self.config.max_batch_requests:
            return odata.bad_request(
                f"The number of requests in the batch ({total}) exceeds the limit of "
                f"{self.config.max_batch_requests}."
            ).reply(), 0
        prefer = {item.strip().lower() for item in headers.get("prefer", "").split(",")}
        continue_on_error = bool(
            prefer
            & {"odata.continue-on-error", "odata.continue-on-error=true", "continue-on-error"}
        )
        status, answers = self.runner.run(items, continue_on_error=continue_on_error, outer=headers)
        content_type, payload = batch.render(answers)
        reply = Reply(status, [("Content-Type", content_type), ("OData-Version", "4.0")], payload)
        return reply, batch.count_requests(items[: len(answers)])


def _throttled_reply(throttled: Throttled) -> Reply:
    return ODataError(429, throttled.code, throttled.message).reply(
        [("Retry-After", throttled.retry_after)]
    )


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    standin: StandinServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out as two writes: without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every response on a kept-alive connection
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        standin = self.server.standin
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        path = parts.path
        headers = {name.lower(): value for name, value in self.headers.items()}
        segments = path.strip("/").split("/")
        reply: Reply | None
        if path.startswith(API_PATH):
            reply = standin.handle_api(
                self.command, path[len(API_PATH) :], parts.query, headers, body
            )
        elif (
            len(segments) == 4
            and segments[1:] == ["oauth2", "v2.0", "token"]
            and (self.command == "POST")
        ):
            basic = headers.get("authorization", "")
            reply = standin.token_reply(
                segments[0],
                parse_qs(body.decode("utf-8", "replace")),
                basic[6:] if basic.lower().startswith("basic ") else None,
            )
        elif segments[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            reply = standin.openid_configuration(segments[0])
        else:
            reply = odata.resource_not_found(segments[-1] if segments else "").reply()
        if reply is None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(reply.status, reply.reason)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)


def _tls_context(directory: str | None) -> tuple[ssl.SSLContext, str]:
    """A server context with a fresh self-signed certificate for 127.0.0.1; returns its PEM path."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(directory or tempfile.mkdtemp(prefix="pstlib-standin-tls-"))
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pstlib stand-in 127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = folder / "standin-cert.pem"
    key_path = folder / "standin-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, str(cert_path)


def run_standin(
    host: str = "127.0.0.1", port: int = 0, config: StandinConfig | None = None
) -> None:
    """Serve the stand-in until interrupted, printing its base URL (for ``pstlib standin``)."""
    chosen = dataclasses.replace(config or StandinConfig(), host=host, port=port)
    server = StandinServer(chosen)
    url = server.start()
    print(url, flush=True)
    if server.ca_path:
        print(f"CA certificate: {server.ca_path}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
