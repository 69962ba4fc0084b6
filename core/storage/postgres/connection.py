"""PostgreSQL connections: the pool, transactions, and LISTEN/NOTIFY wake-ups.

The URL may carry a password: it is never put in a message or a log line as given,
only through ``display_url`` / ``redact``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Literal, TypeAlias
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from core.errors import ActorbotError

log = logging.getLogger(__name__)

# A connection of our own or one lent by the pool: both run queries alike. (Strings: the
# classes are generic in asyncpg-stubs only, not at run time.)
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Isolation: TypeAlias = Literal["read_committed", "repeatable_read", "serializable"]

# What a lost or refused connection raises, besides the server's own errors.
CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError)


class StorageUnavailable(ActorbotError):
    """The database cannot be reached; the message shows the URL without its password."""


def display_url(url: str) -> str:
    """Return the URL with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def redact(text: str, url: str) -> str:
    """Blank the URL's password (as written and decoded) wherever it appears in ``text``."""
    password = urlsplit(url).password
    if password:
        for secret in {password, unquote(password)}:
            text = text.replace(secret, "***")
    return text


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    # jsonb columns (requests.address, jobs.error_params) in and out as Python values.
    await conn.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog", format="text"
    )


async def create_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout: float = 60.0,
    connect_timeout: float = 10.0,
    application_name: str = "actorbot",
) -> Pool:
    """Open a connection pool, or raise StorageUnavailable naming the URL without password.

    Connections idle for 5 minutes are closed (a quiet bot holds one), jsonb decodes to
    Python values, and ``application_name`` tells the processes apart in
    ``pg_stat_activity``.
    """
    try:
        return await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout,
            timeout=connect_timeout,
            max_inactive_connection_lifetime=300.0,
            init=_init_connection,
            server_settings={"application_name": application_name},
        )
    except (*CONNECTION_ERRORS, ValueError) as exc:
        # Raised without its cause: the driver's exception may quote the URL.
        raise StorageUnavailable(
            f"cannot connect to {display_url(url)}: {redact(str(exc), url)}"
        ) from None


@contextlib.asynccontextmanager
async def transaction(
    pool: Pool, *, isolation: Isolation = "read_committed", readonly: bool = False
) -> AsyncIterator[Conn]:
    """Lend a pooled connection inside a transaction: committed on exit, rolled back on error."""
    async with pool.acquire() as conn, conn.transaction(isolation=isolation, readonly=readonly):
        yield conn


async def notify(conn: Conn, channel: str, payload: str = "") -> None:
    """Send a notification; inside a transaction it is delivered only if that commits."""
    await conn.execute("SELECT pg_notify($1, $2)", channel, payload)


class Listener:
    """Call ``callback(payload)`` for each notification on a channel, across reconnects.

    It holds one connection of its own (a pooled one would be handed to others while
    listening). When that connection drops it reconnects with backoff and then calls
    ``callback(None)``: notifications sent while it was away are lost, so a listener used
    as a wake-up must re-check the database then. A connection that goes silent without
    closing (a dead peer) is found by a ``SELECT 1`` every ``keepalive_seconds``.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        callback: Callable[[str | None], None],
        *,
        keepalive_seconds: float = 30.0,
        reconnect_min_seconds: float = 0.1,
        reconnect_max_seconds: float = 10.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._channel = channel
        self._callback = callback
        self._keepalive = keepalive_seconds
        self._backoff = (reconnect_min_seconds, reconnect_max_seconds)
        self._connect_timeout = connect_timeout
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        self.connects = 0  # successful LISTENs so far, for operators and tests

    @property
    def backend_pid(self) -> int | None:
        """Return the server process id of the listening connection, if connected."""
        conn = self._conn
        return None if conn is None or conn.is_closed() else conn.get_server_pid()

    async def start(self) -> None:
        """Start listening; return once the first LISTEN is in place."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"listen:{self._channel}")
        waiter = asyncio.ensure_future(self._listening.wait())
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:  # it can only end by an error here
            waiter.cancel()
            task, self._task = self._task, None
            task.result()

    async def aclose(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_notification(self, conn: object, pid: int, channel: str, payload: object, /) -> None:
        self._callback(str(payload))

    async def _run(self) -> None:
        delay = self._backoff[0]
        first = True
        while True:
            try:
                conn = await asyncpg.connect(self._url, timeout=self._connect_timeout)
            except (*CONNECTION_ERRORS, ValueError) as exc:
                if first:  # a database that cannot be reached at start-up stops the start
                    raise StorageUnavailable(
                        f"cannot listen at {display_url(self._url)}: {redact(str(exc), self._url)}"
                    ) from None
                log.warning(
                    "cannot listen on %s at %s (%s); retrying in %.1f s",
                    self._channel,
                    display_url(self._url),
                    redact(str(exc), self._url),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff[1])
                continue
            self._conn = conn
            lost = asyncio.Event()
            # Bound to this connection's event: a late call from an old one must not end
            # the watch over the next.
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            try:
                await conn.add_listener(self._channel, self._on_notification)
                self.connects += 1
                delay = self._backoff[0]
                if first:
                    first = False
                    self._listening.set()
                else:
                    log.info("listening on %s again", self._channel)
                    self._callback(None)
                await self._watch(conn, lost)
            except CONNECTION_ERRORS as exc:
                log.warning(
                    "lost the connection listening on %s (%s)",
                    self._channel,
                    redact(str(exc), self._url),
                )
            finally:
                self._conn = None
                conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])

    async def _watch(self, conn: asyncpg.Connection[asyncpg.Record], lost: asyncio.Event) -> None:
        """Return when the connection is lost (closed, or silent to a keepalive query)."""
        while True:
            try:
                await asyncio.wait_for(lost.wait(), self._keepalive)
            except TimeoutError:
                await conn.execute("SELECT 1", timeout=self._keepalive)
            else:
                log.warning("lost the connection listening on %s", self._channel)
                return
