"""A worker that lost a job's lease before it sent the video does not send it as well."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bots.runtime import Runtime, open_runtime
from bots.telegram import run_telegram
from core.models import JobState
from tests.botapi_server import BotApiServer, Failure
from tests.conftest import make_settings, photo_jpeg
from tests.jobapi_server import JobApiServer
from tests.telegram_harness import ANN, LINE, telegram_settings


@contextlib.asynccontextmanager
async def worker_on(
    data: Path,
    dsn: str,
    server: BotApiServer,
    model: JobApiServer,
    *,
    intake: bool,
    **worker: Any,
) -> AsyncIterator[Runtime]:
    """Open a runtime on the shared PostgreSQL store (its worker not yet running)."""
    config = make_settings(
        data,
        store={"url": dsn},
        backend="jobapi",
        jobapi={"url": model.url, "poll_interval_seconds": 0.02},
        telegram=telegram_settings(server),
        worker=worker,
    )
    async with open_runtime(config, {}) as runtime, run_telegram(runtime, intake=intake):
        yield runtime


@contextlib.asynccontextmanager
async def running(runtime: Runtime) -> AsyncIterator[None]:
    """Run the runtime's worker while the context lasts."""
    task = asyncio.create_task(runtime.worker.run())
    try:
        yield
    finally:
        await runtime.worker.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_worker_whose_lease_ran_out_before_its_send_leaves_it_to_the_taker_over(
    tmp_path: Path, tiny_mp4: bytes, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The first upload is refused (nothing reached the chat): worker A waits to retry.
    server = BotApiServer(fail={"sendVideo": [Failure(500, "Internal Server Error")]})
    await server.start()
    model = JobApiServer(video=tiny_mp4, run_seconds=0.05)
    await model.start()
    db = await asyncpg.connect(pg_dsn)
    try:
        async with (
            # A's heartbeat comes far too late (a starved process): its lease runs out
            # while it waits to retry the upload.
            worker_on(
                tmp_path / "a", pg_dsn, server, model, intake=True,
                lease_seconds=1, heartbeat_seconds=600, backoff_base_seconds=3,
            ) as a,
            worker_on(tmp_path / "b", pg_dsn, server, model, intake=False) as b,
            running(a),
        ):  # fmt: skip
            server.send(ANN, photo=photo_jpeg(), caption=LINE)
            await server.wait_for(lambda: len(server.sent("sendVideo")) == 1, timeout=30)
            async with running(b):  # B takes the job over once A's lease has run out
                for _ in range(600):
                    rows = await db.fetch("SELECT state, lease_token FROM jobs")
                    if [row["state"] for row in rows] == [JobState.DONE.value]:
                        break
                    await asyncio.sleep(0.05)
                # Delivered by B, under the job's second lease.
                assert [tuple(row) for row in rows] == [(JobState.DONE.value, 2)]
                # A wakes up to retry and finds the job is not its own any more.
                await server.wait_for(
                    lambda: any("lease lost" in record.message for record in caplog.records),
                    timeout=30,
                    what="worker A dropping the job",
                )
        videos = [message for message in server.bot_messages(ANN.id) if "video" in message]
        assert len(videos) == 1
    finally:
        await db.close()
        await model.stop()
        await server.stop()
