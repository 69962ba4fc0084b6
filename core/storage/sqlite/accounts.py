"""Accounts, credits and identities on SQLite (the ``AccountStore`` protocol).

Balances are per account per period (``period`` is a key such as ``2025-05``). The first
touch in a period writes an ``allowance`` row; every later change is a ledger row too, so
``balances.credits`` always equals the sum of the ledger rows of that account and period.

The module's functions are synchronous and take the connection: they run on the database
thread inside one transaction (``Database.write``/``read``), so a check and the write it
guards are never split by another writer. Admission uses them too.
"""

from __future__ import annotations

import sqlite3
from functools import partial

from core.errors import RequestRejected
from core.metrics import jobs_canceled
from core.models import Account, LedgerEntry, UserRef
from core.quotas import AccessRequest, AdmissionPolicy, RoleLimits, link_refusal
from core.storage.sqlite import changes
from core.storage.sqlite.characters import move_characters
from core.storage.sqlite.database import Database
from core.storage.sqlite.queries import accounts as sql
from core.storage.types import Redeemed


def _account(row: tuple[object, ...]) -> Account:
    return Account(*row)  # type: ignore[arg-type]


def ensure_user(db: sqlite3.Connection, user: UserRef, now: float) -> tuple[int, int]:
    """Return (user id, account id) of a platform identity, creating both if new."""
    row = db.execute(sql.USER, (user.platform, user.platform_user_id)).fetchone()
    if row is None:
        account_id = int(db.execute(sql.INSERT_ACCOUNT, (now,)).fetchone()[0])
        user_id = db.execute(
            sql.INSERT_USER,
            (user.platform, user.platform_user_id, user.display_name, user.locale, now, account_id),
        ).fetchone()[0]
        return int(user_id), account_id
    user_id, account_id, name, locale = row
    # Only write when something changed: admission is the hot path.
    if name != user.display_name or (user.locale is not None and user.locale != locale):
        db.execute(sql.RENAME_USER, (user.display_name, user.locale, user_id))
    return int(user_id), int(account_id)


def load_account(db: sqlite3.Connection, account_id: int) -> Account:
    """Return an account; refuse an unknown id."""
    row = db.execute(sql.ACCOUNT, (account_id,)).fetchone()
    if row is None:
        raise RequestRejected("access.unknown_account")
    return _account(row)


def account_of(db: sqlite3.Connection, user: UserRef) -> Account | None:
    """Return the account of a platform identity, or None if it never used the bot."""
    row = db.execute(sql.ACCOUNT_OF, (user.platform, user.platform_user_id)).fetchone()
    return None if row is None else _account(row)


def peek_balance(db: sqlite3.Connection, account_id: int, period: str) -> int | None:
    """Return the balance of a period, or None if the period has not been touched yet."""
    row = db.execute(sql.BALANCE, (account_id, period)).fetchone()
    return None if row is None else int(row[0])


def open_balance(
    db: sqlite3.Connection, account_id: int, period: str, allowance: int, now: float
) -> None:
    """Start a period's balance with its allowance (a ledger row too)."""
    db.execute(sql.OPEN_BALANCE, (account_id, period, allowance))
    db.execute(sql.ALLOWANCE, (account_id, period, allowance, now))


def _adjust(
    db: sqlite3.Connection,
    account_id: int,
    delta: int,
    period: str,
    limits: RoleLimits,
    entry: tuple[str, str, str],
    now: float,
) -> int:
    account = load_account(db, account_id)
    credits = peek_balance(db, account_id, period)
    if credits is None:
        credits = limits.of(account.role).credits
        open_balance(db, account_id, period, credits, now)
    delta = max(delta, -credits)  # never below zero
    if delta:
        db.execute(sql.ADJUST, (delta, account_id, period))
        db.execute(sql.ADJUSTED, (account_id, period, delta, *entry, now))
    return credits + delta


def _ban(
    db: sqlite3.Connection,
    account_id: int,
    until: float | None,
    reason: str | None,
    cancel_key: str,
    now: float,
) -> list[tuple[str, int]]:
    load_account(db, account_id)
    db.execute(sql.SET_BAN, (until, reason, account_id))
    return [] if until is None else changes.cancel_waiting(db, account_id, cancel_key, now)


def _request_access(
    db: sqlite3.Connection, user: UserRef, policy: AdmissionPolicy, open_mode: bool, now: float
) -> AccessRequest:
    _, account_id = ensure_user(db, user, now)
    answer = policy.access_request(load_account(db, account_id), open_mode=open_mode)
    if answer.new:
        db.execute(sql.SET_ACCESS, ("pending", account_id))
    return answer


def _save_link_code(
    db: sqlite3.Connection, user: UserRef, code: str, expires_at: float, now: float
) -> None:
    _, account_id = ensure_user(db, user, now)
    db.execute(sql.DROP_LINK_CODES, (account_id, now))
    db.execute(sql.SAVE_LINK_CODE, (code, account_id, user.platform, expires_at))


