"""The SQLite connection under the store: migrations, one-hop writes, group commit.

Every write runs inside ``BEGIN IMMEDIATE`` so that a transaction takes the write lock up
front instead of failing half-way with SQLITE_BUSY. WAL with ``synchronous=NORMAL`` keeps
every committed transaction across a process crash (only a power loss may drop the last
few), which is the durability the job life cycle needs.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

import aiosqlite

from core.migrations import MIGRATIONS

T = TypeVar("T")

Work = Callable[[sqlite3.Connection], Any]
# Outcome of one unit of work in a group commit: (True, result) or (False, exception).
Outcome = tuple[bool, Any]
# Bounds how long one group commit holds the write lock.
_MAX_GROUP = 256


def _commit_group(db: sqlite3.Connection, works: list[Work]) -> list[Outcome]:
    """Run units of work in one transaction, each in a savepoint so one failure is its own."""
    outcomes: list[Outcome] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        if len(works) == 1:
            try:
                outcomes.append((True, works[0](db)))
            except Exception as exc:
                db.execute("ROLLBACK")
                return [(False, exc)]
        else:
            for work in works:
                db.execute("SAVEPOINT unit")
                try:
                    outcomes.append((True, work(db)))
                except Exception as exc:
                    db.execute("ROLLBACK TO unit")
                    outcomes.append((False, exc))
                db.execute("RELEASE unit")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes


class Database:
    """One aiosqlite connection with group-committed writes; open with ``await open(path)``."""

    def __init__(self, conn: aiosqlite.Connection, *, clock: Any = time.time) -> None:
        self._conn = conn
        self._write_lock = asyncio.Lock()
        self._pending: list[tuple[Work, asyncio.Future[Any]]] = []
        self._urgent: list[tuple[Work, asyncio.Future[Any]]] = []
        self._clock = clock

    @classmethod
    async def open(cls, path: Path) -> Self:
        """Open (creating if needed) the database and bring its schema up to date."""
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        store = cls(conn)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=5000")
            await store._migrate()
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection."""
        await self._conn.close()

    async def _migrate(self) -> None:
        async with self._conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits on its own; the version bump is part of the script.
            await self._conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Run a write transaction (BEGIN IMMEDIATE) on the single writer connection."""
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            else:
                await self._conn.execute("COMMIT")

    async def write(self, work: Callable[[sqlite3.Connection], T], *, urgent: bool = False) -> T:
        """Run ``work(db)`` atomically on the database thread and return its result.

        ``work`` gets the plain ``sqlite3`` connection and runs synchronously, so BEGIN, its
        statements and COMMIT cost one round trip to the thread; an exception undoes all
        of its writes and is raised here. Group commit: writes that arrive while another
        commits are run together, each in its own savepoint, and share one COMMIT (the
        cost that dominates: a WAL append and, now and then, a checkpoint with fsync).
        Results are returned only after COMMIT. Do not call it inside ``transaction()``.
        """
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        entry: tuple[Work, asyncio.Future[Any]] = (work, done)
        # Urgent work (claims: backend slots stay idle while they wait) is committed in a
        # group of its own, ahead of the bookkeeping of finished jobs, so that its answer
        # does not wait for a long group to run and commit.
        queue = self._urgent if urgent else self._pending
        queue.append(entry)
        try:
            async with self._write_lock:
                # An earlier holder may already have committed this work with its group;
                # otherwise commit groups (urgent first) until this work's has run.
                while not done.done():
                    source = self._urgent or self._pending
                    group = source[:_MAX_GROUP]
                    del source[:_MAX_GROUP]
                    # Shielded: if this caller is canceled, the others still get results.
                    await asyncio.shield(self._commit(group))
        except asyncio.CancelledError:
            # Canceled before its group started: the work must not run later unseen.
            if entry in queue:
                queue.remove(entry)
            raise
        return await done

    async def _commit(self, group: list[tuple[Work, asyncio.Future[Any]]]) -> None:
        try:
            outcomes = await self._on_thread(_commit_group, [work for work, _ in group])
        except BaseException as exc:
            outcomes = [(False, exc)] * len(group)
        for (_, future), (ok, value) in zip(group, outcomes, strict=True):
            if future.done():
                continue  # its caller was canceled; the work ran anyway, as with aiosqlite
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run read-only ``work(db)`` on the database thread in one hop."""
        return await self._on_thread(work)

    async def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        # aiosqlite has no public "run this on your thread"; _execute is what its own
        # methods use. The function runs between other queued calls, never during one.
        raw = self._conn._conn
        result: T = await self._conn._execute(fn, raw, *args)  # type: ignore[no-untyped-call]
        return result

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a read-only statement outside any transaction (for modules that own tables)."""
        return await self._fetchall(sql, params)

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None
