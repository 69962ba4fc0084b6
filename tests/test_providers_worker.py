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
from core.storage import JobStore, open_storage
from core.worker import Worker
from tests.conftest import make_settings, photo_jpeg
from tests.providers_server import ProviderServer

LINE = 'The girl smiles and says: "You did not think I would give up?"'


@dataclass
class Recorder:
    events: list[JobEvent] = field(default_factory=list)
    delivered: dict[str, bytes] = field(default_factory=dict)

    async def notify(self, event: JobEvent) -> None:
        self.events.append(event)

    async def deliver(self, job: Job, video: Path) -> None:
        self.delivered[job.id] = video.read_bytes()


@dataclass
class Take:
    server: ProviderServer
    store: JobStore
    service: Service
    recorder: Recorder

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
        )  # fmt: skip
        service.set_wake(runner.wake)
        task = asyncio.create_task(runner.run())
        try:
            yield Take(server, store, service, recorder)
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
