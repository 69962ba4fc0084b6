"""Accounts, credits and identities on PostgreSQL (the ``AccountStore`` protocol).

The same rules as on SQLite (``core.storage.sqlite.accounts``): balances per account and
period, every change a ledger row too, so a balance always equals the sum of its ledger
rows. What SQLite gets from its single writer, PostgreSQL gets from row locks: every
change of an account's balance or standing locks the account's row first, so a check
and the write it guards are never split by another process. Admission uses the module's
functions too.
"""

from __future__ import annotations

from functools import partial

from core.errors import RequestRejected
from core.metrics import jobs_canceled
from core.models import Account, LedgerEntry, UserRef
from core.quotas import AccessRequest, AdmissionPolicy, RoleLimits, link_refusal
from core.storage.postgres import changes
from core.storage.postgres.characters import move_characters
from core.storage.postgres.connection import Conn
from core.storage.postgres.database import Database
from core.storage.postgres.queries import accounts as sql
from core.storage.types import Redeemed


async def ensure_user(conn: Conn, user: UserRef, now: float) -> tuple[int, int]:
    """Return (user id, account id) of a platform identity, creating both if new."""
    while True:
        row = await conn.fetchrow(sql.USER, user.platform, user.platform_user_id)
        if row is not None:
            break
        account_id = int(await conn.fetchval(sql.INSERT_ACCOUNT, now))
        user_id = await conn.fetchval(
            sql.INSERT_USER, user.platform, user.platform_user_id, user.display_name,
            user.locale, now, account_id,
        )  # fmt: skip
        if user_id is not None:
            return int(user_id), account_id
        # Another transaction created this identity meanwhile: use its account.
        await conn.execute(sql.DROP_ACCOUNT, account_id)
    user_id, account_id, name, locale = row
    # Only write when something changed: admission is the hot path.
    if name != user.display_name or (user.locale is not None and user.locale != locale):
        await conn.execute(sql.RENAME_USER, user.display_name, user.locale, user_id)
    return int(user_id), int(account_id)


async def load_account(conn: Conn, account_id: int, *, lock: bool = False) -> Account:
    """Return an account (locking its row until commit if asked); refuse an unknown id."""
    row = await conn.fetchrow(sql.LOCK_ACCOUNT if lock else sql.ACCOUNT, account_id)
    if row is None:
        raise RequestRejected("access.unknown_account")
    return Account(*row)


async def account_of(conn: Conn, user: UserRef) -> Account | None:
    """Return the account of a platform identity, or None if it never used the bot."""
    row = await conn.fetchrow(sql.ACCOUNT_OF, user.platform, user.platform_user_id)
    return None if row is None else Account(*row)


async def peek_balance(conn: Conn, account_id: int, period: str) -> int | None:
    """Return the balance of a period, or None if the period has not been touched yet."""
    credits = await conn.fetchval(sql.BALANCE, account_id, period)
    return None if credits is None else int(credits)


async def open_balance(
    conn: Conn, account_id: int, period: str, allowance: int, now: float
) -> None:
    """Start a period's balance with its allowance (a ledger row too)."""
    await conn.execute(sql.OPEN_BALANCE, account_id, period, allowance)
    await conn.execute(sql.ALLOWANCE, account_id, period, allowance, now)


async def _adjust(
    conn: Conn,
    account_id: int,
    delta: int,
    period: str,
    limits: RoleLimits,
    entry: tuple[str, str, str],
    now: float,
) -> int:
    account = await load_account(conn, account_id, lock=True)
    credits = await peek_balance(conn, account_id, period)
    if credits is None:
        credits = limits.of(account.role).credits
        await open_balance(conn, account_id, period, credits, now)
    delta = max(delta, -credits)  # never below zero
    if delta:
        await conn.execute(sql.ADJUST, delta, account_id, period)
        await conn.execute(sql.ADJUSTED, account_id, period, delta, *entry, now)
    return credits + delta


async def _ban(
    conn: Conn, account_id: int, until: float | None, reason: str | None, key: str, now: float
) -> list[tuple[str, int]]:
    await load_account(conn, account_id, lock=True)
    await conn.execute(sql.SET_BAN, until, reason, account_id)
    return [] if until is None else await changes.cancel_waiting(conn, account_id, key, now)


async def _request_access(
    conn: Conn, user: UserRef, policy: AdmissionPolicy, open_mode: bool, now: float
) -> AccessRequest:
    _, account_id = await ensure_user(conn, user, now)
    # Locked: two requests at once are decided one after the other, admins asked once.
    answer = policy.access_request(
        await load_account(conn, account_id, lock=True), open_mode=open_mode
    )
    if answer.new:
        await conn.execute(sql.SET_ACCESS, "pending", account_id)
    return answer


async def _save_link_code(
    conn: Conn, user: UserRef, code: str, expires_at: float, now: float
) -> None:
    _, account_id = await ensure_user(conn, user, now)
    await conn.execute(sql.DROP_LINK_CODES, account_id, now)
    await conn.execute(sql.SAVE_LINK_CODE, code, account_id, user.platform, expires_at)


