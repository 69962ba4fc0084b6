"""Requests and jobs on PostgreSQL (the ``JobStore`` protocol).

The semantics are the SQLite engine's (``core.storage.sqlite.jobs``); what differs is how
several processes are kept apart: row locks instead of one writer, ``SKIP LOCKED`` claims,
sequences for ``seq`` and round-robin tickets. Each multi-statement operation is one
transaction (``Database.run``), run again from the start if it lost a deadlock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from core.errors import RequestRejected
from core.metrics import job_finished
from core.models import DeliveryAddress, Job, JobState, Lease, UserRef
from core.quotas import AdmissionPolicy
from core.storage.changes import Before, settable
from core.storage.postgres import admission, changes
from core.storage.postgres.connection import Conn
from core.storage.postgres.database import Database, changed
from core.storage.postgres.queries import jobs as sql
from core.storage.postgres.rows import change_from_record, job_from_record, usage_from_record
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


class PostgresJobs:
    """``JobStore`` on a PostgreSQL ``Database``."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def _jobs(self, query: str, *args: Any) -> list[Job]:
        return [job_from_record(row) for row in await self._db.fetch(query, *args)]

    # --- admission -------------------------------------------------------------------

    async def find_request(self, source_key: str) -> str | None:
        """Return the id of the request stored for a platform event, if any."""
        value = await self._db.fetchval(sql.FIND_REQUEST, source_key)
        return None if value is None else str(value)

    async def precheck(self, user: UserRef, source_key: str, period: str) -> Precheck:
        """Read the account, a stored request for this event, the balance and the queue."""
        row = await self._db.fetchrow(
            sql.PRECHECK, user.platform, user.platform_user_id, source_key, period
        )
        assert row is not None, "the statement always returns one row"
        return admission.precheck(row)

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
        out = await self._db.run(partial(admission.admit, request=request, rules=rules, now=now))
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
        value = await self._db.fetchval(sql.USER_ID, user.platform, user.platform_user_id)
        return None if value is None else int(value)

    # --- reading ---------------------------------------------------------------------

    async def job(self, job_id: str) -> Job | None:
        """Return one job, or None."""
        jobs = await self._jobs(sql.JOB, job_id)
        return jobs[0] if jobs else None

    async def jobs_by_ids(self, job_ids: Iterable[str]) -> list[Job]:
        """Return the jobs with these ids, in queue order."""
        ids = list(job_ids)
        return await self._jobs(sql.JOBS_BY_IDS, ids) if ids else []

    async def jobs_for_request(self, request_id: str) -> list[Job]:
        """Return every take of a request."""
        return await self._jobs(sql.JOBS_FOR_REQUEST, request_id)

    async def request_image(self, request_id: str) -> tuple[bytes, int, int]:
        """Return the prepared image of a request with its width and height."""
        row = await self._db.fetchrow(sql.REQUEST_IMAGE, request_id)
        if row is None:
            raise RequestRejected("request.unknown_job")
        return bytes(row[0]), int(row[1]), int(row[2])

    async def queue_position(self, job_id: str) -> int | None:
        """Return the 1-based place of a waiting job in start order, or None if not waiting."""
        return await self._db.run(partial(admission.waiting_position, job_id=job_id))

    async def waiting_jobs(self, limit: int = 1000) -> list[Job]:
        """Return waiting jobs in the order they will start (``claim`` unrolled)."""
        return await self._jobs(sql.WAITING_JOBS, limit)

    async def waiting_jobs_of(self, user: UserRef, chat_id: str) -> list[Job]:
        """Return one platform user's waiting takes asked for in one chat."""
        return await self._jobs(sql.WAITING_JOBS_OF, user.platform, user.platform_user_id, chat_id)

    async def count_by_state(self) -> dict[JobState, int]:
        """Return how many jobs are in each state."""
        rows = await self._db.fetch(sql.COUNT_BY_STATE)
        return {JobState(state): int(count) for state, count in rows}

    async def check_writable(self) -> None:
        """Commit a write that changes nothing; raise if the store cannot take writes."""

        async def probe(conn: Conn) -> None:
            await conn.execute(sql.WRITE_PROBE)

        await self._db.run(probe)

    async def count_unfinished(self, platforms: Sequence[str]) -> int:
        """Return how many jobs for these platforms are not finished yet."""
        return int(await self._db.fetchval(sql.COUNT_UNFINISHED, list(platforms)))

    async def recent_run_seconds(self, limit: int = 20, backend: str | None = None) -> float | None:
        """Return the mean start-to-finish time of recently finished jobs (of one backend)."""
        value = await self._db.fetchval(sql.RECENT_RUN_SECONDS, limit, backend)
        return None if value is None else float(value)

    async def handles_since(self, since: float) -> set[str]:
        """Return the provider handles stored for jobs touched since ``since``."""
        return {str(row[0]) for row in await self._db.fetch(sql.HANDLES_SINCE, since)}

    async def next_wakeup(self, platforms: Sequence[str]) -> float | None:
        """Return when the earliest waiting job for these platforms becomes claimable."""
        value = await self._db.fetchval(sql.NEXT_WAKEUP, list(platforms))
        return None if value is None else float(value)

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

        The order is SQLite's deficit round-robin over accounts (see ``SqliteJobs.claim``):
        the account with the smallest ticket starts its oldest claimable take, and goes to
        the back after ``weight`` takes. The account's row is locked with ``SKIP LOCKED``,
        so a worker in another process claiming for the same account is not waited for:
        this one takes the next account in line meanwhile.
        """
        now = self._clock()
        kinds = list(platforms)
        lease = (owner, now + lease_seconds, now, now + deadline_seconds, now)

        async def claim_one(conn: Conn, empty: list[int]) -> Claimed | None:
            while (
                account_id := await conn.fetchval(sql.CLAIM_ACCOUNT, now, kinds, empty)
            ) is not None:
                job_id = await conn.fetchval(sql.CLAIM_PICK, account_id, now, kinds)
                if job_id is not None:
                    break
                empty.append(account_id)  # its take is being canceled; try the next one
            else:
                return None
            to = JobState.SUBMITTING
            request_id = await conn.fetchval(sql.CLAIM_JOB, to.value, *lease, job_id)
            before = Before(job_id, JobState.QUEUED, account_id, request_id, 0, None)
            await changes.settle(conn, before, to, now, kind=ChangeKind.CLAIMED)
            turn = await conn.fetchrow(sql.USE_TURN, account_id)
            assert turn is not None, "the account is locked by this claim"
            if turn["turn_used"] >= turn["weight"]:
                await conn.execute(sql.NEW_TURN, account_id)
            row = await conn.fetchrow(sql.CLAIMED, job_id)
            assert row is not None, "claimed under its lock"
            return Claimed(job_from_record(row), bytes(row["image"]), row["image_width"],
                           row["image_height"])  # fmt: skip

        async def claim_many(conn: Conn) -> list[Claimed]:
            claimed: list[Claimed] = []
            empty: list[int] = []
            while len(claimed) < limit and (one := await claim_one(conn, empty)) is not None:
                claimed.append(one)
            return claimed

        return await self._db.run(claim_many)

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
        same transaction (``core.storage.postgres.changes``).
        """
        allowed = None if expect is None else frozenset(expect)
        move = partial(
            changes.transition, job_id=job_id, to=to, expect=allowed, fields=settable(fields),
            now=self._clock(), lease=lease,
        )  # fmt: skip
        moved, paid = await self._db.run(move)
        if moved is Moved.MOVED:
            job_finished(to, fields, paid)  # counted once committed
        return moved

    async def claim_group(
        self, request_id: str, owner: str, *, lease_seconds: float
    ) -> list[Job] | None:
        """Claim delivering a request's finished takes as one group; None if not now.

        As on SQLite: only when every take is delivering or finished, and only if no live
        worker holds the claim. The request's row is locked first, so two claimers decide
        one after the other, each on what the other wrote.
        """
        now = self._clock()

        async def claim(conn: Conn) -> list[Job] | None:
            if await conn.fetchval(sql.LOCK_REQUEST, request_id) is None:
                return None
            jobs = [
                job_from_record(row) for row in await conn.fetch(sql.JOBS_FOR_REQUEST, request_id)
            ]
            if not any(job.state is JobState.DELIVERING for job in jobs) or any(
                job.state is not JobState.DELIVERING and not job.state.is_terminal for job in jobs
            ):
                return None
            if not changed(await conn.execute(sql.GROUP_WIN, owner, request_id, now)):
                return None
            await conn.execute(sql.GROUP_LEASES, owner, now + lease_seconds, request_id)
            # As they stand after the claim: under the claimer's leases.
            rows = await conn.fetch(sql.JOBS_FOR_REQUEST, request_id)
            return [job_from_record(row) for row in rows]

        return await self._db.run(claim)

    async def release_group(self, request_id: str) -> None:
        """Drop a group claim so that the group can be claimed again."""
        await self._db.execute(sql.RELEASE_GROUP, request_id)

    async def waiting_groups(self, owner: str, platforms: Sequence[str]) -> list[str]:
        """Return complete groups (no take still on its way) this worker holds takes of."""
        rows = await self._db.fetch(sql.WAITING_GROUPS, owner, list(platforms))
        return [str(row[0]) for row in rows]

    # --- leases ----------------------------------------------------------------------

    async def heartbeat(self, owner: str, lease_seconds: float) -> None:
        """Extend the leases of every job this worker owns."""
        await self._db.execute(sql.HEARTBEAT, self._clock() + lease_seconds, owner)

    async def renew_lease(self, job_id: str, lease: Lease, lease_seconds: float) -> bool:
        """Extend one job's lease if ``lease`` (owner and token) still holds it."""
        expires = self._clock() + lease_seconds
        return (
            await self._db.execute(sql.RENEW_LEASE, expires, job_id, lease.owner, lease.token) > 0
        )

    async def adopt_stale(
        self, owner: str, *, platforms: Sequence[str], lease_seconds: float
    ) -> list[Job]:
        """Take over active jobs whose lease expired (their worker died) and return them."""
        now = self._clock()

        async def adopt(conn: Conn) -> list[str]:
            rows = await conn.fetch(
                sql.ADOPT_STALE, owner, now + lease_seconds, now, list(platforms)
            )
            for job_id, request_id, state in rows:
                kind = ChangeKind.ADOPTED
                await changes.record(conn, kind, job_id, request_id, JobState(state), None, now)
            return [str(row[0]) for row in rows]

        return await self.jobs_by_ids(await self._db.run(adopt))

    async def expire_lease(self, job_id: str) -> None:
        """Make one unfinished job adoptable at once (its driving task died)."""
        await self._db.execute(sql.EXPIRE_LEASE, job_id)

    async def release_leases(self, owner: str) -> None:
        """Let another worker adopt this worker's jobs at once (graceful shutdown)."""
        await self._db.execute(sql.RELEASE_LEASES, owner)

    # --- events ----------------------------------------------------------------------

    async def events_after(self, cursor: int, limit: int = 100) -> list[JobChange]:
        """Return the job events after ``cursor`` (a ``seq``; 0 for the first), oldest first.

        Seqs are handed out when a row is inserted, not when it commits, so a row with a
        smaller seq may still become visible after a larger one. Only seqs up to the last
        one handed out before every writer holding the events lock has finished are
        returned: a follower never steps past a row that is still to come.
        """

        async def settled(conn: Conn) -> int:
            bound = int(await conn.fetchval(sql.LAST_EVENT_SEQ))
            await conn.execute(sql.SETTLE_EVENTS, changes.EVENTS_LOCK)
            return bound

        bound = await self._db.run(settled)
        rows = await self._db.fetch(sql.EVENTS_AFTER, cursor, bound, limit)
        return [change_from_record(row) for row in rows]

    async def last_events(self, request_id: str) -> list[JobChange]:
        """Return the latest event of each take of a request, in take order."""
        rows = await self._db.fetch(sql.LAST_EVENTS, request_id)
        return [change_from_record(row) for row in rows]

    async def last_event_seq(self) -> int:
        """Return the newest job event's ``seq`` (0 if none): where a new follower starts."""
        return int(await self._db.fetchval(sql.LAST_SEQ_OF_EVENTS))

    # --- operator view ---------------------------------------------------------------

    async def active_jobs(self, limit: int = 1000) -> list[Job]:
        """Return the jobs a worker is on (submitting to delivering), oldest first."""
        return await self._jobs(sql.ACTIVE_JOBS, limit)

    async def slots_in_use(self) -> dict[str, int]:
        """Return how many takes each backend holds a slot for (submitting or running)."""
        rows = await self._db.fetch(sql.SLOTS_IN_USE)
        return {str(backend): int(count) for backend, count in rows}

    async def last_failures(self, limit: int = 20) -> list[Job]:
        """Return the most recently failed jobs, newest first."""
        return await self._jobs(sql.LAST_FAILURES, limit)

    async def usage_by_day(self, since: float, utc_offset_seconds: int = 0) -> list[UsageRow]:
        """Count the takes admitted since ``since`` by day, platform, state, backend, length."""
        rows = await self._db.fetch(sql.USAGE_BY_DAY, utc_offset_seconds, since)
        return [usage_from_record(row) for row in rows]

    # --- retention -------------------------------------------------------------------

    async def finished_before(self, job_ids: Sequence[str], cutoff: float) -> list[str]:
        """Return which of these jobs finished before ``cutoff``."""
        rows = await self._db.fetch(sql.FINISHED_BEFORE, list(job_ids), cutoff)
        return [str(row[0]) for row in rows]

    async def empty_old_images(self, cutoff: float, limit: int) -> int:
        """Empty up to ``limit`` request photos whose takes all ended before ``cutoff``."""
        return await self._db.execute(sql.EMPTY_OLD_IMAGES, cutoff, limit)

    async def delete_old_chat_days(self, before: str, limit: int) -> int:
        """Delete up to ``limit`` per-chat day counts of days (ISO dates) before ``before``."""
        return await self._db.execute(sql.DELETE_OLD_CHAT_DAYS, before, limit)
