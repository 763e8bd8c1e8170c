"""The import session: read → deduplicate → contacts → batches → target, every fate in the store.

:func:`import_mail` reads every mail file under the given paths and, message by message:

1. records non-mail items (contacts, appointments, tasks...) as ``skipped`` with the reason;
2. deduplicates (:mod:`pstlib.importer.dedupe`): within the session, against earlier sessions in
   the store, and (dataverse target) against Dataverse by ``messageid``;
3. collects the rest into batches of ``batch_messages``; per batch, resolves the correspondents'
   contacts (:mod:`pstlib.importer.contacts`), maps the messages to Dataverse payloads, records
   them ``pending`` with their deterministic activity ids, hands them to the client's
   :class:`~pstlib.dataverse.client.EmailPipeline` and goes on reading: the next batch is read,
   looked up and mapped while this one is in flight (at most about two batches are
   outstanding). Each message is recorded ``imported`` or ``failed`` when its round is answered.
   The *assess* target writes nowhere but the store: messages are recorded ``read``, contacts
   ``skipped`` with what the policy would do.

All store writes go through the :class:`~pstlib.importer.collector.Collector` (the import thread
only enqueues). Every ``$batch`` attempt lands in ``batches``, every 429 also as a ``throttled``
metric (limit code, Retry-After), a heartbeat (``worker_pid``, ``messages_processed``) in
``metrics``. Every second the collector also samples the resources of the importer and of its
writer process (``rss_bytes``, ``cpu_s``, ``cpu_percent``, ``collector_*``) and the import
thread's cumulative seconds per stage (``stage_s``, labels ``stage`` and ``run``; see
:data:`STAGES`), from which :func:`pstlib.analytics.operations.find_bottleneck` tells where the
time went.

Resume. A session stopped at any moment (Ctrl-C, ``kill -9``, a crash, a lost network) continues
with ``resume=<session_id>``. Without it, and with ``ImportOptions.auto_resume`` (the default),
running the same command again (same files, same target, same Dataverse URL) resumes the latest
such session if it is ``interrupted`` or ``failed``, or ``running`` but dead (its worker process
is gone from this host, or another host's heartbeat is older than ``stale_after_s``); a completed
one starts a new session (whose messages are then duplicates of it). On resume, messages
recorded with a final outcome are not sent again; ``pending`` and ``failed`` ones are sent again
(the client takes "already exists" for success), messages never recorded are read and sent as
new. Deterministic activity ids make every retried create harmless: nothing twice, nothing lost.

One bad message never stops a session: a message that cannot be mapped or sent is ``failed``
with the error. When ``max_failed_batches`` batches in a row fail entirely at the target (it is
unreachable), the session stops as ``interrupted`` with :class:`TargetUnavailableError`, ready to
be resumed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, select

from pstlib.analytics.imports import MESSAGE_COUNT_COLUMNS, SessionSummary, summarize_session
from pstlib.dataverse import BatchRecord, DataverseClient, MappingOptions, ThrottleEvent
from pstlib.dataverse.client import EmailPipeline, OperationResult
from pstlib.dataverse.mapping import EmailPayload, is_outgoing, map_message
from pstlib.errors import ConfigError, DataverseError, SourceError
from pstlib.importer.collector import Collector, process_alive, wait_for_collectors
from pstlib.importer.contacts import ContactPolicy, ContactResolver, regarding_address
from pstlib.importer.dedupe import (
    Deduplicator,
    Duplicate,
    dataverse_duplicates,
    earlier_imports,
    item_ref,
)
from pstlib.importer.session import (
    Progress,
    ProgressCallback,
    direction_of,
)
from pstlib.models import ItemKind, Message
from pstlib.sources import discover_sources
from pstlib.sources.parallel import FileDone, FileItems, FileOpened, read_files
from pstlib.store import Store, load
from pstlib.store import schema as tables
from pstlib.store.schema import Outcome, SessionStatus

log = logging.getLogger(__name__)

TARGETS = ("dataverse", "assess")
STAGES = ("read", "dedupe", "contacts", "map", "network")
"""The stages of the import thread whose seconds each run records (metric ``stage_s``)."""
DEFAULT_KINDS = frozenset({ItemKind.MAIL, ItemKind.MEETING, ItemKind.REPORT})
FINAL = frozenset({Outcome.IMPORTED, Outcome.DUPLICATE, Outcome.SKIPPED, Outcome.READ})
RETRY = frozenset({Outcome.PENDING, Outcome.FAILED})


class TargetUnavailableError(DataverseError):
    """Several batches in a row failed entirely at the target: the session stops, resumable."""


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How an import runs. Built at the edge (CLI, notebook parameters) and passed down."""

    target: str = "dataverse"  # dataverse | assess
    mailbox_owner: str | None = None
    contacts: ContactPolicy = field(default_factory=ContactPolicy)
    import_kinds: frozenset[ItemKind] = DEFAULT_KINDS  # other item kinds are skipped
    batch_messages: int = 100  # messages handed to the client at a time
    check_dataverse: bool = True  # look up each batch's Message-IDs in Dataverse first
    set_regarding: bool = True  # Regarding = the correspondent's contact
    mapping: MappingOptions = field(default_factory=MappingOptions)
    collect: bool = True  # False: record nothing but the session row (overhead baseline)
    chunk_rows: int = 512  # rows the import thread hands the collector's writer at a time
    processes: int | None = None  # reader processes (default: one per CPU, at most one a file)
    flush_every_s: float = 0.5
    auto_resume: bool = True
    stale_after_s: float = 300.0
    max_failed_batches: int = 3
    metrics_every_s: float = 5.0

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"unknown target {self.target!r} (valid: {', '.join(TARGETS)})")
        if self.batch_messages < 1:
            raise ConfigError("batch_messages must be at least 1")
        object.__setattr__(self, "import_kinds", frozenset(ItemKind(k) for k in self.import_kinds))

    def to_dict(self) -> dict[str, Any]:
        """The options as the session row keeps them (JSON-ready)."""
        policy = self.contacts
        return {
            "target": self.target,
            "mailbox_owner": self.mailbox_owner,
            "contacts": {
                "create": policy.create.value,
                "allow_domains": sorted(policy.allow_domains),
                "deny_domains": sorted(policy.deny_domains),
                "internal_domains": sorted(policy.internal_domains),
            },
            "import_kinds": sorted(k.value for k in self.import_kinds),
            "batch_messages": self.batch_messages,
            "check_dataverse": self.check_dataverse,
            "set_regarding": self.set_regarding,
            "max_attachment_bytes": self.mapping.max_attachment_bytes,
            "collect": self.collect,
        }


