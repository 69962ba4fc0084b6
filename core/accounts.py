"""Account operations adapters call: balances, access requests, admin actions, ``/link``.

Built on the quota policy (``core.quotas``) and the account store (``core.storage``),
one transaction per call.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import RequestRejected
from core.models import EventKind, JobEvent, LedgerEntry, UserRef
from core.quotas import BANNED_FOREVER, AccessRequest, AdmissionPolicy, Quotas

if TYPE_CHECKING:
    from core.notify import NotifierRouter
    from core.storage import AccountStore, JobStore

log = logging.getLogger(__name__)

__all__ = ["AccessRequest", "Accounts", "Balance", "LinkCode", "Linked"]


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
class Linked:
    """Two identities joined into one account; characters renamed on the way (old, new)."""

    account_id: int
    renamed: tuple[tuple[str, str], ...] = ()


class Accounts:
    """What adapters call for balances, access, admin actions and account linking.

    Admin methods trust the caller: adapters check who is an admin on their platform and
    pass ``actor`` ("telegram:123") for the ledger and the log.
    """

    def __init__(
        self,
        accounts: AccountStore,
        jobs: JobStore,
        quotas: Quotas,
        *,
        notifier: NotifierRouter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._accounts = accounts
        self._jobs = jobs
        self._quotas = quotas
        self._notifier = notifier
        self._clock = clock

    async def account_id(self, user: UserRef, *, create: bool = False) -> int | None:
        """Return the account of a platform identity (creating it if asked)."""
        if create:
            return await self._accounts.ensure_account(user, self._clock())
        account = await self._accounts.account_of(user)
        return None if account is None else account.id

    async def balance(self, user: UserRef) -> Balance:
        """Return the user's credits now, without starting a period."""
        period = self._quotas.period(self._clock())
        account = await self._accounts.account_of(user)
        credits = None
        if account is not None:
            credits = await self._accounts.peek_balance(account.id, period.key)
        if credits is None:
            credits = self._quotas.limits(account.role if account else "user").credits
        return Balance(account.id if account else None, credits, period.key, period.resets_at)

    async def history(self, account_id: int, limit: int = 20) -> list[LedgerEntry]:
        """Return the newest ledger rows of an account: every change with its reason."""
        return await self._accounts.entries(account_id, limit)

    async def grant(self, account_id: int, credits: int, *, actor: str, note: str = "") -> int:
        """Add credits to an account's current period; return the new balance."""
        return await self._adjust(account_id, abs(credits), "grant", actor, note)

    async def revoke(self, account_id: int, credits: int, *, actor: str, note: str = "") -> int:
        """Take credits from an account's current period (not below zero); return the balance."""
        return await self._adjust(account_id, -abs(credits), "revoke", actor, note)

    async def _adjust(self, account_id: int, delta: int, reason: str, actor: str, note: str) -> int:
        now = self._clock()
        balance = await self._accounts.adjust(
            account_id, delta, period=self._quotas.period(now).key,
            limits=self._quotas.role_limits, reason=reason, actor=actor, note=note, now=now,
        )  # fmt: skip
        log.info("%s: %s %+d credits for account %d", actor, reason, delta, account_id)
        return balance

    async def set_role(self, account_id: int, role: str, *, actor: str) -> None:
        """Give an account a role (its limits and round-robin weight come from settings)."""
        await self._accounts.set_role(account_id, role)
        log.info("%s: account %d now has role %s", actor, account_id, role)

    async def ban(
        self, account_id: int, *, actor: str, reason: str = "", seconds: float | None = None
    ) -> list[str]:
        """Ban an account (for ``seconds``, or for good) and cancel its waiting takes."""
        now = self._clock()
        until = BANNED_FOREVER if seconds is None else now + seconds
        canceled = await self._accounts.ban(
            account_id, until=until, reason=reason, cancel_key="access.banned", now=now
        )
        log.info(
            "%s: banned account %d (%s); canceled %d", actor, account_id, reason, len(canceled)
        )
        if self._notifier is not None:
            for job in await self._jobs.jobs_by_ids(canceled):
                await self._notifier.notify(
                    JobEvent(EventKind.CANCELED, job, error_key=job.error_key)
                )
        return canceled

    async def unban(self, account_id: int, *, actor: str) -> None:
        """Lift a ban."""
        await self._accounts.ban(
            account_id, until=None, reason=None, cancel_key="", now=self._clock()
        )
        log.info("%s: unbanned account %d", actor, account_id)

    async def approve(self, account_id: int, *, actor: str) -> None:
        """Let an account in (approval mode) or put it on the allowlist."""
        await self._accounts.set_access(account_id, "allowed")
        log.info("%s: allowed account %d", actor, account_id)

    async def deny(self, account_id: int, *, actor: str) -> None:
        """Refuse an access request, or take an account off the allowlist."""
        await self._accounts.set_access(account_id, "denied")
        log.info("%s: denied account %d", actor, account_id)

    async def decide_access(self, account_id: int, *, approve: bool, actor: str) -> bool:
        """Approve or deny a waiting access request; False if it was already decided."""
        access = "allowed" if approve else "denied"
        decided = await self._accounts.decide_access(account_id, access)
        if decided:
            log.info("%s: %s account %d", actor, access, account_id)
        return decided

    async def request_access(self, user: UserRef) -> AccessRequest:
        """Ask for access (approval mode); ``new`` says whether admins should be asked now."""
        now = self._clock()
        return await self._accounts.request_access(
            user,
            # Only the ban is checked here: the access mode is what is being asked about.
            policy=AdmissionPolicy(now=now, enforce=True),
            open_mode=self._quotas.settings.access == "open" or self._quotas.exempt(user),
            now=now,
        )

    async def pending(self) -> list[tuple[int, str, str, str]]:
        """Return (account id, platform, user id, name) of identities waiting for approval."""
        return await self._accounts.pending()

    async def link_code(self, user: UserRef) -> LinkCode:
        """Issue a one-time code; typed on another platform, it joins that account to this one."""
        now = self._clock()
        minutes = self._quotas.settings.link_code_minutes
        code = self._quotas.new_link_code()
        expires_at = now + minutes * 60
        await self._accounts.save_link_code(user, code, expires_at=expires_at, now=now)
        return LinkCode(code, expires_at, math.ceil(minutes))

    async def link(self, user: UserRef, code: str) -> Linked:
        """Join this identity (and its characters) into the account that issued ``code``."""
        self._quotas.check_flood(user)  # each wrong guess costs a token
        code = self._quotas.normalize_code(code)
        redeemed = await self._accounts.redeem_link_code(code, user, self._clock())
        if redeemed.refusal is not None:
            raise RequestRejected(redeemed.refusal)
        account_id = redeemed.account_id
        assert account_id is not None
        log.info("linked %s:%s into account %d", user.platform, user.platform_user_id, account_id)
        return Linked(account_id, redeemed.renamed)
