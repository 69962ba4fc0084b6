"""Durable state on SQLite: users, requests, jobs. One connection, one writer.

Every write runs inside ``BEGIN IMMEDIATE`` so that a transaction takes the write lock up
front instead of failing half-way with SQLITE_BUSY. WAL with ``synchronous=NORMAL`` keeps
every committed transaction across a process crash (only a power loss may drop the last
few), which is the durability the job life cycle needs.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from core.errors import RequestRejected
from core.models import ACTIVE_STATES, DeliveryAddress, Job, JobState, UserRef

# Each entry upgrades the schema by one version; never edit a shipped entry, append one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        platform TEXT NOT NULL,
        platform_user_id TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        locale TEXT,
        created_at REAL NOT NULL,
        UNIQUE (platform, platform_user_id)
    );
    CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        source_key TEXT NOT NULL UNIQUE,
        user_id INTEGER NOT NULL REFERENCES users(id),
        line TEXT NOT NULL,
        image BLOB NOT NULL,
        image_width INTEGER NOT NULL,
        image_height INTEGER NOT NULL,
        address TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        request_id TEXT NOT NULL REFERENCES requests(id),
        user_id INTEGER NOT NULL REFERENCES users(id),
        platform TEXT NOT NULL,
        take INTEGER NOT NULL,
        takes INTEGER NOT NULL,
        state TEXT NOT NULL,
        fair_round INTEGER NOT NULL,
        line TEXT NOT NULL,
        speech TEXT NOT NULL,
        language TEXT NOT NULL,
        seconds INTEGER NOT NULL,
        seed INTEGER NOT NULL,
        voice TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        handle TEXT,
        resubmitted INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires REAL NOT NULL DEFAULT 0,
        not_before REAL NOT NULL DEFAULT 0,
        deadline_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        error_key TEXT,
        error_params TEXT NOT NULL DEFAULT '{}',
        error_detail TEXT,
        result_path TEXT
    );
    CREATE UNIQUE INDEX jobs_seq ON jobs (seq);
    CREATE INDEX jobs_waiting ON jobs (platform, fair_round, seq) WHERE state = 'queued';
    CREATE INDEX jobs_active ON jobs (state, lease_expires)
        WHERE state NOT IN ('queued', 'done', 'failed', 'canceled');
    CREATE INDEX jobs_by_user ON jobs (user_id, state);
    CREATE INDEX jobs_by_request ON jobs (request_id);
    CREATE TABLE scheduler (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        current_round INTEGER NOT NULL
    );
    INSERT INTO scheduler (id, current_round) VALUES (1, 0);
    """,
    # Chat adapters' own state (core/chatstate.py): the inbox of platform events stored
    # before anything else happens, remembered photos, button ids, language, history.
    """
    CREATE TABLE chat_inbox (
        platform TEXT NOT NULL,
        key TEXT NOT NULL,
        payload TEXT NOT NULL,
        first_reply TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        received_at REAL NOT NULL,
        done_at REAL,
        PRIMARY KEY (platform, key)
    );
    CREATE INDEX chat_inbox_open ON chat_inbox (platform, received_at) WHERE done_at IS NULL;
    CREATE TABLE chat_photos (
        platform TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        file_ref TEXT,
        request_id TEXT,
        message_id TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (platform, chat_id, user_id)
    );
    CREATE TABLE chat_buttons (
        id TEXT PRIMARY KEY,
        platform TEXT NOT NULL,
        action TEXT NOT NULL,
        request_id TEXT NOT NULL,
        job_id TEXT,
        owner TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE chat_prefs (
        platform TEXT NOT NULL,
        user_id TEXT NOT NULL,
        locale TEXT,
        PRIMARY KEY (platform, user_id)
    );
    CREATE TABLE chat_history (
        platform TEXT NOT NULL,
        user_id TEXT NOT NULL,
        job_id TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        file_ref TEXT NOT NULL,
        caption TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (platform, job_id)
    );
    CREATE INDEX chat_history_by_user ON chat_history (platform, user_id, created_at);
    """,
)

