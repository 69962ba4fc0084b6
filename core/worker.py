"""The worker: claim jobs in fair order, drive the backend, hand results on, recover.

A job holds a backend slot from claim until the backend reports a final state; download
and delivery (core/finishing.py) run outside the slot so the next job can start at once.
Every state change is committed before the step it announces, so a crash anywhere resumes
at that step (see architecture.md, "Recovery after a crash").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from config.settings import WorkerSettings
from core.backends.base import BackendState, RenderSpec, VideoBackend, capabilities_of
from core.errors import BackendError, ContentFiltered, LeaseLost
from core.failpoints import Failpoints
from core.finishing import Finisher
from core.models import EventKind, Job, JobEvent, JobState
from core.notify import NotifierRouter
from core.retention import Retention
from core.storage import JobStore, LocalWakeups, Wakeups
from core.storage.types import Claimed
from core.takecheck import TakeChecks
from core.transitions import Transitions

log = logging.getLogger(__name__)

_BACKEND_PHASE = frozenset({JobState.SUBMITTING, JobState.RUNNING})
_FINISH_PHASE = frozenset({JobState.DOWNLOADING, JobState.DELIVERING})
_Image = tuple[bytes, int, int]  # prepared JPEG, width, height
# Handles stored this long before a take's first claim are other takes' too (a lookup after
# a restart excludes them): listings search from that claim on, with the same slack.
_LOOKUP_WINDOW = 600.0


class _Slot:
    """One backend slot held by a job; releasing it twice is harmless."""

    def __init__(self, semaphore: asyncio.Semaphore, *, held: bool) -> None:
        self._semaphore = semaphore
        self.held = held

    async def acquire(self) -> None:
        await self._semaphore.acquire()
        self.held = True

    def release(self) -> None:
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


class Worker:
    """Runs jobs from the store through its backends and hands results to the notifiers.

    ``backend`` takes every new job; ``fallbacks`` (presets in order) take a job only when
    the one before refused it before accepting it, for a provider-side reason.
    """

    def __init__(
        self,
        *,
        store: JobStore,
        backend: VideoBackend,
        fallbacks: Sequence[VideoBackend] = (),
        notifier: NotifierRouter,
        settings: WorkerSettings,
        results_dir: Path,
        failpoints: Failpoints | None = None,
        clock: Callable[[], float] = time.time,
        eta: Callable[[int], float] | None = None,
        retention: Retention | None = None,
        take_checks: TakeChecks | None = None,
        wakeups: Wakeups | None = None,
    ) -> None:
        self._store = store
        self._backend = backend
        self._notifier = notifier
        self._settings = settings
        self._results_dir = results_dir
        self._failpoints = failpoints or Failpoints()
        self._clock = clock
        self._eta = eta
        self._retention = retention
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._chain = (backend, *fallbacks)
        self._backends = {each.name: each for each in self._chain}
        # Each backend has its own slots; new jobs are claimed for the first one's.
        self._semaphores = {each.name: asyncio.Semaphore(each.slots) for each in self._chain}
        self._slots = self._semaphores[backend.name]
        self._wakeups: Wakeups = wakeups if wakeups is not None else LocalWakeups()
        self._queue_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._driving: set[str] = set()
        self._stopping = False
        self._run_task: asyncio.Task[object] | None = None
        self._transitions = Transitions(store=store, notifier=notifier, clock=clock)
        self._finisher = Finisher(
            store=store,
            backend_for=self.backend_for,
            notifier=notifier,
            settings=settings,
            results_dir=results_dir,
            failpoints=self._failpoints,
            transitions=self._transitions,
            owner=self.owner,
            track=self._track,
            take_checks=take_checks,
            wake=self.wake,
            clock=clock,
        )

    def backend_for(self, job: Job) -> VideoBackend:
        """Return the backend a job is on (its stored preset, else the first one)."""
        return self._backends.get(job.backend or "", self._backend)

    @property
    def platforms(self) -> tuple[str, ...]:
        """Return the platforms whose jobs this worker may take."""
        return self._notifier.platforms

    def wake(self) -> None:
        """Tell the workers (this one and, if the store carries it, others) work may be free."""
        self._wakeups.notify()
        self._queue_changed.set()

    # --- main loops ------------------------------------------------------------------

    async def run(self) -> None:
        """Process jobs until ``stop`` is called or the task is canceled."""
        self._results_dir.mkdir(parents=True, exist_ok=True)
        self._run_task = asyncio.current_task()
        background = [
            asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat"),
            asyncio.create_task(self._position_loop(), name="worker-positions"),
        ]
        if self._retention is not None:
            background.append(asyncio.create_task(self._retention.run(), name="retention"))
        try:
            await self._adopt_stale()
            # Let adopted jobs queue for their slots before new work takes them all:
            # a job the provider is already running must not wait behind fresh claims.
            await asyncio.sleep(0)
            while not self._stopping:
                await self._slots.acquire()
                free = 1
                while not self._slots.locked():  # take every other free slot too
                    await self._slots.acquire()
                    free += 1
                if self._stopping:
                    self._release(free)
                    break
                try:
                    claimed = await self._claim(free)
                except Exception:
                    # A passing store error must not stop the worker for good.
                    self._release(free)
                    log.exception("claiming jobs failed; retrying")
                    await asyncio.sleep(self._backoff(2))
                    continue
                except BaseException:
                    self._release(free)
                    raise
                self._release(free - len(claimed))
                for item in claimed:
                    image = (item.image_jpeg, item.width, item.height)
                    self._spawn(item.job, holds_slot=True, image=image)
                if claimed:
                    self._queue_changed.set()
                else:
                    await self._idle()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    def _release(self, slots: int) -> None:
        for _ in range(slots):
            self._slots.release()

    async def run_until_idle(self) -> None:
        """Process jobs until none for this worker's platforms is left unfinished."""
        runner = asyncio.create_task(self.run(), name="worker")
        try:
            while not runner.done():
                if not self._driving and await self._store.count_unfinished(self.platforms) == 0:
                    break
                await asyncio.sleep(0.05)
        finally:
            await self.stop()
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def stop(self) -> None:
        """Stop claiming, interrupt running jobs and hand their leases back at once."""
        self._stopping = True
        self._wakeups.notify()
        runner = self._run_task
        if runner is not None and runner is not asyncio.current_task() and not runner.done():
            # Stop the claim loop first, so that no job is claimed after this point.
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The states are committed; a restarted worker adopts these jobs without waiting
        # for the lease to run out. If this fails they are adopted when the leases expire.
        try:
            await self._store.release_leases(self.owner)
        except Exception:
            log.exception("releasing the leases of worker %s failed", self.owner)

    async def _idle(self) -> None:
        timeout = self._settings.heartbeat_seconds
        try:
            next_at = await self._store.next_wakeup(self.platforms)
        except Exception:
            log.exception("reading the queue failed")
            next_at = None
        now = self._clock()
        # A waiting job due now that the claim skipped is held back by a cap: the job
        # that frees the cap wakes us, so sleep until then instead of spinning.
        if next_at is not None and next_at > now:
            timeout = min(timeout, next_at - now)
        if await self._wakeups.wait(timeout):
            # Something was admitted or freed (maybe by another process): places moved.
            self._queue_changed.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_seconds)
            try:
                await self._store.heartbeat(self.owner, self._settings.lease_seconds)
                await self._adopt_stale()
                await self._finisher.sweep_groups()
            except Exception:
                log.exception("heartbeat failed")

    async def _adopt_stale(self) -> None:
        jobs = await self._store.adopt_stale(
            self.owner, platforms=self.platforms, lease_seconds=self._settings.lease_seconds
        )
        for job in jobs:
            if job.id in self._driving:
                continue
            log.info("resuming job %s in state %s", job.id, job.state.value)
            self._spawn(job, holds_slot=False, recovered=True)

    def _spawn(
        self,
        job: Job,
        *,
        holds_slot: bool,
        recovered: bool = False,
        image: _Image | None = None,
    ) -> None:
        self._driving.add(job.id)
        task = asyncio.create_task(
            self._drive(job, holds_slot, recovered, image), name=f"job-{job.id}"
        )
        self._tasks.add(task)

        def _done(finished: asyncio.Task[None], job_id: str = job.id) -> None:
            self._tasks.discard(finished)
            self._driving.discard(job_id)
            if not finished.cancelled() and isinstance(finished.exception(), LeaseLost):
                log.warning("job %s: lease lost to another worker; dropping it here", job_id)
            elif not finished.cancelled() and finished.exception() is not None:
                # Even failing the job failed (e.g. the store was down): let the next
                # heartbeat adopt it instead of renewing a lease nobody drives.
                log.error("job %s task died: %r", job_id, finished.exception())
                self._track(asyncio.create_task(self._expire_lease(job_id)))

        task.add_done_callback(_done)

    async def _expire_lease(self, job_id: str) -> None:
        try:
            await self._store.expire_lease(job_id)
        except Exception:
            log.exception("job %s: cannot expire its lease; it is adopted when it runs out", job_id)

    def _track(self, task: asyncio.Task[None]) -> None:
        """Keep a background task until it ends, so that ``stop`` cancels it too."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _position_loop(self) -> None:
        """Tell waiting requesters their new place whenever the queue moved."""
        shown: dict[str, int] = {}
        while True:
            await self._queue_changed.wait()
            self._queue_changed.clear()
            try:
                waiting = await self._store.waiting_jobs(limit=200)
            except Exception:
                log.exception("reading queue positions failed")
                await asyncio.sleep(self._settings.status_interval_seconds)
                continue
            current: dict[str, int] = {}
            for index, job in enumerate(waiting, start=1):
                current[job.id] = index
                if shown.get(job.id) != index:
                    eta = self._eta(index) if self._eta else None
                    await self._notifier.notify(
                        JobEvent(EventKind.QUEUED, job, position=index, eta_seconds=eta)
                    )
            shown = current
            await asyncio.sleep(self._settings.status_interval_seconds)

    # --- one job ---------------------------------------------------------------------

    async def _drive(
        self, job: Job, holds_slot: bool, recovered: bool, image: _Image | None
    ) -> None:
        semaphore = self._semaphores[self.backend_for(job).name]
        if holds_slot and semaphore is not self._slots:
            # Claimed with a slot of the first backend, but it is on a fallback preset.
            self._slots.release()
            holds_slot = False
        slot = _Slot(semaphore, held=holds_slot)
        try:
            if job.state in _BACKEND_PHASE:
                if not slot.held:
                    await slot.acquire()
                try:
                    job = await self._backend_phase(job, recovered, slot, image)
                finally:
                    slot.release()
                    # The slot is free and the account's in-flight count has dropped: a
                    # claim that found nothing (caps) may succeed now.
                    self.wake()
            if job.state in _FINISH_PHASE:
                async with self._finisher.limit:
                    if job.state is JobState.DOWNLOADING:
                        job = await self._finisher.download(job)
                    if job.state is JobState.DELIVERING:
                        await self._finisher.deliver(job)
            if job.state.is_terminal and self._finisher.groups(job):
                # Its siblings may have been waiting for this take to end.
                async with self._finisher.limit:
                    await self._finisher.deliver_group(job.request_id)
        except asyncio.CancelledError:
            raise
        except LeaseLost:
            # This worker stalled past its lease and another one took the job over: it
            # carries on from the stored state; nothing here may touch the job any more.
            log.warning("job %s: lease lost to another worker; dropping it here", job.id)
        except Exception as exc:
            # A bug must not strand the job: fail it with a message the user understands.
            log.exception("job %s crashed in state %s", job.id, job.state.value)
            if job.handle is not None and job.state in _BACKEND_PHASE:
                # Failing it here must not leave the provider running (and charging).
                await self._cancel_at_provider(job, job.handle, self.backend_for(job))
            await self._transitions.fail(
                job, "job.backend_failed", detail=f"internal error: {exc!r}"
            )
        finally:
            slot.release()

    async def _spec(self, job: Job, image: _Image | None, *, recovered: bool) -> RenderSpec:
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

    async def _backend_phase(
        self, job: Job, recovered: bool, slot: _Slot, image: _Image | None
    ) -> Job:
        handle = job.handle
        backend = self.backend_for(job)
        if job.state is JobState.SUBMITTING:
            self._failpoints.hit("worker.after_claim")
            spec = await self._spec(job, image, recovered=recovered)
            resubmitted = job.resubmitted
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
                    await slot.move_to(self._semaphores[backend.name])
                    continue
                self._failpoints.hit("worker.after_submit")
            job = await self._transitions.move(
                job, JobState.RUNNING, expect={JobState.SUBMITTING},
                handle=handle, resubmitted=resubmitted, backend=backend.name,
            )  # fmt: skip
            self._failpoints.hit("worker.after_handle_stored")
            await self._notifier.notify(JobEvent(EventKind.STARTED, job))
        assert handle is not None
        return await self._await_backend(job, backend, handle, slot)

    def _following(self, backend: VideoBackend) -> VideoBackend | None:
        """Return the preset after ``backend`` in the fallback order, if any."""
        names = [each.name for each in self._chain]
        index = names.index(backend.name) if backend.name in names else len(names)
        return self._chain[index + 1] if index + 1 < len(self._chain) else None

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
                delay = self._backoff(attempt)
                deadline = job.deadline_at or 0.0
                if not exc.transient or self._clock() + delay >= deadline:
                    raise
                if bounded and attempt >= self._settings.max_attempts:
                    raise  # another preset is waiting: do not wait out the deadline here
                log.warning(
                    "job %s: submit failed (%s); retry %d in %.1fs", job.id, exc, attempt, delay
                )
                await asyncio.sleep(delay)

    async def _claim(self, limit: int) -> list[Claimed]:
        return await self._store.claim(
            self.owner,
            limit=limit,
            platforms=self.platforms,
            lease_seconds=self._settings.lease_seconds,
            deadline_seconds=self._settings.job_deadline_seconds,
        )

    async def _refill(self, slot: _Slot) -> None:
        """Hand a finished job's slot straight to the next waiting job, or free it.

        Going through the claim loop would cost a wake-up of that loop on a busy event
        loop; when many jobs finish together that delay leaves slots idle.
        """
        if self._stopping or not slot.held or not slot.of(self._slots):
            # (new jobs are claimed for the first backend's slots only)
            slot.release()
            return
        try:
            claimed = await self._claim(1)
        except Exception:
            log.exception("claiming the next job failed; the claim loop will retry")
            claimed = []
        if not claimed or self._stopping:
            slot.release()
            # (a job claimed during stop stays SUBMITTING under this lease: released in
            # stop(), adopted and reconciled by the next worker)
            return
        item = claimed[0]
        slot.hand_over()
        self._queue_changed.set()
        self._spawn(item.job, holds_slot=True, image=(item.image_jpeg, item.width, item.height))

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
                await asyncio.sleep(self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, so that retries after one outage spread out."""
        growth: float = 2.0 ** (attempt - 1)
        delay = min(
            self._settings.backoff_max_seconds, self._settings.backoff_base_seconds * growth
        )
        return delay * random.uniform(0.5, 1.0)

    async def _await_backend(
        self, job: Job, backend: VideoBackend, handle: str, slot: _Slot
    ) -> Job:
        # Only a provider's own queue is shown as a place in a queue (a local renderer
        # counts its waiting renders from 0: not the user's business).
        provider_queue = capabilities_of(backend).provider_queue
        last_progress_event = 0.0
        deadline = job.deadline_at or (self._clock() + self._settings.job_deadline_seconds)
        while True:
            remaining = deadline - self._clock()
            # Poll before judging the deadline: a job that finished while this process
            # was down (or waited for a slot) is delivered, not thrown away.
            timeout = max(0.0, min(self._settings.status_interval_seconds, remaining))
            try:
                status = await backend.wait(handle, timeout)
            except BackendError as exc:
                if not exc.transient:
                    return await self._transitions.fail(job, exc.key, detail=str(exc))
                if remaining > 0:
                    # The handle is stored: keep polling until the deadline, never resubmit.
                    log.warning("job %s: polling failed (%s); retrying", job.id, exc)
                    await asyncio.sleep(min(timeout, self._settings.backoff_base_seconds))
                    continue
                return await self._deadline_passed(job, handle, backend)
            if status.is_final:
                # The backend is done with it: start the next job before bookkeeping.
                await self._refill(slot)
            if status.state is BackendState.SUCCEEDED:
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
            if now - last_progress_event >= self._settings.status_interval_seconds:
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
            await self._cancel_at_provider(job, handle, backend or self.backend_for(job))
        minutes = max(1, round(self._settings.job_deadline_seconds / 60))
        return await self._transitions.fail(
            job, "job.deadline", {"minutes": minutes}, detail="deadline passed"
        )

    async def _cancel_at_provider(self, job: Job, handle: str, backend: VideoBackend) -> None:
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
        attempts = self._settings.max_attempts
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
                await asyncio.sleep(self._backoff(attempt))
            except Exception:
                log.exception(
                    "job %s: cancelling provider job %s failed; it may still run", job.id, handle
                )
                return

    async def _backend_failed(self, job: Job, transient: bool, key: str, detail: str) -> Job:
        """Retry a transient failure with backoff, or fail the job for good."""
        if transient and job.attempts < self._settings.max_attempts:
            delay = self._backoff(job.attempts)
            log.warning(
                "job %s attempt %d failed (%s); retry in %.1fs", job.id, job.attempts, detail, delay
            )
            requeued = await self._transitions.move(
                job,
                JobState.QUEUED,
                expect=_BACKEND_PHASE,
                handle=None,
                not_before=self._clock() + delay,
                error_detail=detail,
                lease_owner=None,
                lease_expires=0,
            )
            self.wake()
            return requeued
        return await self._transitions.fail(job, key, detail=detail)
