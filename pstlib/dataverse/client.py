"""The Dataverse Web API client: contacts, emails, ``$batch``, retries, throttling.

Follows Microsoft's "Use the Dataverse Web API", "Compose HTTP requests and handle errors",
"Execute batch operations using the Web API" and "Service protection API limits"
(learn.microsoft.com):

* one :class:`httpx.Client` (connection reuse) against ``<url>/api/data/v9.2/`` with the OData
  headers ``OData-MaxVersion: 4.0``, ``OData-Version: 4.0``, ``Accept: application/json`` and
  ``Content-Type: application/json; charset=utf-8``, and a bearer token from a
  :class:`~pstlib.dataverse.auth.TokenProvider` (renewed once on a 401);
* emails go in ``$batch`` requests with ``Prefer: odata.continue-on-error`` so one bad message does
  not stop the others; each email with attachments is one change set (the email and its
  attachments are created together or not at all);
* only failed operations are sent again (429, 5xx, or no answer), in a later batch; a create that
  meets an existing row with the same deterministic id (``412 Precondition Failed``, or the
  duplicate-key error ``0x80040237``) counts as done: the row is already there;
* then the emails are completed (``statecode`` 1, ``statuscode`` 3 Sent / 4 Received) in a second
  round of batches, each PATCH with ``If-Match: *`` so that it can only update, never create
  (a PATCH is otherwise an upsert);
* batches run in a thread pool whose width and batch size follow :class:`~pstlib.dataverse.
  throttle.AdaptiveLimits`, and every ``$batch`` attempt is reported as a :class:`BatchRecord`
  to ``on_batch`` (called on the thread that called :meth:`DataverseClient.create_emails`).

Dataverse does not enforce ``messageid`` uniqueness:
:meth:`DataverseClient.find_emails_by_messageid` is how the importer finds copies imported by
something else.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from pstlib.config import DataverseSettings
from pstlib.dataverse.auth import TokenProvider, token_provider_for
from pstlib.dataverse.batch import (
    MAX_BATCH_OPERATIONS,
    BatchItem,
    ChangeSet,
    Operation,
    OperationResponse,
    count_operations,
    encode_batch,
    match_responses,
    parse_batch_response,
)
from pstlib.dataverse.mapping import EmailPayload, contact_id_for, normalise_messageid
from pstlib.dataverse.throttle import (
    AdaptiveLimits,
    Clock,
    RetryPolicy,
    Throttle,
    ThrottleEvent,
    limit_code_of,
    parse_odata_error,
    parse_retry_after,
)
from pstlib.errors import DataverseError

log = logging.getLogger(__name__)

DUPLICATE_KEY = "0x80040237"  # "Cannot insert duplicate key" (-2147220937)
ODATA_HEADERS = {
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "Accept": "application/json",
    "Content-Type": "application/json; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One ``$batch`` HTTP attempt, as the store's ``batches`` table keeps it.

    ``attempt`` is 1 for a first send; higher when the request is resent (after a 429, a 5xx or a
    broken connection) or when its operations are being retried.
    """

    started_at_utc: datetime
    duration_s: float
    operations: int
    succeeded: int
    failed: int
    attempt: int
    http_status: int | None
    limit_code: str | None
    retry_after_s: float | None
    request_bytes: int
    phase: str = "create"


@dataclass(frozen=True, slots=True)
class OperationResult:
    """What became of one email: created (or found already there), completed, or the error."""

    activity_id: str
    ok: bool
    created: bool = False  # False with ok: the row already existed (a retry or a resumed import)
    completed: bool = False
    status: int | None = None
    error_code: str = ""
    error_message: str = ""
    attempts: int = 1


@dataclass(slots=True)
class _Attempt:
    started_at_utc: datetime
    duration_s: float
    status: int | None
    limit_code: str | None = None
    retry_after_s: float | None = None


@dataclass(slots=True)
class _Job:
    key: str
    item: BatchItem
    attempts: int = 1

    @property
    def operations(self) -> int:
        return count_operations([self.item])


@dataclass(frozen=True, slots=True)
class _Verdict:
    ok: bool
    retry: bool = False
    existed: bool = False
    status: int | None = None
    error_code: str = ""
    error_message: str = ""


@dataclass(slots=True)
class _BatchOutcome:
    verdicts: list[_Verdict]
    records: list[BatchRecord] = field(default_factory=list)