_JOB_COLUMNS = """
    j.id, j.request_id, j.user_id, j.take, j.takes, j.state, j.line, j.speech, j.language,
    j.seconds, j.seed, j.voice, j.attempts, j.handle, j.created_at, j.updated_at,
    j.started_at, j.finished_at, j.error_key, j.error_params, j.error_detail, j.result_path,
    j.resubmitted, j.not_before, j.deadline_at, r.address
"""
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
class Admitted:
    """What admission wrote: the request id and its jobs."""

    request_id: str
    jobs: tuple[Job, ...]


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
    (
        job_id, request_id, user_id, take, takes, state, line, speech, language,
        seconds, seed, voice, attempts, handle, created_at, updated_at,
        started_at, finished_at, error_key, error_params, error_detail, result_path,
        resubmitted, not_before, deadline_at, address,
    ) = row  # fmt: skip
    return Job(
        id=job_id,
        request_id=request_id,
        user_id=user_id,
        take=take,
        takes=takes,
        state=JobState(state),
        line=line,
        speech=speech,
        language=language,
        seconds=seconds,
        seed=seed,
        voice=voice,
        address=_address_from_json(address),
        attempts=attempts,
        handle=handle,
        created_at=created_at,
        updated_at=updated_at,
        started_at=started_at,
        finished_at=finished_at,
        error_key=error_key,
        error_params=json.loads(error_params),
        error_detail=error_detail,
        result_path=result_path,
        resubmitted=bool(resubmitted),
        not_before=not_before,
        deadline_at=deadline_at,
    )


