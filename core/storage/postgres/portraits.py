"""Requests for candidate portraits on PostgreSQL (the ``PortraitStore`` protocol).

The same rules as on SQLite (``core.storage.sqlite.portraits``); the debit locks the
account's row first, as admission does, so that two requests cannot overdraw.
"""

from __future__ import annotations

from typing import Any

from core.models import DeliveryAddress, UserRef
from core.quotas import AdmissionPolicy
from core.storage.postgres import accounts
from core.storage.postgres.connection import Conn
from core.storage.postgres.database import Database
from core.storage.postgres.queries import accounts as account_sql
from core.storage.postgres.queries import portraits as sql
from core.storage.postgres.rows import address_to_json
from core.storage.types import NewPortrait, Portrait, PortraitState


def _portrait(row: Any) -> Portrait:
    (pid, account_id, name, description, prompt, preset, address, state, handle, charged,
     error_key, picked, shown, submitted_at, created_at, updated_at) = row  # fmt: skip
    return Portrait(
        pid, account_id, name, description, prompt, preset, DeliveryAddress(**address),
        PortraitState(state), handle, charged, error_key, picked, bool(shown), submitted_at,
        created_at, updated_at,
    )  # fmt: skip


async def _one(conn: Conn, portrait_id: str) -> Portrait | None:
    row = await conn.fetchrow(sql.BY_ID, portrait_id)
    return None if row is None else _portrait(row)


async def debit(
    conn: Conn, account_id: int, policy: AdmissionPolicy, cost: int, note: str, now: float
) -> str | None:
    """Take ``cost`` credits from the period's balance (opening it), or raise; the period."""
    if not cost:
        return None
    account = await accounts.load_account(conn, account_id, lock=True)
    period = policy.period.key
    credits = await accounts.peek_balance(conn, account_id, period)
    if credits is None:
        credits = policy.limits(account.role).credits
        await accounts.open_balance(conn, account_id, period, credits, now)
    policy.check_credits(credits, cost)
    left = await conn.fetchval(account_sql.DEBIT, cost, account_id, period)
    assert left is not None, "the balance was checked under the account's lock"
    await conn.execute(sql.DEBIT, account_id, period, -cost, note, now)
    return period


