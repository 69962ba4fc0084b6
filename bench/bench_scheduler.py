"""Scheduler efficiency: N jobs through a simulated backend with K slots and fixed latency.

Efficiency = ideal makespan (N / K x latency) / measured makespan; target >= 0.99.
Usage: python bench/bench_scheduler.py [--jobs 10000] [--slots 100] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CountingAdapter, SimulatedBackend, prepared_jpeg, tiny_mp4
from config.settings import WorkerSettings
from core.models import DeliveryAddress, JobState, UserRef
from core.notify import NotifierRouter
from core.storage.sqlite import open_sqlite
from core.storage.types import NewTake
from core.worker import Worker


async def main(jobs: int, slots: int, latency: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = await open_sqlite(Path(tmp) / "bench.sqlite3")
        store = storage.jobs
        image = prepared_jpeg()
        take = NewTake("line", "line", "en", 5, 1, None)
        for index in range(jobs):
            await store.admit(
                user=UserRef("bench", f"user{index % 100}"),
                source_key=f"bench:{index}",
                line="line",
                image_jpeg=image,
                image_size=(1280, 720),
                address=DeliveryAddress("bench", "chat"),
                takes=[take],
            )
        backend = SimulatedBackend(slots=slots, latency=latency, video=tiny_mp4())
        adapter = CountingAdapter()
        settings = WorkerSettings()  # shipped defaults: status every 3 s, heartbeat every 10 s
        worker = Worker(
            store=store,
            backend=backend,
            notifier=NotifierRouter({"bench": adapter}),
            settings=settings,
            results_dir=Path(tmp) / "results",
        )
        started = time.perf_counter()
        await worker.run_until_idle()
        makespan = time.perf_counter() - started
        done = (await store.count_by_state()).get(JobState.DONE, 0)
        await storage.close()
    ideal = jobs / slots * latency
    print(
        f"jobs={jobs} slots={slots} latency={latency:.3f}s done={done} peak_running={backend.peak}"
    )
    print(f"makespan {makespan:.2f} s, ideal {ideal:.2f} s")
    print(f"scheduler efficiency: {ideal / makespan:.4f} (target >= 0.99)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--slots", type=int, default=100)
    parser.add_argument("--latency", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.slots, args.latency))
