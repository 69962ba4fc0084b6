"""The portraits protocol: candidate images drawn for a new character, paid and durable.

A request is debited and recorded in one transaction; then a worker holding its lease
marks it submitting (before the model is called), stores the model's handle, and stores
the candidates. A failure refunds exactly once, in the transaction that records it. Every
step of the worker names the lease it holds (``owner``): a worker whose lease ran out and
was taken over changes nothing.
"""

from __future__ import annotations

from typing import Protocol

from core.models import UserRef
from core.quotas import AdmissionPolicy
from core.storage.types import NewPortrait, Portrait, PortraitState


class PortraitStore(Protocol):
    """Requests for candidate portraits, their candidates, and their charge."""

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
        ...

    async def portrait(self, portrait_id: str) -> Portrait | None:
        """Return a request by id."""
        ...

    async def claim_portraits(
        self, owner: str, *, lease_seconds: float, now: float, limit: int
    ) -> list[Portrait]:
        """Lease requests with work left (open, or not shown yet) whose lease ran out."""
        ...

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
        ...

    async def store_candidates(
        self, portrait_id: str, owner: str, candidates: list[bytes], now: float
    ) -> bool:
        """Store the candidates and mark the request ready; False if the lease was lost."""
        ...

    async def fail_portrait(self, portrait_id: str, owner: str, error_key: str, now: float) -> bool:
        """Fail an open request and refund its charge once; False if it was not ours."""
        ...

    async def mark_shown(self, portrait_id: str, owner: str) -> None:
        """Record that the user was shown the candidates or the failure; hand the lease back."""
        ...

    async def candidates(self, portrait_id: str) -> list[bytes]:
        """Return a ready request's candidates, in order."""
        ...

    async def pick_portrait(
        self, portrait_id: str, account_id: int, number: int, now: float
    ) -> bytes | None:
        """Mark a ready request of this account picked and return that candidate, once."""
        ...

    async def unpick_portrait(self, portrait_id: str, now: float) -> None:
        """Make a picked request ready again (the character could not be saved)."""
        ...

    async def drop_candidates(self, portrait_id: str) -> None:
        """Delete a request's candidates (one was saved as the character)."""
        ...

    async def cancel_portrait(self, portrait_id: str, account_id: int, now: float) -> bool:
        """Cancel a ready request of this account and drop its candidates; False if not ready."""
        ...

    async def expire_portraits(self, before: float, now: float) -> int:
        """Expire ready requests last changed before ``before``, dropping their candidates."""
        ...
