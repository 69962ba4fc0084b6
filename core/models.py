"""Plain data shared by the service, the store, the worker and the adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    """Where a job is in its life; see docs in architecture.md."""

    QUEUED = "queued"  # admitted, waiting for a free backend slot
    SUBMITTING = "submitting"  # claimed; the backend may or may not have it yet
    RUNNING = "running"  # the backend accepted it and we hold its handle
    DOWNLOADING = "downloading"  # the backend finished; fetching the result
    DELIVERING = "delivering"  # result on disk; handing it to the adapter
    DONE = "done"  # delivered (confirmed, or sent without an answer: delivery_unconfirmed)
    FAILED = "failed"  # gave up; the user was told why
    CANCELED = "canceled"  # the user or an admin canceled it

    @property
    def is_terminal(self) -> bool:
        """Return whether nothing more happens to a job in this state."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELED})
ACTIVE_STATES = frozenset(
    {JobState.SUBMITTING, JobState.RUNNING, JobState.DOWNLOADING, JobState.DELIVERING}
)
# At the backend: these count against a user's in-flight cap.
IN_FLIGHT_STATES = frozenset({JobState.SUBMITTING, JobState.RUNNING})


@dataclass(frozen=True)
class Account:
    """One person (possibly with several platform identities) as the quotas see them."""

    id: int
    role: str
    access: str  # none | pending | allowed | denied
    banned_until: float | None  # None: not banned
    ban_reason: str | None
    queued: int  # takes waiting
    in_flight: int  # takes at the backend (submitting or running)
    ticket: int  # place in the round-robin: the smallest ticket starts next
    turn_used: int  # takes started in the current turn
    weight: int  # takes per turn


@dataclass(frozen=True)
class LedgerEntry:
    """One change of a balance and why it happened."""

    period: str
    delta: int
    reason: str  # allowance | debit | refund | grant | revoke
    job_id: str | None
    actor: str | None
    note: str | None
    created_at: float


@dataclass(frozen=True)
class UserRef:
    """Who sent a request, as the platform knows them."""

    platform: str  # "telegram", "discord", "cli"
    platform_user_id: str
    display_name: str = ""
    locale: str | None = None


@dataclass(frozen=True)
class DeliveryAddress:
    """Everything an adapter needs to reach the requester again, even after a restart."""

    platform: str
    chat_id: str
    reply_to: str | None = None  # message the result should answer
    thread_id: str | None = None  # forum topic / thread
    status_message_id: str | None = None  # the status message to keep editing
    extra: dict[str, Any] = field(default_factory=dict)  # platform specifics (paths, tokens)


@dataclass(frozen=True)
class VideoRequest:
    """One platform event asking for a video: a photo, a line and where to answer."""

    user: UserRef
    image: bytes
    line: str
    address: DeliveryAddress
    source_key: str  # unique per platform event, so a redelivered event is not a second job
    seconds: int | None = None  # explicit duration from a button or CLI flag
    takes: int | None = None
    seed: int | None = None
    voice: str | None = None
    character: str | None = None  # a saved character's name; then ``image`` may be empty


@dataclass(frozen=True)
class Lease:
    """A worker's hold on a job: its owner and the fencing token of the claim that gave it."""

    owner: str
    token: int  # raised by every claim or takeover: an older holder's token no longer matches


@dataclass(frozen=True)
class Job:
    """One take of one request, as stored."""

    id: str
    request_id: str
    user_id: int
    take: int
    takes: int
    state: JobState
    line: str
    speech: str
    language: str
    seconds: int
    seed: int
    voice: str | None
    address: DeliveryAddress
    attempts: int
    handle: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    error_key: str | None
    error_params: dict[str, Any]
    error_detail: str | None
    result_path: str | None
    resubmitted: bool
    not_before: float
    deadline_at: float | None
    # DONE without the platform's confirmation: the upload left, its answer never came.
    delivery_unconfirmed: bool = False
    backend: str | None = None  # the preset (or builtin backend) it is on; None: not yet
    # Why the first result failed its take check; set once its free re-take started.
    retake_reason: str | None = None
    # Two-stage presets: how far its submits got ("speech": the speech submit may have
    # left; "video": the video submit may have), the speech job's handle and its result.
    stage: str | None = None
    speech_handle: str | None = None
    speech_result: str | None = None
    lease_owner: str | None = None  # the worker holding it (as last read)
    lease_token: int = 0  # fencing token of that worker's claim
    voice_sample: str | None = None  # sha256 of the cast character's voice sample

    @property
    def lease(self) -> Lease | None:
        """Return the lease the job was read under, if a worker held it."""
        return None if self.lease_owner is None else Lease(self.lease_owner, self.lease_token)


class EventKind(StrEnum):
    """What an adapter is told about a job."""

    QUEUED = "queued"  # admitted, or its place in the queue changed
    STARTED = "started"  # a backend took it
    PROGRESS = "progress"  # still working (elapsed, backend progress)
    DELIVERING = "delivering"  # uploading the result
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True)
class JobEvent:
    """A change an adapter may show to the user."""

    kind: EventKind
    job: Job
    position: int | None = None  # 1-based place in the queue, for QUEUED
    eta_seconds: float | None = None
    progress: float | None = None  # 0..1 when the backend reports it
    error_key: str | None = None
    error_params: dict[str, Any] = field(default_factory=dict)
