"""Commands: menus per language, /lang, /history by file id, /cancel, /stats for admins."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.models import JobState
from tests.botapi_server import User
from tests.conftest import photo_jpeg
from tests.jobapi_server import JobApiServer
from tests.telegram_harness import ANN, LI, LINE, running_bot

ADMIN = User(999, "Root", "en")


async def test_command_menus_are_registered_per_language(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        menus = {
            c.params.get("language_code"): c.json("commands")
            for c in h.server.sent("setMyCommands")
        }
        assert set(menus) == {None, "zh"}
        assert [c["command"] for c in menus[None]] == [c["command"] for c in menus["zh"]]
        assert {"gen", "help", "cancel", "history", "lang"} <= {c["command"] for c in menus[None]}
        assert menus["zh"][0]["description"] != menus[None][0]["description"]


async def test_lang_switches_every_later_answer(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        h.server.send(ANN, text="/lang zh")
        [answer] = await h.server.wait_for(lambda: h.server.sent("sendMessage", ANN.id))
        assert answer.params["text"] == "我会用中文回复你。"
        h.server.send(ANN, text=LINE)  # no photo yet: the hint comes in Chinese
        hint = await h.server.wait_for(lambda: h.server.sent("sendMessage", ANN.id)[1:])
        assert hint[0].params["text"].startswith("请先发送角色的照片")
        h.server.send(LI, text="/lang klingon")
        [usage] = await h.server.wait_for(lambda: h.server.sent("sendMessage", LI.id))
        assert usage.params["text"] == "请使用 /lang en 或 /lang zh。"  # Li's client is Chinese


async def test_history_resends_by_file_id(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        s.send(ANN, photo=photo_jpeg(), caption=LINE)
        await h.finished(1)
        [uploaded] = await s.wait_for(lambda: s.sent("sendVideo"))
        s.send(ANN, text="/history")
        resent = await s.wait_for(lambda: s.sent("sendVideo")[1:])
        assert resent[0].files == {}  # nothing uploaded again
        assert resent[0].params["video"] in s.uploads
        s.send(ANN, text='He laughs: "Twice!"')
        await h.finished(2)
        s.send(ANN, text="/history")
        [group] = await s.wait_for(lambda: s.sent("sendMediaGroup"))
        media = group.json("media")
        assert len(media) == 2 and all(item["media"] in s.uploads for item in media)
        assert group.files == {} and uploaded.files


async def test_cancel_command_and_admin_stats(tmp_path: Path, tiny_mp4: bytes) -> None:
    hold = asyncio.Event()
    model = JobApiServer(video=tiny_mp4, run_seconds=0.05, hold=hold)
    await model.start()
    try:
        settings = {"url": model.url, "slots": 1, "poll_interval_seconds": 0.02}
        async with running_bot(tmp_path, model=model, jobapi=settings) as h:
            s = h.server
            s.send(ANN, photo=photo_jpeg(), caption=LINE + " --takes 3")
            await h.job_in(JobState.RUNNING)
            s.send(ANN, text="/stats")
            s.send(ADMIN, text="/stats")
            [refused] = await s.wait_for(
                lambda: (
                    s.sent("sendMessage", ADMIN.id)
                    and [m for m in s.sent("sendMessage", ANN.id) if "admins" in m.params["text"]]
                )
            )
            assert refused.params["text"] == "Only bot admins can do that."
            [stats] = s.sent("sendMessage", ADMIN.id)
            assert "queued 2" in stats.params["text"] and "running 1" in stats.params["text"]
            s.send(ANN, text="/cancel")
            await s.wait_for(
                lambda: [
                    m
                    for m in s.sent("sendMessage", ANN.id)
                    if m.params["text"] == "Canceled 2 waiting take(s)."
                ]
            )
            hold.set()
            jobs = await h.finished(3)
            assert sorted(j.state.value for j in jobs) == ["canceled", "canceled", "done"]
    finally:
        await model.stop()


async def test_quota_and_admin_grant_ban_unban(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server

        async def answer(user: User, text: str) -> str:
            before = len(s.sent("sendMessage", user.id))
            s.send(user, text=text)
            calls = await s.wait_for(lambda: s.sent("sendMessage", user.id)[before:], what=text)
            return str(calls[0].params["text"])

        assert (await answer(ANN, "/quota")).startswith("You have 20 credits left")
        assert await answer(ANN, f"/ban {ANN.id}") == "Only bot admins can do that."
        assert await answer(ADMIN, f"/grant {ANN.id} 5") == f"Done: grant for user {ANN.id}."
        assert (await answer(ANN, "/quota")).startswith("You have 25 credits left")
        assert (await answer(ADMIN, "/grant")).startswith("Usage")
        assert await answer(ADMIN, f"/ban {ANN.id} spam") == f"Done: ban for user {ANN.id}."
        before = len(s.sent("sendMessage", ANN.id))
        s.send(ANN, photo=photo_jpeg(), caption=LINE)
        # Refused before any acknowledgement: the refusal is the reply (and the push
        # notification), not an edit of "Got it!".
        [refusal] = await s.wait_for(lambda: s.sent("sendMessage", ANN.id)[before:], what="refusal")
        assert "can no longer use this bot" in refusal.params["text"]
        assert not s.sent("editMessageText", ANN.id) and await h.jobs() == []
        assert await answer(ADMIN, f"/unban {ANN.id}") == f"Done: unban for user {ANN.id}."
        s.send(ANN, photo=photo_jpeg(), caption=LINE)
        [job] = await h.finished()
        assert job.state is JobState.DONE


async def test_no_link_without_another_platform(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        menus = [c.json("commands") for c in s.sent("setMyCommands")]
        assert menus and all("link" not in {c["command"] for c in menu} for menu in menus)
        s.send(ANN, text="/help")
        [help_text] = await s.wait_for(lambda: s.sent("sendMessage", ANN.id), what="help")
        assert "/link" not in help_text.params["text"]
        s.send(ANN, text="/link")
        await asyncio.sleep(0.3)
        assert len(s.sent("sendMessage", ANN.id)) == 1  # /link is nobody's command here


async def test_link_is_offered_beside_another_platform(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4, peers=["discord"]) as h:
        s = h.server
        menus = [c.json("commands") for c in s.sent("setMyCommands")]
        assert menus and all("link" in {c["command"] for c in menu} for menu in menus)
        s.send(ANN, text="/help")
        [help_text] = await s.wait_for(lambda: s.sent("sendMessage", ANN.id), what="help")
        assert "/link shares one balance with your account on Discord." in help_text.params["text"]
