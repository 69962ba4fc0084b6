"""The worker and service end to end: real SQLite, real job-API client, loopback server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from core.backends.jobapi import JobApiBackend
from core.errors import DeliveryError, ImageRejected, PromptRejected, RequestRejected
from core.models import DeliveryAddress, EventKind, Job, JobEvent, JobState, UserRef, VideoRequest
from core.notify import NotifierRouter
from core.service import Service
from core.storage import JobStore
from core.storage.sqlite import sqlite_storage
from core.storage.sqlite.database import Database
from core.storage.sqlite.jobs import SqliteJobs
from core.worker import Worker
from tests.conftest import db_execute, make_settings
from tests.jobapi_server import JobApiServer


@dataclass
class RecordingAdapter:
    """A chat adapter at the edge: records what users would see and receive."""

    events: list[JobEvent] = field(default_factory=list)
    delivered: list[tuple[str, bytes]] = field(default_factory=list)
    refuse: DeliveryError | None = None
    flaky: int = 0

    async def notify(self, event: JobEvent) -> None:
        self.events.append(event)

    async def deliver(self, job: Job, video: Path) -> None:
        if self.refuse is not None:
            raise self.refuse
        if self.flaky > 0:
            self.flaky -= 1
            raise DeliveryError("platform hiccup", permanent=False)
        self.delivered.append((job.id, video.read_bytes()))

    def kinds(self, job_id: str) -> list[EventKind]:
        return [e.kind for e in self.events if e.job.id == job_id]


@dataclass
class GroupAdapter(RecordingAdapter):
    """An adapter that also sends several takes of a request as one group."""

    groups: list[list[str]] = field(default_factory=list)

    async def deliver_group(self, jobs: list[Job], videos: list[Path]) -> None:
        if self.refuse is not None:
            raise self.refuse
        # Yield inside the send, as an upload does, so that a racing sibling could run.
        await asyncio.sleep(0.05)
        assert all(video.read_bytes() for video in videos)
        self.groups.append([job.id for job in jobs])


@dataclass
class Harness:
    settings: Settings
    server: JobApiServer
    store: JobStore
    adapter: RecordingAdapter
    service: Service
    worker: Worker

    def request(self, line: str, image: bytes, key: str = "m1", **kwargs: Any) -> VideoRequest:
        return VideoRequest(
            user=UserRef("test", kwargs.pop("user", "u1")),
            image=image,
            line=line,
            address=DeliveryAddress("test", "chat1"),
            source_key=key,
            **kwargs,
        )

    async def finish(self, job_ids: list[str], timeout: float = 15) -> list[Job]:
        async def all_final() -> list[Job]:
            while True:
                jobs = await self.store.jobs_by_ids(job_ids)
                if all(job.state.is_terminal for job in jobs):
                    return jobs
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(all_final(), timeout)


@contextlib.asynccontextmanager
async def harness(
    tmp_path: Path,
    video: bytes,
    *,
    slots: int = 2,
    adapter: RecordingAdapter | None = None,
    jobs_class: type[SqliteJobs] = SqliteJobs,
    **server_knobs: Any,
) -> AsyncIterator[Harness]:
    server = JobApiServer(video=video, **server_knobs)
    url = await server.start()
    settings = make_settings(
        tmp_path,
        backend="jobapi",
        jobapi={"url": url, "slots": slots, "poll_interval_seconds": 0.02},
    )
    db = await Database.open(settings.store_path)
    storage = sqlite_storage(db)
    store = jobs_class(db)  # the worker's: the real SQLite store, or a subclass observing it
    backend = JobApiBackend(settings=settings.jobapi)
    adapter = adapter or RecordingAdapter()
    router = NotifierRouter({"test": adapter})
    service = Service(
        storage=storage,
        notifier=router,
        images=settings.images,
        prompts=settings.prompts,
        slots=slots,
    )
    worker = Worker(
        store=store,
        backend=backend,
        notifier=router,
        settings=settings.worker,
        results_dir=settings.data_dir / "results",
        eta=service.eta_for,
    )
    service.set_wake(worker.wake)
    try:
        async with running(worker, backend):
            yield Harness(settings, server, store, adapter, service, worker)
    finally:
        await storage.close()
        await server.stop()


@contextlib.asynccontextmanager
async def running(worker: Worker, backend: JobApiBackend) -> AsyncIterator[Worker]:
    """Run a worker until the block ends, then stop it and close its backend."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        await worker.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await backend.aclose()


