"""Extra resident memory of a running service holding 10,000 queued jobs.

Usage: python bench/bench_queue_memory.py [--jobs 10000]; target <= 50 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CountingAdapter, SimulatedBackend, prepared_jpeg, rss_mb, tiny_mp4
from config.settings import load_settings
from core.models import DeliveryAddress, JobState, UserRef, VideoRequest
from core.notify import NotifierRouter
from core.prompts import ParsedLine, parse_line
from core.service import Service
from core.storage import JobStore
from core.storage.sqlite import open_sqlite
from core.worker import Worker


async def main(jobs: int) -> None:
    settings = load_settings()
    image = prepared_jpeg()
    parsed = parse_line('She says: "We are even now."', settings.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        storage = await open_sqlite(Path(tmp) / "bench.sqlite3")
        router = NotifierRouter({"bench": CountingAdapter()})
        # No free slot: everything admitted stays queued, as during a long outage.
        backend = SimulatedBackend(slots=1, latency=3600, video=tiny_mp4())
        # Quotas would refuse a queue this long ("busy"); this measures the queue itself.
        service = Service(
            storage=storage,
            notifier=router,
            images=settings.images,
            prompts=settings.prompts,
            quotas=settings.quotas.model_copy(update={"enabled": False}),
            slots=1,
        )
        worker = Worker(
            store=storage.jobs,
            backend=backend,
            notifier=router,
            settings=settings.worker,
            results_dir=Path(tmp) / "results",
            eta=service.eta_for,
        )
        service.set_wake(worker.wake)
        running = asyncio.create_task(worker.run())
        try:
            before, after, counts = await fill(service, storage.jobs, jobs, parsed, image)
        finally:
            await worker.stop()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await storage.close()
    print(f"jobs admitted: {jobs}, states: { {k.value: v for k, v in counts.items()} }")
    print(f"RSS before {before:.1f} MB, after {after:.1f} MB")
    print(f"extra RSS with {jobs} queued jobs: {after - before:.1f} MB (target <= 50 MB)")


async def fill(
    service: Service, store: JobStore, jobs: int, parsed: ParsedLine, image: bytes
) -> tuple[float, float, dict[JobState, int]]:
    """Admit ``jobs`` requests and return RSS before and after, and the job counts."""
    await asyncio.sleep(0.2)
    gc.collect()
    before = rss_mb()
    for index in range(jobs):
        request = VideoRequest(
            user=UserRef("bench", f"user{index % 500}"),
            image=b"",
            line=parsed.line,
            address=DeliveryAddress("bench", f"chat{index % 50}"),
            source_key=f"bench:{index}",
        )
        await service.admit_prepared(request, parsed, image, (1280, 720))
    await asyncio.sleep(3.5)  # one round of queue-position updates
    gc.collect()
    return before, rss_mb(), await store.count_by_state()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    asyncio.run(main(parser.parse_args().jobs))
