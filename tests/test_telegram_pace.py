"""Pace: a flood from one user and a crowd of users, counted where Telegram would count them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.botapi_server import BotApiServer, Call, User
from tests.conftest import photo_jpeg
from tests.jobapi_server import JobApiServer
from tests.telegram_harness import ANN, LINE, running_bot

FLOOD_TEXT = "You are sending requests too fast"


def outgoing(server: BotApiServer, chat_id: int | None = None) -> list[Call]:
    """Every message the bot sent or changed (what Telegram's flood limits count)."""
    return [
        call
        for call in server.calls
        if (call.method.startswith(("send", "edit")) or call.method == "deleteMessage")
        and call.method != "sendChatAction"
        and (chat_id is None or call.chat_id == str(chat_id))
    ]


def busiest_second(calls: list[Call]) -> int:
    """Return the most calls the server received within any one second (sliding window)."""
    times = sorted(call.at for call in calls)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


async def test_a_flood_from_one_user_costs_one_warning(tmp_path: Path, tiny_mp4: bytes) -> None:
    quotas = {"flood_burst": 3, "flood_refill_seconds": 3600}
    async with running_bot(tmp_path, video=tiny_mp4, quotas=quotas) as h:
        s = h.server
        for _ in range(20):
            s.send(ANN, photo=photo_jpeg(200, 250), caption=LINE)
        jobs = await h.finished(3)
        await asyncio.sleep(0.5)  # anything still coming would arrive now
        assert len(jobs) == 3
        statuses = {job.address.status_message_id for job in jobs}
        videos = [c for c in outgoing(s, ANN.id) if c.method == "sendVideo"]
        warnings = [c for c in outgoing(s, ANN.id) if FLOOD_TEXT in c.params.get("text", "")]
        assert len(warnings) == 1 and warnings[0].method == "sendMessage"
        # Everything else belongs to an admitted request: its status message or its video.
        for call in outgoing(s, ANN.id):
            if call in warnings or call in videos:
                continue
            if call.method == "sendMessage":
                assert call.params["text"].startswith("Got it"), call.params
            else:
                assert call.params.get("message_id") in statuses, (call.method, call.params)
        assert len(s.sent("sendMessage", ANN.id)) == 3 + 1
        assert len(videos) == 3


async def test_a_crowd_never_pushes_the_bot_past_telegrams_pace(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    users = [User(5000 + index, f"u{index}", "en") for index in range(40)]
    model = JobApiServer(video=tiny_mp4, run_seconds=0.15)
    await model.start()
    try:
        async with running_bot(
            tmp_path,
            model=model,
            jobapi={"url": model.url, "slots": 1, "poll_interval_seconds": 0.02},
        ) as h:
            s = h.server
            for user in users:
                s.send(user, photo=photo_jpeg(200, 250), caption=LINE)
            jobs = await h.finished(len(users), timeout=60)
            await s.wait_for(
                lambda: len(s.sent("sendVideo")) == len(users), timeout=30, what="videos"
            )
            await asyncio.sleep(0.5)
        assert all(job.state.value == "done" for job in jobs)
        calls = outgoing(s)
        assert busiest_second(calls) <= 30
        edits = [c for c in calls if c.method.startswith("edit")]
        # A waiting status is edited when it says something new, not at every queue move:
        # the edits grow with the users, not with users x queue length (old: ~9 each).
        assert len(edits) <= 5 * len(users), len(edits)
    finally:
        await model.stop()
