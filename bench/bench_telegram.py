"""Telegram intake latency on loopback: update -> first reply, and -> queue position shown.

The real PTB Application, store and worker run against the loopback Bot API emulator
(tests/botapi_server.py); the model server holds every job, so only the intake is measured:
long poll, inbox commit, acknowledgement, photo download, image preparation, admission and
the status edit. Each request comes from its own private chat, at a steady arrival rate
(Telegram's own limit of about 30 messages a second applies to the two answers each).

Targets: first reply p99 <= 50 ms (the request stored before it), queue position p99 <= 400 ms.
Usage: python bench/bench_telegram.py [--requests 200] [--rate 10] [--photo 1280x960]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import tiny_mp4
from bots.runtime import open_runtime
from bots.telegram import run_telegram
from config.settings import load_settings
from tests.botapi_server import BotApiServer, User
from tests.jobapi_server import JobApiServer

LINE = "The girl smiles and says: \"You didn't really think I'd give up?\""


def phone_photo(width: int, height: int) -> bytes:
    """Return a photo-like JPEG (gradient plus noise, so it compresses like a real one)."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 120)], axis=-1)
    noisy = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def percentiles(values: list[float]) -> str:
    """Return p50 / p90 / p99 / max in milliseconds."""
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    return (
        f"p50 {at(0.5):6.1f} ms  p90 {at(0.9):6.1f} ms  p99 {at(0.99):6.1f} ms  "
        f"max {ordered[-1] * 1000:6.1f} ms  (mean {statistics.fmean(ordered) * 1000:.1f})"
    )


async def main(requests: int, rate: float, photo_size: tuple[int, int]) -> None:
    server = BotApiServer()
    await server.start()
    model = JobApiServer(video=tiny_mp4(), hold=asyncio.Event())  # every job stays queued
    await model.start()
    photo = phone_photo(*photo_size)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            data_dir=Path(tmp),
            log_level="WARNING",
            backend="jobapi",
            jobapi={"url": model.url, "slots": 4, "poll_interval_seconds": 0.5},
            telegram={
                "token": server.token,
                "base_url": server.base_url,
                "base_file_url": server.base_file_url,
            },
        )
        async with open_runtime(settings, {}) as runtime, run_telegram(runtime):
            worker = asyncio.create_task(runtime.worker.run())
            await asyncio.sleep(0.3)  # the first long poll is waiting
            sent: dict[tuple[str, int], float] = {}
            started = time.monotonic()
            for index in range(requests):
                user = User(1_000_000 + index, f"user{index}")
                message = server.send(user, photo=photo, caption=LINE)
                sent[(str(user.id), message["message_id"])] = time.monotonic()
                # Steady arrivals, not a burst: sleep to the next slot.
                await asyncio.sleep(max(0.0, started + (index + 1) / rate - time.monotonic()))
            await server.wait_for(
                lambda: len(queue_edits(server)) >= requests, timeout=120, what="all queued"
            )
            elapsed = time.monotonic() - started
            await runtime.worker.stop()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        first = first_replies(server)
        queued = queue_edits(server)
        stored_first = stored_before_reply(Path(tmp) / "actorbot.sqlite3", server)
    await model.stop()
    await server.stop()

    to_reply = [first[key] - at for key, at in sent.items()]
    to_queue = [queued[chat] - at for (chat, _), at in sent.items()]
    print(f"{requests} requests at {rate:.0f}/s, photo {photo_size[0]}x{photo_size[1]} "
          f"({len(photo) / 1000:.0f} KB), {elapsed:.1f} s")  # fmt: skip
    print(f"update -> first reply:        {percentiles(to_reply)}")
    print(f"update -> queue position:     {percentiles(to_queue)}")
    print(f"stored before the first reply: {stored_first}/{requests}")


def first_replies(server: BotApiServer) -> dict[tuple[str, int], float]:
    """Return, per request message, when the bot's first answer reached the server."""
    replies: dict[tuple[str, int], float] = {}
    for call in server.sent("sendMessage"):
        if call.chat_id is not None and call.reply_to is not None:
            replies.setdefault((call.chat_id, call.reply_to), call.at)
    return replies


def queue_edits(server: BotApiServer) -> dict[str, float]:
    """Return, per chat, when the status first showed the queue."""
    shown: dict[str, float] = {}
    for call in server.sent("editMessageText"):
        if call.chat_id is not None and call.params["text"].startswith("Queued"):
            shown.setdefault(call.chat_id, call.at)
    return shown


def stored_before_reply(database: Path, server: BotApiServer) -> int:
    """Count requests whose inbox row was committed before the first reply arrived."""
    offset = time.time() - time.monotonic()  # server timestamps are monotonic
    replies = first_replies(server)
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT key, received_at FROM chat_inbox").fetchall()
    count = 0
    for key, received_at in rows:
        _, chat, message_id = key.split(":")
        reply = replies.get((chat, int(message_id)))
        if reply is not None and received_at <= reply + offset:
            count += 1
    return count


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="arrivals per second")
    parser.add_argument("--photo", default="1280x960", help="WIDTHxHEIGHT of the sent photo")
    args = parser.parse_args()
    width, height = (int(part) for part in args.photo.split("x"))
    asyncio.run(main(args.requests, args.rate, (width, height)))