def _redeem_link_code(db: sqlite3.Connection, code: str, user: UserRef, now: float) -> Redeemed:
    # A refusal is returned, not raised, so that the transaction still commits and the
    # code is used up. The joining account's identities move over and its own balance
    # stays behind, so linking never adds two allowances together.
    row = db.execute(sql.USE_LINK_CODE, (code,)).fetchone()
    if row is None or float(row[2]) < now:
        return Redeemed(None, "access.link_bad_code")
    _, joining_id = ensure_user(db, user, now)
    joining, target = load_account(db, joining_id), load_account(db, int(row[0]))
    moving = {str(r[0]) for r in db.execute(sql.PLATFORMS, (joining.id,))}
    staying = {str(r[0]) for r in db.execute(sql.PLATFORMS, (target.id,))}
    busy = db.execute(sql.UNFINISHED, (joining.id,)).fetchone() is not None
    refusal = link_refusal(
        joining=joining, target=target, shared_platform=bool(moving & staying),
        unfinished=busy, now=now,
    )  # fmt: skip
    if refusal is not None:
        return Redeemed(None, refusal)
    db.execute(sql.MOVE_USERS, (target.id, joining.id))
    # Characters follow the person: both are kept, the moved one renamed on a clash.
    renamed = move_characters(db, joining.id, target.id)
    if joining.access == "allowed" and target.access != "allowed":
        # Access granted to either identity carries over; a role or a ban does not.
        db.execute(sql.SET_ACCESS, ("allowed", target.id))
    return Redeemed(target.id, None, tuple(renamed))


def _decide_access(db: sqlite3.Connection, account_id: int, access: str) -> bool:
    return db.execute(sql.DECIDE_ACCESS, (access, account_id)).rowcount > 0


def _pending(db: sqlite3.Connection) -> list[tuple[int, str, str, str]]:
    return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in db.execute(sql.PENDING)]


def _set(db: sqlite3.Connection, query: str, value: str, account_id: int) -> None:
    load_account(db, account_id)
    db.execute(query, (value, account_id))


class SqliteAccounts:
    """``AccountStore`` on a SQLite ``Database``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def ensure_account(self, user: UserRef, now: float) -> int:
        """Return the account of a platform identity, creating it (and the user) if new."""
        return (await self._db.write(partial(ensure_user, user=user, now=now)))[1]

    async def account_of(self, user: UserRef) -> Account | None:
        """Return the account of a platform identity, or None if it never used the bot."""
        return await self._db.read(partial(account_of, user=user))

    async def peek_balance(self, account_id: int, period: str) -> int | None:
        """Return the balance of a period, or None if the period has not started."""
        return await self._db.read(partial(peek_balance, account_id=account_id, period=period))

    async def entries(self, account_id: int, limit: int) -> list[LedgerEntry]:
        """Return an account's most recent ledger rows, newest first."""
        rows = await self._db.query(sql.ENTRIES, (account_id, limit))
        return [LedgerEntry(*row) for row in rows]

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
        return await self._db.write(
            partial(_adjust, account_id=account_id, delta=delta, period=period,
                    limits=limits, entry=entry, now=now)
        )  # fmt: skip

    async def set_role(self, account_id: int, role: str) -> None:
        """Give an account a role."""
        await self._db.write(partial(_set, query=sql.SET_ROLE, value=role, account_id=account_id))

    async def set_access(self, account_id: int, access: str) -> None:
        """Set an account's access: none, pending, allowed or denied."""
        await self._db.write(
            partial(_set, query=sql.SET_ACCESS, value=access, account_id=account_id)
        )

    async def decide_access(self, account_id: int, access: str) -> bool:
        """Set a pending account's access; False when it was not (or no longer) pending."""
        return await self._db.write(partial(_decide_access, account_id=account_id, access=access))

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
        canceled = await self._db.write(
            partial(_ban, account_id=account_id, until=until, reason=reason,
                    cancel_key=cancel_key, now=now)
        )  # fmt: skip
        return jobs_canceled(canceled, cancel_key)

    async def request_access(
        self, user: UserRef, *, policy: AdmissionPolicy, open_mode: bool, now: float
    ) -> AccessRequest:
        """Ask for access: ``policy.access_request`` decides, a new request is stored pending."""
        return await self._db.write(
            partial(_request_access, user=user, policy=policy, open_mode=open_mode, now=now)
        )

    async def pending(self) -> list[tuple[int, str, str, str]]:
        """Return (account id, platform, platform user id, name) of pending access requests."""
        return await self._db.read(_pending)

    async def save_link_code(
        self, user: UserRef, code: str, *, expires_at: float, now: float
    ) -> None:
        """Store a one-time link code for the user's account, dropping older and expired ones."""
        await self._db.write(
            partial(_save_link_code, user=user, code=code, expires_at=expires_at, now=now)
        )

    async def redeem_link_code(self, code: str, user: UserRef, now: float) -> Redeemed:
        """Use up ``code`` and join ``user``'s account (identities, characters) into its issuer."""
        return await self._db.write(partial(_redeem_link_code, code=code, user=user, now=now))
