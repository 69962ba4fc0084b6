"""Account operations adapters call: balances, access requests, admin actions, ``/link``.

Built on the quota policy (``core.quotas``) and the ledger SQL (``core.ledger``), run on
the store's database thread one transaction per call.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from core import ledger
from core.errors import RequestRejected
from core.ledger import Account, LedgerEntry
from core.models import EventKind, JobEvent, UserRef
from core.quotas import BANNED_FOREVER, AdmissionPolicy, Quotas

if TYPE_CHECKING:
    from core.notify import NotifierRouter
    from core.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Balance:
    """A user's credits in the current period."""

    account_id: int | None
    credits: int
    period: str
    resets_at: float


@dataclass(frozen=True)
class LinkCode:
    """A one-time code that joins another platform's account into this one."""

    code: str
    expires_at: float
    minutes: int


@dataclass(frozen=True)
class AccessRequest:
    """Where a user's access stands after asking; ``new`` when admins should be asked."""

    account_id: int
    status: str  # allowed | pending | denied
    new: bool


class Accounts:
    """What adapters call for balances, access, admin actions and account linking.

    Admin methods trust the caller: adapters check who is an admin on their platform and
    pass ``actor`` ("telegram:123") for the ledger and the log.
    """

    def __init__(
        self,
        store: Store,
        quotas: Quotas,
        *,
        notifier: NotifierRouter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._quotas = quotas
        self._notifier = notifier
        self._clock = clock

    async def account_id(self, user: UserRef, *, create: bool = False) -> int | None:
        """Return the account of a platform identity (creating it if asked)."""
        if create:
            ids = await self._store.write(partial(ledger.ensure_user, user=user, now=self._clock()))
            return ids[1]
        account = await self._store.read(_account_of(user))
        return None if account is None else account.id

    async def balance(self, user: UserRef) -> Balance:
        """Return the user's credits now, without starting a period."""
        now = self._clock()
        period = self._quotas.period(now)
        account = await self._store.read(_account_of(user))
        credits = None
        if account is not None:
            peek = partial(ledger.peek_balance, account_id=account.id, period=period.key)
            credits = await self._store.read(peek)
        if credits is None:
            credits = self._quotas.limits(account.role if account else "user").credits
        return Balance(account.id if account else None, credits, period.key, period.resets_at)

    async def history(self, account_id: int, limit: int = 20) -> list[LedgerEntry]:
        """Return the newest ledger rows of an account: every change with its reason."""
        return await self._store.read(partial(ledger.entries, account_id=account_id, limit=limit))

    async def grant(self, account_id: int, credits: int, *, actor: str, note: str = "") -> int:
        """Add credits to an account's current period; return the new balance."""
        return await self._adjust(account_id, abs(credits), "grant", actor, note)

    async def revoke(self, account_id: int, credits: int, *, actor: str, note: str = "") -> int:
        """Take credits from an account's current period (not below zero); return the balance."""
        return await self._adjust(account_id, -abs(credits), "revoke", actor, note)

    async def _adjust(self, account_id: int, delta: int, reason: str, actor: str, note: str) -> int:
        now = self._clock()
        period = self._quotas.period(now)

        def change(db: sqlite3.Connection) -> int:
            allowance = self._quotas.limits(ledger.load_account(db, account_id).role).credits
            return ledger.adjust(
                db, account_id, period.key, delta,
                allowance=allowance, reason=reason, actor=actor, note=note, now=now,
            )  # fmt: skip

        balance = await self._store.write(change)
        log.info("%s: %s %+d credits for account %d", actor, reason, delta, account_id)
        return balance

    async def set_role(self, account_id: int, role: str, *, actor: str) -> None:
        """Give an account a role (its limits and round-robin weight come from settings)."""
        await self._store.write(partial(ledger.set_account, account_id=account_id, role=role))
        log.info("%s: account %d now has role %s", actor, account_id, role)

    async def ban(
        self, account_id: int, *, actor: str, reason: str = "", seconds: float | None = None
    ) -> list[str]:
        """Ban an account (for ``seconds``, or for good) and cancel its waiting takes."""
        now = self._clock()
        until = BANNED_FOREVER if seconds is None else now + seconds

        def apply(db: sqlite3.Connection) -> list[str]:
            ledger.set_account(db, account_id, banned_until=until, ban_reason=reason)
            return ledger.cancel_waiting(db, account_id, "access.banned", now)

        canceled = await self._store.write(apply)
        log.info(
            "%s: banned account %d (%s); canceled %d", actor, account_id, reason, len(canceled)
        )
        if self._notifier is not None:
            for job in await self._store.jobs_by_ids(canceled):
                await self._notifier.notify(
                    JobEvent(EventKind.CANCELED, job, error_key=job.error_key)
                )
        return canceled

    async def unban(self, account_id: int, *, actor: str) -> None:
        """Lift a ban."""
        change = partial(
            ledger.set_account, account_id=account_id, banned_until=None, ban_reason=None
        )
        await self._store.write(change)
        log.info("%s: unbanned account %d", actor, account_id)

    async def approve(self, account_id: int, *, actor: str) -> None:
        """Let an account in (approval mode) or put it on the allowlist."""
        await self._store.write(
            partial(ledger.set_account, account_id=account_id, access="allowed")
        )
        log.info("%s: allowed account %d", actor, account_id)

    async def deny(self, account_id: int, *, actor: str) -> None:
        """Refuse an access request, or take an account off the allowlist."""
        await self._store.write(partial(ledger.set_account, account_id=account_id, access="denied"))
        log.info("%s: denied account %d", actor, account_id)

    async def decide_access(self, account_id: int, *, approve: bool, actor: str) -> bool:
        """Approve or deny a waiting access request; False if it was already decided."""
        access = "allowed" if approve else "denied"
        decided = await self._store.write(
            partial(ledger.decide_access, account_id=account_id, access=access)
        )
        if decided:
            log.info("%s: %s account %d", actor, access, account_id)
        return decided

    async def request_access(self, user: UserRef) -> AccessRequest:
        """Ask for access (approval mode); ``new`` says whether admins should be asked now."""
        now = self._clock()
        open_mode = self._quotas.settings.access == "open" or self._quotas.exempt(user)

        def ask(db: sqlite3.Connection) -> AccessRequest:
            _, account_id = ledger.ensure_user(db, user, now)
            account = ledger.load_account(db, account_id)
            AdmissionPolicy(now=now, enforce=True).check_access(account)  # banned?
            if open_mode or account.access in ("allowed", "denied", "pending"):
                status = "allowed" if open_mode else account.access
                return AccessRequest(account_id, status, new=False)
            ledger.set_account(db, account_id, access="pending")
            return AccessRequest(account_id, "pending", new=True)

        return await self._store.write(ask)

    async def pending(self) -> list[tuple[int, str, str, str]]:
        """Return (account id, platform, user id, name) of identities waiting for approval."""
        return await self._store.read(ledger.pending_accounts)

    async def link_code(self, user: UserRef) -> LinkCode:
        """Issue a one-time code; typed on another platform, it joins that account to this one."""
        now = self._clock()
        minutes = self._quotas.settings.link_code_minutes
        code = self._quotas.new_link_code()
        expires_at = now + minutes * 60

        def issue(db: sqlite3.Connection) -> None:
            _, account_id = ledger.ensure_user(db, user, now)
            ledger.save_link_code(db, code, account_id, user.platform, expires_at, now)

        await self._store.write(issue)
        return LinkCode(code, expires_at, math.ceil(minutes))

    async def link(self, user: UserRef, code: str) -> int:
        """Join this identity into the account that issued ``code``; return the joint account."""
        self._quotas.check_flood(user)  # each wrong guess costs a token
        redeem = partial(
            ledger.redeem_link_code,
            code=self._quotas.normalize_code(code),
            user=user,
            now=self._clock(),
        )
        account_id, refusal = await self._store.write(redeem)
        if refusal is not None:
            raise RequestRejected(refusal)
        assert account_id is not None
        log.info("linked %s:%s into account %d", user.platform, user.platform_user_id, account_id)
        return account_id


def _account_of(user: UserRef) -> Callable[[sqlite3.Connection], Account | None]:
    return partial(
        ledger.account_of, platform=user.platform, platform_user_id=user.platform_user_id
    )