class Store:
    """Async access to the SQLite database; create with ``await Store.open(path)``."""

    def __init__(self, conn: aiosqlite.Connection, *, clock: Any = time.time) -> None:
        self._conn = conn
        self._write_lock = asyncio.Lock()
        self._clock = clock

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating if needed) the database and bring its schema up to date."""
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        store = cls(conn)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=5000")
            await store._migrate()
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection."""
        await self._conn.close()

    async def _migrate(self) -> None:
        async with self._conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits on its own; the version bump is part of the script.
            await self._conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Run a write transaction (BEGIN IMMEDIATE) on the single writer connection."""
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            else:
                await self._conn.execute("COMMIT")

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a read-only statement outside any transaction (for modules that own tables)."""
        return await self._fetchall(sql, params)

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    # --- admission -------------------------------------------------------------------

    async def find_request(self, source_key: str) -> str | None:
        """Return the id of the request stored for a platform event, if any."""
        row = await self._fetchone("SELECT id FROM requests WHERE source_key = ?", (source_key,))
        return None if row is None else str(row[0])

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
    ) -> Admitted:
        """Insert a request and its takes in one transaction; a repeated source key is refused."""
        now = self._clock()
        request_id = new_id()
        async with self.transaction() as db:
            user_id = await self._upsert_user(db, user, now)
            try:
                await db.execute(
                    "INSERT INTO requests (id, source_key, user_id, line, image, image_width,"
                    " image_height, address, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        request_id,
                        source_key,
                        user_id,
                        line,
                        image_jpeg,
                        image_size[0],
                        image_size[1],
                        _address_to_json(address),
                        now,
                    ),
                )
            except sqlite3.IntegrityError:
                raise RequestRejected("request.duplicate") from None
            first_round = await self._next_round(db, user_id)
            rows = await db.execute_fetchall("SELECT coalesce(max(seq), 0) FROM jobs")
            seq = int(next(iter(rows))[0])
            jobs = []
            for index, take in enumerate(takes):
                seq += 1
                job_id = new_id()
                await db.execute(
                    "INSERT INTO jobs (id, seq, request_id, user_id, platform, take, takes, state,"
                    " fair_round, line, speech, language, seconds, seed, voice, created_at,"
                    " updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        seq,
                        request_id,
                        user_id,
                        address.platform,
                        index + 1,
                        len(takes),
                        first_round + index,
                        take.line,
                        take.speech,
                        take.language,
                        take.seconds,
                        take.seed,
                        take.voice,
                        now,
                        now,
                    ),
                )
                jobs.append(job_id)
        loaded = await self.jobs_by_ids(jobs)
        return Admitted(request_id=request_id, jobs=tuple(loaded))

    async def _upsert_user(self, db: aiosqlite.Connection, user: UserRef, now: float) -> int:
        rows = await db.execute_fetchall(
            "INSERT INTO users (platform, platform_user_id, display_name, locale, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (platform, platform_user_id) DO UPDATE SET"
            " display_name = excluded.display_name,"
            " locale = coalesce(excluded.locale, users.locale) RETURNING id",
            (user.platform, user.platform_user_id, user.display_name, user.locale, now),
        )
        return int(next(iter(rows))[0])

    async def _next_round(self, db: aiosqlite.Connection, user_id: int) -> int:
        """Return the fair-queueing round for a user's next job.

        Jobs are started in (round, arrival) order. A user's waiting jobs take consecutive
        rounds starting at the scheduler's current round, so with any set of waiting jobs
        a user's k-th job starts after at most k jobs of any other single user.
        """
        rows = await db.execute_fetchall(
            "SELECT max(fair_round) FROM jobs WHERE user_id = ? AND state = 'queued'",
            (user_id,),
        )
        last = next(iter(rows))[0]
        rows = await db.execute_fetchall("SELECT current_round FROM scheduler WHERE id = 1")
        current = int(next(iter(rows))[0])
        return current if last is None else max(int(last) + 1, current)

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
        row = await self._fetchone(
            "SELECT count(*) FROM jobs w, jobs j WHERE j.id = ? AND j.state = 'queued'"
            " AND w.state = 'queued' AND (w.fair_round, w.seq) <= (j.fair_round, j.seq)",
            (job_id,),
        )
        count = int(row[0]) if row else 0
        return count or None

    async def waiting_jobs(self, limit: int = 1000) -> list[Job]:
        """Return waiting jobs in the order they will start."""
        rows = await self._fetchall(
            f"SELECT {_JOB_COLUMNS} {_JOB_FROM} WHERE j.state = 'queued'"
            " ORDER BY j.fair_round, j.seq LIMIT ?",
            (limit,),
        )
        return [_job_from_row(row) for row in rows]

    async def count_by_state(self) -> dict[JobState, int]:
        """Return how many jobs are in each state."""
        rows = await self._fetchall("SELECT state, count(*) FROM jobs GROUP BY state")
        return {JobState(state): int(count) for state, count in rows}

    async def unfinished_jobs(self) -> list[Job]:
        """Return every job not yet done, failed or canceled."""
        rows = await self._fetchall(
            f"SELECT {_JOB_COLUMNS} {_JOB_FROM}"
            " WHERE j.state NOT IN ('done', 'failed', 'canceled') ORDER BY j.seq"
        )
        return [_job_from_row(row) for row in rows]

    async def count_unfinished(self, platforms: Sequence[str]) -> int:
        """Return how many jobs for these platforms are not finished yet."""
        marks = ",".join("?" * len(platforms))
        row = await self._fetchone(
            "SELECT count(*) FROM jobs WHERE state NOT IN ('done', 'failed', 'canceled')"
            f" AND platform IN ({marks})",
            tuple(platforms),
        )
        return int(row[0]) if row else 0

    async def recent_run_seconds(self, limit: int = 20) -> float | None:
        """Return the mean start-to-finish time of recently finished jobs."""
        row = await self._fetchone(
            "SELECT avg(finished_at - started_at) FROM (SELECT finished_at, started_at FROM jobs"
            " WHERE state = 'done' AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?)",
            (limit,),
        )
        return None if row is None or row[0] is None else float(row[0])

    # --- worker transitions ----------------------------------------------------------

    async def claim_next(
        self,
        owner: str,
        *,
        platforms: Sequence[str],
        lease_seconds: float,
        deadline_seconds: float,
    ) -> Job | None:
        """Move the next waiting job to SUBMITTING under a lease, or return None."""
        now = self._clock()
        marks = ",".join("?" * len(platforms))
        async with self.transaction() as db:
            rows = await db.execute_fetchall(
                "UPDATE jobs SET state = 'submitting', lease_owner = ?, lease_expires = ?,"
                " attempts = attempts + 1, started_at = coalesce(started_at, ?),"
                " deadline_at = coalesce(deadline_at, ?), updated_at = ?"
                " WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND not_before <= ?"
                f" AND platform IN ({marks}) ORDER BY fair_round, seq LIMIT 1)"
                " RETURNING id, fair_round",
                (owner, now + lease_seconds, now, now + deadline_seconds, now, now, *platforms),
            )
            claimed = list(rows)
            if not claimed:
                return None
            job_id, fair_round = claimed[0]
            await db.execute(
                "UPDATE scheduler SET current_round = max(current_round, ?) WHERE id = 1",
                (fair_round,),
            )
        return await self.job(str(job_id))

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

    async def heartbeat(self, owner: str, lease_seconds: float) -> None:
        """Extend the leases of every job this worker owns."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE jobs SET lease_expires = ? WHERE lease_owner = ?"
                " AND state NOT IN ('queued', 'done', 'failed', 'canceled')",
                (self._clock() + lease_seconds, owner),
            )

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
        async with self.transaction() as db:
            cursor = await db.execute(sql, params)
            changed = cursor.rowcount > 0
        return changed

    async def set_status_message(self, request_id: str, message_id: str | None) -> None:
        """Remember the status message an adapter keeps editing for a request."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE requests SET address = json_set(address, '$.status_message_id', ?)"
                " WHERE id = ?",
                (message_id, request_id),
            )
