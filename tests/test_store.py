"""Store write path: group commit, urgent claims first, migrations on a real file."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from core.store import MIGRATIONS, Store


async def test_concurrent_writes_all_commit_in_groups(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
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
    store = await Store.open(tmp_path / "db.sqlite3")
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
    store = await Store.open(tmp_path / "db.sqlite3")
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
    await (await Store.open(path)).close()
    store = await Store.open(path)
    try:
        rows = await store.query("PRAGMA user_version")
        assert rows[0][0] == len(MIGRATIONS)
        journal = await store.query("PRAGMA journal_mode")
        assert journal[0][0] == "wal"
    finally:
        await store.close()
