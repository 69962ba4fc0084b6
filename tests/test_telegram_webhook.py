"""Webhook mode: updates are POSTed to the bot; only requests with the secret are taken."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import aiohttp

from core.models import JobState
from tests.conftest import photo_jpeg
from tests.telegram_harness import ANN, LINE, running_bot


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_webhook_takes_only_updates_with_the_secret(tmp_path: Path, tiny_mp4: bytes) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram-hook"
    webhook = {"webhook_url": url, "webhook_port": port, "webhook_secret": "hook-SECRET-123"}
    async with running_bot(tmp_path, video=tiny_mp4, telegram=webhook) as h:
        [registered] = await h.server.wait_for(lambda: h.server.sent("setWebhook"))
        assert registered.params["url"] == url
        assert registered.params["secret_token"] == "hook-SECRET-123"
        message = h.server.message(ANN, photo=photo_jpeg(), caption=LINE)
        body = json.dumps({"update_id": 1, "message": message})
        header = "X-Telegram-Bot-Api-Secret-Token"
        async with aiohttp.ClientSession() as client:
            for headers in ({}, {header: "guess"}):
                async with client.post(url, data=body, headers=headers) as response:
                    assert response.status == 403
            assert await h.jobs() == []
            for _ in range(2):  # Telegram retries; the second delivery is recognised
                async with client.post(
                    url, data=body, headers={header: "hook-SECRET-123"}
                ) as response:
                    assert response.status == 200
        [job] = await h.finished()
        assert job.state is JobState.DONE
        assert len(h.server.sent("sendMessage", ANN.id)) == 1
        assert h.server.sent("getUpdates") == []  # polling and webhooks are exclusive
