"""The VideoBackend protocol every renderer or provider implements."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol, cast, runtime_checkable


class BackendState(StrEnum):
    """Normalized provider states."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FILTERED = "filtered"  # refused by a content policy; never retried
    CANCELED = "canceled"


@dataclass(frozen=True)
class RenderSpec:
    """What a backend needs to make one take."""

    job_id: str  # also the idempotency key / client reference at the provider
    image_jpeg: bytes  # prepared 16:9 image at (width, height)
    width: int
    height: int
    line: str  # the whole line, stage directions included (the model's prompt)
    speech: str  # only what is spoken
    language: str  # "zh" | "en" | "other"
    seconds: int  # 5 or 10
    seed: int
    voice: str | None
    # For a lookup after a restart (find): when this take was first claimed (epoch seconds;
    # 0: unknown), and the handles other takes already hold, which it must not adopt.
    submitted_after: float = 0.0
    taken: frozenset[str] = frozenset()
    # The cast character's voice, where the preset keeps one: the id made from its sample
    # (sent in voice_field), or the sample itself as WAV (sent in reference_audio_field).
    voice_id: str | None = None
    reference_audio: bytes | None = None
    audio_url: str = ""  # a two-stage preset's spoken line, made by its speech stage


@dataclass(frozen=True)
class BackendStatus:
    """One observation of a submitted job."""

    state: BackendState
    progress: float | None = None  # 0..1 when known
    queue_position: int | None = None
    detail: str = ""  # the provider's words on a failure (logged, not shown raw)
    transient: bool = False  # for FAILED: worth submitting again

    @property
    def is_final(self) -> bool:
        """Return whether the backend will not change this job any more."""
        return self.state in {
            BackendState.SUCCEEDED,
            BackendState.FAILED,
            BackendState.FILTERED,
            BackendState.CANCELED,
        }


@dataclass(frozen=True)
class BackendCapabilities:
    """What a backend can promise the worker; unknown backends get the cautious defaults."""

    # A repeated submit with the same RenderSpec.job_id returns the first job, not a new one.
    idempotent_submit: bool = False
    # find() can locate a job whose submit answer was lost (a listing or a client reference).
    lookup: bool = False
    # submit() settles an unknown outcome itself (reconciles, or raises a non-transient
    # error naming the possible orphan): a transient error means no job was created.
    settles_unknown_submit: bool = False
    webhooks: bool = False  # the provider can call us back (polling stays the fallback)
    provider_queue: bool = False  # queue_position is the provider's own queue, not ours
    cancel: bool = True  # cancel() reaches the provider


DEFAULT_CAPABILITIES = BackendCapabilities()


def capabilities_of(backend: object) -> BackendCapabilities:
    """Return a backend's capabilities, or the cautious defaults if it declares none."""
    found = getattr(backend, "capabilities", None)
    return found if isinstance(found, BackendCapabilities) else DEFAULT_CAPABILITIES


class VideoBackend(Protocol):
    """A renderer or provider. Errors are raised as core.errors.BackendError."""

    name: str
    slots: int  # how many jobs it may run at once

    async def submit(self, spec: RenderSpec) -> str:
        """Start a job and return its handle (kept in the store before anything else)."""
        ...

    async def find(self, spec: RenderSpec) -> str | None:
        """Return the handle of a job submitted earlier for ``spec``, if the backend can tell.

        ``spec`` is rebuilt from the store after a restart, so a backend matches on what it
        would have sent (``spec.job_id``, the model's fields), never on state in memory.
        """
        ...

    async def wait(self, handle: str, timeout: float) -> BackendStatus:
        """Return the job's status once it changes, or after ``timeout`` seconds."""
        ...

    async def cancel(self, handle: str) -> None:
        """Ask the backend to stop the job; unknown or finished jobs are not an error."""
        ...

    async def fetch(self, handle: str, dest: Path, max_bytes: int) -> None:
        """Write the finished video to ``dest``, refusing results over ``max_bytes``."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


class SpeechStage(VideoBackend, Protocol):
    """Stage one of a two-stage backend: a text-to-speech job whose result is an audio URL.

    It is submitted, found, polled and canceled like a video job; ``result_url`` names
    its audio, which the video model is then sent.
    """

    async def result_url(self, handle: str) -> str:
        """Return where the finished job's audio is (a URL the video model can fetch)."""
        ...


def speech_stage_of(backend: object) -> SpeechStage | None:
    """Return a backend's speech stage if it is a two-stage backend, else None."""
    return cast("SpeechStage | None", getattr(backend, "speech_stage", None))


@runtime_checkable
class Probed(Protocol):
    """A backend that can tell cheaply whether it could take work now (for readiness)."""

    async def probe(self) -> None:
        """Raise BackendError (its text names what is missing, never a secret) if not."""
        ...


async def probe(backend: object) -> None:
    """Check a backend's readiness if it can tell; one that cannot is taken as ready."""
    if isinstance(backend, Probed):
        await backend.probe()
