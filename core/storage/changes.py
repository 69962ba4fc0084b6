"""What every engine decides alike about a change of a job's state.

The engines write counters, refunds and events in their own SQL
(``core.storage.sqlite.changes``, ``core.storage.postgres.changes``); which columns a
change may set and when a take is paid back are decided here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.models import JobState, Lease

# Columns a transition may set besides the state.
SETTABLE = frozenset(
    {
        "handle", "resubmitted", "result_path", "error_key", "error_params", "error_detail",
        "not_before", "lease_owner", "lease_expires", "finished_at", "delivery_unconfirmed",
        "backend", "retake_reason", "stage", "speech_handle", "speech_result",
    }
)  # fmt: skip


def settable(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return ``fields`` if a transition may set every one of them, else raise ValueError."""
    unknown = set(fields) - SETTABLE
    if unknown:
        raise ValueError(f"cannot set {sorted(unknown)}")
    return fields


@dataclass(frozen=True)
class Before:
    """A job as it stood before a change: what counters and refunds depend on."""

    id: str
    state: JobState
    account_id: int
    request_id: str
    charged: int  # credits still to pay back if it fails (0 once refunded)
    charge_period: str | None
    lease: Lease | None = None  # the worker holding it

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Before:
        """Return the state of a job from a ``BEFORE_CHANGE`` row."""
        job_id, state, account_id, request_id, charged, period, owner, token = row
        lease = None if owner is None else Lease(owner, int(token))
        return cls(
            job_id, JobState(state), int(account_id), request_id, int(charged), period, lease
        )


def refunds(before: JobState, after: JobState) -> bool:
    """Return whether a charged take is paid back by this change (at most once)."""
    failed = after is JobState.FAILED and not before.is_terminal
    return failed or (after is JobState.CANCELED and before is JobState.QUEUED)


def refunded(job: Before, to: JobState) -> int:
    """Return the credits a change pays back: the take's charge, once, or 0."""
    return job.charged if job.charged > 0 and refunds(job.state, to) else 0
