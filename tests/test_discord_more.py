"""The "Make it talk" context menu, /link across platforms, and tokens kept out of DEBUG logs."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from bots.discord import run_discord
from bots.logs import RedactingFormatter
from bots.runtime import open_runtime
from bots.telegram import run_telegram
from core.models import JobState, UserRef
from tests.botapi_server import BotApiServer
from tests.conftest import make_settings, photo_jpeg
from tests.discord_harness import ANN, open_form_on_image, running_discord, until
from tests.discord_server import BOT_TOKEN, CHANNEL_ID, DiscordServer
from tests.telegram_harness import ANN as TG_ANN
from tests.telegram_harness import telegram_settings


async def test_make_it_talk_asks_for_the_line_in_a_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        server = h.server
        form = await open_form_on_image(server, ANN, "Make it talk", "look", "cat.png")
        field = form["components"][0]["components"][0]
        submit: dict[str, Any] = {
            "custom_id": form["custom_id"],
            "components": [
                {"type": 1, "components": [{"type": 4, "custom_id": field["custom_id"],
                                            "value": "The cat says: \"Feed me.\""}]}
            ],
        }  # fmt: skip
        await server.dispatch(server.interaction(ANN, 5, submit))
        [job] = await h.finished()
        assert job.state is JobState.DONE, job.error_detail
        assert job.line == 'The cat says: "Feed me."'
        # The image was fetched when the menu was used, before the form was answered.
        assert [c for c in server.calls if c.files]


async def test_a_message_without_an_image_is_refused_privately(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        target = h.server._message(CHANNEL_ID, {"content": "just words"}, [])
        data = {"id": "1", "name": "Make it talk", "type": 3, "target_id": target["id"],
                "resolved": {"messages": {target["id"]: target}}}  # fmt: skip
        menu = h.server.interaction(ANN, 2, data)
        await h.server.dispatch(menu)
        [shown] = await until(lambda: h.server.calls_to("POST", f"/interactions/{menu['id']}/"))
        assert shown.body["type"] == 4 and shown.body["data"]["flags"] & 64


async def test_link_shares_one_balance_between_telegram_and_discord(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    telegram = BotApiServer()
    await telegram.start()
    discord_server = DiscordServer()
    await discord_server.start()
    discord_server.patch(monkeypatch)
    config = make_settings(
        tmp_path, telegram=telegram_settings(telegram), discord={"token": BOT_TOKEN}
    )
    try:
        async with (
            open_runtime(config, {}) as runtime,
            run_telegram(runtime, peers=["discord"]),
            run_discord(runtime, peers=["telegram"], guild_ready_timeout=0.1) as bot,
        ):
            await asyncio.wait_for(bot.client.wait_until_ready(), 10)
            asked = discord_server.interaction(ANN, 2, discord_server.command("link", []))
            await discord_server.dispatch(asked)

            def code() -> str | None:
                for call in discord_server.calls_to("PATCH", asked["token"]):
                    found = re.search(r"link code is (\S+?)\.", call.body.get("content", ""))
                    if found:
                        return found.group(1)
                return None

            linked = await until(code)
            telegram.send(TG_ANN, text=f"/link {linked}")
            await until(
                lambda: any(
                    c.params["text"].startswith("Linked")
                    for c in telegram.sent("sendMessage", TG_ANN.id)
                )
            )
            accounts = runtime.service.accounts
            on_discord = await accounts.account_id(UserRef("discord", str(ANN.id)))
            on_telegram = await accounts.account_id(UserRef("telegram", str(TG_ANN.id)))
            assert on_discord is not None and on_discord == on_telegram
    finally:
        await telegram.stop()
        await discord_server.stop()


async def test_no_token_reaches_the_logs_even_at_debug(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_mp4: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        interaction = await h.generate(ANN, photo_jpeg())
        await h.finished()
        await until(lambda: [c for c in h.server.calls if c.files])
    token = interaction["token"]
    # discord.py did log it (gateway events, webhook URLs): the formatter must blank it.
    assert any(token in record.getMessage() for record in caplog.records)
    formatter = RedactingFormatter("%(name)s %(message)s", [BOT_TOKEN])
    for record in caplog.records:
        text = formatter.format(record)
        assert token not in text and BOT_TOKEN not in text
        assert "secretpart" not in text
