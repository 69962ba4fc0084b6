"""SIGKILL of the real ``actorbot run`` with the Discord adapter mid-take, then a restart.

The loopback Discord and the model server live in this test process, so they outlive the
killed service and count what they received: one provider job, one upload.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from tests.conftest import photo_jpeg
from tests.discord_harness import ANN, LINE, until
from tests.discord_server import APP_ID, BOT_TOKEN, DiscordServer
from tests.jobapi_server import JobApiServer
from tests.test_telegram_durability import REPO, finish, jobs_in


def discord_env(
    data_dir: Path, server: DiscordServer, model: JobApiServer, failpoints: list[str]
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ACTORBOT_")}
    env.update(
        {
            "LOOPBACK_DISCORD_URL": server.url,
            "ACTORBOT_DATA_DIR": str(data_dir),
            "ACTORBOT_BACKEND": "jobapi",
            "ACTORBOT_JOBAPI__URL": model.url,
            "ACTORBOT_JOBAPI__POLL_INTERVAL_SECONDS": "0.05",
            "ACTORBOT_DISCORD__TOKEN": BOT_TOKEN,
            "ACTORBOT_DISCORD__EDIT_INTERVAL_SECONDS": "0.05",
            "ACTORBOT_WORKER__LEASE_SECONDS": "1",
            "ACTORBOT_WORKER__HEARTBEAT_SECONDS": "0.2",
            "ACTORBOT_WORKER__STATUS_INTERVAL_SECONDS": "0.1",
            "ACTORBOT_DEBUG__FAILPOINTS": json.dumps(failpoints),
            "ACTORBOT_CONFIG": "",
        }
    )
    return env


async def start_bot(server: DiscordServer, env: dict[str, str]) -> asyncio.subprocess.Process:
    server.identified.clear()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.discord_cli", "run",
        cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    await asyncio.wait_for(server.identified.wait(), 30)
    return process


async def test_killed_mid_take_the_video_is_delivered_once_after_a_restart(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    server = DiscordServer()
    await server.start()
    model = JobApiServer(video=tiny_mp4, run_seconds=0.05)
    await model.start()
    data_dir = tmp_path / "data"
    try:
        env = discord_env(data_dir, server, model, ["worker.after_handle_stored"])
        process = await start_bot(server, env)
        attachment = server.add_attachment("portrait.jpg", photo_jpeg(), "image/jpeg")
        data = server.command(
            "generate",
            [
                {"name": "image", "type": 11, "value": attachment["id"]},
                {"name": "line", "type": 3, "value": LINE},
            ],
            {"attachments": {attachment["id"]: attachment}},
        )
        interaction = server.interaction(ANN, 2, data)
        await server.dispatch(interaction)
        code, output = await finish(process, terminate=False)
        assert code == -signal.SIGKILL, output
        [(_, state)] = jobs_in(data_dir)
        assert state == "running"
        assert not [call for call in server.calls if call.files]
        token = interaction["token"]
        assert server.calls_to("POST", rf"^/interactions/{interaction['id']}/")
        status_id = server._originals[token]  # the deferred response: the status
        before = len(server.calls)

        process = await start_bot(server, discord_env(data_dir, server, model, []))
        try:
            await until(
                lambda: [c for c in server.calls if c.files] and jobs_in(data_dir)[0][1] == "done",
                timeout=30,
            )
        finally:
            code, output = await finish(process, terminate=True)
        assert code == 0, output
        assert len(model.submits) == 1
        [upload] = [call for call in server.calls if call.files]
        # The new process answered through the interaction's webhook, by its stored token.
        assert upload.path == f"/webhooks/{APP_ID}/{token}"
        # (by position: an edit to the same text as before the kill is a call equal to it)
        status_path = f"/webhooks/{APP_ID}/{token}/messages/{status_id}"
        later = server.calls[before:]
        assert [call for call in later if call.method == "PATCH" and call.path == status_path]
        assert BOT_TOKEN not in output and token not in output
    finally:
        await model.stop()
        await server.stop()
