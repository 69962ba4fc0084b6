"""A take through Service and Worker with a preset pointed at the loopback provider server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.backends import create_backend
from core.models import DeliveryAddress, EventKind, Job, JobEvent, JobState, UserRef, VideoRequest
from core.notify import NotifierRouter
from core.service import Service
from core.storage import CharacterStore, JobStore, open_storage
from core.voice_ids import VoiceIds
from core.worker import Worker
from tests.conftest import db_rows, make_settings, photo_jpeg
from tests.providers_server import ProviderServer

LINE = 'The girl smiles and says: "You did not think I would give up?"'


def local_request(key: str, line: str = LINE) -> VideoRequest:
    return VideoRequest(
        user=UserRef("cli", "local"), image=photo_jpeg(), line=line,
        address=DeliveryAddress("cli", "local"), source_key=key,
    )  # fmt: skip


@dataclass
class Recorder:
    events: list[JobEvent] = field(default_factory=list)
    delivered: dict[str, bytes] = field(default_factory=dict)

    async def notify(self, event: JobEvent) -> None:
        self.events.append(event)

    async def deliver(self, job: Job, video: Path) -> None:
        self.delivered[job.id] = video.read_bytes()


CHARGES = "SELECT reason, delta FROM ledger WHERE job_id IS NOT NULL"


@dataclass
class Take:
    server: ProviderServer
    store: JobStore
    service: Service
    recorder: Recorder
    characters: CharacterStore

    async def run(self, line: str = LINE, timeout: float = 20) -> list[Job]:
        admission = await self.service.submit(
            VideoRequest(
                user=UserRef("cli", "local"),
                image=photo_jpeg(),
                line=line,
                address=DeliveryAddress("cli", "local"),
                source_key=f"cli:{len(self.server.jobs)}",
            )
        )
        ids = [job.id for job in admission.jobs]

        async def final() -> list[Job]:
            while True:
                jobs = await self.store.jobs_by_ids(ids)
                if all(job.state.is_terminal for job in jobs):
                    return jobs
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(final(), timeout)


@contextlib.asynccontextmanager
async def take_harness(
    tmp_path: Path, video: bytes, preset: str, worker: dict[str, Any] | None = None, **knobs: Any
) -> AsyncIterator[Take]:
    server = ProviderServer(video=video, **knobs)
    await server.start()
    settings = make_settings(
        tmp_path,
        backend=preset,
        providers=server.provider_settings(),
        worker=worker or {},
    )
    storage = await open_storage(settings)
    store = storage.jobs
    recorder = Recorder()
    router = NotifierRouter({"cli": recorder})
    async with httpx.AsyncClient() as client:
        backend = create_backend(settings, client)
        service = Service(
            storage=storage, notifier=router, images=settings.images, prompts=settings.prompts,
            slots=backend.slots,
        )  # fmt: skip
        runner = Worker(
            store=store, backend=backend, notifier=router, settings=settings.worker,
            results_dir=settings.data_dir / "results", eta=service.eta_for,
            voices=VoiceIds(storage.characters),
        )  # fmt: skip
        service.set_wake(runner.wake)
        task = asyncio.create_task(runner.run())
        try:
            yield Take(server, store, service, recorder, storage.characters)
        finally:
            await runner.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await backend.aclose()
            await storage.close()
            await server.stop()


@pytest.mark.parametrize("preset", ["kling-2.6-pro", "seedance-2", "gaga-1"])
async def test_a_take_with_a_preset_is_delivered(
    tmp_path: Path, tiny_mp4: bytes, preset: str
) -> None:
    async with take_harness(tmp_path, tiny_mp4, preset) as h:
        [job] = await h.run()
        assert job.state is JobState.DONE
        assert h.recorder.delivered == {job.id: tiny_mp4}
        assert h.server.submit_requests == 1 and len(h.server.jobs) == 1
        kinds = [e.kind for e in h.recorder.events]
        assert EventKind.STARTED in kinds and kinds[-1] is EventKind.DELIVERED


async def test_provider_queue_position_reaches_the_progress_events(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with take_harness(tmp_path, tiny_mp4, "kling-2.6-pro", queue_seconds=0.5) as h:
        [job] = await h.run()
        assert job.state is JobState.DONE
        positions = [e.position for e in h.recorder.events if e.kind is EventKind.PROGRESS]
        assert 3 in positions


async def test_a_timed_out_submit_that_created_the_job_is_adopted_once(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with take_harness(tmp_path, tiny_mp4, "kling-2.6-pro", lose_submit_answers=1) as h:
        [job] = await h.run()
        assert job.state is JobState.DONE
        assert h.server.submit_requests == 1 and len(h.server.jobs) == 1


async def test_a_lost_unlisted_submit_fails_the_take_and_never_resubmits(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with take_harness(
        tmp_path, tiny_mp4, "seedance-2", lose_submit_answers=1, unlisted=True
    ) as h:
        [job] = await h.run()
        assert job.state is JobState.FAILED and job.error_key == "job.backend_failed"
        assert "possible orphan" in (job.error_detail or "")
        assert h.server.submit_requests == 1


async def test_a_content_refusal_fails_once_with_the_filtered_message(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with take_harness(tmp_path, tiny_mp4, "kling-2.6-pro", refuse_content=True) as h:
        [job] = await h.run()
        assert job.state is JobState.FAILED and job.error_key == "job.filtered"
        assert h.server.submit_requests == 1


async def test_a_job_past_its_deadline_is_canceled_at_the_provider_once(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with take_harness(
        tmp_path, tiny_mp4, "kling-2.6-pro", worker={"job_deadline_seconds": 1.0},
        never_finish=True,
    ) as h:  # fmt: skip
        [job] = await h.run()
        assert job.state is JobState.FAILED and job.error_key == "job.deadline"
        assert len(h.server.cancels) == 1 and h.server.submit_requests == 1


async def test_a_backend_without_cancel_is_not_asked_to_cancel_at_the_deadline(
    tmp_path: Path, tiny_mp4: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with take_harness(
        tmp_path, tiny_mp4, "gaga-1", worker={"job_deadline_seconds": 1.0}, never_finish=True
    ) as h:
        [job] = await h.run()
        assert job.state is JobState.FAILED and job.error_key == "job.deadline"
        assert h.server.submit_requests == 1
    # No cancel call: the log says the provider job may run to its end, naming its handle.
    [line] = [r.getMessage() for r in caplog.records if "has no cancel" in r.getMessage()]
    assert job.id in line and str(next(iter(h.server.jobs))) in line


def test_presets_command_lists_lengths_prices_and_voice(tmp_path: Path) -> None:
    from tests.test_cli import actorbot

    result = actorbot(tmp_path, "presets")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    for name in ("kling-2.6-pro", "kling-3-pro", "veo-3.1-fast", "seedance-2", "gaga-1"):
        assert name in out
    assert "$0.70" in out and "5->6 s" in out and "voice id" in out


async def test_actorbot_generate_with_a_preset(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    import os
    import sys

    server = ProviderServer(video=tiny_mp4)
    await server.start()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(portrait)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORBOT_")}
    fal = server.provider_settings()["fal"]
    env.update(
        ACTORBOT_DATA_DIR=str(tmp_path / "data"),
        ACTORBOT_BACKEND="kling-2.6-pro",
        ACTORBOT_PROVIDERS__FAL__KEY=fal["key"],
        ACTORBOT_PROVIDERS__FAL__QUEUE_URL=fal["queue_url"],
        ACTORBOT_PROVIDERS__FAL__API_URL=fal["api_url"],
        ACTORBOT_PROVIDERS__FAL__RESULT_HOSTS='["localhost"]',
        ACTORBOT_PROVIDERS__FAL__ALLOW_INSECURE="true",
        ACTORBOT_PROVIDERS__FAL__POLL_INTERVAL_SECONDS="0.05",
        ACTORBOT_TAKECHECK__ENABLED="false",  # the 1 s test clip is no performance
    )
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bots.cli", "generate", str(photo), LINE, "-o", "out.mp4",
            cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        await server.stop()
    assert process.returncode == 0, err.decode()
    assert (tmp_path / "out.mp4").read_bytes() == tiny_mp4
    assert server.submit_requests == 1
    assert fal["key"].encode() not in out + err


async def test_runtime_shares_one_client_and_learns_the_eta_per_preset(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    from bots.runtime import open_runtime
    from core.backends.providers.common import ProviderBackend

    server = ProviderServer(video=tiny_mp4)
    await server.start()
    settings = make_settings(
        tmp_path,
        backend=["kling-2.6-pro", "seedance-2"],
        providers=server.provider_settings(),
        takecheck={"enabled": False},  # the 1 s test clip is no performance
    )

    try:
        async with open_runtime(settings, {"cli": Recorder()}) as runtime:
            assert [b.name for b in runtime.backends] == ["kling-2.6-pro", "seedance-2"]
            for backend in runtime.backends:
                assert isinstance(backend, ProviderBackend) and backend.client is runtime.client
            # Nothing measured yet: the preset's own guess (Kling: 240 s), not the preview's.
            first = await runtime.service.submit(local_request("a"))
            assert first.eta_seconds == settings.presets["kling-2.6-pro"].expected_run_seconds
            await runtime.worker.run_until_idle()
            [done] = await runtime.storage.jobs.jobs_by_ids([first.jobs[0].id])
            assert done.state is JobState.DONE and done.backend == "kling-2.6-pro"
            assert done.finished_at is not None and done.started_at is not None
            # Then what this preset's takes really took.
            second = await runtime.service.submit(local_request("b"))
            assert second.eta_seconds == pytest.approx(done.finished_at - done.started_at)
            client = runtime.client
        assert client.is_closed
    finally:
        await server.stop()


async def test_a_silent_take_gets_one_free_retake_and_says_so(tmp_path: Path) -> None:
    from bots.chat.texts import caption
    from bots.runtime import open_runtime
    from tests.test_takecheck import clip

    silent = clip(tmp_path / "silent.mp4", seconds=5, loud=0.0).read_bytes()
    good = clip(tmp_path / "good.mp4", seconds=5).read_bytes()
    server = ProviderServer(video=good, job_videos=[silent])
    await server.start()
    settings = make_settings(
        tmp_path,
        backend="kling-2.6-pro",
        providers=server.provider_settings(),
        quotas={"exempt_platforms": []},  # charge the local user: count debits
    )
    recorder = Recorder()
    try:
        async with open_runtime(settings, {"cli": recorder}) as runtime:
            admission = await runtime.service.submit(local_request("silent", LINE + " --5s"))
            await runtime.worker.run_until_idle()
            [job] = await runtime.storage.jobs.jobs_by_ids([admission.jobs[0].id])
            ledger = db_rows(
                settings.store_path, "SELECT reason, delta FROM ledger WHERE job_id IS NOT NULL"
            )
    finally:
        await server.stop()
    assert job.state is JobState.DONE and job.retake_reason == "silent"
    # Two provider jobs, the second one delivered; the user was charged once, no refund.
    assert server.submit_requests == 2 and len(server.jobs) == 2
    assert recorder.delivered == {job.id: good}
    assert [reason for reason, _ in ledger] == ["debit"]
    text = caption(job, "en", 1024)
    assert "Take 2 of 2 tried: the first one came back silent." in text
    assert "Made with kling-2.6-pro." in text
    assert "第一次生成的视频是无声的" in caption(job, "zh", 1024)


async def test_two_failed_takes_fail_with_one_refund(tmp_path: Path) -> None:
    from bots.runtime import open_runtime
    from tests.test_takecheck import clip

    frozen = clip(tmp_path / "frozen.mp4", seconds=5, moving=False).read_bytes()
    server = ProviderServer(video=frozen)
    await server.start()
    settings = make_settings(
        tmp_path, backend="seedance-2", providers=server.provider_settings(),
        quotas={"exempt_platforms": []},
    )  # fmt: skip
    recorder = Recorder()
    try:
        async with open_runtime(settings, {"cli": recorder}) as runtime:
            admission = await runtime.service.submit(local_request("frozen", LINE + " --5s"))
            await runtime.worker.run_until_idle()
            [job] = await runtime.storage.jobs.jobs_by_ids([admission.jobs[0].id])
            ledger = db_rows(
                settings.store_path, "SELECT reason, delta FROM ledger WHERE job_id IS NOT NULL"
            )
    finally:
        await server.stop()
    assert job.state is JobState.FAILED and job.error_key == "job.take_failed.frozen"
    assert server.submit_requests == 2 and recorder.delivered == {}
    [(debit, charged), (refund, paid_back)] = ledger
    assert (debit, refund, paid_back) == ("debit", "refund", -charged)


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def chain_runtime(
    tmp_path: Path, server: ProviderServer, fal: dict[str, Any] | None = None
) -> AsyncIterator[Any]:
    from bots.runtime import open_runtime

    providers = server.provider_settings()
    providers["fal"].update(fal or {})
    settings = make_settings(
        tmp_path,
        backend=["kling-2.6-pro", "seedance-2"],
        providers=providers,
        takecheck={"enabled": False},  # the 1 s test clip is no performance
    )
    async with open_runtime(settings, {"cli": Recorder()}) as runtime:
        yield runtime


async def test_first_preset_down_the_second_makes_the_video(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    from bots.chat.texts import caption

    server = ProviderServer(video=tiny_mp4)
    await server.start()
    try:
        # fal refuses connections: nothing was ever accepted there.
        down = {"queue_url": f"http://127.0.0.1:{closed_port()}/fal"}
        async with chain_runtime(tmp_path, server, down) as runtime:
            admission = await runtime.service.submit(local_request("a"))
            await runtime.worker.run_until_idle()
            [job] = await runtime.storage.jobs.jobs_by_ids([admission.jobs[0].id])
    finally:
        await server.stop()
    assert job.state is JobState.DONE and job.backend == "seedance-2"
    assert [j.protocol for j in server.jobs.values()] == ["replicate"]
    assert server.submit_requests == 1
    # The user is told which model made it.
    assert "Made with seedance-2." in caption(job, "en", 1024)


async def test_an_expired_key_falls_back(tmp_path: Path, tiny_mp4: bytes) -> None:
    server = ProviderServer(video=tiny_mp4)
    await server.start()
    try:
        async with chain_runtime(tmp_path, server, {"key": "expired"}) as runtime:
            admission = await runtime.service.submit(local_request("a"))
            await runtime.worker.run_until_idle()
            [job] = await runtime.storage.jobs.jobs_by_ids([admission.jobs[0].id])
    finally:
        await server.stop()
    assert job.state is JobState.DONE and job.backend == "seedance-2"
    assert [j.protocol for j in server.jobs.values()] == ["replicate"]
    assert server.auth_failures >= 1


async def test_a_content_refusal_never_falls_back(tmp_path: Path, tiny_mp4: bytes) -> None:
    server = ProviderServer(video=tiny_mp4, refuse_content_on_submit=True)
    await server.start()
    try:
        async with chain_runtime(tmp_path, server) as runtime:
            admission = await runtime.service.submit(local_request("a"))
            await runtime.worker.run_until_idle()
            [job] = await runtime.storage.jobs.jobs_by_ids([admission.jobs[0].id])
    finally:
        await server.stop()
    assert job.state is JobState.FAILED and job.error_key == "job.filtered"
    # One submit, to the first preset only: the same photo is not shown to another provider.
    assert server.submit_requests == 1 and server.jobs == {}


async def test_no_fallback_once_a_provider_accepted_the_take(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    # Accepted by fal, then the provider loses it (404) on every retry: no second preset.
    server = ProviderServer(video=tiny_mp4, poll_failures=[404] * 100)
    await server.start()
    try:
        async with chain_runtime(tmp_path, server) as runtime:
            admission = await runtime.service.submit(local_request("a"))
            await runtime.worker.run_until_idle()
            [job] = await runtime.storage.jobs.jobs_by_ids([admission.jobs[0].id])
    finally:
        await server.stop()
    assert job.state is JobState.FAILED and job.backend == "kling-2.6-pro"
    assert {j.protocol for j in server.jobs.values()} == {"fal"}
