"""The pool under the PostgreSQL stores: transactions, retries and one error mapping.

Every query of the stores goes through ``Database``: a transaction that lost a deadlock
(two transactions locking the same rows in opposite order, which PostgreSQL breaks by
aborting one) runs again from the start, and a lost or refused connection becomes
``StorageUnavailable`` whose message shows the URL without its password.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Self, TypeVar

import asyncpg

from core.storage.postgres.connection import (
    Conn,
    Pool,
    StorageUnavailable,
    create_pool,
    display_url,
    redact,
)
from core.storage.postgres.schema import migrate

T = TypeVar("T")

# A transaction that lost a deadlock or a serialization conflict is run again this often.
_ATTEMPTS = 5
_RETRY = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
# What a lost or refused connection raises: the network, the driver, or the server going away.
_LOST = (
    OSError,
    TimeoutError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


class Database:
    """A connection pool on one PostgreSQL database, opened with its schema up to date."""

    def __init__(self, pool: Pool, url: str) -> None:
        self._pool = pool
        self._url = url

    @classmethod
    async def open(cls, url: str, *, max_size: int = 10) -> Self:
        """Open a pool and apply pending migrations (under the migration advisory lock)."""
        pool = await create_pool(url, max_size=max_size)
        db = cls(pool, url)
        try:
            with db._mapped():
                async with pool.acquire() as conn:
                    await migrate(conn)
        except BaseException:
            await pool.close()
            raise
        return db

    @property
    def url(self) -> str:
        """Return the URL fit for messages (no password)."""
        return display_url(self._url)

    async def close(self) -> None:
        """Close every connection of the pool."""
        await self._pool.close()

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[None]:
        try:
            yield
        except _LOST as exc:
            # Raised without its cause: the driver's exception may quote the URL.
            raise StorageUnavailable(
                f"lost the database at {display_url(self._url)}:"
                f" {redact(str(exc) or type(exc).__name__, self._url)}"
            ) from None

    async def run(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``work(conn)`` in one transaction, again from the start after a deadlock."""
        for attempt in range(_ATTEMPTS):
            try:
                with self._mapped():
                    async with self._pool.acquire() as conn, conn.transaction():
                        return await work(conn)
            except _RETRY:
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run one statement on its own and return its rows."""
        with self._mapped():
            return await self._pool.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        """Run one statement on its own and return its first row, or None."""
        with self._mapped():
            return await self._pool.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        """Run one statement on its own and return the first column of its first row."""
        with self._mapped():
            return await self._pool.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> int:
        """Run one statement on its own and return how many rows it changed."""
        with self._mapped():
            status = await self._pool.execute(query, *args)
        return changed(status)

    async def executemany(self, query: str, args: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter set, in one transaction."""
        with self._mapped():
            await self._pool.executemany(query, args)


def changed(status: str) -> int:
    """Return the row count of a command status such as ``UPDATE 3`` (0 if none)."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0
