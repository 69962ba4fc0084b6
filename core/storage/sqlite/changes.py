"""State changes of jobs, with everything that goes with one in its transaction.

A change of state moves the account's and the queue's counters, pays a refund when a
charged take failed or was canceled before it started, and writes a job event. These
were triggers once (migrations 3 and 4); they are plain code here so that each engine
says what it does, and the next one does the same.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from core.models import IN_FLIGHT_STATES, JobState, Lease
from core.storage.changes import SETTABLE, Before, refunded, refunds
from core.storage.sqlite.queries import jobs as sql
from core.storage.types import ChangeKind, Moved

__all__ = ["SETTABLE", "Before", "cancel_waiting", "record", "refunds", "settle", "transition"]


def record(
    db: sqlite3.Connection,
    kind: ChangeKind,
    job_id: str,
    request_id: str,
    state: JobState,
    error_key: str | None,
    now: float,
) -> None:
    """Write one job event."""
    db.execute(sql.INSERT_EVENT, (kind.value, job_id, request_id, state.value, error_key, now))


def settle(
    db: sqlite3.Connection,
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
        db.execute(sql.COUNT_ACCOUNT, (queued, in_flight, job.account_id))
    if queued:
        db.execute(sql.COUNT_QUEUE, (queued,))
    if job.charged > 0 and refunds(job.state, to):
        db.execute(sql.REFUND_BALANCE, (job.charged, job.account_id, job.charge_period))
        db.execute(sql.REFUND_LEDGER, (job.account_id, job.charge_period, job.charged, job.id, now))
        db.execute(sql.REFUNDED, (job.id,))
    record(db, kind, job.id, job.request_id, to, error_key, now)


def transition(
    db: sqlite3.Connection,
    job_id: str,
    to: JobState,
    expect: Iterable[JobState] | None,
    fields: Mapping[str, Any],
    now: float,
    lease: Lease | None = None,
) -> tuple[Moved, int]:
    """Move one job to a state, setting ``fields``, unless ``lease`` is no longer held.

    ``LOST`` when the job's lease is not ``lease`` any more (another worker took it over),
    ``SKIPPED`` when it was not in ``expect``; either way nothing changes. Also returns the
    credits the change paid back (for the metrics, counted once the transaction commits).
    """
    row = db.execute(sql.BEFORE_CHANGE, (job_id,)).fetchone()
    if row is None:
        return Moved.SKIPPED, 0
    job = Before.from_row(row)
    if lease is not None and job.lease != lease:
        return Moved.LOST, 0
    if expect is not None and job.state not in set(expect):
        return Moved.SKIPPED, 0
    values = dict(fields)
    if to.is_terminal:
        values.setdefault("finished_at", now)
    if "error_params" in values:
        values["error_params"] = json.dumps(values["error_params"], ensure_ascii=False)
    assignments = "".join(f", {name} = ?" for name in values)
    params = (to.value, now, *values.values(), job_id)
    if lease is None:
        db.execute(sql.CHANGE_STATE.format(assignments=assignments), params)
    elif not db.execute(
        sql.CHANGE_LEASED.format(assignments=assignments), (*params, lease.owner, lease.token)
    ).rowcount:
        return Moved.LOST, 0  # (the write lock makes this unreachable here; PostgreSQL may not)
    settle(db, job, to, now, error_key=values.get("error_key"))
    return Moved.MOVED, refunded(job, to)


def cancel_waiting(
    db: sqlite3.Connection, account_id: int, key: str, now: float
) -> list[tuple[str, int]]:
    """Cancel an account's waiting takes (each paid back); return their ids and refunds."""
    waiting = [Before.from_row(row) for row in db.execute(sql.ACCOUNT_WAITING, (account_id,))]
    fields = {"error_key": key}
    return [
        (job.id, transition(db, job.id, JobState.CANCELED, None, fields, now)[1]) for job in waiting
    ]
