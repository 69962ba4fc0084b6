"""Characters on Discord: /character, its autocomplete, "Save as character", cast with /generate.

A voice sample comes as an audio attachment of /character voice.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from bots.discord import run_discord
from bots.runtime import open_runtime
from bots.telegram import run_telegram
from core.models import JobState, UserRef
from tests.botapi_server import BotApiServer
from tests.conftest import db_rows, make_settings, photo_jpeg, voice_note
from tests.discord_harness import (
    ANN,
    BOB,
    Clock,
    Harness,
    open_form_on_image,
    running_discord,
    until,
)
from tests.discord_server import BOT_TOKEN, DiscordServer
from tests.telegram_harness import ANN as TG_ANN
from tests.telegram_harness import telegram_settings

LINE = "smiles and says: 'Hello.'"


async def character(
    h: Harness,
    user: Any,
    action: str,
    options: list[dict[str, Any]],
    image: bytes | None = None,
    *,
    sample: bytes | None = None,
) -> dict[str, Any]:
    """Send /character ACTION with options (and an image or a recording); return the interaction."""
    resolved = None
    attached = [("image", "portrait.jpg", image, "image/jpeg"),
                ("sample", "voice.ogg", sample, "audio/ogg")]  # fmt: skip
    for option, filename, content, content_type in attached:
        if content is not None:
            attachment = h.server.add_attachment(filename, content, content_type)
            options = [*options, {"name": option, "type": 11, "value": attachment["id"]}]
            resolved = {"attachments": {attachment["id"]: attachment}}
    sub = {"name": action, "type": 1, "options": options}
    interaction = h.server.interaction(user, 2, h.server.command("character", [sub], resolved))
    await h.server.dispatch(interaction)
    return interaction


async def answer(h: Harness, interaction: dict[str, Any]) -> dict[str, Any]:
    """Return the message that filled the interaction's deferred response."""
    token = interaction["token"]

    def filled() -> dict[str, Any] | None:
        for call in h.server.calls_to("PATCH", token) + h.server.calls_to("POST", f"/{token}$"):
            if call.body and call.body.get("content"):
                return dict(call.body)
        return None

    found: dict[str, Any] = await until(filled)
    return found


def deferred_flags(h: Harness, interaction: dict[str, Any]) -> int:
    """Return the flags the interaction was acknowledged with (64: only the user sees it)."""
    [callback] = h.server.calls_to("POST", f"/interactions/{interaction['id']}/")
    return int((callback.body.get("data") or {}).get("flags") or 0)


async def suggestions(
    h: Harness, user: Any, command: str, options: list[dict[str, Any]]
) -> list[str]:
    """Send an autocomplete interaction; return the names the bot suggested."""
    data = h.server.command(command, options)
    interaction = h.server.interaction(user, 4, data)
    await h.server.dispatch(interaction)
    [callback] = await until(
        lambda: h.server.calls_to("POST", f"/interactions/{interaction['id']}/")
    )
    assert callback.body["type"] == 8  # an autocomplete result
    return [choice["value"] for choice in callback.body["data"]["choices"]]


def typing_name(action: str, typed: str) -> list[dict[str, Any]]:
    """Return /character ACTION's options while the user types the name."""
    focused = {"name": "name", "type": 3, "value": typed, "focused": True}
    return [{"name": action, "type": 1, "options": [focused]}]


def casting(typed: str) -> list[dict[str, Any]]:
    """Return /generate's options while the user types the character."""
    return [
        {"name": "line", "type": 3, "value": LINE},
        {"name": "character", "type": 3, "value": typed, "focused": True},
    ]


async def cast(h: Harness, user: Any, name: str) -> dict[str, Any]:
    """Send /generate with a character and no image; return the interaction."""
    options = [
        {"name": "line", "type": 3, "value": LINE},
        {"name": "character", "type": 3, "value": name},
    ]
    interaction = h.server.interaction(user, 2, h.server.command("generate", options))
    await h.server.dispatch(interaction)
    return interaction


