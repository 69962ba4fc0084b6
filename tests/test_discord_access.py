"""Approval mode on Discord: a newcomer's request reaches the admins' DMs; one decision holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.i18n import render
from core.models import JobState
from tests.conftest import photo_jpeg
from tests.discord_harness import ADMIN, ANN, Harness, buttons, running_discord, until
from tests.discord_server import CHANNEL_ID, User
from tests.test_discord_behaviour import private_answers


def answer_to(h: Harness, press: dict[str, Any]) -> str:
    """Return the text a button press was answered with (only the presser sees it)."""
    [callback] = h.server.calls_to("POST", f"/interactions/{press['id']}/")
    assert callback.body["data"]["flags"] & 64
    return str(callback.body["data"]["content"])


async def test_a_request_reaches_the_admins_dm_and_is_decided_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    other = User(898, "Root")
    admins = {"admin_ids": [ADMIN.id, other.id]}
    async with running_discord(
        tmp_path, monkeypatch, video=tiny_mp4, discord=admins, quotas={"access": "approval"}
    ) as h:
        asked = await h.generate(ANN, photo_jpeg())
        await until(lambda: render("chat.access_asked", "en") in private_answers(h, asked))
        assert await h.jobs() == []
        # Each admin's DM channel is opened by their user id, then written to.
        opened = h.server.calls_to("POST", "^/users/@me/channels$")
        assert sorted(str(c.body["recipient_id"]) for c in opened) == ["898", "899"]

        def request_to(admin: User) -> dict[str, Any] | None:
            dm = str(admin.id + 1)
            return next((m for m in h.server.messages.values() if m["channel_id"] == dm), None)

        mine = await until(lambda: request_to(ADMIN))
        theirs = await until(lambda: request_to(other))
        assert str(ANN.id) in mine["content"]
        assert list(buttons(mine)) == ["✅ Approve", "⛔ Deny"]
        deny = buttons(theirs)["⛔ Deny"]  # before the approval takes the buttons away

        approve = await h.press(ADMIN, mine, buttons(mine)["✅ Approve"])
        await until(lambda: h.server.calls_to("POST", f"/interactions/{approve['id']}/"))
        assert answer_to(h, approve) == render("chat.access_approved", "en")
        # The other admin decides too late: the request was decided already.
        late = await h.press(other, theirs, deny)
        await until(lambda: h.server.calls_to("POST", f"/interactions/{late['id']}/"))
        assert answer_to(h, late) == render("chat.access_already", "en")
        assert await h.runtime.service.accounts.pending() == []
        await until(
            lambda: any(
                m["content"].endswith(render("access.approved", "en"))
                for m in h.server.messages.values()
                if m["channel_id"] == str(CHANNEL_ID)
            )
        )

        await h.generate(ANN, photo_jpeg())
        [job] = await h.finished()
        assert job.state is JobState.DONE, job.error_detail
