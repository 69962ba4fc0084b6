"""Plain data that crosses the storage protocols, in and out (no connection, no SQL)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from core.models import Account, DeliveryAddress, Job, JobState


def new_id() -> str:
    """Return a short random id, safe to show users and to put in callback data."""
    return uuid.uuid4().hex[:16]


# --- jobs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewTake:
    """One take to insert at admission."""

    line: str
    speech: str
    language: str
    seconds: int
    seed: int
    voice: str | None
    voice_sample: str | None = None  # sha256 of the cast character's voice sample


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


class Moved(StrEnum):
    """What a state change did: only ``MOVED`` is true."""

    MOVED = "moved"
    SKIPPED = "skipped"  # the job was not in a state the caller expected
    LOST = "lost"  # the caller's lease is gone (another worker took the job over)

    def __bool__(self) -> bool:
        return self is Moved.MOVED


class ChangeKind(StrEnum):
    """What wrote a job event."""

    ADMITTED = "admitted"  # inserted, waiting
    CLAIMED = "claimed"  # a worker took it from the queue
    MOVED = "moved"  # any other change of state (worker, user, admin)
    ADOPTED = "adopted"  # another worker took over its lease; the state is unchanged
    IMPORTED = "imported"  # the state a job had when events began (a schema migration)


@dataclass(frozen=True)
class JobChange:
    """One durable job event, written in the transaction of the change it records."""

    seq: int  # increasing over the whole store: the cursor to follow events by
    kind: ChangeKind
    job_id: str
    request_id: str
    state: JobState  # the state after the change
    error_key: str | None
    at: float


@dataclass(frozen=True)
class UsageRow:
    """Takes admitted on one day, counted by where they came from and how they ended."""

    day: int  # days since 1970-01-01 in the operator's time zone (see ``usage_by_day``)
    platform: str
    state: JobState  # the state the takes are in now: the outcome once finished
    backend: str | None  # the preset (or builtin backend) they ran on; None: not claimed
    seconds: int  # the clip length asked for
    takes: int


# --- chat state ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxEntry:
    """A stored platform event and how far its handling got."""

    key: str
    payload: str
    first_reply: str | None  # the first answer already sent, so a replay does not repeat it
    attempts: int
    received_at: float


@dataclass(frozen=True)
class RememberedPhoto:
    """The last photo a user sent in a chat: a platform file or a stored request's image."""

    file_ref: str | None
    request_id: str | None
    message_id: str | None
    updated_at: float


@dataclass(frozen=True)
class Button:
    """What an inline button does, for whom."""

    id: str
    action: str
    request_id: str
    job_id: str | None
    owner: str  # platform user id of the requester


@dataclass(frozen=True)
class Delivered:
    """A video a user received, re-sendable by its platform file id."""

    job_id: str
    chat_id: str
    file_ref: str
    caption: str
    created_at: float


# --- characters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Character:
    """A saved cast member of an account: its prepared image, voice, seed and shares."""

    id: int
    account_id: int
    name: str  # as the owner wrote it; names are unique per account, case-insensitively
    image_sha256: str  # the prepared 16:9 JPEG, stored once per content
    width: int
    height: int
    voice: str | None
    seed: int | None
    description: str
    shared_in: tuple[tuple[str, str], ...]  # (platform, chat id) whose members may cast it
    created_at: float
    voice_sample: str | None = None  # sha256 of its stored voice sample (a voice note)


@dataclass(frozen=True)
class CharacterVoice:
    """A character's voice sample, as stored: normalized WAV and its length."""

    wav: bytes
    seconds: float


class VoiceState(StrEnum):
    """Where a provider's voice id for one sample stands."""

    CREATING = "creating"  # a take (``owner``) is making it; ``handle`` once submitted
    READY = "ready"  # ``voice_id`` is made: every later take reuses it
    FAILED = "failed"  # the provider refused, or the outcome stayed unknown: a take may retry


@dataclass(frozen=True)
class ProviderVoice:
    """A voice id made from one voice sample at one provider model (Kling's create-voice)."""

    sample_sha256: str
    provider: str
    model: str
    state: VoiceState
    owner: str  # the take that makes (or made) it
    handle: str | None
    voice_id: str | None
    updated_at: float  # when it was claimed (a lost submit is looked up from here on)


@dataclass(frozen=True)
class CharacterImage:
    """A character's prepared image, as stored."""

    jpeg: bytes
    width: int
    height: int


@dataclass(frozen=True)
class Redeemed:
    """What using a link code did: the joint account (or why not), and characters renamed."""

    account_id: int | None
    refusal: str | None  # a message key when the accounts were not linked
    renamed: tuple[tuple[str, str], ...] = ()  # (old, new) names of moved characters


@dataclass(frozen=True)
class GuildSettings:
    """What a community's admins set for the bot there (a Discord guild)."""

    allowed_channels: tuple[str, ...] = ()  # empty: every channel
    daily_cap: int = 0  # takes a day for the whole guild; 0: no cap


# --- portraits (a character drawn from a description) --------------------------------------


class PortraitState(StrEnum):
    """Where a request for candidate portraits stands."""

    QUEUED = "queued"  # debited, not sent to the image model yet
    SUBMITTING = "submitting"  # the submit may have left: never sent again, only looked up
    RUNNING = "running"  # the model accepted it; its handle is stored
    READY = "ready"  # candidates stored, waiting for the user's pick
    PICKED = "picked"  # one was saved as the character
    FAILED = "failed"  # refunded once
    CANCELED = "canceled"  # the user picked none
    EXPIRED = "expired"  # nobody picked in time

    @property
    def is_open(self) -> bool:
        """Return whether the image model's work is not finished yet."""
        return self in (PortraitState.QUEUED, PortraitState.SUBMITTING, PortraitState.RUNNING)


@dataclass(frozen=True)
class NewPortrait:
    """A request for candidate portraits to record (and pay for) at once."""

    id: str
    name: str
    description: str
    prompt: str
    preset: str
    address: DeliveryAddress


@dataclass(frozen=True)
class Portrait:
    """A request for candidate portraits, as stored."""

    id: str
    account_id: int
    name: str
    description: str
    prompt: str
    preset: str
    address: DeliveryAddress
    state: PortraitState
    handle: str | None
    charged: int
    error_key: str | None
    picked: int | None
    shown: bool  # the user has been shown the candidates (or the failure)
    submitted_at: float | None
    created_at: float
    updated_at: float
