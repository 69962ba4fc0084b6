"""A guild's settings on Discord: the channels the bot answers in and a daily cap of takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.i18n import render
from core.models import JobState, UserRef
from core.storage.types import GuildSettings
from tests.conftest import photo_jpeg
from tests.discord_harness import ADMIN, ANN, Harness, running_discord, until
from tests.discord_server import CHANNEL_ID, GUILD_ID, User
from tests.test_discord_behaviour import private_answers

OTHER_CHANNEL = CHANNEL_ID + 100


async def settings(
    h: Harness, user: User, name: str, options: list[dict[str, Any]], **resolved: Any
) -> str:
    """Run a /settings subcommand; return the private answer."""
    sub = {"name": name, "type": 1, "options": options}
    data = h.server.command("settings", [sub], resolved or None)
    interaction = h.server.interaction(user, 2, data)
    await h.server.dispatch(interaction)
    [answer] = await until(lambda: private_answers(h, interaction))
    return str(answer)


async def allow_only(h: Harness, user: User, channel_id: int) -> str:
    """Run /settings channels naming one channel of the guild."""
    channel = {
        "id": str(channel_id), "type": 0, "name": "videos", "permissions": "0",
        "guild_id": str(GUILD_ID),
    }  # fmt: skip
    option = [{"name": "channel", "type": 7, "value": str(channel_id)}]
    return await settings(h, user, "channels", option, channels={str(channel_id): channel})


async def guild_rules(h: Harness) -> GuildSettings:
    return await h.runtime.storage.chats.guild_settings("discord", str(GUILD_ID))


async def credits(h: Harness) -> int:
    return (await h.runtime.service.accounts.balance(UserRef("discord", str(ANN.id)))).credits


def acknowledged(h: Harness, interaction: dict[str, Any]) -> bool:
    """Return whether the interaction got a public "thinking" response (type 5)."""
    calls = h.server.calls_to("POST", f"/interactions/{interaction['id']}/")
    return any(call.body["type"] == 5 for call in calls)


async def test_a_channel_not_allowed_is_refused_privately_and_costs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        before = await credits(h)
        answer = await allow_only(h, ADMIN, OTHER_CHANNEL)
        assert answer == render("discord.settings_channels", "en", channels=f"<#{OTHER_CHANNEL}>")
        assert await guild_rules(h) == GuildSettings((str(OTHER_CHANNEL),), 0)

        refused = await h.generate(ANN, photo_jpeg())
        refusal = render("discord.channel_not_allowed", "en", channels=f"<#{OTHER_CHANNEL}>")
        await until(lambda: refusal in private_answers(h, refused))
        assert not acknowledged(h, refused)
        assert await h.jobs() == [] and await credits(h) == before
        assert not [call for call in h.server.calls if "attachments" in call.path]

        # "Make it talk" is refused before its form opens.
        picture = h.server.add_attachment("cat.png", photo_jpeg(), "image/png")
        target = h.server._message(CHANNEL_ID, {"content": "look"}, [])
        target["attachments"] = [picture]
        data = {
            "id": str(h.server.snowflake()),
            "name": "Make it talk",
            "type": 3,
            "target_id": target["id"],
            "resolved": {"messages": {target["id"]: target}},
        }
        menu = h.server.interaction(ANN, 2, data)
        await h.server.dispatch(menu)
        [shown] = await until(lambda: h.server.calls_to("POST", f"/interactions/{menu['id']}/"))
        assert shown.body["type"] == 4 and shown.body["data"]["content"] == refusal

        # Cleared: every channel again.
        assert await settings(h, ADMIN, "channels", []) == render(
            "discord.settings_all_channels", "en"
        )
        await h.generate(ANN, photo_jpeg())
        [job] = await h.finished()
        assert job.state is JobState.DONE, job.error_detail


async def test_only_admins_change_a_guilds_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        assert await allow_only(h, ANN, OTHER_CHANNEL) == render("chat.admin_only", "en")
        cap = [{"name": "takes", "type": 4, "value": 3}]
        assert await settings(h, ANN, "daily_cap", cap) == render("chat.admin_only", "en")
        assert await guild_rules(h) == GuildSettings()


async def test_the_guilds_daily_cap_refuses_privately_and_counts_only_admitted_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        cap = [{"name": "takes", "type": 4, "value": 2}]
        assert await settings(h, ADMIN, "daily_cap", cap) == render(
            "discord.settings_cap", "en", limit=2
        )
        # A line the conversation refuses gives its takes back to the guild.
        wordy = await h.generate(ANN, photo_jpeg(), "x" * 500)
        await until(lambda: private_answers(h, wordy))
        assert await h.jobs() == []

        await h.generate(ANN, photo_jpeg(), options=[{"name": "takes", "type": 4, "value": 2}])
        jobs = await h.finished(2)
        assert all(job.state is JobState.DONE for job in jobs)
        before = await credits(h)

        refused = await h.generate(ANN, photo_jpeg())
        await until(lambda: private_answers(h, refused))
        [full] = private_answers(h, refused)
        assert full.startswith(render("discord.guild_full", "en", limit=2, hours=0, minutes=0)[:40])
        assert not acknowledged(h, refused)
        assert len(await h.jobs()) == 2 and await credits(h) == before

        # The cap lifted: requests go through again.
        off = [{"name": "takes", "type": 4, "value": 0}]
        assert await settings(h, ADMIN, "daily_cap", off) == render("discord.settings_no_cap", "en")
        await h.generate(ANN, photo_jpeg())
        assert len(await h.finished(3)) == 3
