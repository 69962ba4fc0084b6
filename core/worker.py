"""The worker: claim jobs in fair order, drive the backend, hand results on, recover.

A job holds a backend slot from claim until the backend reports a final state (that phase
is core/backend_phase.py); download and delivery (core/finishing.py) run outside the slot
so the next job can start at once.
Every state change is committed before the step it announces, so a crash anywhere resumes
at that step (see architecture.md, "Recovery after a crash").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from config.settings import WorkerSettings
from core.backend_phase import BACKEND_PHASE, BackendPhase, Image, Slot, backoff
from core.backends.base import VideoBackend
from core.errors import LeaseLost
from core.failpoints import Failpoints
from core.finishing import Finisher
from core.logcontext import set_job
from core.models import EventKind, Job, JobEvent, JobState
from core.notify import NotifierRouter
from core.portraits import PortraitRunner
from core.retention import Retention
from core.storage import JobStore, LocalWakeups, Wakeups
from core.storage.types import Claimed
from core.takecheck import TakeChecks
from core.transitions import Transitions
from core.voice_ids import VoiceIds

log = logging.getLogger(__name__)

_FINISH_PHASE = frozenset({JobState.DOWNLOADING, JobState.DELIVERING})


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
        voices: VoiceIds | None = None,
        portraits: PortraitRunner | None = None,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._settings = settings
        self._results_dir = results_dir
        self._failpoints = failpoints or Failpoints()
        self._clock = clock
        self._eta = eta
        self._retention = retention
        self.portraits = portraits  # characters drawn from a description, beside the jobs
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._chain = (backend, *fallbacks)
        # Each backend has its own slots; new jobs are claimed for the first one's.
        self._semaphores = {each.name: asyncio.Semaphore(each.slots) for each in self._chain}
        self._slots = self._semaphores[backend.name]
        self._wakeups: Wakeups = wakeups if wakeups is not None else LocalWakeups()
        self._queue_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._driving: set[str] = set()
        # Jobs this worker took back (a new lease) while a task of its own still drives
        # them under the old one: driven again once that task has ended.
        self._taken_back: dict[str, Job] = {}
        self._stopping = False
        self._run_task: asyncio.Task[object] | None = None
        self._transitions = Transitions(store=store, notifier=notifier, clock=clock)
        self._phase = BackendPhase(
            store=store,
            chain=self._chain,
            semaphores=self._semaphores,
            notifier=notifier,
            settings=lambda: self._settings,
            transitions=self._transitions,
            failpoints=self._failpoints,
            clock=clock,
            refill=self._refill,
            wake=self.wake,
            voices=voices,
        )
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
        return self._phase.backend_for(job)

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
            asyncio.create_task(self._adopt_loop(), name="worker-adopt"),
            asyncio.create_task(self._position_loop(), name="worker-positions"),
        ]
        if self._retention is not None:
            background.append(asyncio.create_task(self._retention.run(), name="retention"))
        if self.portraits is not None:
            background.append(asyncio.create_task(self.portraits.run(), name="portraits"))
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
                    await asyncio.sleep(backoff(self._settings, 2))
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
        # Leases are renewed on a schedule of their own: adopting and sweeping are slow
        # under load, and a renewal that waits for them may come after the lease ran out
        # (then another worker takes over jobs this one is still driving).
        while True:
            await asyncio.sleep(self._settings.heartbeat_seconds)
            try:
                await self._store.heartbeat(self.owner, self._settings.lease_seconds)
            except Exception:
                log.exception("heartbeat failed")

    async def _adopt_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_seconds)
            try:
                await self._adopt_stale()
                await self._finisher.sweep_groups()
            except Exception:
                log.exception("adopting stale jobs failed")

    async def _adopt_stale(self) -> None:
        jobs = await self._store.adopt_stale(
            self.owner, platforms=self.platforms, lease_seconds=self._settings.lease_seconds
        )
        for job in jobs:
            if job.id in self._driving:
                # The task on it stalled past its lease: it fails at its next change (its
                # token is old) and ends. Skipping the job here would strand it: nobody
                # would drive it, yet this worker's heartbeat would keep its lease alive.
                self._taken_back[job.id] = job
                continue
            log.info("resuming job %s in state %s", job.id, job.state.value)
            self._spawn(job, holds_slot=False, recovered=True)

    def _spawn(
        self,
        job: Job,
        *,
        holds_slot: bool,
        recovered: bool = False,
        image: Image | None = None,
    ) -> None:
        self._driving.add(job.id)
        task = asyncio.create_task(
            self._drive(job, holds_slot, recovered, image), name=f"job-{job.id}"
        )
        self._tasks.add(task)

        def _done(finished: asyncio.Task[None], job_id: str = job.id) -> None:
            self._tasks.discard(finished)
            self._driving.discard(job_id)
            again = self._taken_back.pop(job_id, None)
            if again is not None and not self._stopping:
                log.info("resuming job %s in state %s", job_id, again.state.value)
                self._spawn(again, holds_slot=False, recovered=True)
            elif not finished.cancelled() and isinstance(finished.exception(), LeaseLost):
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
        self, job: Job, holds_slot: bool, recovered: bool, image: Image | None
    ) -> None:
        # Every line this task logs names the job (structured logs; asyncio gave the task
        # its own copy of the context, so this never leaks into another job's lines).
        set_job(job, self.backend_for(job))
        semaphore = self._semaphores[self.backend_for(job).name]
        if holds_slot and semaphore is not self._slots:
            # Claimed with a slot of the first backend, but it is on a fallback preset.
            self._slots.release()
            holds_slot = False
        slot = Slot(semaphore, held=holds_slot)
        try:
            if job.state in BACKEND_PHASE:
                if not slot.held:
                    await slot.acquire()
                try:
                    job = await self._phase.run(job, recovered, slot, image)
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
            if job.handle is not None and job.state in BACKEND_PHASE:
                # Failing it here must not leave the provider running (and charging).
                await self._phase.cancel_at_provider(job, job.handle, self.backend_for(job))
            await self._transitions.fail(
                job, "job.backend_failed", detail=f"internal error: {exc!r}"
            )
        finally:
            slot.release()

    async def _claim(self, limit: int) -> list[Claimed]:
        return await self._store.claim(
            self.owner,
            limit=limit,
            platforms=self.platforms,
            lease_seconds=self._settings.lease_seconds,
            deadline_seconds=self._settings.job_deadline_seconds,
        )

    async def _refill(self, slot: Slot) -> None:
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
