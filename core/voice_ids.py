"""The cast character's voice at a take's backend: its sample, or a voice id made from it.

A preset with ``reference_audio_field`` is sent the sample itself (cut to what the model takes). A
preset with ``voice_creation`` is sent a voice id that the provider made from the sample
(Kling's create-voice), made once per sample and model and kept in the store:

- the take that needs it first claims it (committed) before the creation request is sent,
  and stores the request's handle (committed) before it waits for the result; the id is
  committed before the video is submitted, and every later take reuses it;
- a take that finds another take making it waits for that one, and takes the claim over
  when that take no longer holds it (ended, or its lease ran out: canceled, its worker
  died, or it waits for a retry) or when a sent request's claim has not moved for
  ``quiet_seconds``: it polls the stored handle, or looks a handle-less request up as
  after a crash -- a claim nobody drives never blocks the other takes;
- after a crash, the take that claimed it resumes from the stored handle; a claim without
  a handle means the request's outcome is unknown: it is looked up in the provider's
  listing, and if it is not there the take fails (refunded) and the log names the possible
  orphan -- the request is never repeated blindly. A later take may then try again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from config.models import PresetSettings
from core.backends.base import RenderSpec, VideoBackend
from core.errors import BackendError
from core.models import Job
from core.storage import CharacterStore
from core.storage.types import ProviderVoice, VoiceState
from core.voices import cut_wav

log = logging.getLogger(__name__)


@runtime_checkable
class VoiceMaker(Protocol):
    """A backend that can make a voice id from a sample (fal, for Kling's voice control)."""

    provider: str
    voice_model: str  # "" when this preset makes no voice ids
    voice_poll_seconds: float

    async def submit_voice(self, wav: bytes, since: float) -> str:
        """Send the creation request; settle a lost answer; return the request's handle."""
        ...

    async def find_voice(self, wav: bytes, since: float) -> str | None:
        """Return the handle of a creation request for ``wav`` sent since then, if listed."""
        ...

    async def voice_result(self, handle: str) -> str | None:
        """Return the voice id once made, None while it is being made."""
        ...


class VoiceIds:
    """Give a take's render spec its character's voice for the backend it goes to."""

    def __init__(
        self,
        store: CharacterStore,
        *,
        clock: Callable[[], float] = time.time,
        quiet_seconds: float = 600.0,
    ) -> None:
        self._store = store
        self._clock = clock
        # A sent request nobody has recorded anything of for this long is polled by
        # another take as well (polling is safe to repeat; a hung owner must not block).
        self._quiet_seconds = quiet_seconds

    async def voiced(self, job: Job, spec: RenderSpec, backend: VideoBackend) -> RenderSpec:
        """Return ``spec`` with the voice id or reference audio ``backend`` is to be sent."""
        spec = dataclasses.replace(spec, voice_id=None, reference_audio=None)
        preset = getattr(backend, "preset", None)
        sha = job.voice_sample
        if sha is None or not isinstance(preset, PresetSettings):
            return spec
        if preset.reference_audio_field:
            sample = await self._store.voice_sample(sha)
            if sample is None:
                log.warning("job %s: its character's voice sample was deleted", job.id)
                return spec
            audio = cut_wav(sample.wav, preset.reference_audio_max_seconds)
            return dataclasses.replace(spec, reference_audio=audio)
        if isinstance(backend, VoiceMaker) and backend.voice_model:
            voice_id = await self._voice_id(job, sha, backend)
            return dataclasses.replace(spec, voice_id=voice_id)
        return spec

    async def _voice_id(self, job: Job, sha: str, maker: VoiceMaker) -> str | None:
        """Return the voice id made from the sample at the maker's model, making it once."""
        deadline = job.deadline_at or self._clock() + 900.0
        while True:
            claimed = await self._store.claim_provider_voice(
                sha, maker.provider, maker.voice_model, job.id, self._clock(),
                quiet_for=self._quiet_seconds,
            )  # fmt: skip
            if claimed is None:
                log.warning("job %s: its character's voice sample was deleted", job.id)
                return None
            row, fresh = claimed
            if row.state is VoiceState.READY:
                return row.voice_id
            if row.owner == job.id:
                # Claimed now, ours before a restart, or taken over from a take that
                # no longer holds it: not fresh, its request is polled or looked up.
                return await self._make(job, row, fresh, maker, deadline)
            # Another take is making it: the same id serves both.
            if self._clock() >= deadline:
                raise BackendError(
                    "the character's voice id is still being made by another take",
                    transient=False,
                    key="job.voice_failed",
                )
            await asyncio.sleep(maker.voice_poll_seconds)

    async def _make(
        self, job: Job, row: ProviderVoice, fresh: bool, maker: VoiceMaker, deadline: float
    ) -> str:
        sample = await self._store.voice_sample(row.sample_sha256)
        if sample is None:
            raise BackendError("the voice sample was deleted", transient=False)
        key = (row.sample_sha256, row.provider, row.model, job.id)
        handle = row.handle
        try:
            if handle is None:
                if fresh:
                    handle = await maker.submit_voice(sample.wav, row.updated_at)
                else:
                    # Claimed before a crash (or by a take that stopped), no handle
                    # kept: the request may exist.
                    handle = await maker.find_voice(sample.wav, row.updated_at)
                    if handle is None:
                        log.error(
                            "job %s: possible orphan: a voice-creation request to %s may have"
                            " been sent before a restart and no listing shows it; not"
                            " repeated (failed with a refund)",
                            job.id, row.model,
                        )  # fmt: skip
                        raise BackendError(
                            "voice creation outcome unknown after a restart; possible orphan,"
                            " not repeated",
                            transient=False,
                            key="job.voice_failed",
                        )
                # Kept before anything waits on it: a restart polls it, never resends.
                if not await self._store.update_provider_voice(
                    *key, state=VoiceState.CREATING, handle=handle, now=self._clock()
                ):
                    raise BackendError("lost the claim on the voice id", transient=True)
            while True:
                voice_id = await maker.voice_result(handle)
                if voice_id is not None:
                    await self._store.update_provider_voice(
                        *key, state=VoiceState.READY, voice_id=voice_id, now=self._clock()
                    )
                    return voice_id
                if self._clock() >= deadline:
                    raise BackendError(
                        "the voice id was not made in time", transient=False,
                        key="job.voice_failed",
                    )  # fmt: skip
                await asyncio.sleep(maker.voice_poll_seconds)
        except BackendError as exc:
            if exc.transient and handle is not None:
                raise  # the request stands: a retry of this take polls it again
            # Refused, or an outcome nobody can settle: a later take may try again.
            await self._store.update_provider_voice(
                *key, state=VoiceState.FAILED, now=self._clock()
            )
            raise
