"""Durable state on SQLite: users, accounts, requests, jobs (connection in core/database).

Hot paths (admission, claim, transitions) run as one synchronous function on the database
thread (``Store.write``): BEGIN, every statement and COMMIT cost one round trip to the
writer thread instead of one per statement.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from core import ledger
from core.database import Database
from core.errors import RequestRejected
from core.ledger import Account
from core.models import ACTIVE_STATES, DeliveryAddress, Job, JobState, UserRef
from core.quotas import AdmissionPolicy

# Job fields in the order _JOB_COLUMNS selects them; the address comes from the request.
_JOB_ROW = (
    "id", "request_id", "user_id", "take", "takes", "state", "line", "speech", "language",
    "seconds", "seed", "voice", "attempts", "handle", "created_at", "updated_at",
    "started_at", "finished_at", "error_key", "error_params", "error_detail", "result_path",
    "resubmitted", "not_before", "deadline_at", "delivery_unconfirmed", "backend",
    "retake_reason",
)  # fmt: skip
_JOB_COLUMNS = ", ".join(f"j.{name}" for name in _JOB_ROW) + ", r.address"
_JOB_FROM = "FROM jobs j JOIN requests r ON r.id = j.request_id"


@dataclass(frozen=True)
class NewTake:
    """One take to insert at admission."""

    line: str
    speech: str
    language: str
    seconds: int
    seed: int
    voice: str | None


@dataclass(frozen=True)
class Claimed:
    """A job just claimed, with the prepared image its backend submit needs."""

    job: Job
    image_jpeg: bytes
    width: int
    height: int


@dataclass(frozen=True)
class Admitted:
    """What admission wrote: the request id, its jobs, and where the first one stands."""

    request_id: str
    jobs: tuple[Job, ...]
    position: int | None = None  # 1-based start position of the first take
    run_seconds: float | None = None  # mean run time of recent jobs, for the ETA
    credits_left: int | None = None  # None when nothing was charged


@dataclass(frozen=True)
class Precheck:
    """What the checks before image decoding need, read in one round trip."""

    account: Account | None  # None: the user never used the bot
    existing_request: str | None  # the request already stored for this event
    credits: int | None  # None: the period has not started for this account
    total_queued: int


def new_id() -> str:
    """Return a short random id, safe to show users and to put in callback data."""
    return uuid.uuid4().hex[:16]


def _address_to_json(address: DeliveryAddress) -> str:
    return json.dumps(
        {
            "platform": address.platform,
            "chat_id": address.chat_id,
            "reply_to": address.reply_to,
            "thread_id": address.thread_id,
            "status_message_id": address.status_message_id,
            "extra": address.extra,
        },
        ensure_ascii=False,
    )


def _address_from_json(text: str) -> DeliveryAddress:
    return DeliveryAddress(**json.loads(text))


def _job_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Job:
    values: dict[str, Any] = dict(zip(_JOB_ROW, row[:-1], strict=True))
    values["state"] = JobState(values["state"])
    values["error_params"] = json.loads(values["error_params"])
    values["resubmitted"] = bool(values["resubmitted"])
    values["delivery_unconfirmed"] = bool(values["delivery_unconfirmed"])
    return Job(**values, address=_address_from_json(row[-1]))


def _recent_run_seconds(
    db: sqlite3.Connection, limit: int = 20, backend: str | None = None
) -> float | None:
    # Per backend when given: a hosted model takes minutes where the preview takes seconds.
    where = "" if backend is None else " AND backend = ?"
    row = db.execute(
        "SELECT avg(finished_at - started_at) FROM (SELECT finished_at, started_at FROM jobs"
        f" WHERE state = 'done' AND started_at IS NOT NULL{where}"
        " ORDER BY finished_at DESC LIMIT ?)",
        (limit,) if backend is None else (backend, limit),
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


class Store(Database):
    """Users, requests and jobs: every query the core runs, on one ``Database``."""

    # --- admission -------------------------------------------------------------------

    async def find_request(self, source_key: str) -> str | None:
        """Return the id of the request stored for a platform event, if any."""
        row = await self._fetchone("SELECT id FROM requests WHERE source_key = ?", (source_key,))
        return None if row is None else str(row[0])

    async def precheck(self, user: UserRef, source_key: str, period: str) -> Precheck:
        """Read the account, a stored request for this event, the balance and the queue."""

        def read(db: sqlite3.Connection) -> Precheck:
            account = ledger.account_of(db, user.platform, user.platform_user_id)
            row = db.execute("SELECT id FROM requests WHERE source_key = ?", (source_key,))
            existing = row.fetchone()
            credits = None if account is None else ledger.peek_balance(db, account.id, period)
            return Precheck(
                account, None if existing is None else str(existing[0]), credits,
                ledger.total_queued(db),
            )  # fmt: skip

        return await self.read(read)

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
        """Check quotas, debit credits and insert a request with its takes, atomically.

        A repeated source key is refused before any check, so a redelivered event gets
        "duplicate" and is never charged twice; any refusal rolls everything back. Without
        a policy nothing is enforced: the takes are only put in fair order.
        """
        now = self._clock()
        rules = policy or AdmissionPolicy(now=now)
        request_id = new_id()
        job_ids = [new_id() for _ in takes]
        costs = [rules.cost(take.seconds) for take in takes]

        def admit(db: sqlite3.Connection) -> tuple[int, int, int | None, float | None, int | None]:
            user_id, account_id = ledger.ensure_user(db, user, now)
            try:
                db.execute(
                    "INSERT INTO requests (id, source_key, user_id, line, image, image_width,"
                    " image_height, address, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        request_id, source_key, user_id, line, image_jpeg,
                        image_size[0], image_size[1], _address_to_json(address), now,
                    ),
                )  # fmt: skip
            except sqlite3.IntegrityError:
                raise RequestRejected("request.duplicate") from None
            account = ledger.load_account(db, account_id)
            limits = rules.limits(account.role)
            rules.check_access(account)
            total = ledger.total_queued(db) if rules.enforce else 0
            rules.check_caps(
                queued=account.queued, total_queued=total, takes=len(takes), limits=limits
            )
            if rules.counts_chats:
                chat = (address.platform, address.chat_id, rules.chat_day.key)
                rules.check_chat(ledger.add_chat_takes(db, *chat, len(takes)), 0)
            period, cost = rules.period.key, sum(costs)
            credits = None
            if cost:
                credits = ledger.take_credits(db, account_id, period, cost)
                if credits is None:  # not enough, or the period's first request
                    balance = ledger.open_balance(db, account_id, period, limits.credits, now)
                    rules.check_credits(balance, cost)
                    credits = ledger.take_credits(db, account_id, period, cost)
                    assert credits is not None
            # An account with nothing waiting rejoins the round-robin at the back.
            idle = account.queued == 0
            ticket = ledger.next_ticket(db) if idle else account.ticket
            used = 0 if idle else account.turn_used
            db.execute(
                "UPDATE accounts SET ticket = ?, turn_used = ?, weight = ?, max_in_flight = ?"
                " WHERE id = ?",
                (ticket, used, limits.weight, limits.max_in_flight, account_id),
            )
            seq = int(db.execute("SELECT coalesce(max(seq), 0) FROM jobs").fetchone()[0])
            db.executemany(
                "INSERT INTO jobs (id, seq, request_id, user_id, account_id, platform, take,"
                " takes, state, fair_round, line, speech, language, seconds, seed, voice,"
                " created_at, updated_at, charged, charge_period)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        job_id, seq + index + 1, request_id, user_id, account_id,
                        address.platform, index + 1, len(takes), take.line, take.speech,
                        take.language, take.seconds, take.seed, take.voice, now, now,
                        charge, period,
                    )
                    for index, (job_id, take, charge) in enumerate(
                        zip(job_ids, takes, costs, strict=True)
                    )
                ],
            )  # fmt: skip
            if credits is not None:
                charges = list(zip(job_ids, costs, strict=True))
                ledger.record_debits(db, account_id, period, charges, now)
            rank = account.queued + 1
            position = ledger.queue_position(db, account_id, rank, ticket, used, limits.weight)
            run_seconds = _recent_run_seconds(db, backend=run_backend)
            return user_id, account_id, position, run_seconds, credits

        user_id, _, position, run_seconds, credits = await self.write(admit)
        jobs = tuple(
            Job(
                id=job_id, request_id=request_id, user_id=user_id, take=index + 1,
                takes=len(takes), state=JobState.QUEUED, line=take.line, speech=take.speech,
                language=take.language, seconds=take.seconds, seed=take.seed, voice=take.voice,
                address=address, attempts=0, handle=None, created_at=now, updated_at=now,
                started_at=None, finished_at=None, error_key=None, error_params={},
                error_detail=None, result_path=None, resubmitted=False, not_before=0.0,
                deadline_at=None,
            )
            for index, (job_id, take) in enumerate(zip(job_ids, takes, strict=True))
        )  # fmt: skip
        return Admitted(request_id, jobs, position, run_seconds, credits)

    async def user_id(self, user: UserRef) -> int | None:
        """Return the internal id of a platform user, if known."""
        row = await self._fetchone(
            "SELECT id FROM users WHERE platform = ? AND platform_user_id = ?",
            (user.platform, user.platform_user_id),
        )
        return None if row is None else int(row[0])

    # --- reading ---------------------------------------------------------------------

    async def job(self, job_id: str) -> Job | None:
        """Return one job, or None."""
        row = await self._fetchone(f"SELECT {_JOB_COLUMNS} {_JOB_FROM} WHERE j.id = ?", (job_id,))
        return None if row is None else _job_from_row(row)

    async def jobs_by_ids(self, job_ids: Iterable[str]) -> list[Job]:
        """Return the jobs with these ids, in queue order."""
        ids = list(job_ids)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = await self._fetchall(
            f"SELECT {_JOB_COLUMNS} {_JOB_FROM} WHERE j.id IN ({marks}) ORDER BY j.seq", ids
        )
        return [_job_from_row(row) for row in rows]

    async def jobs_for_request(self, request_id: str) -> list[Job]:
        """Return every take of a request."""
        rows = await self._fetchall(
            f"SELECT {_JOB_COLUMNS} {_JOB_FROM} WHERE j.request_id = ? ORDER BY j.take",
            (request_id,),
        )
        return [_job_from_row(row) for row in rows]

    async def request_image(self, request_id: str) -> tuple[bytes, int, int]:
        """Return the prepared image of a request with its width and height."""
        row = await self._fetchone(
            "SELECT image, image_width, image_height FROM requests WHERE id = ?", (request_id,)
        )
        if row is None:
            raise RequestRejected("request.unknown_job")
        return bytes(row[0]), int(row[1]), int(row[2])

    async def queue_position(self, job_id: str) -> int | None:
        """Return the 1-based place of a waiting job in start order, or None if not waiting."""

        def position(db: sqlite3.Connection) -> int | None:
            row = db.execute(
                "SELECT j.account_id, j.seq, a.ticket, a.turn_used, a.weight FROM jobs j"
                " JOIN accounts a ON a.id = j.account_id WHERE j.id = ? AND j.state = 'queued'",
                (job_id,),
            ).fetchone()
            if row is None:
                return None
            account_id, seq, ticket, used, weight = row
            rank = db.execute(
                "SELECT count(*) FROM jobs WHERE account_id = ? AND state = 'queued' AND seq <= ?",
                (account_id, seq),
            ).fetchone()[0]
            return ledger.queue_position(db, account_id, int(rank), ticket, used, weight)

        return await self.read(position)

    async def waiting_jobs(self, limit: int = 1000) -> list[Job]:
        """Return waiting jobs in the order they will start (``claim_next`` unrolled)."""
        rows = await self._fetchall(
            "WITH w AS (SELECT j.id, j.seq, a.ticket, (a.turn_used - 1 + row_number()"
            " OVER (PARTITION BY j.account_id ORDER BY j.seq)) / a.weight AS turn"
            " FROM jobs j JOIN accounts a ON a.id = j.account_id WHERE j.state = 'queued')"
            f" SELECT {_JOB_COLUMNS} FROM w JOIN jobs j ON j.id = w.id"
            " JOIN requests r ON r.id = j.request_id"
            " ORDER BY w.turn, w.ticket, w.seq LIMIT ?",
            (limit,),
        )
        return [_job_from_row(row) for row in rows]

    async def waiting_jobs_of(self, user: UserRef, chat_id: str) -> list[Job]:
        """Return one platform user's waiting takes asked for in one chat."""
        rows = await self._fetchall(
            f"SELECT {_JOB_COLUMNS} {_JOB_FROM} JOIN users u ON u.id = j.user_id"
            " WHERE j.state = 'queued' AND u.platform = ? AND u.platform_user_id = ?"
            " AND json_extract(r.address, '$.chat_id') = ? ORDER BY j.seq",
            (user.platform, user.platform_user_id, chat_id),
        )
        return [_job_from_row(row) for row in rows]

    async def count_by_state(self) -> dict[JobState, int]:
        """Return how many jobs are in each state."""
        rows = await self._fetchall("SELECT state, count(*) FROM jobs GROUP BY state")
        return {JobState(state): int(count) for state, count in rows}

    async def count_unfinished(self, platforms: Sequence[str]) -> int:
        """Return how many jobs for these platforms are not finished yet."""
        marks = ",".join("?" * len(platforms))
        row = await self._fetchone(
            "SELECT count(*) FROM jobs WHERE state NOT IN ('done', 'failed', 'canceled')"
            f" AND platform IN ({marks})",
            tuple(platforms),
        )
        return int(row[0]) if row else 0

    async def recent_run_seconds(self, limit: int = 20, backend: str | None = None) -> float | None:
        """Return the mean start-to-finish time of recently finished jobs (of one backend)."""
        return await self.read(partial(_recent_run_seconds, limit=limit, backend=backend))

    async def handles_since(self, since: float) -> set[str]:
        """Return the provider handles stored for jobs touched since ``since``.

        A lookup of a lost submit must not adopt a provider job another take already holds.
        """
        rows = await self._fetchall(
            "SELECT handle FROM jobs WHERE handle IS NOT NULL AND updated_at >= ?", (since,)
        )
        return {str(row[0]) for row in rows}

    # --- worker transitions ----------------------------------------------------------

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
        marks = ",".join("?" * len(platforms))
        # Walk the accounts in ticket order and stop at the first with a claimable take:
        # no sort of the whole queue per claim.
        pick = (
            "SELECT (SELECT j.id FROM jobs j WHERE j.account_id = a.id AND j.state = 'queued'"
            f" AND j.not_before <= ? AND j.platform IN ({marks}) ORDER BY j.seq LIMIT 1) AS job,"
            " a.id FROM accounts a WHERE a.queued > 0 AND a.in_flight < a.max_in_flight"
            " AND job IS NOT NULL ORDER BY a.ticket, a.id LIMIT 1"
        )

        def claim_one(db: sqlite3.Connection) -> Any | None:
            row = db.execute(pick, (now, *platforms)).fetchone()
            if row is None:
                return None
            job_id, account_id = row
            db.execute(
                "UPDATE jobs SET state = 'submitting', lease_owner = ?, lease_expires = ?,"
                " attempts = attempts + 1, started_at = coalesce(started_at, ?),"
                " deadline_at = coalesce(deadline_at, ?), updated_at = ? WHERE id = ?",
                (owner, now + lease_seconds, now, now + deadline_seconds, now, job_id),
            )
            used, weight = db.execute(
                "UPDATE accounts SET turn_used = turn_used + 1 WHERE id = ?"
                " RETURNING turn_used, weight",
                (account_id,),
            ).fetchone()
            if used >= weight:
                db.execute(
                    "UPDATE accounts SET ticket = ?, turn_used = 0 WHERE id = ?",
                    (ledger.next_ticket(db), account_id),
                )
            return db.execute(
                f"SELECT {_JOB_COLUMNS} {_JOB_FROM} WHERE j.id = ?", (job_id,)
            ).fetchone()

        def claim_many(db: sqlite3.Connection) -> list[tuple[Any, Any]]:
            claimed = []
            for _ in range(limit):
                row = claim_one(db)
                if row is None:
                    break
                image = db.execute(
                    "SELECT image, image_width, image_height FROM requests WHERE id = ?",
                    (row[1],),
                ).fetchone()
                claimed.append((row, image))
            return claimed

        return [
            Claimed(_job_from_row(row), bytes(image[0]), int(image[1]), int(image[2]))
            for row, image in await self.write(claim_many, urgent=True)
        ]

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

    async def next_wakeup(self, platforms: Sequence[str]) -> float | None:
        """Return when the earliest waiting job for these platforms becomes claimable."""
        marks = ",".join("?" * len(platforms))
        row = await self._fetchone(
            f"SELECT min(not_before) FROM jobs WHERE state = 'queued' AND platform IN ({marks})",
            tuple(platforms),
        )
        return None if row is None or row[0] is None else float(row[0])

    async def adopt_stale(
        self, owner: str, *, platforms: Sequence[str], lease_seconds: float
    ) -> list[Job]:
        """Take over active jobs whose lease expired (their worker died) and return them."""
        now = self._clock()
        states = tuple(state.value for state in ACTIVE_STATES)
        marks = ",".join("?" * len(states))
        platform_marks = ",".join("?" * len(platforms))
        async with self.transaction() as db:
            rows = await db.execute_fetchall(
                f"UPDATE jobs SET lease_owner = ?, lease_expires = ?, updated_at = ?"
                f" WHERE state IN ({marks}) AND lease_expires < ?"
                f" AND platform IN ({platform_marks}) RETURNING id",
                (owner, now + lease_seconds, now, *states, now, *platforms),
            )
            ids = [str(row[0]) for row in rows]
        return await self.jobs_by_ids(ids)

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
            rows = db.execute(
                f"SELECT {_JOB_COLUMNS} {_JOB_FROM} WHERE j.request_id = ? ORDER BY j.take",
                (request_id,),
            ).fetchall()
            jobs = [_job_from_row(row) for row in rows]
            if not any(job.state is JobState.DELIVERING for job in jobs) or any(
                job.state is not JobState.DELIVERING and not job.state.is_terminal for job in jobs
            ):
                return None
            won = db.execute(
                "UPDATE requests SET group_owner = ? WHERE id = ? AND (group_owner IS NULL"
                " OR NOT EXISTS (SELECT 1 FROM jobs WHERE request_id = requests.id"
                " AND state = 'delivering' AND lease_owner = requests.group_owner"
                " AND lease_expires >= ?))",
                (owner, request_id, now),
            ).rowcount
            if not won:
                return None
            db.execute(
                "UPDATE jobs SET lease_owner = ?, lease_expires = ?"
                " WHERE request_id = ? AND state = 'delivering'",
                (owner, now + lease_seconds, request_id),
            )
            return jobs

        return await self.write(claim)

    async def release_group(self, request_id: str) -> None:
        """Drop a group claim so that the group can be claimed again."""
        await self.write(
            lambda db: db.execute(
                "UPDATE requests SET group_owner = NULL WHERE id = ?", (request_id,)
            )
        )

    async def waiting_groups(self, owner: str, platforms: Sequence[str]) -> list[str]:
        """Return complete groups (no take still on its way) this worker holds takes of."""
        marks = ",".join("?" * len(platforms))
        rows = await self._fetchall(
            "SELECT DISTINCT request_id FROM jobs j WHERE state = 'delivering' AND takes > 1"
            f" AND lease_owner = ? AND platform IN ({marks}) AND NOT EXISTS (SELECT 1"
            " FROM jobs s WHERE s.request_id = j.request_id"
            " AND s.state NOT IN ('delivering', 'done', 'failed', 'canceled'))",
            (owner, *platforms),
        )
        return [str(row[0]) for row in rows]

    async def heartbeat(self, owner: str, lease_seconds: float) -> None:
        """Extend the leases of every job this worker owns."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE jobs SET lease_expires = ? WHERE lease_owner = ?"
                " AND state NOT IN ('queued', 'done', 'failed', 'canceled')",
                (self._clock() + lease_seconds, owner),
            )

    async def expire_lease(self, job_id: str) -> None:
        """Make one unfinished job adoptable at once (its driving task died)."""
        sql = (
            "UPDATE jobs SET lease_expires = 0 WHERE id = ?"
            " AND state NOT IN ('queued', 'done', 'failed', 'canceled')"
        )
        await self.write(lambda db: db.execute(sql, (job_id,)))

    async def release_leases(self, owner: str) -> None:
        """Let another worker adopt this worker's jobs at once (graceful shutdown)."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE jobs SET lease_expires = 0 WHERE lease_owner = ?"
                " AND state NOT IN ('queued', 'done', 'failed', 'canceled')",
                (owner,),
            )

    async def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        expect: Iterable[JobState] | None = None,
        **fields: Any,
    ) -> bool:
        """Move a job to a state, setting extra columns; False if it was not in ``expect``."""
        allowed = {
            "handle", "resubmitted", "result_path", "error_key", "error_params",
            "error_detail", "not_before", "lease_owner", "lease_expires", "finished_at",
            "delivery_unconfirmed", "backend", "retake_reason",
        }  # fmt: skip
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)}")
        now = self._clock()
        if to.is_terminal:
            fields.setdefault("finished_at", now)
        if "error_params" in fields:
            fields["error_params"] = json.dumps(fields["error_params"], ensure_ascii=False)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        sql = f"UPDATE jobs SET state = ?, updated_at = ?{', ' if fields else ''}{assignments}"
        sql += " WHERE id = ?"
        params: list[Any] = [to.value, now, *fields.values(), job_id]
        if expect is not None:
            states = [state.value for state in expect]
            sql += f" AND state IN ({','.join('?' * len(states))})"
            params.extend(states)
        # Into FAILED or CANCELED, the refund trigger pays the credits back in this same
        # transaction (see migrations 3 and 4).
        return await self.write(lambda db: db.execute(sql, params).rowcount > 0)

    async def set_status_message(self, request_id: str, message_id: str | None) -> None:
        """Remember the status message an adapter keeps editing for a request."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE requests SET address = json_set(address, '$.status_message_id', ?)"
                " WHERE id = ?",
                (message_id, request_id),
            )
