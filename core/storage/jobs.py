"""The jobs protocol: admission, claims, transitions, leases, events and queue queries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from core.models import DeliveryAddress, Job, JobState, Lease, UserRef
from core.quotas import AdmissionPolicy
from core.storage.types import (
    Admitted,
    Claimed,
    JobChange,
    Moved,
    NewTake,
    Precheck,
    UsageRow,
)


class JobStore(Protocol):
    """Requests and their takes, from admission to a finished state.

    Every change of a job's state writes a ``JobChange`` in the same transaction, and
    keeps the account's counters and refunds in step with it.
    """

    # --- admission -------------------------------------------------------------------

    async def find_request(self, source_key: str) -> str | None:
        """Return the id of the request stored for a platform event, if any."""
        ...

    async def precheck(self, user: UserRef, source_key: str, period: str) -> Precheck:
        """Read the account, a stored request for this event, the balance and the queue."""
        ...

    async def admit(
        self,
        *,
        user: UserRef,
        source_key: str,
        line: str,
        image_jpeg: bytes,
        image_size: tuple[int, int],
        address: DeliveryAddress,
        takes: Sequence[NewTake],
        policy: AdmissionPolicy | None = None,
        run_backend: str | None = None,
    ) -> Admitted:
        """Decide quotas on a snapshot, debit and insert a request with its takes, atomically."""
        ...

    async def user_id(self, user: UserRef) -> int | None:
        """Return the internal id of a platform user, if known."""
        ...

    # --- reading ---------------------------------------------------------------------

    async def job(self, job_id: str) -> Job | None:
        """Return one job, or None."""
        ...

    async def jobs_by_ids(self, job_ids: Iterable[str]) -> list[Job]:
        """Return the jobs with these ids, in queue order."""
        ...

    async def jobs_for_request(self, request_id: str) -> list[Job]:
        """Return every take of a request."""
        ...

    async def request_image(self, request_id: str) -> tuple[bytes, int, int]:
        """Return the prepared image of a request with its width and height."""
        ...

    async def queue_position(self, job_id: str) -> int | None:
        """Return the 1-based place of a waiting job in start order, or None if not waiting."""
        ...

    async def waiting_jobs(self, limit: int = 1000) -> list[Job]:
        """Return waiting jobs in the order they will start."""
        ...

    async def waiting_jobs_of(self, user: UserRef, chat_id: str) -> list[Job]:
        """Return one platform user's waiting takes asked for in one chat."""
        ...

    async def count_by_state(self) -> dict[JobState, int]:
        """Return how many jobs are in each state."""
        ...

    async def check_writable(self) -> None:
        """Commit a write that changes nothing; raise if the store cannot take writes."""
        ...

    async def count_unfinished(self, platforms: Sequence[str]) -> int:
        """Return how many jobs for these platforms are not finished yet."""
        ...

    async def recent_run_seconds(self, limit: int = 20, backend: str | None = None) -> float | None:
        """Return the mean start-to-finish time of recently finished jobs (of one backend)."""
        ...

    async def handles_since(self, since: float) -> set[str]:
        """Return the provider handles stored for jobs touched since ``since``.

        A lookup of a lost submit must not adopt a provider job another take already holds.
        """
        ...

    async def next_wakeup(self, platforms: Sequence[str]) -> float | None:
        """Return when the earliest waiting job for these platforms becomes claimable."""
        ...

    # --- claims and transitions ------------------------------------------------------

    async def claim(
        self,
        owner: str,
        *,
        limit: int,
        platforms: Sequence[str],
        lease_seconds: float,
        deadline_seconds: float,
    ) -> list[Claimed]:
        """Move up to ``limit`` waiting jobs to SUBMITTING under a lease, in fair order.

        Each claim raises the job's ``lease_token``; the claimed jobs carry their lease.
        """
        ...

    async def claim_next(
        self,
        owner: str,
        *,
        platforms: Sequence[str],
        lease_seconds: float,
        deadline_seconds: float,
    ) -> Job | None:
        """Claim the next waiting job, or return None."""
        ...

    async def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        expect: Iterable[JobState] | None = None,
        lease: Lease | None = None,
        **fields: Any,
    ) -> Moved:
        """Move a job to a state, setting extra fields, and say what happened.

        ``SKIPPED`` if it was not in ``expect``; with ``lease``, ``LOST`` (and nothing
        changed) unless the job's ``lease_owner`` and ``lease_token`` still match it, checked
        in the same UPDATE that makes the change.
        """
        ...

    async def claim_group(
        self, request_id: str, owner: str, *, lease_seconds: float
    ) -> list[Job] | None:
        """Claim delivering a request's finished takes as one group; None if not now.

        The takes are returned as they stand after the claim, under the claimer's leases
        (a take taken over from another owner gets a new ``lease_token``).
        """
        ...

    async def release_group(self, request_id: str) -> None:
        """Drop a group claim so that the group can be claimed again."""
        ...

    async def waiting_groups(self, owner: str, platforms: Sequence[str]) -> list[str]:
        """Return complete groups (no take still on its way) this worker holds takes of."""
        ...

    # --- leases ----------------------------------------------------------------------

    async def heartbeat(self, owner: str, lease_seconds: float) -> None:
        """Extend the leases of every job this worker owns."""
        ...

    async def renew_lease(self, job_id: str, lease: Lease, lease_seconds: float) -> bool:
        """Extend one job's lease if ``lease`` (owner and token) still holds it.

        False, and nothing changed, if another worker took the job over (or it ended).
        Checked and written in one UPDATE, so a takeover is either before it or fails after.
        """
        ...

    async def adopt_stale(
        self, owner: str, *, platforms: Sequence[str], lease_seconds: float
    ) -> list[Job]:
        """Take over active jobs whose lease expired (their worker died) and return them.

        Each takeover raises the job's ``lease_token``, so the old holder's changes fail.
        """
        ...

    async def expire_lease(self, job_id: str) -> None:
        """Make one unfinished job adoptable at once (its driving task died)."""
        ...

    async def release_leases(self, owner: str) -> None:
        """Let another worker adopt this worker's jobs at once (graceful shutdown)."""
        ...

    # --- events ----------------------------------------------------------------------

    async def events_after(self, cursor: int, limit: int = 100) -> list[JobChange]:
        """Return the job events after ``cursor`` (a ``seq``; 0 for the first), oldest first."""
        ...

    async def last_events(self, request_id: str) -> list[JobChange]:
        """Return the latest event of each take of a request, in take order."""
        ...

    async def last_event_seq(self) -> int:
        """Return the newest job event's ``seq`` (0 if none): where a new follower starts."""
        ...

    # --- operator view ---------------------------------------------------------------

    async def active_jobs(self, limit: int = 1000) -> list[Job]:
        """Return the jobs a worker is on (submitting to delivering), oldest first."""
        ...

    async def slots_in_use(self) -> dict[str, int]:
        """Return how many takes each backend holds a slot for (submitting or running)."""
        ...

    async def last_failures(self, limit: int = 20) -> list[Job]:
        """Return the most recently failed jobs, newest first."""
        ...

    async def usage_by_day(self, since: float, utc_offset_seconds: int = 0) -> list[UsageRow]:
        """Count the takes admitted since ``since`` by day, platform, state, backend, length.

        A day starts at midnight ``utc_offset_seconds`` east of UTC.
        """
        ...

    # --- retention -------------------------------------------------------------------

    async def finished_before(self, job_ids: Sequence[str], cutoff: float) -> list[str]:
        """Return which of these jobs finished before ``cutoff``."""
        ...

    async def empty_old_images(self, cutoff: float, limit: int) -> int:
        """Empty up to ``limit`` request photos whose takes all ended before ``cutoff``."""
        ...

    async def delete_old_chat_days(self, before: str, limit: int) -> int:
        """Delete up to ``limit`` per-chat day counts of days (ISO dates) before ``before``."""
        ...
