"""The accounts protocol: identities, balances and the ledger, roles, access, link codes."""

from __future__ import annotations

from typing import Protocol

from core.models import Account, LedgerEntry, UserRef
from core.quotas import AccessRequest, AdmissionPolicy, RoleLimits
from core.storage.types import Redeemed


class AccountStore(Protocol):
    """Accounts as the quotas see them; every balance change is a ledger row too."""

    async def ensure_account(self, user: UserRef, now: float) -> int:
        """Return the account of a platform identity, creating it (and the user) if new."""
        ...

    async def account_of(self, user: UserRef) -> Account | None:
        """Return the account of a platform identity, or None if it never used the bot."""
        ...

    async def peek_balance(self, account_id: int, period: str) -> int | None:
        """Return the balance of a period, or None if the period has not started."""
        ...

    async def entries(self, account_id: int, limit: int) -> list[LedgerEntry]:
        """Return an account's most recent ledger rows, newest first."""
        ...

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
        ...

    async def set_role(self, account_id: int, role: str) -> None:
        """Give an account a role."""
        ...

    async def set_access(self, account_id: int, access: str) -> None:
        """Set an account's access: none, pending, allowed or denied."""
        ...

    async def decide_access(self, account_id: int, access: str) -> bool:
        """Set a pending account's access; False when it was not (or no longer) pending."""
        ...

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
        ...

    async def request_access(
        self, user: UserRef, *, policy: AdmissionPolicy, open_mode: bool, now: float
    ) -> AccessRequest:
        """Ask for access: ``policy.access_request`` decides, a new request is stored pending."""
        ...

    async def pending(self) -> list[tuple[int, str, str, str]]:
        """Return (account id, platform, platform user id, name) of pending access requests."""
        ...

    async def save_link_code(
        self, user: UserRef, code: str, *, expires_at: float, now: float
    ) -> None:
        """Store a one-time link code for the user's account, dropping older and expired ones."""
        ...

    async def redeem_link_code(self, code: str, user: UserRef, now: float) -> Redeemed:
        """Use up ``code`` and join ``user``'s account into its issuer.

        The joining account's identities and characters move to the issuer's account; a
        moved character whose name the issuer's account has is renamed ``Name-2``.
        """
        ...