def odata_string(value: str) -> str:
    """An OData string literal: single quotes around, embedded single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def is_duplicate(response: OperationResponse) -> bool:
    """A create that met an existing row with the same primary key."""
    return response.status == 412 or response.error_code.lower() == DUPLICATE_KEY


class DataverseClient:
    """Talks to one Dataverse environment. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        settings: DataverseSettings,
        *,
        token_provider: TokenProvider | None = None,
        http: httpx.Client | None = None,
        max_concurrency: int = 8,
        on_batch: Callable[[BatchRecord], None] | None = None,
        on_throttle: Callable[[ThrottleEvent], None] | None = None,
        limits: AdaptiveLimits | None = None,
        policy: RetryPolicy | None = None,
        clock: Clock | None = None,
        max_operation_attempts: int = 5,
        lookup_chunk: int = 50,
        timeout_s: float = 120.0,
    ) -> None:
        self.settings = settings
        self.base_url = f"{settings.url.rstrip('/')}/api/data/{settings.api_version}/"
        pool = max_concurrency + 2
        self._http = http or httpx.Client(
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        )
        self._owns_http = http is None
        self._tokens: TokenProvider = token_provider or token_provider_for(settings)
        self.max_concurrency = max(1, max_concurrency)
        self.throttle = Throttle(
            limits
            or AdaptiveLimits(
                concurrency=min(4, self.max_concurrency), max_concurrency=self.max_concurrency
            ),
            clock=clock,
            policy=policy,
            on_throttle=on_throttle,
        )
        self.on_batch = on_batch
        self.max_operation_attempts = max_operation_attempts
        self.lookup_chunk = lookup_chunk

    # --- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> DataverseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one request, with auth, throttling and transient retries ------------------------------

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        attempts: list[_Attempt] | None = None,
    ) -> httpx.Response:
        """Send until an answer that is neither 429 nor 5xx, or the retry budget is spent.

        429: wait exactly ``Retry-After`` (through the shared throttle). 5xx and transport errors:
        exponential backoff with jitter. 401: renew the token once.
        """
        policy = self.throttle.policy
        clock = self.throttle.clock
        tries = throttled = 0
        renewed = refresh = False
        while True:
            tries += 1
            self.throttle.before_request()
            token = self._tokens.token(refresh=refresh)
            refresh = False
            all_headers = {**ODATA_HEADERS, "Authorization": f"Bearer {token}", **(headers or {})}
            started, t0 = clock.now_utc(), clock.monotonic()
            try:
                response = self._http.request(
                    method,
                    self.url(path),
                    params=params,
                    json=json,
                    content=content,
                    headers=all_headers,
                )
            except httpx.TransportError as exc:
                if attempts is not None:
                    attempts.append(_Attempt(started, clock.monotonic() - t0, None))
                if tries >= policy.max_attempts:
                    raise DataverseError(
                        0, "transport_error", f"{type(exc).__name__}: {exc}"
                    ) from exc
                log.warning("Dataverse %s %s: %s; retrying", method, path, exc)
                self.throttle.backoff(tries)
                continue
            status = response.status_code
            attempt = _Attempt(started, clock.monotonic() - t0, status)
            if attempts is not None:
                attempts.append(attempt)
            if status == 401 and not renewed:
                renewed = refresh = True
                tries -= 1
                continue
            if status == 429:
                throttled += 1
                attempt.limit_code = limit_code_of(response.content)
                attempt.retry_after_s = parse_retry_after(
                    response.headers.get("Retry-After"), now_utc=started
                )
                event = self.throttle.record_throttled(attempt.limit_code, attempt.retry_after_s)
                attempt.retry_after_s = event.retry_after_s
                if throttled > policy.max_throttle_retries:
                    raise _error_of(response)
                tries -= 1  # a 429 is not a failed attempt: the server said when to come back
                continue
            if 500 <= status <= 599 and tries < policy.max_attempts:
                log.warning("Dataverse %s %s: HTTP %s; retrying", method, path, status)
                self.throttle.backoff(tries)
                continue
            return response

    def _get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        response = self._send("GET", path, params=params)
        if response.status_code != 200:
            raise _error_of(response)
        return response.json()

    def _query_all(self, path: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """All rows of a query, following ``@odata.nextLink`` pages."""
        rows: list[dict[str, Any]] = []
        doc = self._get_json(path, params)
        rows.extend(doc.get("value", []))
        while doc.get("@odata.nextLink"):
            doc = self._get_json(str(doc["@odata.nextLink"]))
            rows.extend(doc.get("value", []))
        return rows

    # --- contacts ------------------------------------------------------------------------------

    def find_contacts_by_email(self, addresses: Iterable[str]) -> dict[str, str]:
        """``{address: contactid}`` for the addresses some contact has as ``emailaddress1``.

        Addresses are compared lower-cased; queried in chunks of ``lookup_chunk`` with
        ``$filter=emailaddress1 eq '...' or ...``. Where several contacts share an address the
        first one returned wins.
        """
        wanted = sorted({a.strip().lower() for a in addresses if a and a.strip()})
        found: dict[str, str] = {}
        for start in range(0, len(wanted), self.lookup_chunk):
            chunk = wanted[start : start + self.lookup_chunk]
            params = {
                "$select": "contactid,emailaddress1",
                "$filter": " or ".join(f"emailaddress1 eq {odata_string(a)}" for a in chunk),
            }
            for row in self._query_all("contacts", params):
                address = str(row.get("emailaddress1") or "").strip().lower()
                if address in chunk and address not in found and row.get("contactid"):
                    found[address] = str(row["contactid"]).lower()
        return found

    def create_contact(self, address: str, name: str = "") -> str:
        """Create a contact for ``address``; its ``contactid`` is the UUID5 of the address, so a
        retry (or a second worker) finds it already there instead of making a duplicate."""
        contact_id = contact_id_for(address)
        first, _, last = name.strip().rpartition(" ")
        if not last:
            last = address.strip().partition("@")[0] or address.strip()
        body: dict[str, Any] = {
            "contactid": contact_id,
            "emailaddress1": address.strip(),
            "lastname": last[:50],
        }
        if first:
            body["firstname"] = first[:50]
        response = self._send("POST", "contacts", json=body)
        if response.status_code in (200, 201, 204):
            return contact_id
        as_part = OperationResponse(response.status_code, body=response.text)
        if is_duplicate(as_part):
            return contact_id
        raise _error_of(response)

    # --- emails --------------------------------------------------------------------------------

    def find_emails_by_messageid(self, message_ids: Iterable[str]) -> dict[str, str]:
        """``{messageid: activityid}`` of emails already in Dataverse with those Message-IDs.

        Ids are normalised as the mapping stores them (``<id>``); the keys of the result are the
        normalised ids.
        """
        wanted = sorted({m for m in (normalise_messageid(i) for i in message_ids) if m})
        found: dict[str, str] = {}
        for start in range(0, len(wanted), self.lookup_chunk):
            chunk = wanted[start : start + self.lookup_chunk]
            params = {
                "$select": "activityid,messageid",
                "$filter": " or ".join(f"messageid eq {odata_string(m)}" for m in chunk),
            }
            for row in self._query_all("emails", params):
                mid = normalise_messageid(str(row.get("messageid") or ""))
                if mid and mid not in found and row.get("activityid"):
                    found[mid] = str(row["activityid"]).lower()
        return found

    def get_email(
        self, activity_id: str, *, select: Sequence[str] | None = None, parties: bool = False
    ) -> dict[str, Any] | None:
        """The email row (``None`` if there is none), optionally with its activity parties."""
        params: dict[str, str] = {}
        if select:
            params["$select"] = ",".join(select)
        if parties:
            params["$expand"] = "email_activity_parties"
        response = self._send("GET", f"emails({activity_id})", params=params or None)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _error_of(response)
        doc: dict[str, Any] = response.json()
        return doc

    def create_emails(self, payloads: Sequence[EmailPayload]) -> list[OperationResult]:
        """Create the emails (with their parties and attachments), then complete them.

        Returns one :class:`OperationResult` per payload, in order. Never raises for a single
        failed email: its result carries the error.
        """
        unique: dict[str, EmailPayload] = {}
        for payload in payloads:
            unique.setdefault(payload.activity_id, payload)

        created = self._run_jobs(
            [_Job(p.activity_id, self._create_item(p)) for p in unique.values()], "create"
        )
        to_complete = [
            _Job(
                key,
                Operation(
                    "PATCH",
                    self.url(f"emails({key})"),
                    body=dict(unique[key].completion),
                    key=key,
                    headers=(("If-Match", "*"),),
                ),
            )
            for key, (verdict, _) in created.items()
            if verdict.ok and unique[key].completion
        ]
        completed = self._run_jobs(to_complete, "complete")

        results: dict[str, OperationResult] = {}
        for key, (verdict, tries) in created.items():
            if not verdict.ok:
                results[key] = OperationResult(
                    key,
                    False,
                    status=verdict.status,
                    error_code=verdict.error_code,
                    error_message=verdict.error_message,
                    attempts=tries,
                )
                continue
            done, done_tries = completed.get(key, (_Verdict(ok=True), 0))
            if not done.ok and self._is_completed(key):
                done = _Verdict(ok=True, status=done.status)
            results[key] = OperationResult(
                key,
                done.ok,
                created=not verdict.existed,
                completed=done.ok,
                status=done.status if not done.ok else verdict.status,
                error_code=done.error_code,
                error_message=done.error_message,
                attempts=tries + done_tries,
            )
        return [results[p.activity_id] for p in payloads]

    def _is_completed(self, activity_id: str) -> bool:
        """After a failed completion: is the email completed anyway (an earlier run did it)?"""
        try:
            row = self.get_email(activity_id, select=["statecode"])
        except DataverseError:
            return False
        return row is not None and row.get("statecode") == 1

    def _create_item(self, payload: EmailPayload) -> BatchItem:
        email = Operation(
            "POST", self.url("emails"), body=dict(payload.email), key=payload.activity_id
        )
        if not payload.attachments:
            return email
        attachments = tuple(
            Operation(
                "POST", self.url("activitymimeattachments"), body=dict(a), key=payload.activity_id
            )
            for a in payload.attachments
        )
        return ChangeSet((email, *attachments))

    # --- batches ------------------------------------------------------------------------------

    def _run_jobs(self, jobs: Sequence[_Job], phase: str) -> dict[str, tuple[_Verdict, int]]:
        """Send ``jobs`` in ``$batch`` requests, in parallel, retrying failed ones in later
        batches; ``{key: (final verdict, attempts)}``."""
        results: dict[str, tuple[_Verdict, int]] = {}
        pending: deque[_Job] = deque(jobs)
        in_flight: dict[Future[_BatchOutcome], list[_Job]] = {}
        with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="dataverse") as pool:
            while pending or in_flight:
                while pending and len(in_flight) < self.throttle.concurrency:
                    chunk = _take(pending, self.throttle.batch_size)
                    in_flight[pool.submit(self._run_batch, chunk, phase)] = chunk
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    chunk = in_flight.pop(future)
                    outcome = future.result()
                    for record in outcome.records:
                        if self.on_batch is not None:
                            self.on_batch(record)
                    for job, verdict in zip(chunk, outcome.verdicts, strict=True):
                        if verdict.retry and job.attempts < self.max_operation_attempts:
                            job.attempts += 1
                            pending.append(job)
                        else:
                            results[job.key] = (verdict, job.attempts)
        return results

    def _run_batch(self, chunk: list[_Job], phase: str) -> _BatchOutcome:
        """One ``$batch`` request for ``chunk`` (in a worker thread): a verdict per job."""
        items = [job.item for job in chunk]
        encoded = encode_batch(items)
        round_ = max(job.attempts for job in chunk)
        attempts: list[_Attempt] = []
        try:
            response = self._send(
                "POST",
                "$batch",
                content=encoded.body,
                headers={"Content-Type": encoded.content_type, "Prefer": "odata.continue-on-error"},
                attempts=attempts,
            )
        except DataverseError as exc:
            verdicts = [
                _Verdict(
                    False,
                    retry=True,
                    status=exc.status or None,
                    error_code=exc.code,
                    error_message=exc.message,
                )
            ] * len(chunk)
            return _BatchOutcome(
                verdicts,
                self._records(
                    attempts, encoded.body, encoded.operation_count, 0, round_, phase, None
                ),
            )
        verdicts, inner_limit = self._verdicts(chunk, items, response, phase)
        succeeded = sum(job.operations for job, v in zip(chunk, verdicts, strict=True) if v.ok)
        if inner_limit is None and all(not v.retry for v in verdicts):
            self.throttle.record_clean()
        records = self._records(
            attempts, encoded.body, encoded.operation_count, succeeded, round_, phase, inner_limit
        )
        return _BatchOutcome(verdicts, records)

    def _verdicts(
        self, chunk: list[_Job], items: list[BatchItem], response: httpx.Response, phase: str
    ) -> tuple[list[_Verdict], str | None]:
        """Read the batch response into one verdict per job (and the first inner 429's code)."""
        ctype = response.headers.get("Content-Type", "")
        if "multipart/mixed" not in ctype.lower():
            code, message = parse_odata_error(response.content)
            retry = response.status_code == 429 or response.status_code >= 500
            failed = _Verdict(
                False,
                retry=retry,
                status=response.status_code,
                error_code=code,
                error_message=message,
            )
            return [failed] * len(chunk), None
        try:
            pairs = match_responses(items, parse_batch_response(response.content, ctype))
        except ValueError as exc:  # a garbled answer: send these operations again
            garbled = _Verdict(
                False,
                retry=True,
                status=response.status_code,
                error_code="bad_batch_response",
                error_message=str(exc),
            )
            return [garbled] * len(chunk), None
        by_job: list[list[OperationResponse | None]] = []
        position = 0
        for job in chunk:
            by_job.append([r for _, r in pairs[position : position + job.operations]])
            position += job.operations
        inner_limit: str | None = None
        verdicts: list[_Verdict] = []
        for answers in by_job:
            verdict = _judge(answers, existing_is_done=phase == "create")
            throttled = next((a for a in answers if a is not None and a.status == 429), None)
            if throttled is not None:
                limit = limit_code_of(throttled.body)
                inner_limit = inner_limit or limit
                self.throttle.record_throttled(
                    limit, parse_retry_after(throttled.headers.get("retry-after"))
                )
            verdicts.append(verdict)
        return verdicts, inner_limit

    def _records(
        self,
        attempts: list[_Attempt],
        body: bytes,
        operations: int,
        succeeded: int,
        round_: int,
        phase: str,
        inner_limit: str | None,
    ) -> list[BatchRecord]:
        records = []
        for index, attempt in enumerate(attempts):
            final = index == len(attempts) - 1
            ok = succeeded if final else 0
            records.append(
                BatchRecord(
                    started_at_utc=attempt.started_at_utc,
                    duration_s=attempt.duration_s,
                    operations=operations,
                    succeeded=ok,
                    failed=operations - ok,
                    attempt=round_ + index,
                    http_status=attempt.status,
                    limit_code=attempt.limit_code or (inner_limit if final else None),
                    retry_after_s=attempt.retry_after_s,
                    request_bytes=len(body),
                    phase=phase,
                )
            )
        return records


