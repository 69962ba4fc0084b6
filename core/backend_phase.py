"""The backend phase of a job: submit (or reconcile), fall back, poll, cancel, retry.

A job holds a backend slot for this whole phase (``Slot``); the worker (core/worker.py)
claims jobs and drives them through here, then through the finishing phase
(core/finishing.py). Every state change is committed before the step it announces, so a
crash anywhere resumes at that step (see architecture.md, "Recovery after a crash").

A two-stage preset (a speech stage, then an audio-driven video model) runs its first stage
here too, still SUBMITTING: the mark that the speech submit may leave, its handle and its
result (the audio's URL) are each committed before the next step, and the video submit is
marked before it leaves. So a crash resumes from the stored audio without paying for the
speech again, and only a submit that may have left is ever looked up.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from config.settings import WorkerSettings
from core.backends.base import (
    BackendState,
    RenderSpec,
    SpeechStage,
    VideoBackend,
    capabilities_of,
    speech_stage_of,
)
from core.errors import BackendError, ContentFiltered
from core.failpoints import Failpoints
from core.logcontext import set_job
from core.metrics import job_ran, job_started, take_made
from core.models import EventKind, Job, JobEvent, JobState
from core.notify import NotifierRouter
from core.storage import JobStore
from core.transitions import Transitions
from core.voice_ids import VoiceIds

log = logging.getLogger(__name__)

BACKEND_PHASE = frozenset({JobState.SUBMITTING, JobState.RUNNING})
_SUBMITTING = frozenset({JobState.SUBMITTING})
# Job.stage of a two-stage take: how far its submits may have got.
SPEECH_STAGE, VIDEO_STAGE = "speech", "video"
Image = tuple[bytes, int, int]  # prepared JPEG, width, height
# Handles stored this long before a take's first claim are other takes' too (a lookup after
# a restart excludes them): listings search from that claim on, with the same slack.
_LOOKUP_WINDOW = 600.0


def backoff(settings: WorkerSettings, attempt: int) -> float:
    """Exponential backoff with jitter, so that retries after one outage spread out."""
    growth: float = 2.0 ** (attempt - 1)
    delay = min(settings.backoff_max_seconds, settings.backoff_base_seconds * growth)
    return delay * random.uniform(0.5, 1.0)


class Slot:
    """One backend slot held by a job; releasing it twice is harmless."""

    def __init__(self, semaphore: asyncio.Semaphore, *, held: bool) -> None:
        self._semaphore = semaphore
        self.held = held

    async def acquire(self) -> None:
        """Wait for a free slot and hold it."""
        await self._semaphore.acquire()
        self.held = True

    def release(self) -> None:
        """Free the slot if this job still holds it."""
        if self.held:
            self.held = False
            self._semaphore.release()

    def hand_over(self) -> None:
        """Give the slot to another job without freeing it in between."""
        self.held = False

    def of(self, semaphore: asyncio.Semaphore) -> bool:
        """Return whether this is a slot of ``semaphore``'s backend."""
        return self._semaphore is semaphore

    async def move_to(self, semaphore: asyncio.Semaphore) -> None:
        """Give this slot back and wait for one of another backend (a fallback preset)."""
        self.release()
        self._semaphore = semaphore
        await self.acquire()


