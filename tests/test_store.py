"""The SQLite store: group commit, urgent claims first, migrations, group claims, events."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import time
import traceback
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from core.models import DeliveryAddress, JobState, UserRef
from core.storage.sqlite import open_sqlite
from core.storage.sqlite.database import Database
from core.storage.sqlite.migrations import MIGRATIONS
from core.storage.types import ChangeKind, Moved, NewTake
from tests.conftest import db_rows


async def test_concurrent_writes_all_commit_in_groups(tmp_path: Path) -> None:
    store = await Database.open(tmp_path / "db.sqlite3")
    try:
        await store.write(lambda db: db.execute("CREATE TABLE t (n INTEGER)"))

        def insert(n: int) -> object:
            return lambda db: db.execute("INSERT INTO t VALUES (?)", (n,)).rowcount

        # More writers than one group holds: every one must still be committed.
        results = await asyncio.gather(*(store.write(insert(n)) for n in range(700)))
        assert results == [1] * 700
        rows = await store.query("SELECT count(*), sum(n) FROM t")
        assert tuple(rows[0]) == (700, sum(range(700)))
    finally:
        await store.close()


async def test_urgent_write_runs_before_queued_bookkeeping(tmp_path: Path) -> None:
    store = await Database.open(tmp_path / "db.sqlite3")
    order: list[str] = []
    try:

        def slow(db: sqlite3.Connection) -> None:
            time.sleep(0.05)  # hold the writer while the others queue up
            order.append("slow")

        def record(name: str) -> object:
            return lambda db: order.append(name)

        first = asyncio.create_task(store.write(slow))
        await asyncio.sleep(0.01)
        normal = [asyncio.create_task(store.write(record(f"n{i}"))) for i in range(20)]
        await asyncio.sleep(0)
        urgent = asyncio.create_task(store.write(record("claim"), urgent=True))
        await asyncio.gather(first, urgent, *normal)
        assert order[0] == "slow" and order[1] == "claim"
        assert sorted(order[2:]) == sorted(f"n{i}" for i in range(20))
    finally:
        await store.close()


async def test_failed_work_rolls_back_alone(tmp_path: Path) -> None:
    store = await Database.open(tmp_path / "db.sqlite3")
    try:
        await store.write(lambda db: db.execute("CREATE TABLE t (n INTEGER UNIQUE)"))

        def insert(n: int) -> object:
            return lambda db: db.execute("INSERT INTO t VALUES (?)", (n,))

        results = await asyncio.gather(
            *(store.write(insert(n)) for n in (1, 2, 2, 3)), return_exceptions=True
        )
        assert [isinstance(r, sqlite3.IntegrityError) for r in results] == [0, 0, 1, 0]
        rows = await store.query("SELECT n FROM t ORDER BY n")
        assert [r[0] for r in rows] == [1, 2, 3]
    finally:
        await store.close()


async def test_reopening_applies_no_migration_twice(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    await (await Database.open(path)).close()
    store = await Database.open(path)
    try:
        rows = await store.query("PRAGMA user_version")
        assert rows[0][0] == len(MIGRATIONS)
        journal = await store.query("PRAGMA journal_mode")
        assert journal[0][0] == "wal"
    finally:
        await store.close()


async def test_read_during_an_open_write_transaction_sees_only_committed_rows(
    tmp_path: Path,
) -> None:
    store = await Database.open(tmp_path / "db.sqlite3")
    try:
        await store.write(lambda db: db.execute("CREATE TABLE t (n INTEGER)"))
        await store.write(lambda db: db.execute("INSERT INTO t VALUES (1)"))

        def count(db: sqlite3.Connection) -> int:
            return int(db.execute("SELECT count(*) FROM t").fetchone()[0])

        async with store.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (2)")
            await tx.execute("INSERT INTO t VALUES (3)")
            # Another task reads while the transaction is open: committed rows only.
            assert [row[0] for row in await store.query("SELECT n FROM t")] == [1]
            assert await store.read(count) == 1
        assert await store.read(count) == 3
    finally:
        await store.close()


async def _open_and_close(path: Path) -> None:
    await (await Database.open(path)).close()


def _open_fresh_directories(root: str, rounds: int, barrier: Barrier, errors: Any) -> None:
    """Open round N's new data directory at the same moment as the other processes."""
    try:
        for round_ in range(rounds):
            barrier.wait(timeout=60)
            asyncio.run(_open_and_close(Path(root) / f"round{round_}" / "data" / "db.sqlite3"))
    except BaseException:
        errors.put(traceback.format_exc())
        barrier.abort()  # the others must not wait for this process
        raise


