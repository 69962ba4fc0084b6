"""PostgreSQL connections against a real cluster: pool, transactions, LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from core.storage.postgres.connection import (
    Listener,
    Pool,
    StorageUnavailable,
    create_pool,
    display_url,
    notify,
    transaction,
)


class Heard:
    """Collect a listener's callbacks and let a test wait for the next one."""

    def __init__(self) -> None:
        self.calls: list[str | None] = []
        self._event = asyncio.Event()

    def __call__(self, payload: str | None) -> None:
        self.calls.append(payload)
        self._event.set()

    async def wait_for(self, count: int) -> list[str | None]:
        async with asyncio.timeout(10):
            while len(self.calls) < count:
                self._event.clear()
                await self._event.wait()
        return self.calls


async def test_a_notification_from_one_connection_wakes_a_listener_on_another(
    pg_pool: Pool, pg_dsn: str
) -> None:
    heard = Heard()
    listener = Listener(pg_dsn, "jobs_ready", heard)
    await listener.start()
    try:
        async with transaction(pg_pool) as conn:
            await notify(conn, "jobs_ready", "telegram")
            await notify(conn, "other_channel", "nobody listens")
        assert await heard.wait_for(1) == ["telegram"]
    finally:
        await listener.aclose()


async def test_a_notification_in_a_rolled_back_transaction_is_never_heard(
    pg_pool: Pool, pg_dsn: str
) -> None:
    heard = Heard()
    listener = Listener(pg_dsn, "jobs_ready", heard)
    await listener.start()
    try:
        with pytest.raises(ZeroDivisionError):
            async with transaction(pg_pool) as conn:
                await notify(conn, "jobs_ready", "rolled back")
                raise ZeroDivisionError
        async with transaction(pg_pool) as conn:
            await notify(conn, "jobs_ready", "committed")
        # Notifications arrive in commit order: had the first been sent, it came first.
        assert await heard.wait_for(1) == ["committed"]
    finally:
        await listener.aclose()


async def test_a_dropped_listener_connection_reconnects_and_says_so(
    pg_pool: Pool, pg_dsn: str
) -> None:
    heard = Heard()
    listener = Listener(pg_dsn, "jobs_ready", heard, reconnect_min_seconds=0.01)
    await listener.start()
    try:
        first_pid = listener.backend_pid
        async with pg_pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", first_pid)
        # None: "you may have missed notifications", so a wake-up re-checks the queue.
        assert await heard.wait_for(1) == [None]
        assert listener.connects == 2 and listener.backend_pid not in (None, first_pid)
        async with pg_pool.acquire() as conn:
            await notify(conn, "jobs_ready", "after the drop")
        assert await heard.wait_for(2) == [None, "after the drop"]
    finally:
        await listener.aclose()


async def test_a_listener_that_cannot_connect_at_start_says_where_without_the_password(
    pg_cluster: str,
) -> None:
    parts = urlsplit(pg_cluster)
    url = urlunsplit(parts._replace(netloc="actorbot:hunter2-SECRET@127.0.0.1:9"))
    listener = Listener(url, "jobs_ready", Heard())
    with pytest.raises(StorageUnavailable) as error:
        await listener.start()
    assert "127.0.0.1:9" in str(error.value) and "SECRET" not in str(error.value)
    await listener.aclose()


async def test_a_pool_that_cannot_connect_names_the_server_but_not_the_password(
    pg_cluster: str, caplog: pytest.LogCaptureFixture
) -> None:
    parts = urlsplit(pg_cluster)
    wrong_db = urlunsplit(
        parts._replace(
            netloc=f"actorbot:hunter2-SECRET@{parts.hostname}:{parts.port}", path="/no_such_db"
        )
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StorageUnavailable) as error:
        await create_pool(wrong_db, connect_timeout=5)
    message = str(error.value)
    assert "no_such_db" in message and display_url(wrong_db) in message
    assert "SECRET" not in message and "SECRET" not in caplog.text
    assert error.value.__cause__ is None and error.value.__suppress_context__


async def test_a_transaction_commits_on_exit_and_rolls_back_on_error(pg_pool: Pool) -> None:
    async with transaction(pg_pool) as conn:
        await conn.execute("INSERT INTO accounts (created_at) VALUES (1.0)")
    with pytest.raises(asyncpg.CheckViolationError):
        async with transaction(pg_pool) as conn:
            await conn.execute("INSERT INTO accounts (created_at) VALUES (2.0)")
            await conn.execute("UPDATE accounts SET queued = -1")
    async with pg_pool.acquire() as conn:
        assert await conn.fetchval("SELECT array_agg(created_at) FROM accounts") == [1.0]


async def test_jsonb_goes_in_and_out_as_python_values(pg_pool: Pool) -> None:
    async with transaction(pg_pool) as conn:
        value = await conn.fetchval("SELECT $1::jsonb", {"chat_id": "42", "thread": None})
    assert value == {"chat_id": "42", "thread": None}


def test_display_url_hides_only_the_password() -> None:
    assert display_url("postgresql://bot:p%40ss@db:5432/actorbot") == (
        "postgresql://bot:***@db:5432/actorbot"
    )
    assert display_url("postgresql://bot@db/actorbot") == "postgresql://bot@db/actorbot"