async def delivered(h: Harness, interaction: dict[str, Any]) -> None:
    """Wait until a video was uploaded in answer to the interaction."""
    await until(lambda: [c for c in h.server.calls_to("POST", interaction["token"]) if c.files])


async def test_save_list_suggest_cast_share_and_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        options = [
            {"name": "name", "type": 3, "value": "Ranxia"},
            {"name": "voice", "type": 3, "value": "alto"},
            {"name": "description", "type": 3, "value": "the lead"},
        ]
        saved = await character(h, ANN, "save", options, photo_jpeg())
        assert (await answer(h, saved))["content"].startswith("Saved Ranxia.")
        assert deferred_flags(h, saved) & 64  # a setting: only Ann sees it
        listed = await character(h, ANN, "list", [])
        assert (await answer(h, listed))["content"].splitlines() == [
            "Your characters (1/20):",
            "@Ranxia · voice alto · the lead",
        ]
        assert await suggestions(h, ANN, "character", typing_name("delete", "ra")) == ["Ranxia"]
        assert await suggestions(h, ANN, "generate", casting("")) == ["Ranxia"]

        # Cast by name with no image: the saved picture and voice are used.
        take = await cast(h, ANN, "Ranxia")
        [job] = await h.finished(1)
        assert job.state is JobState.DONE, job.error_detail
        assert job.voice == "alto" and job.line == LINE
        await delivered(h, take)

        # Bob neither sees nor casts it until Ann shares it in this channel.
        assert await suggestions(h, BOB, "generate", casting("ra")) == []
        assert await suggestions(h, BOB, "character", typing_name("delete", "")) == []
        refused = await answer(h, await cast(h, BOB, "Ranxia"))
        assert refused["content"].startswith("There is no character called Ranxia. Save one")
        assert "/character save or “Save as character”" in refused["content"]
        assert refused["flags"] & 64
        shared = await character(h, ANN, "share", [{"name": "name", "type": 3, "value": "ranxia"}])
        assert (await answer(h, shared))["content"].startswith("Everyone in this chat can now")
        assert not deferred_flags(h, shared) & 64  # the channel hears about it
        assert await suggestions(h, BOB, "generate", casting("RAN")) == ["Ranxia"]
        bobs = await cast(h, BOB, "Ranxia")
        jobs = await h.finished(2)
        assert [j.voice for j in jobs] == ["alto", "alto"]
        await delivered(h, bobs)

        deleted = await character(
            h, ANN, "delete", [{"name": "name", "type": 3, "value": "Ranxia"}]
        )
        assert (await answer(h, deleted))["content"] == "Deleted Ranxia and its photo."
        store = h.runtime.settings.store_path
        assert db_rows(store, "SELECT count(*) FROM character_images") == [(0,)]
        assert await suggestions(h, BOB, "generate", casting("")) == []


async def test_save_as_character_on_an_image_message_asks_the_name_in_a_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        server = h.server
        form = await open_form_on_image(server, ANN, "Save as character", "my oc", "mei.png")
        name, about = (row["components"][0] for row in form["components"])
        assert about["required"] is False
        submit: dict[str, Any] = {
            "custom_id": form["custom_id"],
            "components": [
                {"type": 1, "components": [{"type": 4, "custom_id": name["custom_id"],
                                            "value": "Mei"}]},
                {"type": 1, "components": [{"type": 4, "custom_id": about["custom_id"],
                                            "value": "a friend"}]},
            ],
        }  # fmt: skip
        sent = server.interaction(ANN, 5, submit)
        await server.dispatch(sent)
        assert (await answer(h, sent))["content"].startswith("Saved Mei.")
        assert deferred_flags(h, sent) & 64
        [mei] = await h.runtime.service.characters.list(UserRef("discord", str(ANN.id)))
        assert (mei.name, mei.description) == ("Mei", "a friend")