def test_processes_opening_a_new_data_directory_at_once_share_one_schema(
    tmp_path: Path,
) -> None:
    processes, rounds = 4, 6
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    errors = context.SimpleQueue()
    workers = [
        context.Process(
            target=_open_fresh_directories, args=(str(tmp_path), rounds, barrier, errors)
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=100)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert [worker.exitcode for worker in workers] == [0] * processes
    for round_ in range(rounds):
        with sqlite3.connect(tmp_path / f"round{round_}" / "data" / "db.sqlite3") as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
            assert db.execute("SELECT count(*) FROM scheduler").fetchone()[0] == 1
        db.close()


async def test_group_claim_is_won_once_and_a_dead_claim_is_taken_over(tmp_path: Path) -> None:
    storage = await open_sqlite(tmp_path / "db.sqlite3")
    store = storage.jobs
    try:
        take = NewTake("line", "line", "en", 5, 1, None)
        admitted = await store.admit(
            user=UserRef("test", "u1"), source_key="m1", line="line", image_jpeg=b"jpeg",
            image_size=(16, 9), address=DeliveryAddress("test", "c1"), takes=[take, take],
        )  # fmt: skip
        first, second = (job.id for job in admitted.jobs)
        request = admitted.request_id
        live = time.time() + 60
        await store.transition(first, JobState.DELIVERING, lease_owner="a", lease_expires=live)
        await store.transition(second, JobState.RUNNING, lease_owner="b", lease_expires=live)
        # A sibling still runs: nobody delivers yet.
        assert await store.claim_group(request, "a", lease_seconds=60) is None
        await store.transition(second, JobState.DELIVERING)
        claims = await asyncio.gather(
            store.claim_group(request, "a", lease_seconds=60),
            store.claim_group(request, "b", lease_seconds=60),
        )
        assert sum(claim is not None for claim in claims) == 1
        winner = "a" if claims[0] is not None else "b"
        # While the winner lives, a late sweep or another worker is refused.
        assert await store.claim_group(request, "c", lease_seconds=60) is None
        # The winner dies mid-send; after its leases run out another worker adopts the takes
        # and delivers the group again ("twice is allowed, never zero").
        await store.release_leases(winner)
        adopted = await store.adopt_stale("c", platforms=["test"], lease_seconds=60)
        assert {job.id for job in adopted} == {first, second}
        again = await store.claim_group(request, "c", lease_seconds=60)
        assert again is not None and [job.id for job in again] == [first, second]
    finally:
        await storage.close()


async def test_every_state_change_writes_an_event_in_its_transaction(tmp_path: Path) -> None:
    storage = await open_sqlite(tmp_path / "db.sqlite3")
    jobs = storage.jobs
    try:
        take = NewTake("line", "line", "en", 5, 1, None)
        admitted = await jobs.admit(
            user=UserRef("test", "u1"), source_key="m1", line="line", image_jpeg=b"jpeg",
            image_size=(16, 9), address=DeliveryAddress("test", "c1"), takes=[take, take],
        )  # fmt: skip
        first, second = (job.id for job in admitted.jobs)
        [claimed] = await jobs.claim(
            "w", limit=1, platforms=["test"], lease_seconds=60, deadline_seconds=60
        )
        assert claimed.job.id == first
        assert await jobs.transition(first, JobState.RUNNING, handle="h1")
        # Not in the expected state: nothing changes, so nothing is recorded.
        assert not await jobs.transition(second, JobState.DONE, expect={JobState.RUNNING})
        assert await jobs.transition(first, JobState.FAILED, error_key="job.failed")
        assert await jobs.transition(second, JobState.CANCELED, error_key="job.canceled")
        events = await jobs.events_after(0)
        assert [(e.kind, e.job_id, e.state, e.error_key) for e in events] == [
            (ChangeKind.ADMITTED, first, JobState.QUEUED, None),
            (ChangeKind.ADMITTED, second, JobState.QUEUED, None),
            (ChangeKind.CLAIMED, first, JobState.SUBMITTING, None),
            (ChangeKind.MOVED, first, JobState.RUNNING, None),
            (ChangeKind.MOVED, first, JobState.FAILED, "job.failed"),
            (ChangeKind.MOVED, second, JobState.CANCELED, "job.canceled"),
        ]
        assert all(e.request_id == admitted.request_id for e in events)
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs))
        # A follower reads on from its cursor, a page at a time.
        assert await jobs.events_after(seqs[1], limit=2) == events[2:4]
        assert await jobs.events_after(seqs[-1]) == []
        last = await jobs.last_events(admitted.request_id)
        assert [(e.job_id, e.state) for e in last] == [
            (first, JobState.FAILED),
            (second, JobState.CANCELED),
        ]
    finally:
        await storage.close()


