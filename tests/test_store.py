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

from core.storage.sqlite import open_sqlite
from core.storage.sqlite.database import Database
from core.storage.sqlite.migrations import MIGRATIONS
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


async def test_counters_and_refunds_are_code_not_triggers(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    await (await open_sqlite(path)).close()
    assert db_rows(path, "SELECT name FROM sqlite_master WHERE type = 'trigger'") == []
