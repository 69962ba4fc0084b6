"""A character drawn from a description on Telegram, against the loopback Bot API and fal.

``/character create NAME DESCRIPTION`` is paid before the image model is called, shows
four candidates as an album with 1-4 and cancel, and saves the one picked; a failure or a
content refusal refunds once; a restart finishes a recorded request without a second
submit.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from core.backends.base import RenderSpec
from core.models import UserRef
from core.portraits import image_model
from core.storage.types import PortraitState
from tests.botapi_server import BotApiServer
from tests.conftest import db_rows
from tests.providers_server import ProviderServer
from tests.telegram_harness import ANN, answers, buttons, running_bot

CREATE = "/character create Ranxia a young woman with short black hair and a red scarf"
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


async def _pick_message(server: BotApiServer) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [m for m in server.bot_messages(ANN.id) if "1" in buttons(m)]

    return (await server.wait_for(found, timeout=15, what="the pick buttons"))[0]


async def test_create_shows_four_and_saves_the_one_picked_once(
    tmp_path: Path, fal: ProviderServer
) -> None:
    async with running_bot(tmp_path, **_settings(fal)) as h:
        s = h.server
        s.send(ANN, text=CREATE)
        pick = await _pick_message(s)
        texts = [c.params["text"] for c in s.sent("sendMessage", ANN.id)]
        assert texts[0] == (
            "Drawing 4 pictures of Ranxia… This costs 3 credits; if it fails you get them back."
        )
        [album] = s.sent("sendMediaGroup", ANN.id)
        media = json.loads(album.params["media"])
        assert [item["type"] for item in media] == ["photo"] * 4
        keys = buttons(pick)
        assert list(keys) == ["1", "2", "3", "4", "✖ None"]
        # The model got the description in the preset's prompt, 16:9, four at once.
        [job] = fal.jobs.values()
        assert job.input["num_images"] == 4
        assert job.input["image_size"] == {"width": 1920, "height": 1080}
        assert job.input["prompt"].startswith("a young woman with short black hair")

        query = s.press(ANN, pick, keys["2"])
        await s.wait_for(lambda: answers(s, query))
        assert answers(s, query)[0]["text"].startswith("Saved Ranxia with picture 2.")
        user = UserRef("telegram", str(ANN.id))
        [saved] = await h.runtime.service.characters.list(user)
        image = await h.runtime.service.characters.image(saved)
        picture = Image.open(io.BytesIO(image.jpeg)).convert("RGB")
        assert picture.size == (1280, 720)
        assert all(abs(a - b) < 12 for a, b in zip(picture.getpixel((20, 360)), GREEN, strict=True))

        # The question became the answer, without buttons; a second press (a stale client,
        # any number) saves nothing again and charges nothing.
        assert buttons(pick) == {} and pick["text"].startswith("Saved Ranxia with picture 2.")
        again = s.press(ANN, pick, keys["3"])
        await s.wait_for(lambda: answers(s, again))
        assert answers(s, again)[0]["text"].startswith("These pictures are no longer available")
        assert [c.image_sha256 for c in await h.runtime.service.characters.list(user)] == [
            saved.image_sha256
        ]
        store = h.runtime.settings.store_path
        assert _ledger(store) == [("portrait", -3)]
        assert db_rows(store, "SELECT count(*) FROM portrait_candidates") == [(0,)]
        assert fal.submit_requests == 1


@pytest.mark.parametrize(
    ("knob", "says"),
    [
        ("fail_jobs", "Drawing Ranxia failed at the image model."),
        ("refuse_content", "The image model refused to draw Ranxia (its content rules)."),
    ],
)
async def test_a_failure_or_refusal_explains_and_refunds_once(
    tmp_path: Path, fal: ProviderServer, knob: str, says: str
) -> None:
    setattr(fal, knob, True)
    async with running_bot(tmp_path, **_settings(fal)) as h:
        s = h.server
        s.send(ANN, text=CREATE)
        failed = await s.wait_for(
            lambda: [c for c in s.sent("sendMessage", ANN.id) if says in c.params["text"]],
            timeout=15,
        )
        assert "refunded" in failed[0].params["text"]
        store = h.runtime.settings.store_path
        assert _ledger(store) == [("portrait", -3), ("refund", 3)]
        shown = "SELECT state FROM portraits WHERE shown = 1"
        assert await s.wait_for(lambda: db_rows(store, shown)) == [("failed",)]
        assert await h.runtime.service.characters.list(UserRef("telegram", str(ANN.id))) == []
        assert not s.sent("sendMediaGroup", ANN.id)


@pytest.mark.parametrize("lost", [False, True], ids=["handle-stored", "answer-lost"])
async def test_a_restart_finishes_a_recorded_request_without_a_second_submit(
    tmp_path: Path, fal: ProviderServer, lost: bool
) -> None:
    server = BotApiServer()
    await server.start()
    try:
        # The first process records the request and submits it, then dies: either after
        # committing the handle, or before the submit's answer arrived (only "submitting").
        async with running_bot(tmp_path, server=server, worker=False, **_settings(fal)) as h:
            server.send(ANN, text=CREATE)
            await server.wait_for(lambda: server.sent("sendMessage", ANN.id))
            store = h.runtime.storage.portraits
            [portrait] = await store.claim_portraits(
                "dead", lease_seconds=1.0, now=time.time(), limit=1
            )
            assert portrait.state is PortraitState.QUEUED
            now = portrait.created_at
            assert await store.advance_portrait(
                portrait.id, "dead", PortraitState.SUBMITTING, lease_seconds=1.0, now=now
            )
            settings = h.runtime.settings
            model = image_model(
                "seedream-4", settings.image_presets["seedream-4"], settings.providers.fal,
                count=4,
            )  # fmt: skip
            spec = RenderSpec(
                portrait.id, b"", 0, 0, portrait.prompt, "", "other", 5, 0, None,
                submitted_after=now,
            )  # fmt: skip
            handle = await model.submit(spec)
            await model.aclose()
            if not lost:
                assert await store.advance_portrait(
                    portrait.id, "dead", PortraitState.RUNNING, handle=handle,
                    lease_seconds=1.0, now=now,
                )  # fmt: skip
        assert fal.submit_requests == 1

        async with running_bot(tmp_path, server=server, **_settings(fal)) as h:
            await _pick_message(server)
            assert len(server.sent("sendMediaGroup", ANN.id)) == 1
            assert fal.submit_requests == 1 and len(fal.jobs) == 1
            assert _ledger(h.runtime.settings.store_path) == [("portrait", -3)]
    finally:
        await server.stop()
