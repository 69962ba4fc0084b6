"""Run the real Discord adapter (discord.py client, worker, store) against the loopback server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bots.discord import DiscordBot, run_discord
from bots.runtime import Runtime, open_runtime
from core.models import Job
from tests.conftest import db_rows, make_settings, photo_jpeg
from tests.discord_server import BOT_TOKEN, CHANNEL_ID, DiscordServer, User
from tests.jobapi_server import JobApiServer

ANN = User(801, "Ann")
LI = User(802, "Li", "zh-CN")
BOB = User(803, "Bob")
ADMIN = User(899, "Admin")
LINE = "The girl smiles and says: \"You didn't really think I'd give up?\""


class Clock:
    """A wall clock that tests can move forward (interaction tokens expire by it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        import time

        return time.time() + self.offset


@dataclass
class Harness:
    """The server, the runtime and the running bot."""

    server: DiscordServer
    runtime: Runtime
    bot: DiscordBot
    clock: Clock

    async def jobs(self) -> list[Job]:
        """Return every job in the store."""
        ids = db_rows(self.runtime.settings.store_path, "SELECT id FROM jobs")
        return await self.runtime.storage.jobs.jobs_by_ids([row[0] for row in ids])

    async def finished(self, count: int = 1, timeout: float = 30.0) -> list[Job]:
        """Wait until ``count`` jobs exist and all are terminal; return them."""

        async def poll() -> list[Job]:
            while True:
                jobs = await self.jobs()
                if len(jobs) >= count and all(job.state.is_terminal for job in jobs):
                    return jobs
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(poll(), timeout)

    async def generate(
        self,
        user: User,
        image: bytes,
        line: str = LINE,
        *,
        content_type: str = "image/jpeg",
        filename: str = "portrait.jpg",
        options: Sequence[dict[str, Any]] = (),
        **kw: Any,
    ) -> dict[str, Any]:
        """Send /generate with an attachment; return the interaction payload."""
        attachment = self.server.add_attachment(filename, image, content_type)
        data = self.server.command(
            "generate",
            [
                {"name": "image", "type": 11, "value": attachment["id"]},
                {"name": "line", "type": 3, "value": line},
                *options,
            ],
            {"attachments": {attachment["id"]: attachment}},
        )
        interaction = self.server.interaction(user, 2, data, **kw)
        await self.server.dispatch(interaction)
        return interaction

    async def press(
        self, user: User, message: dict[str, Any], custom_id: str, **kw: Any
    ) -> dict[str, Any]:
        """Press a button of a message; return the interaction payload."""
        data = {"custom_id": custom_id, "component_type": 2}
        interaction = self.server.interaction(user, 3, data, message=message, **kw)
        await self.server.dispatch(interaction)
        return interaction


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Wait until ``check()`` returns something truthy; return it."""

    async def poll() -> Any:
        while True:
            value = check()
            if value:
                return value
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), timeout)


async def open_form_on_image(
    server: DiscordServer, user: User, command: str, content: str, filename: str
) -> dict[str, Any]:
    """Choose a message command on a message with an image; return the form it shows."""
    picture = server.add_attachment(filename, photo_jpeg(), "image/png")
    target = server._message(CHANNEL_ID, {"content": content}, [])
    target["attachments"] = [picture]
    data = {
        "id": str(server.snowflake()),
        "name": command,
        "type": 3,
        "target_id": target["id"],
        "resolved": {"messages": {target["id"]: target}},
    }
    menu = server.interaction(user, 2, data)
    await server.dispatch(menu)
    [shown] = await until(lambda: server.calls_to("POST", f"/interactions/{menu['id']}/"))
    assert shown.body["type"] == 9  # a modal
    data: dict[str, Any] = shown.body["data"]
    return data


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """Map button labels to custom ids."""
    return {
        item["label"]: item["custom_id"]
        for row in message.get("components", [])
        for item in row.get("components", [])
    }


@contextlib.asynccontextmanager
async def running_discord(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    server: DiscordServer | None = None,
    discord: dict[str, Any] | None = None,
    peers: Sequence[str] = (),
    clock: Clock | None = None,
    worker: bool = True,
    video: bytes | None = None,
    **settings: Any,
) -> AsyncIterator[Harness]:
    """Start the server (unless given), the runtime with the bot, and the worker.

    With ``video`` a loopback model server (job API) makes it; without, the preview renderer.
    """
    model = None
    if video is not None:
        model = JobApiServer(video=video, run_seconds=0.05)
        await model.start()
        settings.setdefault("backend", "jobapi")
        settings.setdefault("jobapi", {"url": model.url, "poll_interval_seconds": 0.02})
    own_server = server is None
    server = server or DiscordServer()
    if own_server:
        await server.start()
    server.patch(monkeypatch)
    server.identified.clear()
    values = {"token": BOT_TOKEN, "admin_ids": [ADMIN.id], "edit_interval_seconds": 0.05}
    values.update(discord or {})
    config = make_settings(tmp_path, discord=values, **settings)
    clock = clock or Clock()
    try:
        async with (
            open_runtime(config, {}) as runtime,
            run_discord(runtime, peers=peers, clock=clock, guild_ready_timeout=0.1) as bot,
        ):
            await asyncio.wait_for(bot.client.wait_until_ready(), 10)
            task = asyncio.create_task(runtime.worker.run()) if worker else None
            try:
                yield Harness(server, runtime, bot, clock)
            finally:
                await runtime.worker.stop()
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    finally:
        if own_server:
            await server.stop()
        if model is not None:
            await model.stop()
