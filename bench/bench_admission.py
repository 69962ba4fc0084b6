"""Admission throughput through ``Service`` into a real SQLite file, quotas on and off.

The image is already prepared (``admit_prepared``; preparation has its own benchmark), so
this measures the core's admission path: checks, debit, inserts, position and ETA, with
the round trips to the database thread. Quotas "on" enforce credits, caps, access and the
per-chat cap with limits high enough that every request is admitted.

Usage: python bench/bench_admission.py [--admissions 5000] [--users 200] [--concurrency 64]
[--photo]. Prints figures; never fails. The default image is bench.common's flat prepared
JPEG (~15 kB); ``--photo`` stores a photo-sized one, which makes the run I/O-bound.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import prepared_jpeg
from config.settings import ImageSettings, PromptSettings, QuotaSettings
from core.models import DeliveryAddress, UserRef, VideoRequest
from core.notify import NotifierRouter
from core.prompts import parse_line
from core.service import Service
from core.storage.sqlite import open_sqlite

TARGET_PER_SECOND = 2000.0
TARGET_OVERHEAD = 0.20
LINE = 'The girl smiles and says: "You did not really think I would give up?"'


def photo_jpeg(width: int = 1280, height: int = 720) -> bytes:
    """Return a prepared JPEG that weighs what a real photo does (grain makes it big)."""
    small = Image.new("RGB", (32, 18))
    small.putdata([(x * 8, y * 14, (x + y) * 5) for y in range(18) for x in range(32)])
    base = small.resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.merge("RGB", [Image.effect_noise((width, height), 24) for _ in range(3)])
    buffer = io.BytesIO()
    Image.blend(base, grain, 0.15).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


async def run(
    quotas: QuotaSettings, admissions: int, users: int, concurrency: int, image: bytes
) -> float:
    """Admit ``admissions`` requests from ``users`` users; return admissions per second."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = await open_sqlite(Path(tmp) / "bench.sqlite3")
        prompts = PromptSettings()
        service = Service(
            storage=storage,
            notifier=NotifierRouter({}),
            images=ImageSettings(),
            prompts=prompts,
            slots=4,
            quotas=quotas,
        )
        parsed = parse_line(LINE, prompts)
        requests = [
            VideoRequest(
                user=UserRef("bench", f"user{index % users}"),
                image=b"",
                line=LINE,
                address=DeliveryAddress("bench", f"chat{index % 20}"),
                source_key=f"bench:{index}",
            )
            for index in range(admissions)
        ]
        pending = iter(requests)

        async def client() -> None:
            for request in pending:
                await service.admit_prepared(request, parsed, image, (1280, 720))

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await storage.close()
    return admissions / elapsed


async def main(admissions: int, users: int, concurrency: int, rounds: int, photo: bool) -> None:
    on = QuotaSettings(
        credits=admissions,
        max_queued_per_user=admissions,
        max_queue=admissions * 2,
        max_takes_per_chat_per_day=admissions,
    )
    off = QuotaSettings(enabled=False)
    image = photo_jpeg() if photo else prepared_jpeg()
    figures: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):  # interleaved, so drift in the machine hits both alike
        figures["off"].append(await run(off, admissions, users, concurrency, image))
        figures["on"].append(await run(on, admissions, users, concurrency, image))
    rate_off = statistics.median(figures["off"])
    rate_on = statistics.median(figures["on"])
    overhead = 1 - rate_on / rate_off
    print(
        f"admissions={admissions} users={users} concurrency={concurrency} "
        f"image={len(image) // 1000} kB rounds={rounds} (median)"
    )
    print(f"quotas off: {rate_off:8.0f} admissions/s")
    print(f"quotas on:  {rate_on:8.0f} admissions/s (target >= {TARGET_PER_SECOND:.0f})")
    print(f"quota overhead: {overhead:6.1%} (target < {TARGET_OVERHEAD:.0%})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--admissions", type=int, default=5000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--photo", action="store_true", help="a photo-sized image instead of a flat one"
    )
    args = parser.parse_args()
    asyncio.run(main(args.admissions, args.users, args.concurrency, args.rounds, args.photo))
