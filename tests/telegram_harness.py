"""Run the real Telegram adapter (PTB Application, worker, store) against the emulator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bots.runtime import Runtime, open_runtime
from bots.telegram import TelegramBot, run_telegram
from core.models import Job, JobState
from tests.botapi_server import BotApiServer, User
from tests.conftest import db_rows, make_settings
from tests.jobapi_server import JobApiServer

ANN = User(101, "Ann", "en")
LI = User(102, "Li", "zh-hans")
BOB = User(103, "Bob", "en")
LINE = "The girl smiles and says: \"You didn't really think I'd give up?\""


@dataclass
class Harness:
    """The emulator, the runtime and the running bot."""

    server: BotApiServer
    runtime: Runtime
    bot: TelegramBot
    model: JobApiServer | None

    async def jobs(self) -> list[Job]:
        """Return every job in the store."""
        ids = db_rows(self.runtime.settings.store_path, "SELECT id FROM jobs")
        return await self.runtime.storage.jobs.jobs_by_ids([row[0] for row in ids])

    async def finished(self, count: int = 1, timeout: float = 20.0) -> list[Job]:
        """Wait until ``count`` jobs exist and all are terminal; return them."""

        async def poll() -> list[Job]:
            while True:
                jobs = await self.jobs()
                if len(jobs) >= count and all(job.state.is_terminal for job in jobs):
                    return jobs
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(poll(), timeout)

    async def job_in(self, state: JobState, timeout: float = 10.0) -> Job:
        """Wait until some job is in ``state``; return it."""

        async def poll() -> Job:
            while True:
                for job in await self.jobs():
                    if job.state is state:
                        return job
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(poll(), timeout)


def telegram_settings(server: BotApiServer, **overrides: Any) -> dict[str, Any]:
    """Return [telegram] settings pointing at the emulator, with quick status edits."""
    values: dict[str, Any] = {
        "token": server.token,
        "base_url": server.base_url,
        "base_file_url": server.base_file_url,
        "poll_timeout_seconds": 5,
        "private_edit_interval_seconds": 0.05,
        "group_edit_interval_seconds": 0.3,
        "group_max_rate": 600,  # per minute; the lane's interval above paces groups here
        "admin_ids": [999],
    }
    values.update(overrides)
    return values


@contextlib.asynccontextmanager
async def running_bot(
    tmp_path: Path,
    *,
    video: bytes | None = None,
    model_knobs: dict[str, Any] | None = None,
    telegram: dict[str, Any] | None = None,
    server: BotApiServer | None = None,
    model: JobApiServer | None = None,
    worker: bool = True,
    peers: Sequence[str] = (),
    **settings: Any,
) -> AsyncIterator[Harness]:
    """Start the emulator (unless given), the runtime with the bot, and the worker.

    With ``video`` the job-API backend serves it from a loopback model server; without,
    the real preview renderer makes the video.
    """
    own_server = server is None
    server = server or BotApiServer()
    if own_server:
        await server.start()
    own_model = model is None and video is not None
    if own_model:
        assert video is not None
        model = JobApiServer(video=video, run_seconds=0.05, **(model_knobs or {}))
        await model.start()
    if model is not None:
        settings.setdefault("backend", "jobapi")
        settings.setdefault("jobapi", {"url": model.url, "poll_interval_seconds": 0.02})
    config = make_settings(
        tmp_path, telegram=telegram_settings(server, **(telegram or {})), **settings
    )
    try:
        async with open_runtime(config, {}) as runtime, run_telegram(runtime, peers=peers) as bot:
            task = asyncio.create_task(runtime.worker.run()) if worker else None
            try:
                yield Harness(server, runtime, bot, model)
            finally:
                await runtime.worker.stop()
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    finally:
        if own_model and model is not None:
            await model.stop()
        if own_server:
            await server.stop()


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """Map button text to its callback data."""
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return {button["text"]: button["callback_data"] for row in rows for button in row}


def answers(server: BotApiServer, query_id: str) -> list[dict[str, str]]:
    """Return the answers the bot gave to one button press."""
    return [
        c.params
        for c in server.sent("answerCallbackQuery")
        if c.params["callback_query_id"] == query_id
    ]