def import_mail(
    paths: Sequence[Path | str],
    store: Store,
    options: ImportOptions,
    *,
    client: DataverseClient | None,
    on_progress: ProgressCallback | None = None,
    resume: str | None = None,
) -> str:
    """Import every mail file under ``paths`` into ``options.target``; return the session id.

    ``client`` is required for the dataverse target and ignored (nothing is sent) for assess.
    ``resume`` continues that session (see the module documentation for automatic resumption).
    Interrupted (Ctrl-C) the session is marked ``interrupted`` with everything recorded so far and
    the interrupt is re-raised; any other error marks it ``failed`` and is re-raised. Either way
    the session document (``summary_json``) is written.
    """
    if options.target == "dataverse" and client is None:
        raise ConfigError("the dataverse target needs a DataverseClient")
    target_client = client if options.target == "dataverse" else None
    files = discover_sources([Path(p) for p in paths])
    identity = session_identity(paths, options.target, target_client)
    if resume is None and options.auto_resume:
        resume = find_resumable(store, identity, stale_after_s=options.stale_after_s)
    if resume is not None:
        session = store.get_session(resume)
        if session["target"] != options.target:
            raise ConfigError(
                f"session {resume} imported to {session['target']}, not {options.target}"
            )
        store.resume_session(resume)
        session_id = resume
        log.info("resuming session %s", session_id)
        _wait_for_earlier_writers(store, session_id)
    else:
        session_id = store.begin_session(
            options.target,
            {**options.to_dict(), **identity, "files": len(files)},
            mailbox_owner=options.mailbox_owner,
        )
    status = SessionStatus.FAILED
    run = _Run(store, session_id, options, target_client, on_progress, len(files))
    run.total = known_total(store, files)
    try:
        run.start()
        run.read_sources(files)
        run.finish_sending()
        status = SessionStatus.COMPLETED
    except (KeyboardInterrupt, TargetUnavailableError):
        status = SessionStatus.INTERRUPTED
        raise
    finally:
        try:
            run.close()
        finally:
            store.end_session(session_id, status, None)
            store.end_session(session_id, status, summarize_counted(store, session_id).to_dict())
    return session_id