async def _redeem_link_code(conn: Conn, code: str, user: UserRef, now: float) -> Redeemed:
    # A refusal is returned, not raised, so that the transaction still commits and the
    # code is used up. The joining account's identities move over and its own balance
    # stays behind, so linking never adds two allowances together.
    row = await conn.fetchrow(sql.USE_LINK_CODE, code)
    if row is None or float(row[2]) < now:
        return Redeemed(None, "access.link_bad_code")
    _, joining_id = await ensure_user(conn, user, now)
    # Both rows locked, in id order (two links at once never wait for each other's).
    locked = {
        account_id: await load_account(conn, account_id, lock=True)
        for account_id in sorted({joining_id, int(row[0])})
    }
    joining, target = locked[joining_id], locked[int(row[0])]
    moving = {str(r[0]) for r in await conn.fetch(sql.PLATFORMS, joining.id)}
    staying = {str(r[0]) for r in await conn.fetch(sql.PLATFORMS, target.id)}
    busy = await conn.fetchval(sql.UNFINISHED, joining.id) is not None
    refusal = link_refusal(
        joining=joining, target=target, shared_platform=bool(moving & staying),
        unfinished=busy, now=now,
    )  # fmt: skip
    if refusal is not None:
        return Redeemed(None, refusal)
    await conn.execute(sql.MOVE_USERS, target.id, joining.id)
    # Characters follow the person: both are kept, the moved one renamed on a clash.
    renamed = await move_characters(conn, joining.id, target.id)
    if joining.access == "allowed" and target.access != "allowed":
        # Access granted to either identity carries over; a role or a ban does not.
        await conn.execute(sql.SET_ACCESS, "allowed", target.id)
    return Redeemed(target.id, None, tuple(renamed))


async def _set(conn: Conn, query: str, value: str, account_id: int) -> None:
    await load_account(conn, account_id, lock=True)
    await conn.execute(query, value, account_id)


class PostgresAccounts:
    """``AccountStore`` on a PostgreSQL ``Database``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def ensure_account(self, user: UserRef, now: float) -> int:
        """Return the account of a platform identity, creating it (and the user) if new."""
        return (await self._db.run(partial(ensure_user, user=user, now=now)))[1]

    async def account_of(self, user: UserRef) -> Account | None:
        """Return the account of a platform identity, or None if it never used the bot."""
        row = await self._db.fetchrow(sql.ACCOUNT_OF, user.platform, user.platform_user_id)
        return None if row is None else Account(*row)

    async def peek_balance(self, account_id: int, period: str) -> int | None:
        """Return the balance of a period, or None if the period has not started."""
        credits = await self._db.fetchval(sql.BALANCE, account_id, period)
        return None if credits is None else int(credits)

    async def entries(self, account_id: int, limit: int) -> list[LedgerEntry]:
        """Return an account's most recent ledger rows, newest first."""
        return [LedgerEntry(*row) for row in await self._db.fetch(sql.ENTRIES, account_id, limit)]

    async def adjust(
        self,
        account_id: int,
        delta: int,
        *,
        period: str,
        limits: RoleLimits,
        reason: str,
        actor: str,
        note: str,
        now: float,
    ) -> int:
        """Grant (delta > 0) or revoke credits, never below zero; return the balance."""
        entry = (reason, actor, note)
        return await self._db.run(
            partial(_adjust, account_id=account_id, delta=delta, period=period,
                    limits=limits, entry=entry, now=now)
        )  # fmt: skip

    async def set_role(self, account_id: int, role: str) -> None:
        """Give an account a role."""
        await self._db.run(partial(_set, query=sql.SET_ROLE, value=role, account_id=account_id))

    async def set_access(self, account_id: int, access: str) -> None:
        """Set an account's access: none, pending, allowed or denied."""
        await self._db.run(partial(_set, query=sql.SET_ACCESS, value=access, account_id=account_id))

    async def ban(
        self,
        account_id: int,
        *,
        until: float | None,
        reason: str | None,
        cancel_key: str,
        now: float,
    ) -> list[str]:
        """Set or lift (``until`` None) a ban; a ban cancels the waiting takes, returned."""
        canceled = await self._db.run(
            partial(_ban, account_id=account_id, until=until, reason=reason, key=cancel_key,
                    now=now)
        )  # fmt: skip
        return jobs_canceled(canceled, cancel_key)

    async def request_access(
        self, user: UserRef, *, policy: AdmissionPolicy, open_mode: bool, now: float
    ) -> AccessRequest:
        """Ask for access: ``policy.access_request`` decides, a new request is stored pending."""
        return await self._db.run(
            partial(_request_access, user=user, policy=policy, open_mode=open_mode, now=now)
        )

    async def decide_access(self, account_id: int, access: str) -> bool:
        """Set a pending account's access; False when it was not (or no longer) pending."""
        return await self._db.execute(sql.DECIDE_ACCESS, access, account_id) > 0

    async def pending(self) -> list[tuple[int, str, str, str]]:
        """Return (account id, platform, platform user id, name) of pending access requests."""
        rows = await self._db.fetch(sql.PENDING)
        return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    async def save_link_code(
        self, user: UserRef, code: str, *, expires_at: float, now: float
    ) -> None:
        """Store a one-time link code for the user's account, dropping older and expired ones."""
        await self._db.run(
            partial(_save_link_code, user=user, code=code, expires_at=expires_at, now=now)
        )

    async def redeem_link_code(self, code: str, user: UserRef, now: float) -> Redeemed:
        """Use up ``code`` and join ``user``'s account (identities, characters) into its issuer."""
        return await self._db.run(partial(_redeem_link_code, code=code, user=user, now=now))
