"""Approval mode on Telegram: newcomers are refused, admins approve or deny with buttons."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from core.i18n import render
from core.models import JobState
from tests.botapi_server import User
from tests.conftest import photo_jpeg
from tests.telegram_harness import ANN, BOB, LI, LINE, Harness, answers, buttons, running_bot

ADMIN = User(999, "Root", "en")
ASKED = render("chat.access_asked", "en")


def texts(h: Harness, user: User) -> list[str]:
    return [m.get("text", "") for m in h.server.bot_messages(user.id)]


async def request_refused(h: Harness, user: User, text: str) -> None:
    """Send a photo with a line and wait until the bot's answer reads ``text``."""
    h.server.send(user, photo=photo_jpeg(), caption=LINE)
    await h.server.wait_for(lambda: text in texts(h, user), what=text)


async def admin_request(h: Harness) -> dict[str, Any]:
    """Wait for the one access request in the admin's chat; return it."""
    [message] = await h.server.wait_for(lambda: h.server.bot_messages(ADMIN.id), what="ask")
    return message


def approval(tmp_path: Path, tiny_mp4: bytes) -> Any:
    return running_bot(tmp_path, video=tiny_mp4, quotas={"access": "approval"})


async def test_a_newcomer_is_refused_and_the_admin_is_asked(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with approval(tmp_path, tiny_mp4) as h:
        await request_refused(h, ANN, ASKED)
        message = await admin_request(h)
        assert message["text"] == "Access request from Ann (id 101)."
        assert list(buttons(message)) == ["✅ Approve", "⛔ Deny"]
        # Only opaque ids travel in callback data.
        assert all("101" not in data for data in buttons(message).values())
        assert await h.jobs() == []


async def test_a_waiting_user_asking_again_does_not_message_the_admins_again(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with approval(tmp_path, tiny_mp4) as h:
        await request_refused(h, LI, render("chat.access_asked", "zh"))
        await admin_request(h)
        await request_refused(h, LI, render("access.pending", "zh"))
        h.server.send(LI, text="/start")
        await h.server.wait_for(
            lambda: any(t.endswith(render("access.pending", "zh")) for t in texts(h, LI))
        )
        await asyncio.sleep(0.2)
        assert len(h.server.bot_messages(ADMIN.id)) == 1
        assert await h.jobs() == []


async def test_only_admins_may_decide(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with approval(tmp_path, tiny_mp4) as h:
        await request_refused(h, ANN, ASKED)
        message = await admin_request(h)
        for presser in (BOB, ANN):  # the applicant may not approve themselves either
            query = h.server.press(presser, message, buttons(message)["✅ Approve"])
            [answer] = await h.server.wait_for(lambda q=query: answers(h.server, q))
            assert answer["show_alert"] == "true"
            assert answer["text"] == render("chat.admin_only", "en")
        assert [p[2] for p in await h.runtime.service.accounts.pending()] == ["101"]
        assert list(buttons(message)) == ["✅ Approve", "⛔ Deny"]
        assert texts(h, ANN)[-1] == ASKED


async def test_approving_lets_the_next_request_through(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with approval(tmp_path, tiny_mp4) as h:
        await request_refused(h, ANN, ASKED)
        message = await admin_request(h)
        labels = buttons(message)
        query = h.server.press(ADMIN, message, labels["✅ Approve"])
        [answer] = await h.server.wait_for(lambda: answers(h.server, query))
        assert answer["text"] == "Approved."
        told = render("access.approved", "en")
        await h.server.wait_for(lambda: told in texts(h, ANN), what="user told")
        await h.server.wait_for(lambda: "reply_markup" not in message, what="admin message")
        assert message["text"] == "Access request from Ann (id 101).\n\n✅ Approved by Root."
        # A second press (or another admin's) changes nothing.
        again = h.server.press(ADMIN, message, labels["⛔ Deny"])
        [repeat] = await h.server.wait_for(lambda: answers(h.server, again))
        assert repeat["text"] == render("chat.access_already", "en")
        h.server.send(ANN, photo=photo_jpeg(), caption=LINE)
        [job] = await h.finished(1)
        assert job.state is JobState.DONE


async def test_denying_tells_the_user_and_keeps_them_out(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with approval(tmp_path, tiny_mp4) as h:
        await request_refused(h, ANN, ASKED)
        message = await admin_request(h)
        query = h.server.press(ADMIN, message, buttons(message)["⛔ Deny"])
        [answer] = await h.server.wait_for(lambda: answers(h.server, query))
        assert answer["text"] == "Denied."
        told = render("chat.access_user_denied", "en")
        await h.server.wait_for(lambda: told in texts(h, ANN), what="user told")
        assert message["text"].endswith("⛔ Denied by Root.")
        await request_refused(h, ANN, render("access.denied", "en"))
        assert await h.jobs() == []
        assert len(h.server.bot_messages(ADMIN.id)) == 1


async def test_pending_lists_waiting_requests_with_buttons(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with approval(tmp_path, tiny_mp4) as h:
        await request_refused(h, ANN, ASKED)
        await admin_request(h)
        h.server.send(BOB, text="/pending")
        await h.server.wait_for(lambda: render("chat.admin_only", "en") in texts(h, BOB))
        h.server.send(ADMIN, text="/pending")
        listed = await h.server.wait_for(
            lambda: [m for m in h.server.bot_messages(ADMIN.id) if buttons(m)][1:]
        )
        assert "1 access request(s) waiting:" in texts(h, ADMIN)
        assert listed[0]["text"] == "Access request from Ann (id 101)."
        h.server.press(ADMIN, listed[0], buttons(listed[0])["✅ Approve"])
        await h.server.wait_for(lambda: render("access.approved", "en") in texts(h, ANN))
        assert await h.runtime.service.accounts.pending() == []