class PostgresPortraits:
    """``PortraitStore`` on a PostgreSQL ``Database``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_portrait(
        self,
        new: NewPortrait,
        user: UserRef,
        *,
        policy: AdmissionPolicy,
        cost: int,
        now: float,
    ) -> Portrait:
        """Check access and credits, debit ``cost`` and record the request, or raise."""

        async def work(conn: Conn) -> Portrait:
            _, account_id = await accounts.ensure_user(conn, user, now)
            policy.check_access(await accounts.load_account(conn, account_id))
            period = await debit(conn, account_id, policy, cost, f"portrait:{new.id}", now)
            await conn.execute(
                sql.INSERT, new.id, account_id, new.name, new.description, new.prompt,
                new.preset, address_to_json(new.address), cost, period, now,
            )  # fmt: skip
            found = await _one(conn, new.id)
            assert found is not None
            return found

        return await self._db.run(work)

    async def portrait(self, portrait_id: str) -> Portrait | None:
        """Return a request by id."""
        return await self._db.run(lambda conn: _one(conn, portrait_id))

    async def claim_portraits(
        self, owner: str, *, lease_seconds: float, now: float, limit: int
    ) -> list[Portrait]:
        """Lease requests with work left (open, or not shown yet) whose lease ran out."""

        async def work(conn: Conn) -> list[Portrait]:
            rows = await conn.fetch(sql.CLAIM, owner, now + lease_seconds, now, limit)
            return sorted((_portrait(row) for row in rows), key=lambda p: p.created_at)

        return await self._db.run(work)

    async def advance_portrait(
        self,
        portrait_id: str,
        owner: str,
        state: PortraitState,
        *,
        handle: str | None = None,
        lease_seconds: float,
        now: float,
    ) -> bool:
        """Move an open request on (submitting, running) and renew the lease; False if lost."""

        async def work(conn: Conn) -> bool:
            status = await conn.execute(
                sql.ADVANCE, state.value, handle, now, now + lease_seconds, portrait_id, owner
            )
            return bool(status != "UPDATE 0")

        return await self._db.run(work)

    async def store_candidates(
        self, portrait_id: str, owner: str, candidates: list[bytes], now: float
    ) -> bool:
        """Store the candidates and mark the request ready; False if the lease was lost."""

        async def work(conn: Conn) -> bool:
            if await conn.execute(sql.READY, now, portrait_id, owner) == "UPDATE 0":
                return False
            await conn.executemany(
                sql.ADD_CANDIDATE,
                [(portrait_id, n, jpeg) for n, jpeg in enumerate(candidates, start=1)],
            )
            return True

        return await self._db.run(work)

    async def fail_portrait(self, portrait_id: str, owner: str, error_key: str, now: float) -> bool:
        """Fail an open request and refund its charge once; False if it was not ours."""

        async def work(conn: Conn) -> bool:
            row = await conn.fetchrow(sql.CHARGE, portrait_id)
            if row is None:
                return False
            if await conn.execute(sql.FAIL, error_key, now, portrait_id, owner) == "UPDATE 0":
                return False
            account_id, period, charged = row
            if charged > 0:
                await accounts.load_account(conn, account_id, lock=True)
                await conn.execute(sql.REFUND_BALANCE, charged, account_id, period)
                await conn.execute(
                    sql.REFUND, account_id, period, charged, f"portrait:{portrait_id}", now
                )
            return True

        return await self._db.run(work)

    async def mark_shown(self, portrait_id: str, owner: str) -> None:
        """Record that the user was shown the candidates or the failure; hand the lease back."""
        await self._db.run(lambda conn: conn.execute(sql.SHOWN, portrait_id, owner))

    async def candidates(self, portrait_id: str) -> list[bytes]:
        """Return a ready request's candidates, in order."""
        rows = await self._db.fetch(sql.CANDIDATES, portrait_id)
        return [bytes(row[0]) for row in rows]

    async def pick_portrait(
        self, portrait_id: str, account_id: int, number: int, now: float
    ) -> bytes | None:
        """Mark a ready request of this account picked and return that candidate, once."""

        async def work(conn: Conn) -> bytes | None:
            jpeg = await conn.fetchval(sql.CANDIDATE, portrait_id, number)
            if jpeg is None:
                return None
            status = await conn.execute(sql.PICK, number, now, portrait_id, account_id)
            return None if status == "UPDATE 0" else bytes(jpeg)

        return await self._db.run(work)

    async def unpick_portrait(self, portrait_id: str, now: float) -> None:
        """Make a picked request ready again (the character could not be saved)."""
        await self._db.run(lambda conn: conn.execute(sql.UNPICK, now, portrait_id))

    async def drop_candidates(self, portrait_id: str) -> None:
        """Delete a request's candidates (one was saved as the character)."""
        await self._db.run(lambda conn: conn.execute(sql.DROP_CANDIDATES, portrait_id))

    async def cancel_portrait(self, portrait_id: str, account_id: int, now: float) -> bool:
        """Cancel a ready request of this account and drop its candidates; False if not ready."""

        async def work(conn: Conn) -> bool:
            if await conn.execute(sql.CANCEL, now, portrait_id, account_id) == "UPDATE 0":
                return False
            await conn.execute(sql.DROP_CANDIDATES, portrait_id)
            return True

        return await self._db.run(work)

    async def expire_portraits(self, before: float, now: float) -> int:
        """Expire ready requests last changed before ``before``, dropping their candidates."""

        async def work(conn: Conn) -> int:
            rows = await conn.fetch(sql.EXPIRE, now, before)
            for row in rows:
                await conn.execute(sql.DROP_CANDIDATES, row[0])
            return len(rows)

        return await self._db.run(work)
