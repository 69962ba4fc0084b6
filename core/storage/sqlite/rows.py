"""Rows to plain data and back: jobs, delivery addresses, job events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from core.models import DeliveryAddress, Job, JobState
from core.storage.sqlite.queries.jobs import JOB_ROW
from core.storage.types import ChangeKind, JobChange, UsageRow


def address_to_json(address: DeliveryAddress) -> str:
    """Return a delivery address as stored."""
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


def job_from_row(row: Sequence[Any]) -> Job:
    """Return a job from a row of ``JOB_COLUMNS``."""
    values: dict[str, Any] = dict(zip(JOB_ROW, row[:-1], strict=True))
    values["state"] = JobState(values["state"])
    values["error_params"] = json.loads(values["error_params"])
    values["resubmitted"] = bool(values["resubmitted"])
    values["delivery_unconfirmed"] = bool(values["delivery_unconfirmed"])
    return Job(**values, address=DeliveryAddress(**json.loads(row[-1])))


def change_from_row(row: Sequence[Any]) -> JobChange:
    """Return a job event from a ``job_events`` row."""
    seq, kind, job_id, request_id, state, error_key, at = row
    return JobChange(
        int(seq), ChangeKind(kind), job_id, request_id, JobState(state), error_key, float(at)
    )


def usage_row(row: Sequence[Any]) -> UsageRow:
    """Return a usage count from a ``USAGE_BY_DAY`` row (both engines return the same shape)."""
    day, platform, state, backend, seconds, takes = row
    return UsageRow(int(day), platform, JobState(state), backend, int(seconds), int(takes))
