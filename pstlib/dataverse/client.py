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
* each email is completed (``statecode`` 1, ``statuscode`` 3 Sent / 4 Received) by a PATCH with
  ``If-Match: *`` (so that it can only update, never create: a PATCH is otherwise an upsert) that
  follows its create in the same batch (operations outside change sets run in order);
* every request spends the user's execution-time budget through the throttle's
  :class:`~pstlib.dataverse.throttle.ExecutionPacer` (what each request took, as measured here,
  against the documented 1200 s per 300 s, a little below it), so that the limit is used up
  without being crossed; a 429 is a correction (wait its ``Retry-After``, spend less) rather
  than how the client learns the limit;
* worker threads keep ``$batch`` requests in flight from one queue shared by every round
  (:class:`EmailPipeline`), as many as the throttle's :class:`~pstlib.dataverse.throttle.
  AdaptiveLimits` and the pacer allow and, after concurrency 429s, fewer (an AIMD cap on
  requests in flight); every ``$batch`` attempt is reported as a :class:`BatchRecord` to
  ``on_batch`` (called on the thread that collects the results);
* many emails are read back at once with ``GET`` operations in ``$batch`` requests
  (:meth:`DataverseClient.get_emails`): a batch counts as one request toward the limits.

Dataverse does not enforce ``messageid`` uniqueness:
:meth:`DataverseClient.find_emails_by_messageid` is how the importer finds copies imported by
something else.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    CONCURRENCY_LIMIT,
    AdaptiveLimits,
    Clock,
    ExecutionPacer,
    RetryPolicy,
    ServiceLimits,
    Throttle,
    ThrottleEvent,
    Ticket,
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
    items: tuple[BatchItem, ...]
    ticket: int = 0
    phase: str = "create"  # create (the create, then the completion) | read
    completes: bool = False  # the last item is the completion PATCH
    attempts: int = 1
    operations: int = field(init=False)

    def __post_init__(self) -> None:
        self.operations = count_operations(self.items)


@dataclass(frozen=True, slots=True)
class _Verdict:
    ok: bool
    retry: bool = False
    existed: bool = False
    status: int | None = None
    error_code: str = ""
    error_message: str = ""
    row: dict[str, Any] | None = None  # the entity a GET read
    completion_failed: bool = False  # created (or there already), but not completed


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
        service_limits: ServiceLimits | None = None,
        pacer: ExecutionPacer | None = None,
        max_operation_attempts: int = 5,
        lookup_chunk: int = 50,
        read_batch_size: int = MAX_BATCH_OPERATIONS,
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
        self.service_limits = service_limits or ServiceLimits()
        self.max_concurrency = max(1, min(max_concurrency, self.service_limits.max_concurrent))
        self.throttle = Throttle(
            limits
            or AdaptiveLimits(
                concurrency=min(4, self.max_concurrency), max_concurrency=self.max_concurrency
            ),
            clock=clock,
            policy=policy,
            on_throttle=on_throttle,
            pacer=pacer or ExecutionPacer(self.service_limits),
        )
        self.on_batch = on_batch
        self.max_operation_attempts = max_operation_attempts
        # Requests in flight, and how many may be: the throttle's concurrency, further capped
        # after concurrency 429s (see _governed).
        self._gov_lock = threading.Lock()
        self._in_flight = 0
        self._in_flight_cap = float(self.throttle.limits.concurrency)  # grows from the start
        self._cut_until = 0.0
        self._rng = random.Random()
        self._min_batch_size = self.throttle.limits.batch_size
        self.lookup_chunk = lookup_chunk
        self.read_batch_size = max(1, min(read_batch_size, MAX_BATCH_OPERATIONS))

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
        operations: int = 1,
        ticket: Ticket | None = None,
    ) -> httpx.Response:
        """Send until an answer that is neither 429 nor 5xx, or the retry budget is spent.

        Each try is let through by the throttle (pause, spacing, execution budget for
        ``operations``; ``ticket`` when the caller was let through already) and settles what it
        took. 429: wait exactly ``Retry-After`` (through the shared throttle). 5xx and transport
        errors: exponential backoff with jitter. 401: renew the token once.
        """
        policy = self.throttle.policy
        clock = self.throttle.clock
        tries = throttled = 0
        renewed = refresh = False
        while True:
            tries += 1
            # single requests (lookups) feed the batches: they go first
            admitted = ticket or self.throttle.admit(operations, first=path != "$batch")
            ticket = None
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
                took = clock.monotonic() - t0
                self.throttle.settle(replace(admitted, operations=0), took)  # learn nothing
                if attempts is not None:
                    attempts.append(_Attempt(started, took, None))
                if tries >= policy.max_attempts:
                    raise DataverseError(
                        0, "transport_error", f"{type(exc).__name__}: {exc}"
                    ) from exc
                log.warning("Dataverse %s %s: %s; retrying", method, path, exc)
                self.throttle.backoff(tries)
                continue
            status = response.status_code
            attempt = _Attempt(started, clock.monotonic() - t0, status)
            if status == 429:  # refused before any execution: give the charge back
                self.throttle.settle(replace(admitted, operations=0), 0.0)
            elif status >= 400:  # some execution, maybe; not a measure of the operations
                self.throttle.settle(replace(admitted, operations=0), attempt.duration_s)
            else:
                self.throttle.settle(admitted, attempt.duration_s)
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
                self._governed(attempt.limit_code, event.retry_after_s)
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

    def get_emails(
        self,
        activity_ids: Iterable[str],
        *,
        select: Sequence[str] | None = None,
        on_error: Callable[[str, DataverseError], None] | None = None,
    ) -> dict[str, dict[str, Any] | None]:
        """Many email rows at once: ``{activity_id: row}``, ``None`` where there is no such row.

        The reads go as ``GET emails(<id>)`` operations inside ``$batch`` requests of up to
        ``read_batch_size`` (at most 1000) operations with ``Prefer: odata.continue-on-error``,
        several batches in parallel (the throttle's concurrency). A batch counts as *one* request
        toward the "number of requests" limit (6000 per 5 minutes), so reading back 7,000 emails
        is a handful of requests instead of 7,000 single GETs. (A ``$filter=activityid eq ... or
        ...`` query would also work, but it puts ~50 ids in a URL, is evaluated as a query rather
        than a key lookup, and gives no per-id answer; the batch reads each row by its key.)

        429 and 5xx answers (of the whole batch, or of one operation) are sent again after the
        wait the server asks for, as every request of this client. An id that still cannot be
        read is left out of the result and reported to ``on_error`` (if given) with its error.
        Ids are compared lower-cased; the keys of the result are the ids as given.
        """
        wanted = list(dict.fromkeys(a for a in activity_ids if a))
        query = f"?$select={','.join(select)}" if select else ""
        jobs = [
            _Job(
                key,
                (Operation("GET", self.url(f"emails({key.lower()}){query}"), key=key),),
                phase="read",
            )
            for key in wanted
        ]
        found: dict[str, dict[str, Any] | None] = {}
        if not jobs:
            return found
        with EmailPipeline(self, batch_size=self.read_batch_size) as pipeline:
            by_key = {job.key: job for job in jobs}
            pipeline._submit(wanted, {}, lambda ticket: _with_ticket(by_key.values(), ticket))
            verdicts: list[_Verdict] = []
            while not verdicts:
                for _, results in pipeline.collect(block=True):
                    verdicts = results
        for key, verdict in zip(wanted, verdicts, strict=True):
            if verdict.ok:
                found[key] = verdict.row
            elif verdict.status == 404:
                found[key] = None
            elif on_error is not None:
                on_error(
                    key,
                    DataverseError(
                        verdict.status or 0,
                        verdict.error_code or f"http_{verdict.status or 0}",
                        verdict.error_message,
                    ),
                )
        return found

    def create_emails(self, payloads: Sequence[EmailPayload]) -> list[OperationResult]:
        """Create the emails (with their parties and attachments) and complete them.

        Returns one :class:`OperationResult` per payload, in order. Never raises for a single
        failed email: its result carries the error. This is :meth:`email_pipeline` with one
        round, waited for.
        """
        with self.email_pipeline() as pipeline:
            ticket = pipeline.submit(payloads)
            while True:
                for done, results in pipeline.collect(block=True):
                    if done == ticket:
                        return results

    def email_pipeline(self) -> EmailPipeline:
        """A pipeline that sends rounds of emails while the caller prepares the next ones."""
        return EmailPipeline(self)

    def _is_completed(self, activity_id: str) -> bool:
        """After a failed completion: is the email completed anyway (an earlier run did it)?"""
        try:
            row = self.get_email(activity_id, select=["statecode"])
        except DataverseError:
            return False
        return row is not None and row.get("statecode") == 1

    def _create_items(self, payload: EmailPayload) -> tuple[BatchItem, ...]:
        """The email's create (a change set with its attachments, if it has any), then its
        completion: two neighbours in one batch.

        Operations of a batch outside change sets run in order, so the completion runs right
        after the create. It names the email by its deterministic id (``PATCH emails(<id>)``
        with ``If-Match: *``) rather than by a ``$<Content-ID>`` reference, which only works
        inside a change set: a change set per email would make every email a transaction of its
        own and, when the create meets an email an earlier run made (412), roll the completion
        back with it. As neighbours, the completion also finishes an email that already existed
        (a resumed import) in the same request, and after a create that failed it answers 404
        and changes nothing ("Completed and canceled email is read-only": it must come last).
        """
        aid = payload.activity_id
        email = Operation("POST", self.url("emails"), body=dict(payload.email), key=aid)
        create: BatchItem = email
        if payload.attachments:
            create = ChangeSet(
                (
                    email,
                    *(
                        Operation(
                            "POST", self.url("activitymimeattachments"), body=dict(a), key=aid
                        )
                        for a in payload.attachments
                    ),
                )
            )
        if not payload.completion:
            return (create,)
        return (create, self._complete_item(payload))

    def _complete_item(self, payload: EmailPayload) -> Operation:
        """The completion alone, for an email that already existed (``If-Match: *``: update only,
        a PATCH is otherwise an upsert)."""
        return Operation(
            "PATCH",
            self.url(f"emails({payload.activity_id})"),
            body=dict(payload.completion),
            key=payload.activity_id,
            headers=(("If-Match", "*"),),
        )

    # --- batches ------------------------------------------------------------------------------

    def may_start_batch(self, active: int) -> bool:
        """May one more ``$batch`` request go, with ``active`` ones in flight?

        Below the throttle's concurrency and the cap; a fractional cap (3.6) lets the last
        request (the fourth) go that fraction of the times it is asked, so the average number in
        flight follows the cap smoothly instead of in whole requests (25 % steps at 4).
        """
        with self._gov_lock:
            cap = self._in_flight_cap
        if active >= self.throttle.concurrency or active >= math.ceil(cap):
            return False
        return active + 1 <= cap or self._rng.random() < cap - math.floor(cap)

    @property
    def batch_size(self) -> int:
        """Operations per ``$batch``: the throttle's, never below the size it started with.

        The execution-time limit is a budget of server time per window: smaller batches do not
        spend it more slowly (the same operations are executed), they only add requests and
        overhead. What does spend it more slowly is fewer requests in flight (see
        :meth:`_governed`), as the limit's own message says ("Decrease number of concurrent
        requests").
        """
        return max(self._min_batch_size, self.throttle.batch_size)

    def _governed(self, limit_code: str | None, retry_after_s: float) -> None:
        """After a concurrency (or an unnamed) 429: fewer requests in flight.

        Multiplicative decrease of the cap to 85 % of what was in flight, once per pause (the
        requests that were in flight when the limit was met get their 429s too, and must not
        shrink it again). Execution-time 429s slow the pacer instead (the throttle does that):
        the execution budget is spent at a rate, whatever number of requests spends it.
        """
        if limit_code not in (CONCURRENCY_LIMIT, None):
            return
        with self._gov_lock:
            now = self.throttle.clock.monotonic()
            if now < self._cut_until:
                return
            self._cut_until = now + retry_after_s
            in_flight = max(1, self._in_flight)
            self._in_flight_cap = max(1.0, min(self._in_flight_cap, float(in_flight)) * 0.85)

    def _run_batch(self, chunk: list[_Job], ticket: Ticket | None = None) -> _BatchOutcome:
        """One ``$batch`` request for ``chunk`` (in a worker thread): a verdict per job.

        ``ticket``: the throttle let this batch through already (:meth:`EmailPipeline._work`).
        """
        items = _numbered([item for job in chunk for item in job.items])
        encoded = encode_batch(items)
        round_ = max(job.attempts for job in chunk)
        phase = chunk[0].phase
        attempts: list[_Attempt] = []
        with self._gov_lock:
            self._in_flight += 1
        try:
            response = self._send(
                "POST",
                "$batch",
                content=encoded.body,
                headers={"Content-Type": encoded.content_type, "Prefer": "odata.continue-on-error"},
                attempts=attempts,
                operations=encoded.operation_count,
                ticket=ticket,
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
        finally:
            with self._gov_lock:
                self._in_flight -= 1
        verdicts, inner_limit = self._verdicts(chunk, items, response)
        succeeded = sum(job.operations for job, v in zip(chunk, verdicts, strict=True) if v.ok)
        if inner_limit is None and all(not v.retry for v in verdicts):
            self.throttle.record_clean()
            with self._gov_lock:  # additive increase: one more request per 8·cap² clean batches
                cap = self._in_flight_cap
                self._in_flight_cap = min(float(self.max_concurrency), cap + 0.125 / (cap * cap))
        records = self._records(
            attempts, encoded.body, encoded.operation_count, succeeded, round_, phase, inner_limit
        )
        return _BatchOutcome(verdicts, records)

    def _verdicts(
        self, chunk: list[_Job], items: list[BatchItem], response: httpx.Response
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
        inner_limit: str | None = None
        verdicts: list[_Verdict] = []
        position = 0
        for job in chunk:
            answers = [r for _, r in pairs[position : position + job.operations]]
            position += job.operations
            verdict = (
                _judge_email(answers, completes=job.completes)
                if job.phase == "create"
                else _judge(answers, existing_is_done=False)
            )
            throttled = next((a for a in answers if a is not None and a.status == 429), None)
            if throttled is not None:
                limit = limit_code_of(throttled.body)
                inner_limit = inner_limit or limit
                event = self.throttle.record_throttled(
                    limit, parse_retry_after(throttled.headers.get("retry-after"))
                )
                self._governed(limit, event.retry_after_s)
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


@dataclass(slots=True)
class _Round:
    """One submitted round: its keys in order and the final result of each, as they come."""

    order: list[str]
    payloads: dict[str, EmailPayload]
    results: dict[str, Any] = field(default_factory=dict)
    remaining: int = 0


class EmailPipeline:
    """Keeps ``$batch`` requests in flight while the caller prepares the next round.

    :meth:`submit` hands over a round of emails and returns at once; worker threads (up to the
    client's ``max_concurrency``, as many at a time as the throttle's ``concurrency``) take
    jobs from one queue shared by every round, so the last batches of a round overlap with the
    first of the next and no worker idles between rounds. Each email is its create and its
    completion, neighbours in one batch (:meth:`DataverseClient._create_items`); operations to
    retry go ahead of new work, so started rounds finish first. :meth:`collect` returns the
    rounds whose every email has its final :class:`OperationResult`, and reports the
    ``$batch`` attempts to the client's ``on_batch`` on the calling thread.

    Use as a context manager; leaving it (or :meth:`close`) drops what has not been sent yet
    and waits for the requests in flight.
    """

    def __init__(self, client: DataverseClient, *, batch_size: int | None = None) -> None:
        self.client = client
        self._batch_size = batch_size  # None: the throttle's adaptive batch size
        self._cond = threading.Condition()
        self._pending: deque[_Job] = deque()
        self._rounds: dict[int, _Round] = {}
        self._finished: deque[int] = deque()
        self._records: list[BatchRecord] = []
        self._threads: list[threading.Thread] = []
        self._active = 0
        self._tickets = 0
        self._closing = False
        self._pacing: threading.Thread | None = None  # the one worker timing the next start

    def __enter__(self) -> EmailPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def outstanding(self) -> int:
        """Emails submitted whose final result is not known yet."""
        with self._cond:
            return sum(r.remaining for r in self._rounds.values())

    def submit(self, payloads: Sequence[EmailPayload]) -> int:
        """Queue a round of emails; return its ticket (what :meth:`collect` names it by)."""
        unique: dict[str, EmailPayload] = {}
        for payload in payloads:
            unique.setdefault(payload.activity_id, payload)
        client = self.client
        return self._submit(
            [p.activity_id for p in payloads],
            unique,
            lambda ticket: [
                _Job(key, client._create_items(p), ticket, "create", bool(p.completion))
                for key, p in unique.items()
            ],
        )

    def _submit(
        self,
        order: list[str],
        payloads: dict[str, EmailPayload],
        make_jobs: Callable[[int], list[_Job]],
    ) -> int:
        with self._cond:
            if self._closing:
                raise DataverseError(0, "pipeline_closed", "the email pipeline is closed")
            self._tickets += 1
            ticket = self._tickets
            jobs = make_jobs(ticket)
            self._rounds[ticket] = _Round(order, payloads, remaining=len(jobs))
            if not jobs:
                self._finished.append(ticket)
            self._pending.extend(jobs)
            self._start_workers()
            self._cond.notify_all()
        return ticket

    def collect(
        self, *, block: bool = False, timeout: float | None = None
    ) -> list[tuple[int, list[Any]]]:
        """The rounds finished since the last call: ``(ticket, results in submission order)``.

        With ``block``, wait (at most ``timeout`` seconds) until at least one round finishes
        or none is left.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while block and not self._finished and self._rounds:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(0.5 if left is None else min(left, 0.5))
            done = [(t, self._rounds.pop(t)) for t in self._finished]
            self._finished.clear()
            records, self._records = self._records, []
        if self.client.on_batch is not None:
            for record in records:
                self.client.on_batch(record)
        return [(t, [r.results[key] for key in r.order]) for t, r in done]

    def close(self) -> None:
        """Drop what is not sent yet; wait for the requests in flight."""
        with self._cond:
            self._closing = True
            self._pending.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    # -- workers ----------------------------------------------------------------------------------

    def _start_workers(self) -> None:
        while len(self._threads) < self.client.max_concurrency:
            thread = threading.Thread(
                target=self._work, name=f"dataverse-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        client = self.client
        cond = self._cond
        while True:
            with cond:
                taken = self._next_batch()
                if taken is None:
                    return
                chunk, ticket = taken
                self._active += 1
            try:
                outcome = client._run_batch(chunk, ticket)
                settled = [
                    self._settle(job, v) for job, v in zip(chunk, outcome.verdicts, strict=True)
                ]
            except Exception as err:  # a bug, not an answer: fail these jobs, never hang
                log.exception("batch of %d job(s) failed in the client", len(chunk))
                failed = _Verdict(False, error_code="client_error", error_message=repr(err))
                outcome = _BatchOutcome([failed] * len(chunk))
                settled = [(None, self._final(job, failed)) for job in chunk]
            with cond:
                self._active -= 1
                self._records.extend(outcome.records)
                for job, (again, final) in reversed(list(zip(chunk, settled, strict=True))):
                    if again is not None:
                        self._pending.appendleft(again)  # finish started rounds first
                        continue
                    found = self._rounds.get(job.ticket)
                    if found is None:
                        continue
                    found.results[job.key] = final
                    found.remaining -= 1
                    if found.remaining == 0:
                        self._finished.append(job.ticket)
                cond.notify_all()

    def _next_batch(self) -> tuple[list[_Job], Ticket] | None:
        """Under the condition: wait until a batch may go, take it and its ticket (``None``: the
        pipeline is closing).

        Held by the budget (the pacer), one worker waits for the exact moment the next batch
        may go while the others wait to be woken, so that the idle workers do not all wake up
        and contend at every start (which would also delay the answers being read, and make
        the requests in flight look longer than they are).
        """
        client = self.client
        cond = self._cond
        me = threading.current_thread()
        try:
            while not self._closing:
                wait = 0.05
                if self._pending and client.may_start_batch(self._active):
                    delay = client.throttle.ready_in()
                    if delay <= 0:
                        size = self._batch_size or client.batch_size
                        chunk = _take(self._pending, size)
                        ticket = client.throttle.try_admit(sum(job.operations for job in chunk))
                        if ticket is not None:
                            return chunk, ticket
                        self._pending.extendleft(reversed(chunk))  # not yet: leave it queued
                        delay = client.throttle.ready_in()
                    if self._pacing in (None, me):
                        self._pacing = me
                        wait = min(wait, max(0.001, delay))
                cond.wait(wait)
            return None
        finally:
            if self._pacing is me:
                self._pacing = None
                cond.notify()  # someone else times the next start

    def _settle(self, job: _Job, verdict: _Verdict) -> tuple[_Job | None, Any]:
        """``(job to send, None)`` to send again or go on, or ``(None, final result)``."""
        client = self.client
        if verdict.retry and job.attempts < client.max_operation_attempts:
            job.attempts += 1
            return job, None
        if verdict.completion_failed and client._is_completed(job.key):
            verdict = _Verdict(True, existed=verdict.existed, status=verdict.status)
        return None, self._final(job, verdict)

    @staticmethod
    def _final(job: _Job, verdict: _Verdict) -> Any:
        if job.phase == "read":
            return verdict
        tries = job.attempts
        if not verdict.ok:
            return OperationResult(
                job.key,
                False,
                created=False,
                completed=False,
                status=verdict.status,
                error_code=verdict.error_code,
                error_message=verdict.error_message,
                attempts=tries,
            )
        return OperationResult(
            job.key,
            True,
            created=job.phase == "create" and not verdict.existed,
            completed=True,
            status=verdict.status,
            attempts=tries,
        )


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
        row = responses[0].json() if responses[0].status == 200 else None
        return _Verdict(
            True, status=responses[0].status, row=row if isinstance(row, dict) else None
        )
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


def _judge_email(answers: list[OperationResponse | None], *, completes: bool) -> _Verdict:
    """The verdict on one email from the answers to its create (and attachments) and, with
    ``completes``, its completion (the last answer)."""
    create = _judge(answers[:-1] if completes else answers, existing_is_done=True)
    if not create.ok or not completes:
        return create
    done = _judge(answers[-1:], existing_is_done=False)
    if done.ok:
        return create
    return replace(done, existed=create.existed, completion_failed=True)


def _take(pending: deque[_Job], batch_size: int) -> list[_Job]:
    """Jobs from the front of ``pending`` up to ``batch_size`` operations (at least one job)."""
    chunk = [pending.popleft()]
    total = chunk[0].operations
    limit = min(batch_size, MAX_BATCH_OPERATIONS)
    while pending:
        size = pending[0].operations
        if total + size > limit:
            break
        chunk.append(pending.popleft())
        total += size
    return chunk


def _with_ticket(jobs: Iterable[_Job], ticket: int) -> list[_Job]:
    out = list(jobs)
    for job in out:
        job.ticket = ticket
    return out


def _numbered(items: Sequence[BatchItem]) -> list[BatchItem]:
    """``items`` with every change set operation numbered ``1, 2, ...`` through the batch.

    Content-IDs are unique within a batch; a job names its own operations symbolically
    (``content_id="email"``, a ``PATCH $email``), and this gives them the batch's numbers and
    rewrites the ``$<name>`` references of the same change set.
    """
    out: list[BatchItem] = []
    number = 0
    for item in items:
        if isinstance(item, Operation):
            out.append(item)
            continue
        names: dict[str, str] = {}
        operations = []
        for op in item.operations:
            number += 1
            url = op.url
            if url.startswith("$"):
                name, slash, rest = url[1:].partition("/")
                if name in names:
                    url = f"${names[name]}{slash}{rest}"
            if op.content_id:
                names[op.content_id] = str(number)
            operations.append(replace(op, url=url, content_id=str(number)))
        out.append(ChangeSet(tuple(operations)))
    return out


def _error_of(response: httpx.Response) -> DataverseError:
    code, message = parse_odata_error(response.content)
    return DataverseError(
        response.status_code,
        code or f"http_{response.status_code}",
        message or response.reason_phrase,
    )
