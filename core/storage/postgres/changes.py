"""State changes of jobs, with everything that goes with one in its transaction.

The same steps as the SQLite engine's (``core.storage.sqlite.changes``): a change of
state moves the account's counters, pays a refund when a charged take failed or was
canceled before it started, and writes a job event, in the transaction of the change.
The job's row is locked first, so the state a change is decided on is the one it
replaces, whichever process changes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from core.models import IN_FLIGHT_STATES, JobState, Lease
from core.storage.changes import SETTABLE, Before, refunded, refunds
from core.storage.postgres.connection import Conn
from core.storage.postgres.database import changed
from core.storage.postgres.queries import jobs as sql
from core.storage.postgres.schema import MIGRATION_LOCK
from core.storage.types import ChangeKind, Moved

__all__ = ["EVENTS_LOCK", "SETTABLE", "cancel_waiting", "record", "settle", "transition"]

# Held shared by every transaction that writes job events, until it commits (see
# queries.jobs.EVENTS_AFTER): a follower waits for it to learn that no smaller seq is
# still to come.
EVENTS_LOCK = MIGRATION_LOCK + 1


async def record(
    conn: Conn,
    kind: ChangeKind,
    job_id: str,
    request_id: str,
    state: JobState,
    error_key: str | None,
    now: float,
) -> None:
    """Write one job event."""
    await conn.execute(
        sql.INSERT_EVENT, kind.value, job_id, request_id, state.value, error_key, now, EVENTS_LOCK
    )


async def settle(
    conn: Conn,
    job: Before,
    to: JobState,
    now: float,
    *,
    kind: ChangeKind = ChangeKind.MOVED,
    error_key: str | None = None,
) -> None:
    """Do what goes with a state change already written: counters, refund, event."""
    queued = (to is JobState.QUEUED) - (job.state is JobState.QUEUED)
    in_flight = (to in IN_FLIGHT_STATES) - (job.state in IN_FLIGHT_STATES)
    if queued or in_flight:
        await conn.execute(sql.COUNT_ACCOUNT, queued, in_flight, job.account_id)
    if job.charged > 0 and refunds(job.state, to):
        await conn.execute(sql.REFUND_BALANCE, job.charged, job.account_id, job.charge_period)
        await conn.execute(
            sql.REFUND_LEDGER, job.account_id, job.charge_period, job.charged, job.id, now
        )
        await conn.execute(sql.REFUNDED, job.id)
    await record(conn, kind, job.id, job.request_id, to, error_key, now)


async def transition(
    conn: Conn,
    job_id: str,
    to: JobState,
    expect: Iterable[JobState] | None,
    fields: Mapping[str, Any],
    now: float,
    lease: Lease | None = None,
) -> tuple[Moved, int]:
    """Move one job to a state, setting ``fields``, unless ``lease`` is no longer held.

    ``LOST`` when the job's lease is not ``lease`` any more (another worker took it over),
    ``SKIPPED`` when it was not in ``expect``; either way nothing changes. The row is locked
    by ``BEFORE_CHANGE``, and the UPDATE checks the lease again all the same. Also returns
    the credits the change paid back (for the metrics, counted once the transaction commits).
    """
    row = await conn.fetchrow(sql.BEFORE_CHANGE, job_id)
    if row is None:
        return Moved.SKIPPED, 0
    job = Before.from_row(tuple(row))
    if lease is not None and job.lease != lease:
        return Moved.LOST, 0
    if expect is not None and job.state not in set(expect):
        return Moved.SKIPPED, 0
    values = dict(fields)
    if to.is_terminal:
        values.setdefault("finished_at", now)
    # Names from SETTABLE only (checked by the caller); values are parameters.
    assignments = "".join(f", {name} = ${index}" for index, name in enumerate(values, 4))
    params = (to.value, now, job_id, *values.values())
    if lease is None:
        await conn.execute(sql.CHANGE_STATE.format(assignments=assignments), *params)
    else:
        numbers = {"owner": len(params) + 1, "token": len(params) + 2}
        query = sql.CHANGE_LEASED.format(assignments=assignments, **numbers)
        if not changed(await conn.execute(query, *params, lease.owner, lease.token)):
            return Moved.LOST, 0
    await settle(conn, job, to, now, error_key=values.get("error_key"))
    return Moved.MOVED, refunded(job, to)


async def cancel_waiting(
    conn: Conn, account_id: int, key: str, now: float
) -> list[tuple[str, int]]:
    """Cancel an account's waiting takes (each paid back); return their ids and refunds."""
    waiting = [
        Before.from_row(tuple(row)) for row in await conn.fetch(sql.ACCOUNT_WAITING, account_id)
    ]
    fields = {"error_key": key}
    return [
        (job.id, (await transition(conn, job.id, JobState.CANCELED, None, fields, now))[1])
        for job in waiting
    ]
