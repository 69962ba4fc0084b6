"""CPU per job on the provider HTTP path, and the cost of 1,000 in-flight provider jobs.

The loopback provider server (tests/providers_server.py, fal protocol) runs in a child
process, so that only the bot's own work is measured in this one.

Usage: python bench/bench_providers.py [--jobs 50] [--inflight 1000] [--seconds 30]
Targets: <= 20 ms CPU per job (excluding provider time); 1,000 in-flight jobs polled at
the shipped interval: <= 100 MB extra RSS and <= 5 % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import multiprocessing
import sys
import tempfile
import time
from fractions import Fraction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import prepared_jpeg, rss_mb
from config.settings import load_settings
from core.backends import create_backend
from core.backends.base import RenderSpec
from core.backends.download import check_result
from core.backends.providers.common import ProviderBackend
from tests.providers_server import ProviderServer


def talking_mp4() -> bytes:
    """Return a real 1 s H.264 + AAC MP4 (results must carry sound)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=12)
        video.width, video.height, video.pix_fmt = 64, 36, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        for index in range(12):
            pixels = np.full((36, 64, 3), index * 20, dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(video.encode())
        tone = (0.3 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.time_base, frame.pts = 16000, Fraction(1, 16000), 0
        container.mux(audio.encode(frame))
        container.mux(audio.encode())
    return buffer.getvalue()


def _serve(conn: Connection, knobs: dict[str, Any]) -> None:
    async def run() -> None:
        server = ProviderServer(video=talking_mp4(), **knobs)
        await server.start()
        conn.send(server.url)
        await asyncio.Event().wait()

    asyncio.run(run())


def start_server(**knobs: Any) -> tuple[multiprocessing.Process, str]:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=_serve, args=(child, knobs), daemon=True)
    process.start()
    url = parent.recv()
    return process, url


def backend_for(
    url: str, data_dir: Path, client: httpx.AsyncClient, poll: float
) -> ProviderBackend:
    server = ProviderServer(video=b"")
    server.url = url
    server.port = int(url.rsplit(":", 1)[1])
    settings = load_settings(
        data_dir=data_dir,
        backend="kling-2.6-pro",
        providers=server.provider_settings(
            poll_interval_seconds=poll,
            request_timeout_seconds=30,
            # The shipped provider-wide poll budget (the test helper lifts it).
            max_polls_per_second=load_settings().providers.fal.max_polls_per_second,
        ),
    )
    backend = create_backend(settings, client)
    assert isinstance(backend, ProviderBackend)
    return backend


def spec(index: int, jpeg: bytes) -> RenderSpec:
    return RenderSpec(
        job_id=f"bench-{index}", image_jpeg=jpeg, width=1280, height=720,
        line='She says: "We are even now."', speech="We are even now.", language="en",
        seconds=5, seed=index, voice=None,
    )  # fmt: skip


async def cpu_per_job(jobs: int, data_dir: Path) -> None:
    process, url = start_server(queue_seconds=0.05, run_seconds=0.1)
    jpeg = prepared_jpeg()
    try:
        async with httpx.AsyncClient() as client:
            backend = backend_for(url, data_dir, client, poll=0.05)
            http_cpu = probe_cpu = 0.0
            polls = 0
            for index in range(jobs):
                start = time.process_time()
                handle = await backend.submit(spec(index, jpeg))
                while True:
                    polls += 1
                    status = await backend.wait(handle, 1.0)
                    if status.is_final:
                        break
                dest = data_dir / f"{index}.mp4"
                await backend.results._download(await backend._result_url(handle), dest, 10**8)
                middle = time.process_time()
                check_result(dest)  # the PyAV probe every result gets, measured apart
                probe_cpu += time.process_time() - middle
                http_cpu += middle - start
            print(
                f"HTTP path: {http_cpu / jobs * 1000:.1f} ms CPU per job "
                f"(submit, {polls / jobs:.1f} polls, result URL, download; target <= 20 ms); "
                f"PyAV result probe: {probe_cpu / jobs * 1000:.1f} ms per job"
            )
    finally:
        process.terminate()


async def inflight(count: int, seconds: float, data_dir: Path) -> None:
    process, url = start_server(never_finish=True)
    jpeg = prepared_jpeg()
    shipped = load_settings().providers.fal.poll_interval_seconds
    status_interval = load_settings().worker.status_interval_seconds
    try:
        gc.collect()
        before = rss_mb()
        async with httpx.AsyncClient() as client:
            backend = backend_for(url, data_dir, client, poll=shipped)
            gate = asyncio.Semaphore(20)  # submits trickle in as slots free up, not at once

            async def submit(index: int) -> str:
                async with gate:
                    return await backend.submit(spec(index, jpeg))

            handles = await asyncio.gather(*(submit(i) for i in range(count)))

            async def poll_like_the_worker(handle: str, until: float) -> int:
                calls = 0
                while time.monotonic() < until:
                    await backend.wait(handle, status_interval)
                    calls += 1
                return calls

            until = time.monotonic() + seconds
            cpu0, wall0 = time.process_time(), time.monotonic()
            calls = await asyncio.gather(*(poll_like_the_worker(h, until) for h in handles))
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            gc.collect()
            extra = rss_mb() - before
            print(
                f"{count} in-flight jobs polled for {wall:.0f}s (poll interval {shipped}s, "
                f"backing off): {extra:.1f} MB extra RSS (target <= 100 MB), "
                f"{cpu / wall * 100:.1f} % of one core (target <= 5 %), "
                f"{sum(calls)} wait() calls"
            )
    finally:
        process.terminate()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--inflight", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(cpu_per_job(args.jobs, Path(tmp)))
        asyncio.run(inflight(args.inflight, args.seconds, Path(tmp)))


if __name__ == "__main__":
    main()
