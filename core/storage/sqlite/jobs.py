"""Requests and jobs on SQLite (the ``JobStore`` protocol).

Hot paths (admission, claim, transitions) run as one synchronous function on the writer
thread (``Database.write``): BEGIN, every statement and COMMIT cost one round trip to the
thread instead of one per statement, and concurrent ones share a group commit.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from core.errors import RequestRejected
from core.metrics import job_finished
from core.models import DeliveryAddress, Job, JobState, Lease, UserRef
from core.quotas import AdmissionPolicy
from core.storage.changes import settable
from core.storage.sqlite import admission, changes
from core.storage.sqlite.database import Database
from core.storage.sqlite.queries import jobs as sql
from core.storage.sqlite.queries import marks
from core.storage.sqlite.rows import change_from_row, job_from_row, usage_row
from core.storage.types import (
    Admitted,
    ChangeKind,
    Claimed,
    JobChange,
    Moved,
    NewTake,
    Precheck,
    UsageRow,
    new_id,
)


class SqliteJobs:
    """``JobStore`` on a SQLite ``Database``."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Job]:
        return [job_from_row(row) for row in await self._db.query(query, params)]

    async def _one(self, query: str, params: Sequence[Any] = ()) -> Any | None:
        rows = await self._db.query(query, params)
        return rows[0] if rows else None

    # --- admission -------------------------------------------------------------------

    async def find_request(self, source_key: str) -> str | None:
        """Return the id of the request stored for a platform event, if any."""
        row = await self._one(sql.FIND_REQUEST, (source_key,))
        return None if row is None else str(row[0])

    async def precheck(self, user: UserRef, source_key: str, period: str) -> Precheck:
        """Read the account, a stored request for this event, the balance and the queue."""
        return await self._db.read(
            partial(admission.precheck, user=user, source_key=source_key, period=period)
        )

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
        """Decide quotas on a snapshot, debit and insert a request with its takes, atomically.

        A repeated source key is refused before any check, so a redelivered event gets
        "duplicate" and is never charged twice; any refusal rolls everything back. Without
        a policy nothing is enforced: the takes are only put in fair order.
        """
        now = self._clock()
        request = admission.NewRequest(
            id=new_id(), user=user, source_key=source_key, line=line, image_jpeg=image_jpeg,
            image_size=image_size, address=address, takes=takes,
            job_ids=[new_id() for _ in takes], run_backend=run_backend,
        )  # fmt: skip
        rules = policy or AdmissionPolicy(now=now)
        out = await self._db.write(partial(admission.admit, request=request, rules=rules, now=now))
        jobs = tuple(
            Job(
                id=job_id, request_id=request.id, user_id=out.user_id, take=index + 1,
                takes=len(takes), state=JobState.QUEUED, line=take.line, speech=take.speech,
                language=take.language, seconds=take.seconds, seed=take.seed, voice=take.voice,
                address=address, attempts=0, handle=None, created_at=now, updated_at=now,
                started_at=None, finished_at=None, error_key=None, error_params={},
                error_detail=None, result_path=None, resubmitted=False, not_before=0.0,
                deadline_at=None, voice_sample=take.voice_sample,
            )
            for index, (job_id, take) in enumerate(zip(request.job_ids, takes, strict=True))
        )  # fmt: skip
        return Admitted(request.id, jobs, out.position, out.run_seconds, out.credits_left)

    async def user_id(self, user: UserRef) -> int | None:
        """Return the internal id of a platform user, if known."""
        row = await self._one(sql.USER_ID, (user.platform, user.platform_user_id))
        return None if row is None else int(row[0])

    # --- reading ---------------------------------------------------------------------

    async def job(self, job_id: str) -> Job | None:
        """Return one job, or None."""
        jobs = await self._rows(sql.JOB, (job_id,))
        return jobs[0] if jobs else None

    async def jobs_by_ids(self, job_ids: Iterable[str]) -> list[Job]:
        """Return the jobs with these ids, in queue order."""
        ids = list(job_ids)
        if not ids:
            return []
        return await self._rows(sql.JOBS_BY_IDS.format(marks=marks(len(ids))), ids)

    async def jobs_for_request(self, request_id: str) -> list[Job]:
        """Return every take of a request."""
        return await self._rows(sql.JOBS_FOR_REQUEST, (request_id,))

    async def request_image(self, request_id: str) -> tuple[bytes, int, int]:
        """Return the prepared image of a request with its width and height."""
        row = await self._one(sql.REQUEST_IMAGE, (request_id,))
        if row is None:
            raise RequestRejected("request.unknown_job")
        return bytes(row[0]), int(row[1]), int(row[2])

    async def queue_position(self, job_id: str) -> int | None:
        """Return the 1-based place of a waiting job in start order, or None if not waiting."""
        return await self._db.read(partial(admission.waiting_position, job_id=job_id))

    async def waiting_jobs(self, limit: int = 1000) -> list[Job]:
        """Return waiting jobs in the order they will start (``claim`` unrolled)."""
        return await self._rows(sql.WAITING_JOBS, (limit,))

    async def waiting_jobs_of(self, user: UserRef, chat_id: str) -> list[Job]:
        """Return one platform user's waiting takes asked for in one chat."""
        return await self._rows(
            sql.WAITING_JOBS_OF, (user.platform, user.platform_user_id, chat_id)
        )

    async def count_by_state(self) -> dict[JobState, int]:
        """Return how many jobs are in each state."""
        rows = await self._db.query(sql.COUNT_BY_STATE)
        return {JobState(state): int(count) for state, count in rows}

    async def check_writable(self) -> None:
        """Commit a write that changes nothing; raise if the store cannot take writes."""
        await self._db.write(lambda db: db.execute(sql.WRITE_PROBE))

    async def count_unfinished(self, platforms: Sequence[str]) -> int:
        """Return how many jobs for these platforms are not finished yet."""
        query = sql.COUNT_UNFINISHED.format(marks=marks(len(platforms)))
        row = await self._one(query, tuple(platforms))
        return int(row[0]) if row else 0

    async def recent_run_seconds(self, limit: int = 20, backend: str | None = None) -> float | None:
        """Return the mean start-to-finish time of recently finished jobs (of one backend)."""
        return await self._db.read(
            partial(admission.recent_run_seconds, limit=limit, backend=backend)
        )

    async def handles_since(self, since: float) -> set[str]:
        """Return the provider handles stored for jobs touched since ``since``."""
        rows = await self._db.read(lambda db: db.execute(sql.HANDLES_SINCE, (since,)).fetchall())
        return {str(row[0]) for row in rows}

    async def next_wakeup(self, platforms: Sequence[str]) -> float | None:
        """Return when the earliest waiting job for these platforms becomes claimable."""
        query = sql.NEXT_WAKEUP.format(marks=marks(len(platforms)))
        row = await self._one(query, tuple(platforms))
        return None if row is None or row[0] is None else float(row[0])

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
        """Move up to ``limit`` waiting jobs to SUBMITTING under a lease, in start order.

        Claiming for every free slot in one transaction matters when many jobs finish
        together: one claim per slot would queue each behind the others' bookkeeping.

        Deficit round-robin over accounts: the account with the smallest ticket starts its
        oldest claimable take; after ``weight`` takes in a turn it goes to the back of the
        line, as does an account that comes back with nothing waiting. So while a user
        waits, no other user starts more than one turn of takes before them. An account at
        its in-flight cap is skipped and keeps its place.
        """
        now = self._clock()
        pick = sql.CLAIM_PICK.format(marks=marks(len(platforms)))
        lease = (owner, now + lease_seconds, now, now + deadline_seconds, now)

        def claim_one(db: sqlite3.Connection) -> Claimed | None:
            row = db.execute(pick, (now, *platforms)).fetchone()
            if row is None:
                return None
            to = JobState.SUBMITTING
            job_id, account_id, request_id = db.execute(
                sql.CLAIM_JOB, (to.value, *lease, row[0])
            ).fetchone()
            before = changes.Before(job_id, JobState.QUEUED, account_id, request_id, 0, None)
            changes.settle(db, before, to, now, kind=ChangeKind.CLAIMED)
            used, weight = db.execute(sql.USE_TURN, (account_id,)).fetchone()
            if used >= weight:
                db.execute(sql.NEW_TURN, (admission.next_ticket(db), account_id))
            job = job_from_row(db.execute(sql.JOB, (job_id,)).fetchone())
            image = db.execute(sql.REQUEST_IMAGE, (request_id,)).fetchone()
            return Claimed(job, bytes(image[0]), int(image[1]), int(image[2]))

        def claim_many(db: sqlite3.Connection) -> list[Claimed]:
            claimed: list[Claimed] = []
            while len(claimed) < limit and (one := claim_one(db)) is not None:
                claimed.append(one)
            return claimed

        return await self._db.write(claim_many, urgent=True)

    async def claim_next(
        self,
        owner: str,
        *,
        platforms: Sequence[str],
        lease_seconds: float,
        deadline_seconds: float,
    ) -> Job | None:
        """Claim the next waiting job, or return None."""
        claimed = await self.claim(
            owner,
            limit=1,
            platforms=platforms,
            lease_seconds=lease_seconds,
            deadline_seconds=deadline_seconds,
        )
        return claimed[0].job if claimed else None

    async def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        expect: Iterable[JobState] | None = None,
        lease: Lease | None = None,
        **fields: Any,
    ) -> Moved:
        """Move a job to a state, setting extra columns, and say what happened.

        ``SKIPPED`` if it was not in ``expect``, ``LOST`` if ``lease`` is not held any more.
        Its counters, a refund (into FAILED or CANCELED) and its event are written in the
        same transaction (``core.storage.sqlite.changes``).
        """
        allowed = None if expect is None else frozenset(expect)
        move = partial(
            changes.transition, job_id=job_id, to=to, expect=allowed, fields=settable(fields),
            now=self._clock(), lease=lease,
        )  # fmt: skip
        moved, paid = await self._db.write(move)
        if moved is Moved.MOVED:
            job_finished(to, fields, paid)  # counted once committed
        return moved

    async def claim_group(
        self, request_id: str, owner: str, *, lease_seconds: float
    ) -> list[Job] | None:
        """Claim delivering a request's finished takes as one group; None if not now.

        Only when every take is delivering or finished, and only if no live worker holds
        the claim: a claim whose owner lost its leases (crash, stop) is taken over, so a
        restart delivers the group again instead of never. The claimer takes the leases
        of the delivering takes. Returns every take of the request.
        """
        now = self._clock()

        def claim(db: sqlite3.Connection) -> list[Job] | None:
            jobs = [job_from_row(row) for row in db.execute(sql.JOBS_FOR_REQUEST, (request_id,))]
            if not any(job.state is JobState.DELIVERING for job in jobs) or any(
                job.state is not JobState.DELIVERING and not job.state.is_terminal for job in jobs
            ):
                return None
            if not db.execute(sql.GROUP_WIN, (owner, request_id, now)).rowcount:
                return None
            db.execute(sql.GROUP_LEASES, (owner, now + lease_seconds, request_id))
            return [job_from_row(row) for row in db.execute(sql.JOBS_FOR_REQUEST, (request_id,))]

        return await self._db.write(claim)

    async def release_group(self, request_id: str) -> None:
        """Drop a group claim so that the group can be claimed again."""
        await self._db.write(lambda db: db.execute(sql.RELEASE_GROUP, (request_id,)))

    async def waiting_groups(self, owner: str, platforms: Sequence[str]) -> list[str]:
        """Return complete groups (no take still on its way) this worker holds takes of."""
        query = sql.WAITING_GROUPS.format(marks=marks(len(platforms)))
        return [str(row[0]) for row in await self._db.query(query, (owner, *platforms))]

    # --- leases ----------------------------------------------------------------------

    async def heartbeat(self, owner: str, lease_seconds: float) -> None:
        """Extend the leases of every job this worker owns."""
        expires = self._clock() + lease_seconds
        # Urgent: a renewal that waits behind bookkeeping may come after the lease ran out.
        await self._db.write(lambda db: db.execute(sql.HEARTBEAT, (expires, owner)), urgent=True)

    async def renew_lease(self, job_id: str, lease: Lease, lease_seconds: float) -> bool:
        """Extend one job's lease if ``lease`` (owner and token) still holds it."""
        params = (self._clock() + lease_seconds, job_id, lease.owner, lease.token)

        def renew(db: sqlite3.Connection) -> bool:
            return db.execute(sql.RENEW_LEASE, params).rowcount > 0

        # Urgent: a renewal that waits behind bookkeeping may come after the lease ran out.
        return await self._db.write(renew, urgent=True)

    async def adopt_stale(
        self, owner: str, *, platforms: Sequence[str], lease_seconds: float
    ) -> list[Job]:
        """Take over active jobs whose lease expired (their worker died) and return them."""
        now = self._clock()
        query = sql.ADOPT_STALE.format(marks=marks(len(platforms)))

        def adopt(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(query, (owner, now + lease_seconds, now, now, *platforms)).fetchall()
            for job_id, request_id, state in rows:
                kind = ChangeKind.ADOPTED
                changes.record(db, kind, job_id, request_id, JobState(state), None, now)
            return [str(row[0]) for row in rows]

        return await self.jobs_by_ids(await self._db.write(adopt))

    async def expire_lease(self, job_id: str) -> None:
        """Make one unfinished job adoptable at once (its driving task died)."""
        await self._db.write(lambda db: db.execute(sql.EXPIRE_LEASE, (job_id,)))

    async def release_leases(self, owner: str) -> None:
        """Let another worker adopt this worker's jobs at once (graceful shutdown)."""
        await self._db.write(lambda db: db.execute(sql.RELEASE_LEASES, (owner,)))

    # --- events ----------------------------------------------------------------------

    async def events_after(self, cursor: int, limit: int = 100) -> list[JobChange]:
        """Return the job events after ``cursor`` (a ``seq``; 0 for the first), oldest first."""
        return [
            change_from_row(row) for row in await self._db.query(sql.EVENTS_AFTER, (cursor, limit))
        ]

    async def last_events(self, request_id: str) -> list[JobChange]:
        """Return the latest event of each take of a request, in take order."""
        return [
            change_from_row(row) for row in await self._db.query(sql.LAST_EVENTS, (request_id,))
        ]

    async def last_event_seq(self) -> int:
        """Return the newest job event's ``seq`` (0 if none): where a new follower starts."""
        row = await self._one(sql.LAST_EVENT_SEQ)
        return int(row[0]) if row else 0

    # --- operator view ---------------------------------------------------------------

    async def active_jobs(self, limit: int = 1000) -> list[Job]:
        """Return the jobs a worker is on (submitting to delivering), oldest first."""
        return await self._rows(sql.ACTIVE_JOBS, (limit,))

    async def slots_in_use(self) -> dict[str, int]:
        """Return how many takes each backend holds a slot for (submitting or running)."""
        rows = await self._db.query(sql.SLOTS_IN_USE)
        return {str(backend): int(count) for backend, count in rows}

    async def last_failures(self, limit: int = 20) -> list[Job]:
        """Return the most recently failed jobs, newest first."""
        return await self._rows(sql.LAST_FAILURES, (limit,))

    async def usage_by_day(self, since: float, utc_offset_seconds: int = 0) -> list[UsageRow]:
        """Count the takes admitted since ``since`` by day, platform, state, backend, length."""
        rows = await self._db.query(sql.USAGE_BY_DAY, (utc_offset_seconds, since))
        return [usage_row(row) for row in rows]

    # --- retention -------------------------------------------------------------------

    async def finished_before(self, job_ids: Sequence[str], cutoff: float) -> list[str]:
        """Return which of these jobs finished before ``cutoff``."""
        query = sql.FINISHED_BEFORE.format(marks=marks(len(job_ids)))
        return [str(row[0]) for row in await self._db.query(query, (*job_ids, cutoff))]

    async def empty_old_images(self, cutoff: float, limit: int) -> int:
        """Empty up to ``limit`` request photos whose takes all ended before ``cutoff``."""
        return await self._db.write(
            lambda db: db.execute(sql.EMPTY_OLD_IMAGES, (cutoff, limit)).rowcount
        )

    async def delete_old_chat_days(self, before: str, limit: int) -> int:
        """Delete up to ``limit`` per-chat day counts of days (ISO dates) before ``before``."""
        return await self._db.write(
            lambda db: db.execute(sql.DELETE_OLD_CHAT_DAYS, (before, limit)).rowcount
        )