def _judge(answers: list[OperationResponse | None], *, existing_is_done: bool) -> _Verdict:
    """The verdict on one job (an operation, or a change set's operations) from its answers.

    With ``existing_is_done`` (creates of deterministic ids) a duplicate-key answer means done.
    """
    if any(a is None for a in answers):
        return _Verdict(
            False,
            retry=True,
            error_code="no_response",
            error_message="the batch gave no response for this operation",
        )
    responses = [a for a in answers if a is not None]
    if all(a.ok for a in responses):
        return _Verdict(True, status=responses[0].status)
    bad = next(a for a in responses if not a.ok)
    if existing_is_done and is_duplicate(bad):
        return _Verdict(True, existed=True, status=bad.status)
    retry = bad.status == 429 or bad.status >= 500
    return _Verdict(
        False,
        retry=retry,
        status=bad.status,
        error_code=bad.error_code,
        error_message=bad.error_message,
    )


def _take(pending: deque[_Job], batch_size: int) -> list[_Job]:
    """Jobs from the front of ``pending`` up to ``batch_size`` operations (at least one job)."""
    chunk = [pending.popleft()]
    total = chunk[0].operations
    while pending:
        size = pending[0].operations
        if total + size > min(batch_size, MAX_BATCH_OPERATIONS):
            break
        chunk.append(pending.popleft())
        total += size
    return chunk


def _error_of(response: httpx.Response) -> DataverseError:
    code, message = parse_odata_error(response.content)
    return DataverseError(
        response.status_code,
        code or f"http_{response.status_code}",
        message or response.reason_phrase,
    )
