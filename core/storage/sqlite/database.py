"""The SQLite connections under the stores: migrations, one-hop writes, group commit.

The database owns its threads outright: one writer connection and one reader connection,
plain ``sqlite3`` connections that each live on a single thread of their own (a
one-thread executor), so every call on a connection runs on the thread that opened it.
In WAL mode the reader sees only committed data: a read issued while a multi-step write
transaction is open never sees that transaction's writes.

Every write runs inside ``BEGIN IMMEDIATE`` so that a transaction takes the write lock up
front instead of failing half-way with SQLITE_BUSY. WAL with ``synchronous=NORMAL`` keeps
every committed transaction across a process crash (only a power loss may drop the last
few), which is the durability the job life cycle needs.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from core.storage.sqlite.migrations import MIGRATIONS

T = TypeVar("T")

Work = Callable[[sqlite3.Connection], Any]
# Outcome of one unit of work in a group commit: (True, result) or (False, exception).
Outcome = tuple[bool, Any]
# Bounds how long one group commit holds the write lock.
_MAX_GROUP = 256
# How long a connection waits for another process's lock (a migration, a checkpoint).
_BUSY_TIMEOUT_MS = 5000


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


def _read_snapshot(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` in one read transaction, so that all its statements see one snapshot."""
    db.execute("BEGIN")
    try:
        return work(db)
    finally:
        if db.in_transaction:
            db.execute("COMMIT")


def _split_statements(script: str) -> list[str]:
    """Split a migration script into complete statements (triggers keep their bodies)."""
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        # A ";" inside a string, a comment or a trigger body does not end a statement.
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \n\t;"):
        raise ValueError(f"incomplete statement in migration: {buffer.strip()[:60]!r}")
    return statements


def _user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> None:
    """Apply the migrations a database has not seen yet, safely against other processes.

    Each step runs in its own ``BEGIN IMMEDIATE`` transaction with its ``user_version``
    bump, and the version is read after the write lock is taken: when two processes open
    a new data directory at once, the second waits for the lock (busy timeout) and then
    finds the step already applied instead of applying it again.
    """
    while _user_version(db) < len(migrations):
        db.execute("BEGIN IMMEDIATE")
        try:
            version = _user_version(db)
            if version < len(migrations):
                # Statement by statement: executescript would commit the open transaction.
                for statement in _split_statements(migrations[version]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _setup_writer(db: sqlite3.Connection) -> None:
    """Switch the file to WAL, set the writer's pragmas and bring the schema up to date."""
    # The busy timeout first: another process may be creating the same file.
    db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    give_up = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            # Two connections switching a new file to WAL at once: SQLite refuses one of
            # them at once, without the busy timeout (that lock upgrade could deadlock).
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > give_up:
                raise
            time.sleep(0.01)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    migrate(db)


def _setup_reader(db: sqlite3.Connection) -> None:
    db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    # The reader only reads: a write through it would bypass the write lock.
    db.execute("PRAGMA query_only=ON")


@dataclass(frozen=True)
class Executed:
    """What a statement in ``Database.transaction()`` did: rows changed and rows returned."""

    rowcount: int
    rows: list[Any]


class _Thread:
    """One plain sqlite3 connection on a thread of its own; every call runs there."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._db: sqlite3.Connection | None = None

    def _connect(self, path: Path, setup: Callable[[sqlite3.Connection], None]) -> None:
        db = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000)
        try:
            setup(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        assert self._db is not None, "connection is closed"
        return fn(self._db, *args)

    async def open(self, path: Path, setup: Callable[[sqlite3.Connection], None]) -> None:
        """Connect on this thread and run ``setup`` on the new connection."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._connect, path, setup)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` on this connection's thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._call, fn, args
        )

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def close(self) -> None:
        """Close the connection and let the thread end."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect)
        finally:
            self._executor.shutdown(wait=False)


def _execute(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Executed:
    cursor = db.execute(sql, params)
    rows = cursor.fetchall()
    return Executed(cursor.rowcount, rows)


def _executemany(db: sqlite3.Connection, sql: str, params: list[Sequence[Any]]) -> Executed:
    cursor = db.executemany(sql, params)
    return Executed(cursor.rowcount, cursor.fetchall())


class Transaction:
    """An open write transaction: each statement is one hop to the writer thread."""

    def __init__(self, writer: _Thread) -> None:
        self._writer = writer

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Executed:
        """Run one statement and return its row count and rows."""
        return await self._writer.run(_execute, sql, params)

    async def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Executed:
        """Run one statement for each parameter set."""
        return await self._writer.run(_executemany, sql, list(params))

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement and return its rows."""
        return (await self.execute(sql, params)).rows


class Database:
    """A writer and a reader connection with group-committed writes; ``await open(path)``."""

    def __init__(self, writer: _Thread, reader: _Thread) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._pending: list[tuple[Work, asyncio.Future[Any]]] = []
        self._urgent: list[tuple[Work, asyncio.Future[Any]]] = []

    @classmethod
    async def open(cls, path: Path) -> Self:
        """Open (creating if needed) the database and bring its schema up to date."""
        path.parent.mkdir(parents=True, exist_ok=True)
        writer, reader = _Thread("sqlite-writer"), _Thread("sqlite-reader")
        try:
            await writer.open(path, _setup_writer)
            await reader.open(path, _setup_reader)
        except BaseException:
            await reader.close()
            await writer.close()
            raise
        return cls(writer, reader)

    async def close(self) -> None:
        """Close both connections."""
        try:
            await self._reader.close()
        finally:
            await self._writer.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Run a write transaction (BEGIN IMMEDIATE) on the writer connection.

        Reads through ``read``/``query`` meanwhile see only what was committed before.
        """
        async with self._write_lock:
            tx = Transaction(self._writer)
            await tx.execute("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                await tx.execute("ROLLBACK")
                raise
            else:
                await tx.execute("COMMIT")

    async def write(self, work: Callable[[sqlite3.Connection], T], *, urgent: bool = False) -> T:
        """Run ``work(db)`` atomically on the writer thread and return its result.

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
            outcomes = await self._writer.run(_commit_group, [work for work, _ in group])
        except BaseException as exc:
            outcomes = [(False, exc)] * len(group)
        for (_, future), (ok, value) in zip(group, outcomes, strict=True):
            if future.done():
                continue  # its caller was canceled; the work ran anyway
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run read-only ``work(db)`` on the reader thread in one hop, on one snapshot."""
        return await self._reader.run(_read_snapshot, work)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one read-only statement on committed data and return its rows."""
        return (await self._reader.run(_execute, sql, params)).rows
