"""Credits on PostgreSQL: the debit that cannot overdraw, whatever runs beside it."""

from __future__ import annotations

from core.storage.postgres.connection import Conn

# One conditional UPDATE: the row lock it takes orders concurrent debits of one balance,
# and each re-reads ``credits`` after the previous one commits (READ COMMITTED's re-check
# of the WHERE clause), so two can never both spend the last credit. A read followed by a
# write would let them.
_DEBIT = (
    "UPDATE balances SET credits = credits - $3"
    " WHERE account_id = $1 AND period = $2 AND credits >= $3 RETURNING credits"
)
_LEDGER = (
    "INSERT INTO ledger (account_id, period, delta, reason, job_id, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
)


async def try_debit(
    conn: Conn, *, account_id: int, period: str, cost: int, job_id: str | None, now: float
) -> int | None:
    """Take ``cost`` credits and write the ledger row; return the credits left, or None.

    None means the balance (or the balance row) is short, and nothing was written. Call it
    inside the transaction that admits the job, so the debit, its ledger row and the job
    commit or vanish together.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("try_debit must run inside the admitting transaction")
    left = await conn.fetchval(_DEBIT, account_id, period, cost)
    if left is None:
        return None
    await conn.execute(_LEDGER, account_id, period, -cost, "debit", job_id, now)
    return int(left)