async def test_counters_and_refunds_are_code_not_triggers(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    await (await open_sqlite(path)).close()
    assert db_rows(path, "SELECT name FROM sqlite_master WHERE type = 'trigger'") == []


async def test_a_worker_that_lost_its_lease_changes_nothing(tmp_path: Path) -> None:
    now = [1000.0]
    storage = await open_sqlite(tmp_path / "db.sqlite3", clock=lambda: now[0])
    jobs = storage.jobs
    try:
        take = NewTake("line", "line", "en", 5, 1, None)
        await jobs.admit(
            user=UserRef("test", "u1"), source_key="m1", line="line", image_jpeg=b"jpeg",
            image_size=(16, 9), address=DeliveryAddress("test", "c1"), takes=[take],
        )  # fmt: skip
        [claimed] = await jobs.claim(
            "A", limit=1, platforms=["test"], lease_seconds=10, deadline_seconds=900
        )
        a = claimed.job.lease
        assert a is not None and a.owner == "A"
        assert await jobs.transition(claimed.job.id, JobState.RUNNING, lease=a, handle="h1")
        # A stalls past its lease; B takes the job over with a new fencing token.
        now[0] += 20
        [adopted] = await jobs.adopt_stale("B", platforms=["test"], lease_seconds=10)
        b = adopted.lease
        assert b is not None and b.owner == "B" and b.token > a.token
        before = await jobs.job(adopted.id)
        seen = await jobs.events_after(0)

        # A wakes up: its changes and its heartbeat touch nothing.
        lost = await jobs.transition(adopted.id, JobState.FAILED, lease=a, error_key="job.x")
        assert lost is Moved.LOST
        await jobs.heartbeat("A", lease_seconds=10_000)
        assert await jobs.job(adopted.id) == before
        assert await jobs.events_after(0) == seen
        [lease] = db_rows(
            tmp_path / "db.sqlite3",
            "SELECT lease_owner, lease_token, lease_expires FROM jobs WHERE id = ?",
            (adopted.id,),
        )
        assert lease == ("B", b.token, now[0] + 10)

        # B's change goes through.
        assert await jobs.transition(adopted.id, JobState.DOWNLOADING, lease=b) is Moved.MOVED
        assert (await jobs.events_after(0))[-1].state is JobState.DOWNLOADING
    finally:
        await storage.close()


async def test_the_fencing_token_tells_two_claims_of_one_owner_apart(tmp_path: Path) -> None:
    storage = await open_sqlite(tmp_path / "db.sqlite3")
    jobs = storage.jobs
    try:
        take = NewTake("line", "line", "en", 5, 1, None)
        await jobs.admit(
            user=UserRef("test", "u1"), source_key="m1", line="line", image_jpeg=b"jpeg",
            image_size=(16, 9), address=DeliveryAddress("test", "c1"), takes=[take],
        )  # fmt: skip
        claim = {"limit": 1, "platforms": ["test"], "lease_seconds": 60, "deadline_seconds": 900}
        [first] = await jobs.claim("A", **claim)  # type: ignore[arg-type]
        old = first.job.lease
        # Retried: back to the queue, claimed again by the same worker.
        assert await jobs.transition(first.job.id, JobState.QUEUED, lease=old, lease_owner=None)
        [second] = await jobs.claim("A", **claim)  # type: ignore[arg-type]
        assert second.job.lease is not None and second.job.lease != old
        moved = await jobs.transition(first.job.id, JobState.FAILED, lease=old)
        assert moved is Moved.LOST
        assert (await jobs.job(first.job.id)).state is JobState.SUBMITTING  # type: ignore[union-attr]
    finally:
        await storage.close()
