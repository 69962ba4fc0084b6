"""A character drawn from a description on Discord, against the loopback Discord and fal.

``/character create`` is paid before the image model is called; the four candidates arrive
as one message of attachments, then a message with 1-4 and cancel buttons; a press saves
the picked picture once.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from core.models import UserRef
from tests.conftest import db_rows
from tests.discord_harness import ANN, Harness, buttons, running_discord, until
from tests.discord_server import Call
from tests.providers_server import ProviderServer
from tests.test_discord_access import answer_to
from tests.test_discord_characters import answer

DESCRIPTION = "a young woman with short black hair and a red scarf"
GREEN = (60, 160, 70)  # candidate 2 of the loopback model (see providers_server.drawn_image)


@pytest.fixture
async def fal(tiny_mp4: bytes) -> AsyncIterator[ProviderServer]:
    server = ProviderServer(video=tiny_mp4, queue_seconds=0.02, run_seconds=0.05)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _settings(fal: ProviderServer) -> dict[str, Any]:
    return {
        "providers": fal.provider_settings(),
        "portraits": {"image_preset": "seedream-4"},
        "quotas": {"credits": 10, "portrait_cost": 3},
    }


def _ledger(path: Path) -> list[tuple[str, int]]:
    return db_rows(path, "SELECT reason, delta FROM ledger WHERE reason != 'allowance' ORDER BY id")


async def create(h: Harness, **kw: Any) -> dict[str, Any]:
    """Send /character create Ranxia with the description; return the interaction."""
    options = [
        {"name": "name", "type": 3, "value": "Ranxia"},
        {"name": "description", "type": 3, "value": DESCRIPTION},
    ]
    sub = {"name": "create", "type": 1, "options": options}
    interaction = h.server.interaction(ANN, 2, h.server.command("character", [sub]), **kw)
    await h.server.dispatch(interaction)
    return interaction


async def uploads(h: Harness, interaction: dict[str, Any]) -> list[Call]:
    """Wait for the messages with attachments that follow up the interaction."""
    token = interaction["token"]
    found: list[Call] = await until(
        lambda: [c for c in h.server.calls_to("POST", f"/{token}$") if c.files], timeout=15
    )
    return found


async def pick_message(h: Harness) -> dict[str, Any]:
    """Wait for the message with the pick buttons; return it as the server keeps it."""
    found: list[dict[str, Any]] = await until(
        lambda: [m for m in h.server.messages.values() if "1" in buttons(m)], timeout=15
    )
    return found[0]


async def test_create_sends_four_pictures_in_one_message_and_saves_the_one_picked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fal: ProviderServer
) -> None:
    async with running_discord(tmp_path, monkeypatch, **_settings(fal)) as h:
        asked = await create(h)
        assert (await answer(h, asked))["content"] == (
            "Drawing 4 pictures of Ranxia… This costs 3 credits; if it fails you get them back."
        )
        [album] = await uploads(h, asked)
        assert [name for name, _ in album.files] == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
        assert [a["description"] for a in album.body["attachments"]] == ["1", "2", "3", "4"]
        for _, content in album.files:
            assert Image.open(io.BytesIO(content)).size == (1280, 720)
        pick = await pick_message(h)
        assert pick["content"] == "Which one is Ranxia? Pick a number to save it, or cancel."
        keys = buttons(pick)
        assert list(keys) == ["1", "2", "3", "4", "✖ None"]
        assert all(len(custom_id) <= 100 for custom_id in keys.values())
        [job] = fal.jobs.values()
        assert job.input["num_images"] == 4

        stale = dict(pick)  # the message as a client shows it, buttons and all
        press = await h.press(ANN, stale, keys["2"])
        await until(lambda: h.server.calls_to("POST", f"/interactions/{press['id']}/"))
        assert answer_to(h, press).startswith("Saved Ranxia with picture 2.")
        user = UserRef("discord", str(ANN.id))
        [saved] = await h.runtime.service.characters.list(user)
        image = await h.runtime.service.characters.image(saved)
        picture = Image.open(io.BytesIO(image.jpeg)).convert("RGB")
        assert picture.size == (1280, 720)
        assert all(abs(a - b) < 12 for a, b in zip(picture.getpixel((20, 360)), GREEN, strict=True))
        # The question became the answer, without its buttons.
        edits = f"^/channels/\\d+/messages/{pick['id']}$"
        await until(lambda: h.server.calls_to("PATCH", edits))
        assert buttons(pick) == {} and pick["content"].startswith("Saved Ranxia with picture 2.")

        # A second press (a client that still shows the buttons) saves and charges nothing.
        again = await h.press(ANN, stale, keys["3"])
        await until(lambda: h.server.calls_to("POST", f"/interactions/{again['id']}/"))
        assert answer_to(h, again).startswith("These pictures are no longer available")
        assert await h.runtime.service.characters.list(user) == [saved]
        store = h.runtime.settings.store_path
        assert _ledger(store) == [("portrait", -3)]
        assert len(h.server.calls_to("PATCH", edits)) == 1
        assert len(await uploads(h, asked)) == 1 and fal.submit_requests == 1


async def test_the_pictures_fit_the_channels_upload_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fal: ProviderServer
) -> None:
    limit = 20_000  # bytes the channel takes in one message (Discord says so per interaction)
    async with running_discord(tmp_path, monkeypatch, **_settings(fal)) as h:
        asked = await create(h, size_limit=limit)
        [album] = await uploads(h, asked)
        stored = await h.runtime.service.portraits.candidates(
            str(db_rows(h.runtime.settings.store_path, "SELECT id FROM portraits")[0][0])
        )
        assert sum(map(len, stored)) > limit  # as drawn, they would not fit
        assert len(album.files) == 4
        assert sum(len(content) for _, content in album.files) <= limit
        for _, content in album.files:
            width, height = Image.open(io.BytesIO(content)).size
            assert abs(width / height - 16 / 9) < 0.02


async def test_without_an_image_model_create_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_discord(tmp_path, monkeypatch) as h:
        asked = await create(h)
        assert (await answer(h, asked))["content"].startswith(
            "Creating a character from a description needs an image model"
        )
        assert "“Save as character”" in (await answer(h, asked))["content"]
        assert db_rows(h.runtime.settings.store_path, "SELECT count(*) FROM portraits") == [(0,)]
