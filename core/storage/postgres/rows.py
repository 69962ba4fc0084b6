"""Records to plain data: jobs, delivery addresses, job events."""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg

from core.models import DeliveryAddress, Job, JobState
from core.storage.postgres.queries.jobs import JOB_ROW
from core.storage.types import ChangeKind, JobChange, UsageRow


def address_to_json(address: DeliveryAddress) -> dict[str, Any]:
    """Return a delivery address as stored (a jsonb object; the pool encodes it)."""
    return dataclasses.asdict(address)


def job_from_record(record: asyncpg.Record) -> Job:
    """Return a job from a record of ``JOB_COLUMNS`` (extra columns after it are ignored)."""
    values: dict[str, Any] = {name: record[name] for name in JOB_ROW}
    values["state"] = JobState(values["state"])
    return Job(**values, address=DeliveryAddress(**record["address"]))


def change_from_record(record: asyncpg.Record) -> JobChange:
    """Return a job event from a ``job_events`` record."""
    seq, kind, job_id, request_id, state, error_key, at = record
    return JobChange(
        int(seq), ChangeKind(kind), job_id, request_id, JobState(state), error_key, float(at)
    )


def usage_from_record(record: asyncpg.Record) -> UsageRow:
    """Return a usage count from a ``USAGE_BY_DAY`` record."""
    day, platform, state, backend, seconds, takes = record
    return UsageRow(int(day), platform, JobState(state), backend, int(seconds), int(takes))
