"""The one-credit race on PostgreSQL: concurrent debits from a pool never overdraw."""

from __future__ import annotations

import asyncio

from core.storage.postgres.connection import Pool, transaction
from core.storage.postgres.ledger import try_debit

DEBITS = 1_000
CREDITS = 600  # fewer than the debits: the last ones must be refused, not overdrawn
PERIOD = "2026-11-29"


async def test_a_thousand_concurrent_debits_never_overdraw_and_match_the_ledger(
    pg_pool: Pool,
) -> None:
    async with transaction(pg_pool) as conn:
        account = await conn.fetchval("INSERT INTO accounts (created_at) VALUES (0) RETURNING id")
        await conn.execute(
            "INSERT INTO balances (account_id, period, credits) VALUES ($1, $2, $3)",
            account,
            PERIOD,
            CREDITS,
        )

    async def debit(index: int) -> int | None:
        async with transaction(pg_pool) as conn:
            return await try_debit(
                conn, account_id=account, period=PERIOD, cost=1, job_id=f"job{index}", now=1.0
            )

    # Ten pooled connections, a thousand debits waiting on one balance row.
    results = await asyncio.gather(*(debit(index) for index in range(DEBITS)))

    granted = [left for left in results if left is not None]
    assert len(granted) == CREDITS
    assert sorted(granted) == list(range(CREDITS))  # every credit spent exactly once
    async with pg_pool.acquire() as conn:
        balance = await conn.fetchval("SELECT credits FROM balances WHERE account_id = $1", account)
        spent, rows, jobs = await conn.fetchrow(
            "SELECT -sum(delta), count(*), count(DISTINCT job_id) FROM ledger"
            " WHERE account_id = $1 AND reason = 'debit'",
            account,
        )
    assert balance == 0
    assert spent == CREDITS - balance and rows == jobs == CREDITS


async def test_a_debit_short_of_credits_writes_nothing(pg_pool: Pool) -> None:
    async with transaction(pg_pool) as conn:
        account = await conn.fetchval("INSERT INTO accounts (created_at) VALUES (0) RETURNING id")
        await conn.execute(
            "INSERT INTO balances (account_id, period, credits) VALUES ($1, $2, 1)", account, PERIOD
        )
        assert (
            await try_debit(conn, account_id=account, period=PERIOD, cost=2, job_id="j", now=1.0)
            is None
        )
        assert (
            await try_debit(conn, account_id=account, period="other", cost=1, job_id="j", now=1.0)
            is None
        )
        assert await conn.fetchval("SELECT count(*) FROM ledger") == 0
        assert await conn.fetchval("SELECT credits FROM balances") == 1
