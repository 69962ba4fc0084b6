"""Requests for candidate portraits on SQLite (the ``PortraitStore`` protocol)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from core.models import DeliveryAddress, UserRef
from core.quotas import AdmissionPolicy
from core.storage.sqlite import accounts
from core.storage.sqlite.database import Database
from core.storage.sqlite.queries import accounts as account_sql
from core.storage.sqlite.queries import portraits as sql
from core.storage.sqlite.rows import address_to_json
from core.storage.types import NewPortrait, Portrait, PortraitState


def _portrait(row: Any) -> Portrait:
    (pid, account_id, name, description, prompt, preset, address, state, handle, charged,
     error_key, picked, shown, submitted_at, created_at, updated_at) = row  # fmt: skip
    return Portrait(
        pid, account_id, name, description, prompt, preset,
        DeliveryAddress(**json.loads(address)), PortraitState(state), handle, charged,
        error_key, picked, bool(shown), submitted_at, created_at, updated_at,
    )  # fmt: skip


def _one(db: sqlite3.Connection, portrait_id: str) -> Portrait | None:
    row = db.execute(sql.BY_ID, (portrait_id,)).fetchone()
    return None if row is None else _portrait(row)


def debit(
    db: sqlite3.Connection,
    account_id: int,
    policy: AdmissionPolicy,
    cost: int,
    note: str,
    now: float,
) -> str | None:
    """Take ``cost`` credits from the period's balance (opening it), or raise; the period."""
    if not cost:
        return None
    account = accounts.load_account(db, account_id)
    period = policy.period.key
    credits = accounts.peek_balance(db, account_id, period)
    if credits is None:
        credits = policy.limits(account.role).credits
        accounts.open_balance(db, account_id, period, credits, now)
    policy.check_credits(credits, cost)
    row = db.execute(account_sql.DEBIT, (cost, account_id, period, cost)).fetchone()
    assert row is not None, "the balance was checked in this transaction"
    db.execute(sql.DEBIT, (account_id, period, -cost, note, now))
    return period


class SqlitePortraits:
    """``PortraitStore`` on a SQLite ``Database`` (tables created by its migrations)."""

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

        def work(db: sqlite3.Connection) -> Portrait:
            _, account_id = accounts.ensure_user(db, user, now)
            policy.check_access(accounts.load_account(db, account_id))
            period = debit(db, account_id, policy, cost, f"portrait:{new.id}", now)
            db.execute(
                sql.INSERT,
                (
                    new.id, account_id, new.name, new.description, new.prompt, new.preset,
                    address_to_json(new.address), cost, period, now, now,
                ),
            )  # fmt: skip
            found = _one(db, new.id)
            assert found is not None
            return found

        return await self._db.write(work)

    async def portrait(self, portrait_id: str) -> Portrait | None:
        """Return a request by id."""
        return await self._db.read(lambda db: _one(db, portrait_id))

    async def claim_portraits(
        self, owner: str, *, lease_seconds: float, now: float, limit: int
    ) -> list[Portrait]:
        """Lease requests with work left (open, or not shown yet) whose lease ran out."""

        def work(db: sqlite3.Connection) -> list[Portrait]:
            ids = [row[0] for row in db.execute(sql.CLAIMABLE, (now, limit))]
            claimed = []
            for pid in ids:
                db.execute(sql.LEASE, (owner, now + lease_seconds, pid))
                found = _one(db, pid)
                assert found is not None
                claimed.append(found)
            return claimed

        return await self._db.write(work)

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
        params = (
            state.value, handle, state.value, now, now + lease_seconds, now, portrait_id, owner,
        )  # fmt: skip
        return bool(await self._db.write(lambda db: db.execute(sql.ADVANCE, params).rowcount))

    async def store_candidates(
        self, portrait_id: str, owner: str, candidates: list[bytes], now: float
    ) -> bool:
        """Store the candidates and mark the request ready; False if the lease was lost."""

        def work(db: sqlite3.Connection) -> bool:
            if not db.execute(sql.READY, (now, portrait_id, owner)).rowcount:
                return False
            db.executemany(
                sql.ADD_CANDIDATE,
                [(portrait_id, n, jpeg) for n, jpeg in enumerate(candidates, start=1)],
            )
            return True

        return await self._db.write(work)

    async def fail_portrait(self, portrait_id: str, owner: str, error_key: str, now: float) -> bool:
        """Fail an open request and refund its charge once; False if it was not ours."""

        def work(db: sqlite3.Connection) -> bool:
            row = db.execute(sql.CHARGE, (portrait_id,)).fetchone()
            if row is None:
                return False
            if not db.execute(sql.FAIL, (error_key, now, portrait_id, owner)).rowcount:
                return False
            account_id, period, charged = row
            if charged > 0:
                db.execute(sql.REFUND_BALANCE, (charged, account_id, period))
                db.execute(
                    sql.REFUND, (account_id, period, charged, f"portrait:{portrait_id}", now)
                )
            return True

        return await self._db.write(work)

    async def mark_shown(self, portrait_id: str, owner: str) -> None:
        """Record that the user was shown the candidates or the failure; hand the lease back."""
        await self._db.write(lambda db: db.execute(sql.SHOWN, (portrait_id, owner)))

    async def candidates(self, portrait_id: str) -> list[bytes]:
        """Return a ready request's candidates, in order."""
        rows = await self._db.query(sql.CANDIDATES, (portrait_id,))
        return [bytes(row[0]) for row in rows]

    async def pick_portrait(
        self, portrait_id: str, account_id: int, number: int, now: float
    ) -> bytes | None:
        """Mark a ready request of this account picked and return that candidate, once."""

        def work(db: sqlite3.Connection) -> bytes | None:
            row = db.execute(sql.CANDIDATE, (portrait_id, number)).fetchone()
            if row is None:
                return None
            if not db.execute(sql.PICK, (number, now, portrait_id, account_id)).rowcount:
                return None
            return bytes(row[0])

        return await self._db.write(work)

    async def unpick_portrait(self, portrait_id: str, now: float) -> None:
        """Make a picked request ready again (the character could not be saved)."""
        await self._db.write(lambda db: db.execute(sql.UNPICK, (now, portrait_id)))

    async def drop_candidates(self, portrait_id: str) -> None:
        """Delete a request's candidates (one was saved as the character)."""
        await self._db.write(lambda db: db.execute(sql.DROP_CANDIDATES, (portrait_id,)))

    async def cancel_portrait(self, portrait_id: str, account_id: int, now: float) -> bool:
        """Cancel a ready request of this account and drop its candidates; False if not ready."""

        def work(db: sqlite3.Connection) -> bool:
            if not db.execute(sql.CANCEL, (now, portrait_id, account_id)).rowcount:
                return False
            db.execute(sql.DROP_CANDIDATES, (portrait_id,))
            return True

        return await self._db.write(work)

    async def expire_portraits(self, before: float, now: float) -> int:
        """Expire ready requests last changed before ``before``, dropping their candidates."""

        def work(db: sqlite3.Connection) -> int:
            ids = [row[0] for row in db.execute(sql.EXPIRE, (now, before)).fetchall()]
            db.executemany(sql.DROP_CANDIDATES, [(pid,) for pid in ids])
            return len(ids)

        return await self._db.write(work)
