"""The finishing phase of a job: download the result and deliver it, alone or in a group.

It runs outside the job's backend slot, a few jobs at a time (``finish_concurrency``).
Every state change is committed before the step it announces, so a crash anywhere
resumes at that step (see architecture.md, "Recovery after a crash").
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from config.settings import WorkerSettings
from core.backends.base import VideoBackend
from core.errors import BackendError, DeliveryError, DeliveryUnknown, LeaseLost
from core.failpoints import Failpoints
from core.media import probe_video
from core.metrics import TAKE_CHECK_FAILURES
from core.models import EventKind, Job, JobEvent, JobState
from core.notify import NotifierRouter
from core.storage import JobStore
from core.takecheck import TakeChecks, check_take
from core.transitions import Transitions

log = logging.getLogger(__name__)

_FETCH_ATTEMPTS = 3
_DELIVERY_ATTEMPTS = 5


class _Sent(enum.Enum):
    """How a delivery ended."""

    CONFIRMED = enum.auto()  # the platform answered with the message
    UNCONFIRMED = enum.auto()  # sent once, no answer: maybe delivered, never sent again
    FAILED = enum.auto()  # the jobs were failed (and refunded)


class Finisher:
    """Downloads finished takes and delivers them, one by one or as a request's group."""

    def __init__(
        self,
        *,
        store: JobStore,
        backend_for: Callable[[Job], VideoBackend],
        notifier: NotifierRouter,
        settings: WorkerSettings,
        results_dir: Path,
        failpoints: Failpoints,
        transitions: Transitions,
        owner: str,
        track: Callable[[asyncio.Task[None]], None],
        take_checks: TakeChecks | None = None,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._backend_for = backend_for  # the backend that made a job's result
        self._notifier = notifier
        self._settings = settings
        self._results_dir = results_dir
        self._failpoints = failpoints
        self._transitions = transitions
        self._owner = owner
        self._track = track  # hands sweep tasks to the worker, so that stop() cancels them
        self._take_checks = take_checks
        self._wake = wake  # tells the worker a re-take is waiting
        self._clock = clock
        # Downloads and uploads of finished takes, bounded: a burst of finished takes must
        # not saturate the network, the platform's rate limits or the event loop.
        self.limit = asyncio.Semaphore(settings.finish_concurrency)
        self._sweeping: set[str] = set()  # requests a sweep task is delivering as a group
        # One thread checks results: many checks at once only fight over the GIL with
        # the database thread and the event loop, delaying the claims that fill slots.
        self._media_checks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="media-check")

    async def download(self, job: Job) -> Job:
        """Fetch and check the result, then move the job on to delivery."""
        assert job.handle is not None
        final = self._results_dir / f"{job.id}.mp4"
        partial = final.with_suffix(".part")
        for attempt in range(1, _FETCH_ATTEMPTS + 1):
            try:
                backend = self._backend_for(job)
                await backend.fetch(job.handle, partial, self._settings.max_result_bytes)
                self._failpoints.hit("worker.after_fetch")
                await asyncio.get_running_loop().run_in_executor(
                    self._media_checks, probe_video, partial
                )
                break
            except BackendError as exc:
                partial.unlink(missing_ok=True)
                if not exc.transient or attempt == _FETCH_ATTEMPTS:
                    return await self._transitions.fail(job, exc.key, detail=str(exc))
                await asyncio.sleep(self._settings.backoff_base_seconds * attempt)
        reason = await self._check(job, partial)
        if reason is not None:
            TAKE_CHECK_FAILURES.labels(reason=reason).inc()
            partial.unlink(missing_ok=True)
            return await self._failed_check(job, reason)
        os.replace(partial, final)
        return await self._transitions.move(
            job, JobState.DELIVERING, expect={JobState.DOWNLOADING}, result_path=str(final)
        )

    async def _check(self, job: Job, video: Path) -> str | None:
        """Return why a take is unusable (silent, cut off, frozen), if its preset checks."""
        checks = self._take_checks
        expected = None if checks is None else checks.expected_seconds(job)
        if checks is None or expected is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(
            self._media_checks, check_take, video, expected, checks.settings
        )

    async def _failed_check(self, job: Job, reason: str) -> Job:
        """Make one free re-take of a failed take; a second failure fails it with a refund.

        The re-take is a new provider job of the same take: no new debit (the take was
        charged once, at admission) and, if it fails too, one refund. Delivering the
        "better" of two broken takes was ruled out: both failed the same checks, and a
        silent or frozen clip is not worth a credit.
        """
        if job.retake_reason is None:
            log.warning("job %s: the take failed its check (%s); one free re-take", job.id, reason)
            retake = await self._transitions.move(
                job,
                JobState.QUEUED,
                expect={JobState.DOWNLOADING},
                handle=None,
                # Its own video submit: unmarked, a crash before it leaves sends it anew
                # instead of finding the rejected video by lookup (same inputs). The
                # spoken line of a two-stage take is kept: never paid twice.
                stage=None,
                retake_reason=reason,
                not_before=self._clock(),
                error_detail=f"take check: {reason}",
                lease_owner=None,
                lease_expires=0,
            )
            self._wake()
            return retake
        return await self._transitions.fail(
            job, f"job.take_failed.{reason}", detail=f"take check failed twice: {reason}"
        )

    async def deliver(self, job: Job) -> None:
        """Deliver a downloaded take, or hand it to its group."""
        checked = await self._ensure_result(job)
        if checked is None:
            return
        if self.groups(checked):
            # This take waits for its siblings; whichever task completes the set (or a
            # sweep, or recovery) sends them all at once.
            await self.deliver_group(checked.request_id)
            return
        await self._deliver_one(checked)

    def groups(self, job: Job) -> bool:
        """Return whether this take is delivered together with its siblings."""
        return job.takes > 1 and self._notifier.delivers_groups(job.address.platform)

    async def _ensure_result(self, job: Job) -> Job | None:
        """Return the delivering job with its result file on disk, or None if that failed."""
        assert job.result_path is not None
        if Path(job.result_path).exists():
            return job
        # The result file was lost (e.g. data dir wiped): fetch it again.
        job = await self.download(
            await self._transitions.move(job, JobState.DOWNLOADING, expect={JobState.DELIVERING})
        )
        return job if job.state is JobState.DELIVERING else None

    async def _deliver_one(self, job: Job) -> None:
        assert job.result_path is not None
        video = Path(job.result_path)
        await self._notifier.notify(JobEvent(EventKind.DELIVERING, job))
        sent = await self._send([job], lambda: self._notifier.deliver(job, video))
        if sent is not _Sent.FAILED:
            await self._finish_delivered([job], sent)

    async def deliver_group(self, request_id: str) -> None:
        """Deliver a request's finished takes together, if the set is complete and unclaimed."""
        jobs = await self._store.claim_group(
            request_id, self._owner, lease_seconds=self._settings.lease_seconds
        )
        if jobs is None:
            return
        try:
            ready: list[Job] = []
            for job in jobs:
                if job.state is JobState.DELIVERING:
                    checked = await self._ensure_result(job)
                    if checked is not None:
                        ready.append(checked)
            if len(ready) == 1:
                await self._deliver_one(ready[0])
                return
            if not ready:
                return
            videos = [Path(job.result_path or "") for job in ready]
            for job in ready:
                await self._notifier.notify(JobEvent(EventKind.DELIVERING, job))
            sent = await self._send(ready, lambda: self._notifier.deliver_group(ready, videos))
            if sent is not _Sent.FAILED:
                await self._finish_delivered(ready, sent)
        except LeaseLost:
            raise  # the group is another worker's now: its claim is not ours to drop
        except Exception:
            # A bug mid-group must not leave the siblings claimed by a live worker forever.
            try:
                await self._store.release_group(request_id)
            except Exception:
                log.exception(
                    "jobs %s: cannot release the group claim of request %s",
                    ", ".join(job.id for job in jobs),
                    request_id,
                )
            raise

    async def _send(self, jobs: list[Job], send: Callable[[], Awaitable[None]]) -> _Sent:
        """Try a delivery with retries; on giving up, fail the jobs.

        Only a send the platform certainly did not take is retried: after an unknown
        outcome (the upload left, no answer came) the result may already be in the chat.
        """
        for attempt in range(1, _DELIVERY_ATTEMPTS + 1):
            self._failpoints.hit("worker.before_deliver")
            await self._hold(jobs)
            try:
                await send()
                return _Sent.CONFIRMED
            except DeliveryUnknown as exc:
                ids = ", ".join(job.id for job in jobs)
                log.warning("job %s: delivery unconfirmed (%s); not sending again", ids, exc)
                return _Sent.UNCONFIRMED
            except DeliveryError as exc:
                if exc.permanent or attempt == _DELIVERY_ATTEMPTS:
                    for job in jobs:
                        await self._transitions.fail(job, exc.key, exc.params, detail=str(exc))
                    return _Sent.FAILED
                log.warning("job %s: delivery failed (%s); retrying", jobs[0].id, exc)
                await asyncio.sleep(self._settings.backoff_base_seconds * attempt)
        return _Sent.FAILED

    async def _hold(self, jobs: list[Job]) -> None:
        """Renew the jobs' leases right before a send, or raise ``LeaseLost``.

        A send cannot be taken back: a worker that stalled past its lease (a late
        heartbeat under load) and lost the job to another must not send it as well, or
        the requester gets the video twice. The renewal is fenced by the lease token, so
        a takeover is either committed before it (nothing is sent here) or cannot happen
        for another ``lease_seconds``.
        """
        for job in jobs:
            lease = job.lease
            if lease is None:
                continue  # not driven under a lease (nothing can take it over)
            if not await self._store.renew_lease(job.id, lease, self._settings.lease_seconds):
                raise LeaseLost(job.id)

    async def _finish_delivered(self, jobs: list[Job], sent: _Sent) -> None:
        # A crash here delivers again after restart: twice is allowed, never zero times.
        self._failpoints.hit("worker.after_deliver")
        unconfirmed = sent is _Sent.UNCONFIRMED
        for job in jobs:
            done = await self._transitions.move(
                job, JobState.DONE, expect={JobState.DELIVERING}, delivery_unconfirmed=unconfirmed
            )
            log.info("job %s done%s", job.id, " (delivery unconfirmed)" if unconfirmed else "")
            await self._notifier.notify(JobEvent(EventKind.DELIVERED, done))

    async def sweep_groups(self) -> None:
        """Deliver complete groups no task is on (a sibling was canceled or failed oddly)."""
        platforms = [p for p in self._notifier.platforms if self._notifier.delivers_groups(p)]
        if not platforms:
            return
        for request_id in await self._store.waiting_groups(self._owner, platforms):
            if request_id in self._sweeping:
                continue
            self._sweeping.add(request_id)
            self._track(asyncio.create_task(self._swept(request_id), name=f"group-{request_id}"))

    async def _swept(self, request_id: str) -> None:
        try:
            async with self.limit:
                await self.deliver_group(request_id)
        except LeaseLost:
            log.warning("request %s: its group was taken over by another worker", request_id)
        except Exception:
            log.exception("group delivery of request %s failed", request_id)
        finally:
            self._sweeping.discard(request_id)
