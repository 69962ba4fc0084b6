"""Wake-ups behind the store: an admission anywhere wakes an idle worker sharing the store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.backends.jobapi import JobApiBackend
from core.models import DeliveryAddress, UserRef, VideoRequest
from core.notify import NotifierRouter
from core.service import Service
from core.storage import LocalWakeups
from core.storage.sqlite import open_sqlite
from core.worker import Worker
from tests.conftest import make_settings, photo_jpeg
from tests.jobapi_server import JobApiServer
from tests.test_worker import LINE, RecordingAdapter, running


async def test_a_notification_sent_while_nobody_waits_is_kept_for_the_next_wait() -> None:
    wakeups = LocalWakeups()
    wakeups.notify()
    assert await wakeups.wait(3600)
    # Consumed: the next wait runs to its timeout.
    assert not await wakeups.wait(0.01)


async def test_an_admission_wakes_a_worker_through_the_stores_wakeups(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    server = JobApiServer(video=tiny_mp4)
    url = await server.start()
    # Without a wake-up the idle worker would look again only after an hour.
    settings = make_settings(
        tmp_path,
        backend="jobapi",
        jobapi={"url": url, "poll_interval_seconds": 0.02},
        worker={"heartbeat_seconds": 3600},
    )
    storage = await open_sqlite(settings.store_path)
    adapter = RecordingAdapter()
    router = NotifierRouter({"test": adapter})
    # The service is not wired to the worker (as in another process): only the store is.
    service = Service(
        storage=storage, notifier=router, images=settings.images, prompts=settings.prompts,
        slots=1,
    )  # fmt: skip
    backend = JobApiBackend(settings=settings.jobapi)
    worker = Worker(
        store=storage.jobs, backend=backend, notifier=router, settings=settings.worker,
        results_dir=settings.data_dir / "results", wakeups=storage.wakeups,
    )  # fmt: skip
    try:
        async with running(worker, backend):
            await asyncio.sleep(0.1)  # the worker found nothing and sleeps
            request = VideoRequest(
                user=UserRef("test", "u1"), image=photo_jpeg(), line=LINE,
                address=DeliveryAddress("test", "chat1"), source_key="m1",
            )  # fmt: skip
            await service.submit(request)

            async def delivered() -> None:
                while not adapter.delivered:
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(delivered(), 60)
    finally:
        await storage.close()
        await server.stop()