def summarize_counted(store: Store, session_id: str) -> SessionSummary:
    """The session document, its messages counted in SQL rather than loaded row by row.

    The same :func:`~pstlib.analytics.imports.summarize_session` as
    :func:`pstlib.importer.session.summarize`, given messages counted by outcome, class, kind and
    folder role: at the end of a 20k-message session this takes milliseconds where loading the
    rows into pandas took a third of a second (a sixth of the whole assess import).
    """
    table = tables.messages
    when = func.coalesce(table.c.sent_at_utc, table.c.received_at_utc)
    keys = [table.c.outcome, table.c.message_class, table.c.item_kind, table.c.folder_role]
    query = (
        select(
            *keys,
            func.count().label("message_count"),
            func.coalesce(func.sum(table.c.size_bytes), 0).label("size_bytes"),
            func.min(when).label("earliest_at_utc"),
            func.max(when).label("latest_at_utc"),
        )
        .where(table.c.session_id == session_id)
        .group_by(*keys)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    counted = pd.DataFrame([tuple(r) for r in rows], columns=list(MESSAGE_COUNT_COLUMNS))
    return summarize_session(
        store.get_session(session_id),
        load.load_sources(store, session_id),
        counted,
        load.load_errors(store, session_id),
        load.load_contacts(store, session_id),
        load.load_batches(store, session_id),
    )


def _wait_for_earlier_writers(store: Store, session_id: str) -> None:
    """Before a resume reads what was recorded: wait until a killed run's writer is gone.

    The writer is a process of its own (see :mod:`pstlib.importer.collector`); killed with its
    importer it dies at once on Linux, or stops at the end of its pipe elsewhere, but it could
    still be committing a transaction. Each writer recorded its pid (``collector_pid``) in its
    first commit.
    """
    metrics = load.load_metrics(store, session_id)
    pids = metrics[metrics["name"].astype("string") == "collector_pid"]
    host = socket.gethostname()
    mine = [
        int(value)
        for value, labels in zip(pids["value"], pids["labels_json"], strict=True)
        if pd.notna(labels) and json.loads(str(labels)).get("host") == host
    ]
    alive = wait_for_collectors(mine)
    if alive:
        log.warning(
            "writer process(es) %s of session %s still alive; resuming anyway", alive, session_id
        )


# --- which session to resume ---------------------------------------------------------------------


def session_identity(
    paths: Sequence[Path | str], target: str, client: DataverseClient | None
) -> dict[str, Any]:
    """What makes two runs "the same command": the paths, the target and the Dataverse URL."""
    return {
        "paths": sorted(str(Path(p).resolve()) for p in paths),
        "target": target,
        "dataverse_url": client.settings.url.rstrip("/") if client is not None else None,
    }


def find_resumable(
    store: Store, identity: dict[str, Any], *, stale_after_s: float = 300.0
) -> str | None:
    """The latest session with this identity if it did not complete and no live worker runs it.

    Raises :class:`ConfigError` when that session is still running (its worker is alive).
    """
    sessions = load.load_sessions(store)
    same = sessions[sessions["target"].astype("string") == identity["target"]]
    wanted = {k: identity[k] for k in ("paths", "dataverse_url")}
    matching = [
        row
        for row in same.itertuples(index=False)
        if {k: json.loads(str(row.options_json or "{}")).get(k) for k in wanted} == wanted
    ]
    if not matching:
        return None
    latest = max(matching, key=lambda r: r.started_at_utc)
    status = str(latest.status)
    session_id = str(latest.session_id)
    if status == SessionStatus.COMPLETED:
        return None
    if status == SessionStatus.RUNNING and _worker_alive(store, session_id, stale_after_s):
        raise ConfigError(
            f"session {session_id} for these files is still running; wait for it, or stop it "
            "and run the command again to resume it"
        )
    return session_id


def _worker_alive(store: Store, session_id: str, stale_after_s: float) -> bool:
    metrics = load.load_metrics(store, session_id)
    beats = metrics[metrics["name"].astype("string") == "worker_pid"]
    if beats.empty:
        return False
    last = beats.iloc[-1]
    labels = json.loads(str(last["labels_json"])) if pd.notna(last["labels_json"]) else {}
    if labels.get("host") == socket.gethostname():
        return _pid_alive(int(last["value"]))
    newest = pd.Timestamp(metrics["at_utc"].max())
    return bool((pd.Timestamp.now(tz="UTC") - newest).total_seconds() < stale_after_s)


def _pid_alive(pid: int) -> bool:
    # this very process: whatever ran the session here has stopped
    return pid != os.getpid() and process_alive(pid)


# --- one run of a session ------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    source_id: int
    message: Message
    recorded: bool  # a row exists already (pending/failed in an earlier run): update it


@dataclass(slots=True)
class _Resumed:
    """What earlier runs of this session recorded."""

    sources: dict[str, tuple[int, str, int | None]] = field(default_factory=dict)
    outcomes: dict[tuple[int, str], str] = field(default_factory=dict)
    read_errors: set[tuple[int, str | None]] = field(default_factory=set)
    unread: dict[int, int] = field(default_factory=dict)  # source_id -> items it could not read
    stopped: set[int] = field(default_factory=set)  # sources whose reading stopped early
    warnings: set[tuple[int, str | None, str]] = field(default_factory=set)  # source, item, code
    seen: dict[str, str] = field(default_factory=dict)
    contacts: dict[str, str] = field(default_factory=dict)


class _Run:
    def __init__(
        self,
        store: Store,
        session_id: str,
        options: ImportOptions,
        client: DataverseClient | None,
        on_progress: ProgressCallback | None,
        file_count: int,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.options = options
        self.client = client
        self.on_progress = on_progress
        self.file_count = file_count
        self.owner = options.mailbox_owner
        # Cumulative seconds of this run's import thread per stage (time.perf_counter around each
        # stage; sampled every second by the collector as metric ``stage_s``, label ``stage``):
        # read (parsing the sources), dedupe (the ledger, and Dataverse's messageid look-ups),
        # contacts (resolving, looking up, creating), map (building payloads), network (waiting
        # for Dataverse to acknowledge rounds: requests and their throttle waits), store
        # (waiting for the collector); ``run`` is the whole run so far, the rest being other work.
        self.stage_s: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        # Only a collecting run times its stages per message, or works out the direction of
        # each message for its row: they are collection's work (a clock read costs ~0.2 us
        # here, five a message ~1 % of an assess import), which a run with collection off
        # (the overhead benchmark's baseline) must not pay for it.
        self.timing = options.collect
        self.collector = Collector(
            store,
            session_id,
            enabled=options.collect,
            chunk_rows=options.chunk_rows,
            flush_every_s=options.flush_every_s,
            probe=self.stage_seconds,
            # one run of a resumed session counts from zero again: tell its samples apart
            probe_labels={"run": f"{os.getpid()}-{time.time_ns()}"},
        )
        self.resumed = _load_resumed(store, session_id)
        self.dedupe = Deduplicator(
            earlier_imports(store, exclude_session=session_id), self.resumed.seen
        )
        self.contacts = ContactResolver(
            client,
            options.contacts,
            self.owner,
            self.collector.contact,
            workers=client.max_concurrency if client is not None else 1,
            known=self.resumed.contacts,
        )
        self.batch: list[_Item] = []
        self.failed_batches = 0
        self.processed = 0
        self.total: int | None = None
        self.source_path = ""
        self.source_index = 0
        self._started = time.monotonic()
        self._next_metrics = 0.0
        self._hooks: tuple[Any, Any] | None = None
        self.pipeline: EmailPipeline | None = None
        self.in_flight: dict[int, list[tuple[_Item, EmailPayload]]] = {}
        self.closing = False

    # -- life -----------------------------------------------------------------------------------

    def stage_seconds(self) -> dict[str, float]:
        """Seconds per stage so far, the collector's wait and the run's (the collector's probe)."""
        return {
            **self.stage_s,
            "store": self.collector.wait_s,
            "run": time.monotonic() - self._started,
        }

    def start(self) -> None:
        self.collector.start()
        self._heartbeat(force=True)
        if self.client is not None:
            previous_batch = self.client.on_batch
            previous_throttle = self.client.throttle.on_throttle
            self._hooks = (previous_batch, previous_throttle)

            def on_batch(record: BatchRecord) -> None:
                self.collector.batch(record)
                if previous_batch is not None:
                    previous_batch(record)

            def on_throttle(event: ThrottleEvent) -> None:
                self.collector.metric(
                    "throttled",
                    event.retry_after_s,
                    {"limit_code": event.limit_code or ""},
                )
                if previous_throttle is not None:
                    previous_throttle(event)

            self.client.on_batch = on_batch
            self.client.throttle.on_throttle = on_throttle
            self.pipeline = self.client.email_pipeline()

    def close(self) -> None:
        if self.pipeline is not None:  # what is not sent stays pending: a resume sends it
            self.pipeline.close()
            self.closing = True
            self._acknowledge_finished(block=False)
        if self.client is not None and self._hooks is not None:
            self.client.on_batch, self.client.throttle.on_throttle = self._hooks
        self._heartbeat(force=True)
        self.collector.close()

    def _heartbeat(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_metrics:
            return
        self._next_metrics = now + self.options.metrics_every_s
        elapsed = max(now - self._started, 1e-9)
        self.collector.metric("worker_pid", os.getpid(), {"host": socket.gethostname()})
        self.collector.metric("messages_processed", self.processed)
        self.collector.metric("messages_per_s", self.processed / elapsed)
        self.collector.metric("collector_backlog", self.collector.backlog)

    def _tick(self, outcome: Outcome | None, count: int = 1, *, failed: bool = False) -> None:
        self.processed += count
        if self.on_progress is not None and (count or failed):
            self.on_progress(
                Progress(
                    self.source_path,
                    self.source_index,
                    self.file_count,
                    count,
                    failed=failed,
                    total=self.total,
                    outcome=outcome.value if outcome is not None else None,
                )
            )
        self._heartbeat()

    # -- reading ----------------------------------------------------------------------------------

    def read_sources(self, files: Sequence[Path]) -> None:
        """Read ``files`` (but those an earlier run of the session finished) in reader processes
        (:func:`~pstlib.sources.parallel.read_files`, ``options.processes`` of them), and import
        each message as it comes. The reading overlaps the import's own work, and a reader that
        libpff kills costs only its file, recorded ``failed`` (``reader_died``). Files are taken
        in their order (each reader reads ahead while it waits for its turn): when two files hold
        the same message, the copy in the earlier file is the one imported, in every run."""
        todo: list[int] = []
        for index, path in enumerate(files):
            known = self.resumed.sources.get(str(path))
            if known is not None and self._source_done(known[0], known):
                self._tick(None, known[2] or 0)
            else:
                todo.append(index)
        if not todo:
            return
        paths = [files[i] for i in todo]
        # index in paths -> source_id while the file is read (None: it could not be opened)
        opened: dict[int, int | None] = {}
        events = read_files(
            paths,
            processes=self.options.processes,
            attachment_data=self.client is not None,
            background=True,
            ordered=True,
        )
        stages, clock = self.stage_s, time.perf_counter
        mark = clock()
        try:
            for event in events:
                if self.timing:
                    now = clock()
                    stages["read"] += now - mark
                index = event.index
                self.source_path, self.source_index = str(paths[index]), todo[index]
                if isinstance(event, FileItems):
                    source_id = opened[index]
                    assert source_id is not None  # an unopened file has no items
                    for result in event.results:
                        if isinstance(result, SourceError):
                            self._read_error(source_id, result)
                        else:
                            self._message(source_id, result)
                elif isinstance(event, FileOpened):
                    opened[index] = self._open_source(paths[index], event)
                elif (source_id := opened.pop(index, None)) is not None:
                    self._finish_source(source_id, event)
                if self.timing:
                    mark = clock()
        finally:
            events.close()  # stopped early (Ctrl-C, an error): the readers stop now

    def _open_source(self, path: Path, event: FileOpened) -> int | None:
        """The source row of a file just opened (an earlier run's, on resume); None if it could
        not be, its error recorded and its source row finished as ``failed``."""
        known = self.resumed.sources.get(str(path))
        size = path.stat().st_size
        if event.error is None:
            if known is not None:
                return known[0]
            return self.store.add_source(
                self.session_id, str(path), event.kind or "unknown", size, event.sha256
            )
        err = event.error
        log.warning("%s", err)
        if known is not None:
            source_id = known[0]
        else:
            source_id = self.store.add_source(self.session_id, str(path), "unknown", size, None)
            self.collector.error("open", err, source_id=source_id)
        self.collector.finish_source(source_id, "failed", 0, str(err))
        self._tick(None, 0, failed=True)
        return None

    def _finish_source(self, source_id: int, done: FileDone) -> None:
        """A file is read: its reader's warnings (a bad date, an unknown charset...) and any
        failure are recorded, then its source row says how it ended."""
        for warning in done.warnings:  # not an unread item: the item itself was read
            if (source_id, warning.item, warning.code) not in self.resumed.warnings:
                self.collector.error("warning", warning, source_id=source_id, item=warning.item)
        failure = done.failure
        if failure is not None:
            log.warning("%s", failure)
            if source_id not in self.resumed.stopped:  # not again on each resume
                self.collector.error("source", failure, source_id=source_id)
            self.collector.finish_source(source_id, "failed", done.found, str(failure))
            self._tick(None, 0, failed=True)
        else:
            self.collector.finish_source(source_id, "read", done.found)

    def _source_done(self, source_id: int, known: tuple[int, str, int | None]) -> bool:
        """Read completely in an earlier run, every item with a final outcome: nothing to do."""
        _, status, items_found = known
        if status != "read" or items_found is None:
            return False
        final = sum(
            1
            for (sid, _), outcome in self.resumed.outcomes.items()
            if sid == source_id and outcome in FINAL
        )
        # with the items it could not read (an unreadable item, or folder), each its error row
        return final + self.resumed.unread.get(source_id, 0) >= items_found

    def _read_error(self, source_id: int, err: SourceError) -> None:
        if (source_id, err.item) not in self.resumed.read_errors:
            self.collector.error("read", err, source_id=source_id, item=err.item)
        self._tick(Outcome.FAILED, 1, failed=True)

    def _message(self, source_id: int, msg: Message) -> None:
        before = self.resumed.outcomes.get((source_id, msg.item_id))
        if before in FINAL:
            self._tick(Outcome(before), 1)
            return
        item = _Item(source_id, msg, before is not None)
        kind = msg.kind
        if kind not in self.options.import_kinds:
            detail = f"not mail: {kind.value} ({msg.message_class})"
            self._record(item, Outcome.SKIPPED, detail)
            return
        timing = self.timing
        clock = time.perf_counter
        began = clock() if timing else 0.0
        duplicate = self.dedupe.check(
            msg.dedupe_key, item_ref(self.session_id, source_id, msg.item_id)
        )
        if timing:
            deduped = clock()
            self.stage_s["dedupe"] += deduped - began
        if duplicate is not None:
            self._record_duplicate(item, duplicate)
            return
        if self.client is None:  # assess: what would be sent, and the contacts it would need
            self.contacts.resolve([msg])
            if timing:
                self.stage_s["contacts"] += clock() - deduped
            self._record(item, Outcome.READ)
            return
        self.batch.append(item)
        if len(self.batch) >= self.options.batch_messages:
            self.send_batch()

    # -- recording --------------------------------------------------------------------------------

    def _record(
        self,
        item: _Item,
        outcome: Outcome,
        detail: str | None = None,
        *,
        duplicate_of: str | None = None,
        activity_id: str | None = None,
        dataverse_id: str | None = None,
        tick: bool = True,
    ) -> None:
        if item.recorded:
            self.collector.update(
                [
                    {
                        "source_id": item.source_id,
                        "item_id": item.message.item_id,
                        "outcome": outcome.value,
                        "outcome_detail": detail,
                        "duplicate_of": duplicate_of,
                        "activity_id": activity_id,
                        "dataverse_id": dataverse_id,
                    }
                ]
            )
        else:
            if self.collector.enabled:
                self.collector.message(
                    item.source_id,
                    item.message,
                    outcome,
                    detail,
                    direction=direction_of(item.message, self.owner),
                    duplicate_of=duplicate_of,
                    activity_id=activity_id,
                    dataverse_id=dataverse_id,
                )
            item.recorded = True
        if tick:
            self._tick(outcome, 1, failed=outcome is Outcome.FAILED)

    def _record_duplicate(self, item: _Item, duplicate: Duplicate) -> None:
        self._record(
            item, Outcome.DUPLICATE, duplicate.kind.value, duplicate_of=duplicate.duplicate_of
        )

    # -- sending ----------------------------------------------------------------------------------

    def send_batch(self) -> None:
        """Send the collected batch (dataverse target); record every message's fate."""
        batch, self.batch = self.batch, []
        if not batch or self.client is None:
            return
        client = self.client
        stages = self.stage_s
        clock = time.perf_counter
        began = clock()
        try:
            if self.options.check_dataverse:
                found = dataverse_duplicates(client, [i.message for i in batch])
                for item in [i for i in batch if i.message.dedupe_key in found]:
                    self._record_duplicate(item, found[item.message.dedupe_key])
                batch = [i for i in batch if i.message.dedupe_key not in found]
            deduped = clock()
            stages["dedupe"] += deduped - began
            contacts = self.contacts.resolve([i.message for i in batch])
            stages["contacts"] += clock() - deduped
        except DataverseError as err:
            self._batch_failed(batch, "dedupe", err)
            return
        began = clock()
        prepared: list[tuple[_Item, EmailPayload]] = []
        for item in batch:
            try:
                payload = self._payload(item.message, contacts)
            except Exception as err:  # one bad message never stops the session
                log.warning(
                    "cannot map %s item %s: %s", item.message.source_path, item.message.item_id, err
                )
                self.collector.error(
                    "send", err, source_id=item.source_id, item=item.message.item_id
                )
                self._record(item, Outcome.FAILED, f"map: {type(err).__name__}: {err}")
                continue
            self._record(item, Outcome.PENDING, activity_id=payload.activity_id, tick=False)
            prepared.append((item, payload))
        mapped = clock()
        stages["map"] += mapped - began
        if not prepared:
            return
        pipeline = self.pipeline or client.email_pipeline()
        self.pipeline = pipeline
        self.in_flight[pipeline.submit([p for _, p in prepared])] = prepared
        # keep reading and preparing while this round is sent, but never more than about one
        # round ahead of what Dataverse has acknowledged
        self._acknowledge_finished(block=False)
        while pipeline.outstanding > 2 * self.options.batch_messages:
            self._acknowledge_finished(block=True)
        stages["network"] += clock() - mapped

    def finish_sending(self) -> None:
        """Send the last collected batch and wait until every round is acknowledged."""
        self.send_batch()
        if self.in_flight:
            began = time.perf_counter()
            while self.in_flight:
                self._acknowledge_finished(block=True)
            self.stage_s["network"] += time.perf_counter() - began

    def _acknowledge_finished(self, *, block: bool) -> None:
        """Record the fate of every message of the rounds Dataverse has finished."""
        if self.pipeline is None:
            return
        for ticket, results in self.pipeline.collect(block=block, timeout=1.0):
            prepared = self.in_flight.pop(ticket, None)
            if prepared is not None:
                self._acknowledge(prepared, results)

    def _payload(self, message: Message, contacts: dict[str, str]) -> EmailPayload:
        regarding = None
        if self.options.set_regarding:
            outgoing = is_outgoing(message, self.owner)
            address = regarding_address(message, self.owner, outgoing)
            regarding = contacts.get(address) if address else None
        return map_message(
            message,
            mailbox_owner=self.owner,
            contacts=contacts,
            regarding_contact_id=regarding,
            options=self.options.mapping,
        )

    def _acknowledge(
        self, prepared: list[tuple[_Item, EmailPayload]], results: list[OperationResult]
    ) -> None:
        ok = 0
        for (item, payload), result in zip(prepared, results, strict=True):
            if result.ok:
                ok += 1
                detail = "created" if result.created else "existed"
                if payload.skipped_attachments:
                    detail += "; attachments not imported: " + ", ".join(
                        f"{s.filename} ({s.reason})" for s in payload.skipped_attachments
                    )
                self._record(
                    item,
                    Outcome.IMPORTED,
                    detail,
                    activity_id=payload.activity_id,
                    dataverse_id=result.activity_id,
                )
                continue
            error = DataverseError(
                result.status or 0, result.error_code or "error", result.error_message
            )
            self.collector.error("send", error, source_id=item.source_id, item=item.message.item_id)
            self._record(item, Outcome.FAILED, f"send: {error}", activity_id=payload.activity_id)
        transient = all(
            not r.ok and (r.status is None or r.status == 429 or r.status >= 500) for r in results
        )
        self._count_batch(ok == 0 and transient)

    def _batch_failed(self, batch: list[_Item], stage: str, err: DataverseError) -> None:
        log.warning("batch of %d message(s) failed at %s: %s", len(batch), stage, err)
        self.collector.error(stage, err)
        for item in batch:
            self._record(item, Outcome.FAILED, f"{stage}: {err}")
        self._count_batch(True)

    def _count_batch(self, failed_entirely: bool) -> None:
        self.failed_batches = self.failed_batches + 1 if failed_entirely else 0
        if self.failed_batches >= self.options.max_failed_batches and not self.closing:
            raise TargetUnavailableError(
                0,
                "target_unavailable",
                f"{self.failed_batches} batches in a row failed at the target; the session "
                f"stops here and can be resumed ({self.session_id})",
            )


def _load_resumed(store: Store, session_id: str) -> _Resumed:
    """Sources, outcomes, read errors, first copies and contacts an earlier run recorded."""
    state = _Resumed()
    sources = load.load_sources(store, session_id)
    if sources.empty:
        return state
    counts = sources["items_found"].astype("Int64")
    for path, source_id, status, found in zip(
        sources["path"], sources["source_id"], sources["status"], counts, strict=True
    ):
        state.sources[str(path)] = (
            int(source_id),
            str(status),
            None if pd.isna(found) else int(found),
        )
    rows = load.load_messages(
        store, session_id, columns=["source_id", "item_id", "dedupe_key", "outcome"]
    )
    outcomes = rows["outcome"].astype("string")
    state.outcomes = dict(
        zip(
            zip(rows["source_id"].astype(int), rows["item_id"].astype(str), strict=True),
            outcomes.astype(str),
            strict=True,
        )
    )
    first = rows[outcomes.isin([o.value for o in (*RETRY, Outcome.IMPORTED, Outcome.READ)])]
    state.seen = {
        str(key): item_ref(session_id, int(source), str(item))
        for key, source, item in zip(
            first["dedupe_key"], first["source_id"], first["item_id"], strict=True
        )
    }
    errors = load.load_errors(store, session_id)
    stage = errors["stage"].astype("string")
    read = errors[(stage == "read") & errors["source_id"].notna()]
    state.read_errors = {
        (int(s), None if pd.isna(i) else str(i))
        for s, i in zip(read["source_id"], read["item"], strict=True)
    }
    state.unread = dict(Counter(int(s) for s in read["source_id"]))
    state.stopped = {
        int(s) for s in errors.loc[(stage == "source") & errors["source_id"].notna(), "source_id"]
    }
    warned = errors[(stage == "warning") & errors["source_id"].notna()]
    state.warnings = {
        (int(s), None if pd.isna(i) else str(i), str(c))
        for s, i, c in zip(warned["source_id"], warned["item"], warned["code"], strict=True)
    }
    contacts = load.load_contacts(store, session_id)
    resolved = contacts[
        contacts["action"].astype("string").isin(["matched", "created"])
        & contacts["dataverse_id"].notna()
    ]
    state.contacts = dict(
        zip(resolved["address"].astype(str), resolved["dataverse_id"].astype(str), strict=True)
    )
    return state


def known_total(store: Store, files: Sequence[Path]) -> int | None:
    """Items in ``files`` as an earlier session counted them (same path and size), if all known."""
    table = tables.sources
    total = 0
    with store.engine.connect() as conn:
        for path in files:
            found = conn.execute(
                select(table.c.items_found)
                .where(
                    (table.c.path == str(path))
                    & (table.c.size_bytes == path.stat().st_size)
                    & table.c.items_found.is_not(None)
                )
                .order_by(table.c.source_id.desc())
                .limit(1)
            ).scalar()
            if found is None:
                return None
            total += int(found)
    return total


__all__ = [
    "ImportOptions",
    "TargetUnavailableError",
    "find_resumable",
    "import_mail",
    "known_total",
    "session_identity",
]
