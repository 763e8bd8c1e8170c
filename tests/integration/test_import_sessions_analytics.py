"""The operational import analytics on real sessions: a synthetic mailbox imported into the local
Dataverse stand-in (with 503s and a 429 storm injected), imported again, and assessed."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pstlib.analytics import estimate as est
from pstlib.analytics import operations as ops
from pstlib.importer.run import ImportOptions, import_mail
from pstlib.standin import StandinConfig, StandinServer
from pstlib.store import Store, load
from tests.standin_client import standin_client


def repeat_subset(source: Path, target: Path, count: int) -> Path:
    """A second mbox holding copies of the first ``count`` messages of ``source``."""
    copies = mailbox.mbox(target)
    try:
        for index, message in enumerate(mailbox.mbox(source)):
            if index >= count:
                break
            copies.add(message)
        copies.flush()
    finally:
        copies.close()
    return target


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, dict[str, str]]]:
    """Three sessions: import (synthetic mbox + a repeated subset + a file that is no PST),
    the same import again, and an assess session of another synthetic mailbox."""
    synth = pytest.importorskip("pstlib.synth")
    root = tmp_path_factory.mktemp("analytics")
    first = synth.synthesize(root / "a", seed=3, contacts=8, years=0.15, formats=("mbox",))
    other = synth.synthesize(root / "b", seed=4, contacts=6, years=0.1, formats=("mbox",))
    assert first.mbox_path is not None and other.mbox_path is not None
    subset = repeat_subset(Path(first.mbox_path), root / "subset.mbox", 10)
    broken = root / "broken.pst"
    broken.write_bytes(b"this is not a PST file" * 10)
    paths = [Path(first.mbox_path), subset, broken]
    owner = first.owner_address
    monkeypatch = pytest.MonkeyPatch()
    config = StandinConfig(
        seed=5,
        error_on_requests=frozenset({3, 9, 14}),  # 503s: resent by the client
        storm_after_requests=6,  # then 429 "number of requests" for a second
        storm_duration_s=1.0,
        max_concurrent=1,  # parallel $batch requests meet "concurrent requests" 429s
        operation_time_s=0.01,
    )
    with Store.open(root / "store.sqlite") as store, StandinServer(config) as server:
        options = ImportOptions(mailbox_owner=owner, batch_messages=40)
        with standin_client(server, monkeypatch, timeout_s=5.0) as client:
            once = import_mail(paths, store, options, client=client)
            twice = import_mail(paths, store, options, client=client)
            assessed = import_mail(
                [Path(other.mbox_path)],
                store,
                ImportOptions(target="assess", mailbox_owner=other.owner_address),
                client=client,
            )
        monkeypatch.undo()
        yield store, {"once": once, "twice": twice, "assessed": assessed, "subset": str(subset)}


@pytest.mark.slow  # three imports, with a second of 429 waits or more
def test_every_analysis_on_real_sessions(imported: tuple[Store, dict[str, str]]) -> None:
    store, ids = imported
    once, twice, assessed = ids["once"], ids["twice"], ids["assessed"]
    sessions = load.load_sessions(store)
    sources = load.load_sources(store)
    messages = load.load_messages(store)
    recipients = load.load_recipients(store)
    contacts = load.load_contacts(store)
    errors = load.load_errors(store)
    batches = load.load_batches(store)
    metrics = load.load_metrics(store)
    assert set(sessions["session_id"]) == {once, twice, assessed}
    assert (sessions["status"] == "completed").all()

    # batches: the 503s were resent (attempt > 1), the storm's 429s waited out
    measured = ops.measure_batches(batches)
    assert measured["retried"].any() and measured["throttled"].any()
    sizes = ops.summarize_batch_sizes(batches)
    assert sizes["batches"].sum() == len(batches)
    assert (sizes["mean_duration_s"].dropna() > 0).all()

    # throttling: the storm is "number of requests", every 429 waited at least a second
    throttling = ops.summarize_throttling(batches, metrics)
    storm = throttling[throttling["limit_code"] == "0x80072322"]
    assert len(storm) >= 1 and storm["throttle_events"].sum() >= 1
    assert (storm["retry_after_mean_s"].dropna() >= 1.0).all()
    assert set(throttling["limit"]) <= {"number of requests", "concurrent requests", "unknown"}
    concurrent = throttling[throttling["limit_code"] == "0x80072326"]
    assert concurrent["throttled_requests"].sum() >= 1
    rates = ops.rate_requests(batches, freq="1s")
    assert rates["requests"].sum() == len(batches)

    # where the time went: the three parts add up to the wall time of each session
    time = ops.attribute_session_time(sessions, batches, metrics).set_index("session_id")
    parts = time[["request_s", "throttle_wait_s", "local_s"]].sum(axis=1)
    assert np.allclose(parts, time["wall_s"])
    assert (time[["request_s", "throttle_wait_s", "local_s"]] >= 0).all().all()
    assert time.loc[assessed, "request_s"] == 0.0  # an assess session sends nothing
    assert time["throttle_wait_s"].sum() > 0  # the storm's pause

    resources = ops.track_resources(metrics)
    assert {"messages_processed", "messages_per_s", "collector_backlog"} <= set(resources["name"])
    assert (resources["elapsed_s"] >= 0).all()

    # errors: the file that is no PST, once per import session
    causes = ops.rank_error_causes(errors, messages)
    opened = causes[causes["stage"] == "open"]
    assert len(opened) == 1 and opened["occurrences"].iloc[0] == 2
    assert opened["sessions"].iloc[0] == 2

    # duplicates: the subset repeats within the first session; everything repeats in the second
    duplicates = ops.summarize_duplicates(messages, sources)
    by_session = duplicates.groupby("session_id")[
        ["within_session", "earlier_session", "dataverse", "message_count"]
    ].sum()
    assert by_session.loc[once, "within_session"] == 10
    assert by_session.loc[twice, "earlier_session"] == by_session.loc[twice, "message_count"]
    paths = sources.set_index("source_id")["path"].astype(str)
    truth = messages[["session_id", "source_id", "item_id"]].assign(
        # known by construction: the second session copies everything, the subset file is copies
        is_duplicate=(messages["session_id"] == twice)
        | (messages["source_id"].map(paths) == ids["subset"])
    )
    mail = messages["outcome"] != "skipped"  # non-mail items are neither
    accuracy = ops.duplicate_accuracy(messages[mail], truth[mail])
    assert accuracy.precision == 1.0 and accuracy.recall == 1.0 and accuracy.missing == 0

    # contacts: external correspondents created in the first session, matched in the second
    contact_table = ops.summarize_contacts(contacts).set_index("session_id")
    assert contact_table.loc[once, "created"] > 0
    assert contact_table.loc[assessed, "skipped"] == contact_table.loc[assessed, "contacts"]
    assert contact_table.loc[assessed, "would_create"] > 0
    unresolved = ops.rank_unresolved_addresses(sessions, messages, recipients, contacts)
    bound = contacts[contacts["action"].isin(["matched", "created"])]
    owners = set(sessions["mailbox_owner"].dropna().str.lower())
    assert not set(unresolved["address"]) & owners
    assert not set(unresolved["address"]) & set(
        bound[bound["session_id"] == once]["address"].str.lower()
    )
    assert unresolved["message_count"].is_monotonic_decreasing

    # how long the next import will take, from the two import sessions
    workload = est.measure_session_workload(sessions, messages)
    assert (workload["message_count"] > 0).all()
    past = workload[workload["target"] == "dataverse"]
    estimate = est.estimate_duration(past, 500, 20_000_000)
    assert estimate.seconds > 0 and np.isfinite(estimate.seconds)
    error = est.estimate_error(past)
    assert error.sessions == 2 and len(error.predictions) == 2


@pytest.mark.slow
def test_resources_and_bottleneck_of_real_sessions(imported: tuple[Store, dict[str, str]]) -> None:
    store, ids = imported
    sessions = load.load_sessions(store)
    batches = load.load_batches(store)
    metrics = load.load_metrics(store)
    # every session sampled its importer's and its writer's memory and CPU
    use = ops.resource_use(metrics)
    assert set(use["session_id"]) == set(sessions["session_id"])
    assert (use.groupby("session_id")[["rss_mb", "collector_rss_mb"]].max() > 10).all().all()
    # and where its import thread's time went, stage by stage
    where = ops.find_bottleneck(sessions, batches, metrics).set_index("session_id")
    assert (where["method"] == "stage timings").all()
    stages = [f"{stage}_s" for stage in ops.BOTTLENECK_STAGES]
    assert np.allclose(where[stages].sum(axis=1), where["total_s"])
    walls = (sessions["ended_at_utc"] - sessions["started_at_utc"]).dt.total_seconds()
    assert (where["total_s"] <= walls.set_axis(sessions["session_id"]).loc[where.index] + 1).all()
    once, assessed = ids["once"], ids["assessed"]
    # the Dataverse import waited on Dataverse (requests and the storm's Retry-After pause);
    # the assess session sent nothing
    assert where.loc[once, "network_s"] + where.loc[once, "throttle_waits_s"] > 0
    assert where.loc[once, "contacts_s"] > 0 and where.loc[once, "map_s"] > 0
    assert where.loc[assessed, "network_s"] == where.loc[assessed, "throttle_waits_s"] == 0
    assert where.loc[assessed, "read_s"] > 0