class BackendPhase:
    """Takes a claimed job from SUBMITTING to a final backend state, across its presets.

    ``chain`` is the first backend and its fallbacks in order; ``refill`` hands a slot the
    backend is done with straight to the next waiting job.
    """

    def __init__(
        self,
        *,
        store: JobStore,
        chain: Sequence[VideoBackend],
        semaphores: dict[str, asyncio.Semaphore],
        notifier: NotifierRouter,
        settings: Callable[[], WorkerSettings],
        transitions: Transitions,
        failpoints: Failpoints,
        clock: Callable[[], float],
        refill: Callable[[Slot], Awaitable[None]],
        wake: Callable[[], None],
        voices: VoiceIds | None = None,
    ) -> None:
        self._store = store
        self._chain = tuple(chain)
        self._backends = {each.name: each for each in self._chain}
        self._semaphores = semaphores
        self._notifier = notifier
        self._settings = settings  # read at each use: the worker's settings may be replaced
        self._transitions = transitions
        self._failpoints = failpoints
        self._clock = clock
        self._refill = refill
        self._wake = wake
        self._voices = voices  # the cast character's voice (None: takes carry no samples)

    def backend_for(self, job: Job) -> VideoBackend:
        """Return the backend a job is on (its stored preset, else the first one)."""
        return self._backends.get(job.backend or "", self._chain[0])

    async def _spec(self, job: Job, image: Image | None, *, recovered: bool) -> RenderSpec:
        """Build what the backend is sent, from stored data only (the same after a restart)."""
        if image is None:
            image = await self._store.request_image(job.request_id)
        jpeg, width, height = image
        taken: frozenset[str] = frozenset()
        started = job.started_at or 0.0
        if recovered:
            # A lookup must not adopt a provider job another take holds.
            taken = frozenset(await self._store.handles_since(started - _LOOKUP_WINDOW))
        return RenderSpec(
            # One key per attempt: a retry after a failed attempt is a new provider job,
            # while a crash inside one attempt reconciles to the same one.
            job_id=f"{job.id}-{job.attempts}",
            image_jpeg=jpeg,
            width=width,
            height=height,
            line=job.line,
            speech=job.speech,
            language=job.language,
            seconds=job.seconds,
            seed=job.seed,
            voice=job.voice,
            submitted_after=started,
            taken=taken,
        )

    async def run(self, job: Job, recovered: bool, slot: Slot, image: Image | None) -> Job:
        """Submit (or, after a restart, reconcile) and poll until the backend is done."""
        handle = job.handle
        backend = self.backend_for(job)
        set_job(job, backend)
        if job.state is JobState.SUBMITTING:
            self._failpoints.hit("worker.after_claim")
            spec = await self._spec(job, image, recovered=recovered)
            stage = speech_stage_of(backend)
            if stage is not None:
                job = await self._speak(job, stage, spec, recovered=recovered)
                if job.state is not JobState.SUBMITTING or job.speech_result is None:
                    return job  # failed, canceled, or waiting for a retry
                spec = replace(spec, audio_url=job.speech_result)
                # Only a video submit marked as leaving can have reached the provider.
                recovered = recovered and job.stage == VIDEO_STAGE
                if job.stage != VIDEO_STAGE:
                    job = await self._transitions.move(
                        job, JobState.SUBMITTING, expect=_SUBMITTING, stage=VIDEO_STAGE
                    )
                    if job.state is not JobState.SUBMITTING:
                        return job
            resubmitted = job.resubmitted
            voiced = await self._voiced(job, spec, backend)
            if isinstance(voiced, Job):
                return voiced
            spec = voiced
            if recovered:
                # The submit may have reached the backend before the crash.
                try:
                    handle = await self._reconcile(job, backend, spec)
                except BackendError as exc:
                    return await self._transitions.fail(job, exc.key, detail=str(exc))
                if handle is None and not capabilities_of(backend).idempotent_submit:
                    # A second submit could be a second paid job: settle it instead, and
                    # name the provider job that may exist (the job id, never a key).
                    log.error(
                        "job %s: possible orphan at %s: the submit for %s may have reached"
                        " the provider before the crash and no lookup finds it; not"
                        " resubmitting (failed with a refund)",
                        job.id, backend.name, spec.job_id,
                    )  # fmt: skip
                    return await self._transitions.fail(
                        job,
                        "job.interrupted",
                        detail="submit outcome unknown after a restart; possible orphan,"
                        " not resubmitted",
                    )
                if handle is None:
                    if job.resubmitted:
                        # Resubmit once, never in a loop of crashes: that could pay many times.
                        return await self._transitions.fail(
                            job, "job.interrupted", detail="crashed twice"
                        )
                    log.warning("job %s: submit outcome unknown; submitting again", job.id)
                    job = await self._transitions.move(
                        job, JobState.SUBMITTING, expect={JobState.SUBMITTING}, resubmitted=True
                    )
                    resubmitted = True
            while handle is None:
                if job.deadline_at is not None and self._clock() >= job.deadline_at:
                    # A retry that waited past the deadline is not worth paying for.
                    return await self._deadline_passed(job, None)
                following = self._following(backend)
                try:
                    handle = await self._submit(job, backend, spec, bounded=following is not None)
                except BackendError as exc:
                    if following is None or not self._may_fall_back(backend, exc):
                        return await self._transitions.fail(job, exc.key, detail=str(exc))
                    # No provider accepted it: the next preset makes it. Stored first, so a
                    # restart looks for the take where it was last sent.
                    log.warning(
                        "job %s: %s did not take it (%s); falling back to %s",
                        job.id, backend.name, exc, following.name,
                    )  # fmt: skip
                    job = await self._transitions.move(
                        job, JobState.SUBMITTING, expect={JobState.SUBMITTING},
                        backend=following.name,
                    )  # fmt: skip
                    if job.state is not JobState.SUBMITTING:
                        return job  # (canceled or failed meanwhile)
                    backend = following
                    set_job(job, backend)
                    await slot.move_to(self._semaphores[backend.name])
                    voiced = await self._voiced(job, spec, backend)
                    if isinstance(voiced, Job):
                        return voiced
                    spec = voiced
                    continue
                self._failpoints.hit("worker.after_submit")
            job = await self._transitions.move(
                job, JobState.RUNNING, expect={JobState.SUBMITTING},
                handle=handle, resubmitted=resubmitted, backend=backend.name,
            )  # fmt: skip
            self._failpoints.hit("worker.after_handle_stored")
            job_started(job, backend.name)
            await self._notifier.notify(JobEvent(EventKind.STARTED, job))
        assert handle is not None
        return await self._await_backend(job, backend, handle, slot)

    async def _voiced(self, job: Job, spec: RenderSpec, backend: VideoBackend) -> RenderSpec | Job:
        """Return the spec with the character's voice for ``backend``, or the job if it ended.

        A voice id is made (once per sample and model) and committed here, before the
        video is submitted: the submit and any lookup after a restart send the same id.
        """
        if self._voices is None or job.voice_sample is None:
            return spec
        try:
            return await self._voices.voiced(job, spec, backend)
        except BackendError as exc:
            if exc.transient:
                return await self._backend_failed(job, True, exc.key, str(exc))
            return await self._transitions.fail(job, exc.key, detail=str(exc))

    def _following(self, backend: VideoBackend) -> VideoBackend | None:
        """Return the preset after ``backend`` in the fallback order, if any.

        A two-stage preset is never a fallback: its first stage would not have run.
        """
        names = [each.name for each in self._chain]
        index = names.index(backend.name) if backend.name in names else len(names)
        following = self._chain[index + 1] if index + 1 < len(self._chain) else None
        return None if speech_stage_of(following) is not None else following

    async def _speak(
        self, job: Job, stage: SpeechStage, spec: RenderSpec, *, recovered: bool
    ) -> Job:
        """Run stage one of a two-stage preset: the line spoken once, its audio URL stored.

        A stored result is used as it is and a stored handle is polled again; a speech
        submit that may have left before a crash is looked up, never sent a second time.
        Returns the job with ``speech_result`` set, or as it ended (failed, requeued).
        """
        if job.speech_result is not None:
            return job
        spoken = replace(spec, job_id=f"{spec.job_id}-speech")  # its own client reference
        handle = job.speech_handle
        if handle is None and recovered and job.stage == SPEECH_STAGE:
            try:
                handle = await self._reconcile(job, stage, spoken)
            except BackendError as exc:
                return await self._transitions.fail(job, exc.key, detail=str(exc))
            if handle is None:
                log.error(
                    "job %s: possible orphan at %s: the speech submit for %s may have reached"
                    " the provider before the crash and no lookup finds it; not resubmitting"
                    " (failed with a refund)",
                    job.id, stage.name, spoken.job_id,
                )  # fmt: skip
                return await self._transitions.fail(
                    job,
                    "job.interrupted",
                    detail="speech submit outcome unknown after a restart; possible orphan",
                )
        if handle is None:
            # Marked first: after a crash from here on, the submit is looked up.
            job = await self._transitions.move(
                job, JobState.SUBMITTING, expect=_SUBMITTING, stage=SPEECH_STAGE
            )
            if job.state is not JobState.SUBMITTING:
                return job
            try:
                handle = await self._submit(job, stage, spoken)
            except BackendError as exc:
                return await self._transitions.fail(job, exc.key, detail=str(exc))
            self._failpoints.hit("pipeline.after_speech_submit")
        if job.speech_handle is None:  # (submitted now, or found by the lookup)
            job = await self._transitions.move(
                job, JobState.SUBMITTING, expect=_SUBMITTING, speech_handle=handle
            )
            if job.state is not JobState.SUBMITTING:
                return job
        audio = await self._await_speech(job, stage, handle)
        if isinstance(audio, Job):
            return audio
        job = await self._transitions.move(
            job, JobState.SUBMITTING, expect=_SUBMITTING, speech_result=audio
        )
        self._failpoints.hit("pipeline.after_speech_stored")
        return job

    async def _await_speech(self, job: Job, stage: SpeechStage, handle: str) -> str | Job:
        """Poll the speech job until its audio is ready (its URL), or end the job (a Job)."""
        deadline = job.deadline_at or (self._clock() + self._settings().job_deadline_seconds)
        while True:
            remaining = deadline - self._clock()
            timeout = max(0.0, min(self._settings().status_interval_seconds, remaining))
            try:
                status = await stage.wait(handle, timeout)
                if status.state is BackendState.SUCCEEDED:
                    return await stage.result_url(handle)
            except BackendError as exc:
                if not exc.transient:
                    return await self._transitions.fail(job, exc.key, detail=str(exc))
                if remaining > 0:
                    log.warning("job %s: speech stage: %s; retrying", job.id, exc)
                    await asyncio.sleep(min(timeout, self._settings().backoff_base_seconds))
                    continue
                return await self._deadline_passed(job, handle, stage)
            if status.state is BackendState.FILTERED:
                return await self._transitions.fail(job, "job.filtered", detail=status.detail)
            if status.state in {BackendState.FAILED, BackendState.CANCELED}:
                transient = status.transient or status.state is BackendState.CANCELED
                detail = f"speech stage: {status.detail}"
                return await self._backend_failed(job, transient, "job.backend_failed", detail)
            if self._clock() >= deadline:
                return await self._deadline_passed(job, handle, stage)

    @staticmethod
    def _may_fall_back(backend: VideoBackend, exc: BackendError) -> bool:
        """Return whether a failed submit may go to the next preset.

        Only when no provider accepted the take, for a provider-side reason: an outage or
        a rate limit past its retries (transient), or a refused key. Never on a content
        refusal, bad input, or an outcome that is not known (a job may exist: a possible
        orphan is never sent elsewhere too).
        """
        if isinstance(exc, ContentFiltered):
            return False
        # Only a backend that settles unknown outcomes itself promises that a transient
        # error created nothing.
        settled = capabilities_of(backend).settles_unknown_submit
        return settled and (exc.transient or exc.provider_refused)

    async def _submit(
        self, job: Job, backend: VideoBackend, spec: RenderSpec, *, bounded: bool = False
    ) -> str:
        """Submit, retrying a transient failure with the same idempotency key.

        A submit whose outcome is unknown may have created a provider job: every retry
        first asks the backend for a job under this key (``find``), and submits again
        under the same key only if there is none, so the provider returns that job instead
        of a second, paid one. A new key is used only after the provider confirmed a
        failure. Both calls are retried alike until the job's deadline: a model server
        that cannot be reached for a while (a restart) delays the job, it does not fail it
        -- unless ``bounded`` (a fallback preset waits): then ``max_attempts`` tries.
        """
        # A backend that settles an unknown outcome itself raises a transient error only
        # when no job was created: nothing to look up before trying again.
        look_first = not capabilities_of(backend).settles_unknown_submit
        attempt = 0
        while True:
            try:
                if attempt and look_first:
                    found = await backend.find(spec)
                    if found is not None:
                        return found
                return await backend.submit(spec)
            except BackendError as exc:
                attempt += 1
                delay = backoff(self._settings(), attempt)
                deadline = job.deadline_at or 0.0
                if not exc.transient or self._clock() + delay >= deadline:
                    raise
                if bounded and attempt >= self._settings().max_attempts:
                    raise  # another preset is waiting: do not wait out the deadline here
                log.warning(
                    "job %s: submit failed (%s); retry %d in %.1fs", job.id, exc, attempt, delay
                )
                await asyncio.sleep(delay)

    async def _reconcile(self, job: Job, backend: VideoBackend, spec: RenderSpec) -> str | None:
        """Ask the backend whether a submit for ``spec`` exists, retrying while it is down."""
        attempt = 0
        while True:
            try:
                return await backend.find(spec)
            except BackendError as exc:
                deadline = job.deadline_at or 0.0
                if not exc.transient or self._clock() >= deadline:
                    raise
                attempt += 1
                log.warning("job %s: cannot reconcile yet (%s)", job.id, exc)
                await asyncio.sleep(backoff(self._settings(), attempt))

    async def _await_backend(self, job: Job, backend: VideoBackend, handle: str, slot: Slot) -> Job:
        # Only a provider's own queue is shown as a place in a queue (a local renderer
        # counts its waiting renders from 0: not the user's business).
        provider_queue = capabilities_of(backend).provider_queue
        last_progress_event = 0.0
        deadline = job.deadline_at or (self._clock() + self._settings().job_deadline_seconds)
        while True:
            remaining = deadline - self._clock()
            # Poll before judging the deadline: a job that finished while this process
            # was down (or waited for a slot) is delivered, not thrown away.
            timeout = max(0.0, min(self._settings().status_interval_seconds, remaining))
            try:
                status = await backend.wait(handle, timeout)
            except BackendError as exc:
                if not exc.transient:
                    return await self._transitions.fail(job, exc.key, detail=str(exc))
                if remaining > 0:
                    # The handle is stored: keep polling until the deadline, never resubmit.
                    log.warning("job %s: polling failed (%s); retrying", job.id, exc)
                    await asyncio.sleep(min(timeout, self._settings().backoff_base_seconds))
                    continue
                return await self._deadline_passed(job, handle, backend)
            if status.is_final:
                job_ran(job, backend.name, self._clock())
                # The backend is done with it: start the next job before bookkeeping.
                await self._refill(slot)
            if status.state is BackendState.SUCCEEDED:
                take_made(backend, job.seconds)
                return await self._transitions.move(
                    job, JobState.DOWNLOADING, expect={JobState.RUNNING}
                )
            if status.state is BackendState.FILTERED:
                return await self._transitions.fail(job, "job.filtered", detail=status.detail)
            if status.state in {BackendState.FAILED, BackendState.CANCELED}:
                transient = status.transient or status.state is BackendState.CANCELED
                return await self._backend_failed(
                    job, transient, "job.backend_failed", status.detail
                )
            now = self._clock()
            if now >= deadline:
                return await self._deadline_passed(job, handle, backend)
            if now - last_progress_event >= self._settings().status_interval_seconds:
                last_progress_event = now
                await self._notifier.notify(
                    JobEvent(
                        EventKind.PROGRESS,
                        job,
                        progress=status.progress,
                        position=status.queue_position if provider_queue else None,
                    )
                )

    async def _deadline_passed(
        self, job: Job, handle: str | None, backend: VideoBackend | None = None
    ) -> Job:
        """Stop the job at the provider (best effort), fail it and say why."""
        if handle is not None:
            await self.cancel_at_provider(job, handle, backend or self.backend_for(job))
        minutes = max(1, round(self._settings().job_deadline_seconds / 60))
        return await self._transitions.fail(
            job, "job.deadline", {"minutes": minutes}, detail="deadline passed"
        )

    async def cancel_at_provider(self, job: Job, handle: str, backend: VideoBackend) -> None:
        """Ask the provider to stop a job, retrying a transient failure a few times.

        Best effort, as the job is failed anyway: if the provider cannot be reached the
        job may run on there (and be charged), so the log line names its handle.
        """
        if not capabilities_of(backend).cancel:
            log.warning(
                "job %s: %s has no cancel; provider job %s may run to its end",
                job.id, backend.name, handle,
            )  # fmt: skip
            return
        attempts = self._settings().max_attempts
        for attempt in range(1, attempts + 1):
            try:
                await backend.cancel(handle)
                return
            except BackendError as exc:
                if not exc.transient or attempt == attempts:
                    log.warning(
                        "job %s: cannot cancel provider job %s (%s); it may still run",
                        job.id,
                        handle,
                        exc,
                    )
                    return
                await asyncio.sleep(backoff(self._settings(), attempt))
            except Exception:
                log.exception(
                    "job %s: cancelling provider job %s failed; it may still run", job.id, handle
                )
                return

    async def _backend_failed(self, job: Job, transient: bool, key: str, detail: str) -> Job:
        """Retry a transient failure with backoff, or fail the job for good."""
        if transient and job.attempts < self._settings().max_attempts:
            delay = backoff(self._settings(), job.attempts)
            log.warning(
                "job %s attempt %d failed (%s); retry in %.1fs", job.id, job.attempts, detail, delay
            )
            requeued = await self._transitions.move(
                job,
                JobState.QUEUED,
                expect=BACKEND_PHASE,
                handle=None,
                # A new attempt makes both stages of a two-stage take anew.
                stage=None,
                speech_handle=None,
                speech_result=None,
                not_before=self._clock() + delay,
                error_detail=detail,
                lease_owner=None,
                lease_expires=0,
            )
            self._wake()
            return requeued
        return await self._transitions.fail(job, key, detail=detail)