LINE = "The girl smiles and says: \"You didn't really think I'd give up?\""


async def test_request_is_delivered_with_status_events(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    async with harness(tmp_path, tiny_mp4) as h:
        admission = await h.service.submit(h.request(LINE, portrait))
        assert admission.position == 1 and admission.eta_seconds is not None
        [job] = await h.finish([j.id for j in admission.jobs])
        assert job.state is JobState.DONE
        assert h.adapter.delivered == [(job.id, tiny_mp4)]
        kinds = h.adapter.kinds(job.id)
        assert kinds.index(EventKind.STARTED) < kinds.index(EventKind.DELIVERED)
        assert kinds[-1] is EventKind.DELIVERED
        # The provider got the prepared image and the parsed line, not the raw upload.
        [served] = h.server.jobs.values()
        assert served.payload["speech"] == "You didn't really think I'd give up?"
        assert served.payload["width"] == 1280 and served.payload["height"] == 720


async def test_takes_share_a_voice_and_get_distinct_seeds(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    async with harness(tmp_path, tiny_mp4) as h:
        admission = await h.service.submit(h.request(LINE + " --takes 3", portrait))
        jobs = await h.finish([j.id for j in admission.jobs])
        assert [j.state for j in jobs] == [JobState.DONE] * 3
        payloads = [job.payload for job in h.server.jobs.values()]
        assert len({p["voice"] for p in payloads}) == 1
        assert len({p["seed"] for p in payloads}) == 3


async def test_duplicate_event_is_not_a_second_job(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    async with harness(tmp_path, tiny_mp4, hold=asyncio.Event()) as h:
        first = await h.service.submit(h.request(LINE, portrait, key="chat1:42"))
        with pytest.raises(RequestRejected) as refused:
            await h.service.submit(h.request(LINE, portrait, key="chat1:42"))
        assert refused.value.key == "request.duplicate"
        assert refused.value.params["request_id"] == first.request_id
        assert sum((await h.store.count_by_state()).values()) == 1


async def test_bad_inputs_write_nothing(tmp_path: Path, tiny_mp4: bytes, portrait: bytes) -> None:
    async with harness(tmp_path, tiny_mp4) as h:
        with pytest.raises(ImageRejected):
            await h.service.submit(h.request(LINE, b"just some text, not an image"))
        with pytest.raises(PromptRejected):
            await h.service.submit(h.request("   ", portrait, key="m2"))
        with pytest.raises(PromptRejected) as too_long:
            await h.service.submit(h.request('He says: "' + "word " * 40 + '"', portrait, key="m3"))
        assert too_long.value.key == "prompt.too_long_to_speak"
        assert await h.store.count_by_state() == {}
        assert await h.store.find_request("m1") is None


async def test_lost_submit_answer_is_reconciled_not_paid_twice(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    async with harness(tmp_path, tiny_mp4, lose_submit_answers=1) as h:
        admission = await h.service.submit(h.request(LINE, portrait))
        [job] = await h.finish([admission.jobs[0].id])
        assert job.state is JobState.DONE
        assert len(h.server.submits) == 1
        # The lost answer is reconciled by lookup, not by sending the submit again.
        assert len(h.server.submit_requests) == 1


async def test_transient_failure_is_retried_then_succeeds(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    async with harness(tmp_path, tiny_mp4, fail_jobs=2) as h:
        admission = await h.service.submit(h.request(LINE, portrait))
        [job] = await h.finish([admission.jobs[0].id])
        assert job.state is JobState.DONE
        assert job.attempts == 3
        # Each attempt is its own provider job; none was submitted twice.
        assert len(h.server.submits) == len(set(h.server.submits)) == 3


async def test_retries_are_bounded(tmp_path: Path, tiny_mp4: bytes, portrait: bytes) -> None:
    async with harness(tmp_path, tiny_mp4, fail_jobs=10) as h:
        admission = await h.service.submit(h.request(LINE, portrait))
        [job] = await h.finish([admission.jobs[0].id])
        assert job.state is JobState.FAILED
        assert job.error_key == "job.backend_failed"
        assert job.attempts == h.settings.worker.max_attempts
        failed = [e for e in h.adapter.events if e.kind is EventKind.FAILED]
        assert [e.error_key for e in failed] == ["job.backend_failed"]


async def test_content_filter_is_not_retried(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    async with harness(tmp_path, tiny_mp4, filter_all=True) as h:
        admission = await h.service.submit(h.request(LINE, portrait))
        [job] = await h.finish([admission.jobs[0].id])
        assert (job.state, job.error_key, job.attempts) == (JobState.FAILED, "job.filtered", 1)


async def test_malformed_status_replies_are_survived(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    async with harness(tmp_path, tiny_mp4, malformed_polls=3) as h:
        admission = await h.service.submit(h.request(LINE, portrait))
        [job] = await h.finish([admission.jobs[0].id])
        assert job.state is JobState.DONE and len(h.server.submits) == 1


async def test_broken_result_fails_cleanly(tmp_path: Path, portrait: bytes) -> None:
    async with harness(tmp_path, b"<html>not a video</html>") as h:
        admission = await h.service.submit(h.request(LINE, portrait))
        [job] = await h.finish([admission.jobs[0].id])
        assert (job.state, job.error_key) == (JobState.FAILED, "job.bad_result")
        assert h.adapter.delivered == []


async def test_result_url_off_the_server_is_refused(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    knobs = {"foreign_result_url": "http://169.254.169.254/latest/meta-data"}
    async with harness(tmp_path, tiny_mp4, **knobs) as h:
        admission = await h.service.submit(h.request(LINE, portrait))
        [job] = await h.finish([admission.jobs[0].id])
        assert (job.state, job.error_key) == (JobState.FAILED, "job.bad_result")


async def test_deadline_cancels_at_the_provider(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    async with harness(tmp_path, tiny_mp4, hold=asyncio.Event()) as h:
        h.worker._settings = h.settings.worker.model_copy(update={"job_deadline_seconds": 0.3})
        admission = await h.service.submit(h.request(LINE, portrait))
        [job] = await h.finish([admission.jobs[0].id])
        assert (job.state, job.error_key) == (JobState.FAILED, "job.deadline")
        [served] = h.server.jobs.values()
        assert served.canceled


async def test_delivery_retries_transient_and_stops_on_permanent(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    async with harness(tmp_path, tiny_mp4) as h:
        h.adapter.flaky = 2
        admission = await h.service.submit(h.request(LINE, portrait))
        [job] = await h.finish([admission.jobs[0].id])
        assert job.state is JobState.DONE and len(h.adapter.delivered) == 1
        h.adapter.refuse = DeliveryError("bot was blocked", permanent=True)
        admission = await h.service.submit(h.request(LINE, portrait, key="m2"))
        [job] = await h.finish([admission.jobs[0].id])
        assert (job.state, job.error_key) == (JobState.FAILED, "job.undeliverable")


async def test_queue_positions_follow_the_scheduler(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    hold = asyncio.Event()
    async with harness(tmp_path, tiny_mp4, slots=1, hold=hold) as h:
        first = await h.service.submit(h.request(LINE, portrait, key="a", user="alice"))
        # Wait until alice's job holds the only slot.
        for _ in range(200):
            if h.server.jobs:
                break
            await asyncio.sleep(0.01)
        second = await h.service.submit(h.request(LINE + " --takes 2", portrait, key="b"))
        third = await h.service.submit(h.request(LINE, portrait, key="c", user="carol"))
        assert second.position == 1
        # carol's first take goes before u1's second take: fair order.
        assert third.position == 2
        ids = [second.jobs[0].id, third.jobs[0].id, second.jobs[1].id]
        assert [j.id for j in await h.store.waiting_jobs()] == ids
        hold.set()
        await h.finish([first.jobs[0].id, *ids])
        started = [ref.rsplit("-", 1)[0] for ref in h.server.submits]
        assert started == [first.jobs[0].id, *ids]


async def test_cancel_while_queued(tmp_path: Path, tiny_mp4: bytes, portrait: bytes) -> None:
    hold = asyncio.Event()
    async with harness(tmp_path, tiny_mp4, slots=1, hold=hold) as h:
        await h.service.submit(h.request(LINE, portrait, key="a"))
        waiting = await h.service.submit(h.request(LINE, portrait, key="b"))
        job_id = waiting.jobs[0].id
        with pytest.raises(RequestRejected) as stranger:
            await h.service.cancel(job_id, UserRef("test", "mallory"))
        assert stranger.value.key == "request.not_owner"
        canceled = await h.service.cancel(job_id, UserRef("test", "u1"))
        assert canceled.state is JobState.CANCELED
        assert EventKind.CANCELED in h.adapter.kinds(job_id)
        hold.set()
        await asyncio.sleep(0.3)
        assert len(h.server.jobs) == 1


async def test_second_crash_before_submit_fails_instead_of_paying_again(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    hold = asyncio.Event()
    async with harness(tmp_path, tiny_mp4, slots=1, hold=hold) as h:
        # Fill the only slot so the next job stays queued while we rewrite its state.
        await h.service.submit(h.request(LINE, portrait, key="a"))
        admission = await h.service.submit(h.request(LINE, portrait, key="b"))
        job_id = admission.jobs[0].id
        # As a worker that died twice between claim and submit would leave it.
        await h.store.transition(job_id, JobState.SUBMITTING, resubmitted=1, lease_expires=0)
        await h.worker._adopt_stale()
        hold.set()
        [job] = await h.finish([job_id])
        assert (job.state, job.error_key) == (JobState.FAILED, "job.interrupted")
        assert len(h.server.submits) == 1  # only job "a" reached the provider


async def test_sibling_takes_finishing_together_are_delivered_as_one_group_once(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    hold = asyncio.Event()
    adapter = GroupAdapter()
    async with harness(tmp_path, tiny_mp4, slots=3, hold=hold, adapter=adapter) as h:
        admission = await h.service.submit(h.request(LINE + " --takes 3", portrait))
        for _ in range(300):
            if len(h.server.jobs) == 3:
                break
            await asyncio.sleep(0.01)
        hold.set()  # all three finish at once and race to deliver
        jobs = await h.finish([j.id for j in admission.jobs])
        assert [j.state for j in jobs] == [JobState.DONE] * 3
        await asyncio.sleep(0.5)  # a few heartbeats: a sweep must not send it again
        assert adapter.groups == [[j.id for j in jobs]]
        assert adapter.delivered == []
        for job in jobs:
            assert adapter.kinds(job.id).count(EventKind.DELIVERED) == 1


async def test_group_refused_for_good_fails_every_take_with_its_key(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    adapter = GroupAdapter(refuse=DeliveryError("bot was blocked", permanent=True))
    async with harness(tmp_path, tiny_mp4, slots=2, adapter=adapter) as h:
        admission = await h.service.submit(h.request(LINE + " --takes 2", portrait))
        jobs = await h.finish([j.id for j in admission.jobs])
        assert [(j.state, j.error_key) for j in jobs] == [
            (JobState.FAILED, "job.undeliverable")
        ] * 2


class ClaimCountingStore(SqliteJobs):
    """The real store, counting claim transactions (to observe the claim loop)."""

    claims = 0

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        type(self).claims += 1
        return await super().claim(*args, **kwargs)


async def test_takes_held_back_by_the_in_flight_cap_do_not_spin_the_claim_loop(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    hold = asyncio.Event()
    knobs: dict[str, Any] = {"slots": 3, "hold": hold, "jobs_class": ClaimCountingStore}
    async with harness(tmp_path, tiny_mp4, **knobs) as h:
        admission = await h.service.submit(h.request(LINE + " --takes 3", portrait))
        for _ in range(200):
            if len(h.server.jobs) == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        ClaimCountingStore.claims = 0
        await asyncio.sleep(0.5)
        # Two takes run (the default cap), the third waits: a handful of claims at most
        # (heartbeats), not a busy loop of transactions.
        assert len(h.server.jobs) == 2
        assert ClaimCountingStore.claims < 10
        hold.set()
        finished = await h.finish([job.id for job in admission.jobs])
        assert [job.state for job in finished] == [JobState.DONE] * 3


async def test_job_finished_while_down_is_delivered_even_past_its_deadline(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    hold = asyncio.Event()
    async with harness(tmp_path, tiny_mp4, slots=1, hold=hold, run_seconds=0.01) as h:
        admission = await h.service.submit(h.request(LINE, portrait))
        job_id = admission.jobs[0].id
        for _ in range(300):
            job = await h.store.job(job_id)
            if job is not None and job.handle:
                break
            await asyncio.sleep(0.01)
        await h.worker.stop()
        # While the process is down the provider finishes and the deadline passes.
        db_execute(h.settings.store_path, "UPDATE jobs SET deadline_at = 1 WHERE id = ?", (job_id,))
        hold.set()
        backend = JobApiBackend(settings=h.settings.jobapi)
        second = Worker(
            store=h.store,
            backend=backend,
            notifier=NotifierRouter({"test": h.adapter}),
            settings=h.settings.worker,
            results_dir=h.settings.data_dir / "results",
        )
        async with running(second, backend):
            [job] = await h.finish([job_id])
        assert job.state is JobState.DONE
        assert len(h.server.submits) == 1


async def test_transient_submit_errors_retry_under_the_same_key(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    async with harness(tmp_path, tiny_mp4, refuse_submits=2) as h:
        admission = await h.service.submit(h.request(LINE, portrait))
        [job] = await h.finish([admission.jobs[0].id])
        assert job.state is JobState.DONE
        # Same attempt, same idempotency key: an unknown outcome is never paid twice.
        assert (job.attempts, h.server.submits) == (1, [f"{job.id}-1"])


async def wait_for_state(h: Harness, job_id: str, *states: JobState) -> Job:
    for _ in range(500):
        job = await h.store.job(job_id)
        if job is not None and job.state in states:
            return job
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {states}")


async def test_model_server_down_for_3_s_delays_the_submit_and_pays_once(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness(tmp_path, tiny_mp4) as h:
        await h.server.go_down()  # connections refused: ConnectError, not an HTTP error
        admission = await h.service.submit(h.request(LINE, portrait))
        job_id = admission.jobs[0].id
        await wait_for_state(h, job_id, JobState.SUBMITTING)
        await asyncio.sleep(3)
        await h.server.come_back()
        [job] = await h.finish([job_id])
        assert (job.state, job.attempts) == (JobState.DONE, 1)
        # The outage was met, and every submit that reached the server used the one key:
        # one provider job, paid once.
        assert any("submit failed" in r.getMessage() for r in caplog.records)
        assert h.server.submits == [f"{job_id}-1"]
        assert set(h.server.submit_requests) == {f"{job_id}-1"}


async def test_cancel_that_cannot_reach_the_provider_is_logged_with_the_job(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness(tmp_path, tiny_mp4, hold=asyncio.Event()) as h:
        h.worker._settings = h.settings.worker.model_copy(update={"job_deadline_seconds": 1.0})
        admission = await h.service.submit(h.request(LINE, portrait))
        job_id = admission.jobs[0].id
        running = await wait_for_state(h, job_id, JobState.RUNNING)
        await h.server.go_down()  # the deadline passes while the server is unreachable
        with caplog.at_level(logging.WARNING, logger="core.worker"):
            [job] = await h.finish([job_id])
        assert (job.state, job.error_key) == (JobState.FAILED, "job.deadline")
        about_cancel = [r.getMessage() for r in caplog.records if "cancel" in r.getMessage()]
        assert len(about_cancel) == 1
        assert job_id in about_cancel[0] and str(running.handle) in about_cancel[0]


async def test_cancel_waiting_cancels_only_that_users_takes_in_that_chat(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    hold = asyncio.Event()
    async with harness(tmp_path, tiny_mp4, slots=1, hold=hold) as h:
        await h.service.submit(h.request(LINE, portrait, key="running"))
        mine = await h.service.submit(h.request(LINE + " --takes 2", portrait, key="mine"))
        other = await h.service.submit(h.request(LINE, portrait, key="other", user="u2"))
        canceled = await h.service.cancel_waiting(UserRef("test", "u1"), "chat1")
        jobs = await h.store.jobs_by_ids([j.id for j in (*mine.jobs, *other.jobs)])
        assert canceled == 2
        assert [j.state for j in jobs] == [JobState.CANCELED, JobState.CANCELED, JobState.QUEUED]
        assert await h.service.cancel_waiting(UserRef("test", "u1"), "elsewhere") == 0
        hold.set()
