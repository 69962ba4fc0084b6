"""Refusals, buttons, token expiry, restarts, limits and API errors, against loopback Discord."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from core.i18n import render
from core.models import JobState, UserRef
from tests.conftest import db_rows, photo_jpeg
from tests.discord_harness import ANN, BOB, LI, Harness, buttons, running_discord, until
from tests.discord_server import CHANNEL_ID, DiscordServer


def uploads(h: Harness) -> list[Any]:
    """Every request that carried a file."""
    return [call for call in h.server.calls if call.files]


def private_answers(h: Harness, interaction: dict[str, Any]) -> list[str]:
    """The texts only the user saw: ephemeral callbacks and followups of one interaction."""
    token = interaction["token"]
    texts = []
    for call in h.server.calls:
        body = call.body or {}
        data = body.get("data", body) if isinstance(body, dict) else {}
        if (token in call.path or interaction["id"] in call.path) and (data.get("flags") or 0) & 64:
            texts.append(data.get("content", ""))
    return texts


async def result_message(h: Harness) -> dict[str, Any]:
    """Wait for the message that carries a video; return it as the server keeps it."""
    await until(lambda: uploads(h))
    return await until(
        lambda: next((m for m in h.server.messages.values() if m["attachments"]), None)
    )


async def test_non_image_attachment_is_refused_privately_and_costs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        interaction = await h.generate(
            ANN, b"%PDF-1.7 definitely not a picture" * 20, content_type="image/png"
        )
        refusal = render("image.not_an_image", "en")
        await until(lambda: refusal in private_answers(h, interaction))
        # The public "thinking" response made way for the private refusal.
        assert h.server.calls_to("DELETE", interaction["token"])
        assert await h.jobs() == []
        balance = await h.runtime.service.accounts.balance(UserRef("discord", str(ANN.id)))
        assert balance.credits == h.runtime.settings.quotas.credits


async def test_a_refused_line_is_answered_privately_before_any_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        interaction = await h.generate(ANN, photo_jpeg(), "x" * 500)
        await until(lambda: private_answers(h, interaction))
        assert await h.jobs() == []


async def test_a_stranger_pressing_a_button_is_told_it_is_not_theirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        await h.generate(ANN, photo_jpeg())
        await h.finished()
        message = await result_message(h)
        retake = buttons(message)["🔁 Another take"]
        press = await h.press(BOB, message, retake)
        [callback] = await until(lambda: h.server.calls_to("POST", f"/interactions/{press['id']}/"))
        assert callback.body["type"] == 4
        assert callback.body["data"]["flags"] & 64
        assert callback.body["data"]["content"] == render("request.not_owner", "en")
        await asyncio.sleep(0.2)
        assert len(await h.jobs()) == 1


@pytest.mark.parametrize("how", ["clock", "401"])
async def test_after_the_token_expires_the_channel_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes, how: str
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4, worker=False) as h:
        interaction = await h.generate(ANN, photo_jpeg())
        token = interaction["token"]
        await until(lambda: h.server.calls_to("PATCH", token))
        if how == "clock":
            h.clock.offset = 15 * 60  # the interaction is 15 minutes old now
        else:
            h.server.expired.add(token)  # Discord says so before our clock does
        before = len(h.server.calls_to("POST", token))
        worker = asyncio.create_task(h.runtime.worker.run())
        try:
            [job] = await h.finished()
        finally:
            await h.runtime.worker.stop()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        assert job.state is JobState.DONE, job.error_detail
        [upload] = uploads(h)
        assert upload.path == f"/channels/{CHANNEL_ID}/messages"
        assert upload.body["content"].startswith(f"<@{ANN.id}> ")
        original = h.server.calls_to("POST", f"/interactions/{interaction['id']}/")
        assert original
        # A reply to the interaction's response, which mentions (notifies) the requester.
        assert upload.body["message_reference"]["fail_if_not_exists"] is False
        assert "users" in upload.body["allowed_mentions"]["parse"]
        assert len(h.server.calls_to("POST", token)) == before  # nothing more by webhook
        # The status moved once into a channel message, which later changes edit in place.
        channel = rf"^/channels/{CHANNEL_ID}/messages"
        posted = [c for c in h.server.calls_to("POST", channel + "$") if not c.files]
        assert len(posted) == 1 and posted[0].body["content"].startswith(f"<@{ANN.id}> ")
        [status_id] = [
            m["id"]
            for m in h.server.messages.values()
            if "webhook_id" not in m and not m["attachments"]
        ]
        await until(lambda: h.server.calls_to("PATCH", rf"{channel}/{status_id}$"))
        if how == "clock":
            assert not [c for c in h.server.calls if token in c.path and c.method == "PATCH"][1:]


async def test_buttons_answer_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    server = DiscordServer()
    await server.start()
    try:
        async with running_discord(tmp_path, monkeypatch, server=server, video=tiny_mp4) as h:
            await h.generate(ANN, photo_jpeg())
            await h.finished()
            message = await result_message(h)
        retake = buttons(message)["🔁 Another take"]
        async with running_discord(tmp_path, monkeypatch, server=server, video=tiny_mp4) as h:
            press = await h.press(ANN, message, retake)
            jobs = await h.finished(count=2)
            assert [job.state for job in jobs] == [JobState.DONE] * 2
            assert len(uploads(h)) == 2
            answered = h.server.calls_to("POST", f"/interactions/{press['id']}/")
            assert answered[0].body["data"]["content"] == render("chat.retake_started", "en")
    finally:
        await server.stop()


async def test_an_oversized_result_goes_through_the_ladder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = {"width": 320, "height": 180}
    limit = 300_000
    preview = {"fps": 8, "video_bitrate": 2_500_000}
    async with running_discord(tmp_path, monkeypatch, images=small, preview=preview) as h:
        await h.generate(ANN, photo_jpeg(), size_limit=limit)
        [job] = await h.finished(timeout=60)
        assert job.state is JobState.DONE, job.error_detail
        assert job.result_path is not None and Path(job.result_path).stat().st_size > limit
        [upload] = uploads(h)
        assert len(upload.files[0][1]) <= limit


async def test_a_413_is_never_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        h.server.fail("POST", r"^/webhooks/", 413, code=40005, times=5)
        await h.generate(ANN, photo_jpeg())
        [job] = await h.finished()
        assert job.state is JobState.FAILED
        assert job.error_key == "job.too_large_to_deliver"
        assert len(uploads(h)) == 1


async def test_a_429_is_honoured_and_a_403_never_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        h.server.fail("POST", r"^/webhooks/", 429, times=1)
        await h.generate(ANN, photo_jpeg())
        [job] = await h.finished()
        assert job.state is JobState.DONE, job.error_detail
        assert len(uploads(h)) == 2  # refused once with retry_after, then sent
        h.server.fail("POST", r"^/webhooks/", 403, code=50013, times=5)
        await h.generate(BOB, photo_jpeg())
        jobs = await h.finished(count=2)
        assert jobs[1].state is JobState.FAILED
        assert len(uploads(h)) == 3  # the 403 once, never again
        rows = db_rows(h.runtime.settings.store_path, "SELECT state FROM jobs")
        assert sorted(state for (state,) in rows) == ["done", "failed"]


async def test_no_answer_to_the_upload_ends_done_unconfirmed_not_resent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        h.bot.platform.upload_read_timeout = 0.3
        h.server.upload_delay = 3.0
        await h.generate(ANN, photo_jpeg())
        [job] = await h.finished()
        assert (job.state, job.delivery_unconfirmed) == (JobState.DONE, True), job.error_detail
        assert job.error_key is None
        assert len(uploads(h)) == 1
        accounts = h.runtime.service.accounts
        account = await accounts.account_id(UserRef("discord", str(ANN.id)))
        assert account is not None
        reasons = [entry.reason for entry in await accounts.history(account)]
        assert "refund" not in reasons and "debit" in reasons


@pytest.mark.parametrize("role", ["555", "Producers"])
async def test_a_member_with_the_admin_role_may_press_anyones_buttons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes, role: str
) -> None:
    settings = {"admin_role": role}
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4, discord=settings) as h:
        await h.generate(ANN, photo_jpeg())
        await h.finished()
        message = await result_message(h)
        retake = buttons(message)["🔁 Another take"]
        refused = await h.press(BOB, message, retake, roles=(556,))  # some other role
        [callback] = await until(
            lambda: h.server.calls_to("POST", f"/interactions/{refused['id']}/")
        )
        assert callback.body["data"]["flags"] & 64
        assert callback.body["data"]["content"] == render("request.not_owner", "en")
        allowed = await h.press(BOB, message, retake, roles=(555,))
        jobs = await h.finished(count=2)
        assert [job.state for job in jobs] == [JobState.DONE] * 2
        [answer] = await until(lambda: h.server.calls_to("POST", f"/interactions/{allowed['id']}/"))
        assert answer.body["data"]["content"] == render("chat.retake_started", "en")


async def test_cancel_cancels_the_users_waiting_takes_in_this_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4, worker=False) as h:
        await h.generate(ANN, photo_jpeg(), options=[{"name": "takes", "type": 4, "value": 2}])
        await h.generate(BOB, photo_jpeg())
        await until(lambda: len(db_rows(h.runtime.settings.store_path, "SELECT id FROM jobs")) == 3)
        asked = h.server.interaction(ANN, 2, h.server.command("cancel", []))
        await h.server.dispatch(asked)
        expected = render("chat.canceled", "en", count=2)
        # The private "thinking" response is filled in with the answer.
        await until(
            lambda: [c for c in h.server.calls_to("PATCH", asked["token"])
                     if c.body["content"] == expected]
        )  # fmt: skip
        states = sorted(job.state.value for job in await h.jobs())
        assert states == ["canceled", "canceled", "queued"]  # Bob's take still waits


async def test_an_image_that_cannot_be_downloaded_is_explained_without_naming_telegram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_mp4: bytes
) -> None:
    async with running_discord(tmp_path, monkeypatch, video=tiny_mp4) as h:
        attachment = h.server.add_attachment("gone.jpg", photo_jpeg(), "image/jpeg")
        h.server.attachments.clear()  # the CDN no longer has it
        data = h.server.command(
            "generate",
            [{"name": "image", "type": 11, "value": attachment["id"]},
             {"name": "line", "type": 3, "value": "She says: \"Hello.\""}],
            {"attachments": {attachment["id"]: attachment}},
        )  # fmt: skip
        interaction = h.server.interaction(LI, 2, data)
        await h.server.dispatch(interaction)
        [text] = await until(lambda: private_answers(h, interaction))
        assert text == render("chat.fetch_failed", "zh")
        assert await h.jobs() == []
    for locale in ("en", "zh"):
        assert "Telegram" not in render("chat.fetch_failed", locale)
        assert "Discord" not in render("chat.fetch_failed", locale)
