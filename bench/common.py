"""Shared pieces of the benchmarks: a simulated backend, a counting adapter, test media."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from core.backends.base import BackendState, BackendStatus, RenderSpec
from core.models import Job, JobEvent

_POSTGRES_SH = Path(__file__).resolve().parents[1] / "scripts" / "postgres.sh"


@contextlib.contextmanager
def postgres_cluster(url: str) -> Iterator[str]:
    """Yield ``url``, or, when it is empty, the DSN of a throwaway loopback cluster."""
    if url:
        yield url
        return
    started = subprocess.run(
        ["bash", str(_POSTGRES_SH), "start"], capture_output=True, text=True, check=True
    )
    values = dict(line.split("=", 1) for line in started.stdout.split())
    try:
        yield values["ACTORBOT_TEST_PG_DSN"]
    finally:
        subprocess.run(
            ["bash", str(_POSTGRES_SH), "stop", values["ACTORBOT_TEST_PG_DIR"]], check=False
        )


def tiny_mp4() -> bytes:
    """Return a real 1 s 64x36 H.264 MP4 for simulated results."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(12))
        stream.width, stream.height, stream.pix_fmt = 64, 36, "yuv420p"
        for index in range(12):
            pixels = np.full((36, 64, 3), index * 20, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def prepared_jpeg(width: int = 1280, height: int = 720) -> bytes:
    """Return a JPEG already at the backend's size, like core.images produces."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 200)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class SimulatedBackend:
    """A provider with K slots and a fixed latency per job (no network)."""

    name = "simulated"

    def __init__(self, *, slots: int, latency: float, video: bytes) -> None:
        self.slots = slots
        self._latency = latency
        self._video = video
        self._started: dict[str, float] = {}
        self.running = 0
        self.peak = 0

    async def submit(self, spec: RenderSpec) -> str:
        self._started[spec.job_id] = time.monotonic()
        self.running += 1
        self.peak = max(self.peak, self.running)
        return spec.job_id

    async def find(self, spec: RenderSpec) -> str | None:
        return spec.job_id if spec.job_id in self._started else None

    async def wait(self, handle: str, timeout: float) -> BackendStatus:
        left = self._started[handle] + self._latency - time.monotonic()
        if left > timeout:
            await asyncio.sleep(timeout)
            return BackendStatus(BackendState.RUNNING)
        await asyncio.sleep(max(0.0, left))
        self.running -= 1
        return BackendStatus(BackendState.SUCCEEDED)

    async def cancel(self, handle: str) -> None:
        return None

    async def fetch(self, handle: str, dest: Path, max_bytes: int) -> None:
        # Off the loop, as a real backend's file I/O is: creating a file costs ~0.5 ms here.
        await asyncio.to_thread(dest.write_bytes, self._video)

    async def aclose(self) -> None:
        return None


class CountingAdapter:
    """An adapter that only counts what it is sent."""

    def __init__(self) -> None:
        self.events = 0
        self.delivered = 0

    async def notify(self, event: JobEvent) -> None:
        self.events += 1

    async def deliver(self, job: Job, video: Path) -> None:
        self.delivered += 1


def rss_mb() -> float:
    """Return this process's resident set size in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