async def test_link_brings_the_telegram_characters_and_says_which_was_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    telegram = BotApiServer()
    await telegram.start()
    server = DiscordServer()
    await server.start()
    server.patch(monkeypatch)
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
            h = Harness(server, runtime, bot, Clock())
            options = [{"name": "name", "type": 3, "value": "Ranxia"}]
            assert (await answer(h, await character(h, ANN, "save", options, photo_jpeg())))[
                "content"
            ].startswith("Saved Ranxia.")
            telegram.send(TG_ANN, photo=photo_jpeg(), caption="/character save Ranxia")
            telegram.send(TG_ANN, photo=photo_jpeg(), caption="/character save Bo")
            await until(lambda: len(telegram.sent("sendMessage", TG_ANN.id)) == 2)

            asked = server.interaction(ANN, 2, server.command("link", []))
            await server.dispatch(asked)
            code = re.search(r"link code is (\S+?)\.", (await answer(h, asked))["content"])
            assert code is not None
            telegram.send(TG_ANN, text=f"/link {code.group(1)}")
            [linked] = await telegram.wait_for(lambda: telegram.sent("sendMessage", TG_ANN.id)[2:])
            assert linked.params["text"].splitlines() == [
                "Linked: your accounts now share one balance.",
                "Your character Ranxia is now called Ranxia-2: this account already had one"
                " called Ranxia.",
            ]
            # Discord now offers all three.
            found = await suggestions(h, ANN, "character", typing_name("voice", ""))
            assert found == ["Bo", "Ranxia", "Ranxia-2"]
    finally:
        await telegram.stop()
        await server.stop()


async def test_a_recording_attached_to_character_voice_becomes_its_voice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_discord(tmp_path, monkeypatch) as h:
        ann = UserRef("discord", str(ANN.id))
        ranxia = [{"name": "name", "type": 3, "value": "Ranxia"}]
        saved = await character(h, ANN, "save", ranxia, photo_jpeg())
        assert (await answer(h, saved))["content"].startswith("Saved Ranxia.")

        async def sample() -> str | None:
            [found] = await h.runtime.service.characters.list(ann)
            return found.voice_sample

        # Neither a voice nor a sample, or both: told how, nothing stored.
        neither = await character(h, ANN, "voice", ranxia)
        assert (await answer(h, neither))["content"].startswith(
            "Give /character voice a voice name, or attach a recording"
        )
        alto = [*ranxia, {"name": "voice", "type": 3, "value": "alto"}]
        both = await character(h, ANN, "voice", alto, sample=voice_note(6.0))
        [told] = await until(lambda: h.server.calls_to("POST", f"/interactions/{both['id']}/"))
        assert (
            told.body["data"]["content"]
            == "Give either a voice name or a sample recording, not both."
        )
        assert told.body["data"]["flags"] & 64

        # A silent recording is refused with its reason; nothing is stored.
        silent = await character(h, ANN, "voice", ranxia, sample=voice_note(8.0, amplitude=0.0))
        assert "silent" in (await answer(h, silent))["content"]
        assert deferred_flags(h, silent) & 64
        assert await sample() is None

        # A real one is checked, normalized and stored as the character's voice.
        spoken = await character(h, ANN, "voice", [{"name": "name", "type": 3, "value": "@ranxia"}],
                                 sample=voice_note(6.0))  # fmt: skip
        assert (await answer(h, spoken))["content"].startswith(
            "Ranxia now speaks with the voice from your recording"
        )
        stored = await sample()
        assert stored is not None
        wav = await h.runtime.storage.characters.voice_sample(stored)
        assert wav is not None and abs(wav.seconds - 6.0) < 0.1
        listed = await character(h, ANN, "list", [])
        assert "@Ranxia · voice from a recording" in (await answer(h, listed))["content"]
