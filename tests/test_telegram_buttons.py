"""Inline buttons: only the requester (or an admin) may press them; each does its one thing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from core.models import JobState
from tests.botapi_server import User
from tests.conftest import photo_jpeg
from tests.jobapi_server import JobApiServer
from tests.telegram_harness import ANN, BOB, LINE, Harness, answers, buttons, running_bot

GROUP = -100700
ADMIN = User(999, "Root", "en")


async def first_result(h: Harness) -> dict[str, Any]:
    await h.finished(1)
    [video] = await h.server.wait_for(
        lambda: [m for m in h.server.bot_messages(GROUP) if "video" in m]
    )
    return video


async def test_a_stranger_gets_an_alert_and_nothing_happens(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        h.server.chat(GROUP, "supergroup")
        h.server.send(ANN, GROUP, photo=photo_jpeg(), caption=f"/gen {LINE}")
        video = await first_result(h)
        for label, data in buttons(video).items():
            query = h.server.press(BOB, video, data)
            [answer] = await h.server.wait_for(lambda q=query: answers(h.server, q), what=label)
            assert answer["show_alert"] == "true"
            assert "Only the person who asked" in answer["text"]
        await asyncio.sleep(0.3)
        assert len(await h.jobs()) == 1
        assert len(h.server.sent("sendMessage", GROUP)) == 1  # nothing posted for Bob


async def test_another_take_and_switching_length(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        h.server.chat(GROUP, "supergroup")
        request = h.server.send(ANN, GROUP, photo=photo_jpeg(), caption=f"/gen {LINE}")
        video = await first_result(h)
        [first] = await h.jobs()
        labels = buttons(video)
        retake = h.server.press(ANN, video, labels["🔁 Another take"])
        switch_label = next(label for label in labels if label.startswith("⏱"))
        h.server.press(ADMIN, video, labels[switch_label])  # an admin may press too
        jobs = await h.finished(3)
        assert [j.state for j in jobs] == [JobState.DONE] * 3
        assert {j.line for j in jobs} == {first.line}
        assert sorted(j.seconds for j in jobs) == sorted([first.seconds] * 2 + [15 - first.seconds])
        assert len({j.seed for j in jobs}) == 3  # each take rolls anew
        # Every answer stays with the original request; the retake is the owner's job.
        videos = await h.server.wait_for(
            lambda: len(h.server.sent("sendVideo")) == 3 and h.server.sent("sendVideo")
        )
        assert {v.reply_to for v in videos} == {request["message_id"]}
        assert {j.user_id for j in jobs} == {first.user_id}
        assert answers(h.server, retake)[0]["text"] == "On its way."
        # Pressing the same button again is a new take; a redelivered press is not.
        assert len(h.server.sent("getFile")) == 1  # the stored image was reused


async def test_new_line_for_the_same_photo(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        h.server.chat(GROUP, "supergroup")
        h.server.send(ANN, GROUP, photo=photo_jpeg(), caption=f"/gen {LINE}")
        video = await first_result(h)
        h.server.press(ANN, video, buttons(video)["✏️ New line"])
        prompt = await h.server.wait_for(
            lambda: [m for m in h.server.bot_messages(GROUP) if m.get("_sent_markup")]
        )
        assert prompt[0]["_sent_markup"] == {"force_reply": True, "selective": True}
        h.server.send(ANN, GROUP, text='She sighs: "Fine, again."', reply_to=prompt[0])
        jobs = await h.finished(2)
        assert {j.line for j in jobs} == {LINE, 'She sighs: "Fine, again."'}
        assert len(h.server.sent("getFile")) == 1  # the new line used the stored image


async def test_cancel_while_queued(tmp_path: Path, tiny_mp4: bytes) -> None:
    hold = asyncio.Event()
    model = JobApiServer(video=tiny_mp4, run_seconds=0.05, hold=hold)
    await model.start()
    try:
        async with running_bot(
            tmp_path,
            model=model,
            jobapi={"url": model.url, "slots": 1, "poll_interval_seconds": 0.02},
        ) as h:
            h.server.chat(GROUP, "supergroup")
            h.server.send(BOB, GROUP, photo=photo_jpeg(), caption=f"/gen {LINE}")
            await h.job_in(JobState.RUNNING)
            mine = h.server.send(ANN, GROUP, photo=photo_jpeg(), caption=f"/gen {LINE}")
            status = await h.server.wait_for(
                lambda: [
                    m
                    for m in h.server.bot_messages(GROUP)
                    if "❌ Cancel" in buttons(m)
                    and m["reply_to_message"]["message_id"] == mine["message_id"]
                ]
            )
            cancel = buttons(status[0])["❌ Cancel"]
            stranger = h.server.press(BOB, status[0], cancel)
            await h.server.wait_for(lambda: answers(h.server, stranger))
            assert await h.runtime.storage.jobs.count_by_state() == {
                JobState.RUNNING: 1,
                JobState.QUEUED: 1,
            }
            query = h.server.press(ANN, status[0], cancel)
            [answer] = await h.server.wait_for(lambda: answers(h.server, query))
            assert answer["text"] == "Canceled 1 waiting take(s)."
            await h.server.wait_for(
                lambda: status[0]["text"] == "Canceled." and "reply_markup" not in status[0],
                what="canceled status",
            )
            hold.set()
            jobs = await h.finished(2)
            assert sorted(j.state for j in jobs) == sorted([JobState.DONE, JobState.CANCELED])
            assert len(model.submits) == 1
    finally:
        await model.stop()


async def test_another_take_keeps_its_status_and_counts_as_take_two(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        s.send(ANN, photo=photo_jpeg(), caption=LINE)
        [first] = await h.finished(1)
        [video] = await s.wait_for(lambda: [m for m in s.bot_messages(ANN.id) if "video" in m])
        assert video["caption"].endswith("take 1/1")
        retake = s.press(ANN, video, buttons(video)["🔁 Another take"])
        jobs = await h.finished(2)
        assert [j.state for j in jobs] == [JobState.DONE] * 2
        second = await s.wait_for(lambda: s.sent("sendVideo", ANN.id)[1:])
        # The user's second take of that line, announced in the status message it had.
        assert second[0].params["caption"].endswith("take 2/2")
        assert answers(s, retake)[0]["text"] == "On its way."
        assert len(s.sent("sendMessage", ANN.id)) == 1  # no second "Got it!"
        assert first.address.status_message_id is not None
        status = s.messages[(str(ANN.id), int(first.address.status_message_id))]
        done = f"Done: {first.seconds} s, take 2/2."
        await s.wait_for(lambda: status["text"] == done, what="status of take 2")
        shown = [c.params["text"] for c in s.sent("editMessageText", ANN.id)]
        assert "Generating…" in shown and not any("(0 s)" in text for text in shown)


async def _takes(h: Harness, count: int) -> list[str]:
    """Wait for ``count`` videos sent to Ann; return the ends of their captions."""
    s = h.server
    sent = await s.wait_for(
        lambda: s.sent("sendVideo", ANN.id)[count - 1 :] and s.sent("sendVideo", ANN.id),
        what=f"{count} videos",
    )
    return [str(call.params["caption"]).rsplit("\n", 1)[-1] for call in sent]


async def test_each_further_take_of_a_line_gets_the_next_number(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        s.send(ANN, photo=photo_jpeg(), caption=LINE)
        [first] = await h.finished(1)
        [video] = await s.wait_for(lambda: [m for m in s.bot_messages(ANN.id) if "video" in m])
        labels = buttons(video)
        # "Another take" twice under the same video: the second counts on from the first.
        s.press(ANN, video, labels["🔁 Another take"])
        await h.finished(2)
        await _takes(h, 2)
        s.press(ANN, video, labels["🔁 Another take"])
        await h.finished(3)
        secs = first.seconds
        assert await _takes(h, 3) == [f"{secs} s · take {n}/{n}" for n in (1, 2, 3)]
        # The other length, under the first video, is the line's next take too; and so is
        # another take under a later take.
        other = 15 - secs
        switch = next(label for label in labels if label.startswith("⏱"))
        s.press(ANN, video, labels[switch])
        await h.finished(4)
        await _takes(h, 4)
        later = [m for m in s.bot_messages(ANN.id) if "video" in m][1]
        s.press(ANN, later, buttons(later)["🔁 Another take"])
        await h.finished(5)
        assert (await _takes(h, 5))[3:] == [f"{other} s · take 4/4", f"{secs} s · take 5/5"]
        status = s.messages[(str(ANN.id), int(str(first.address.status_message_id)))]
        done = f"Done: {secs} s, take 5/5."
        await s.wait_for(lambda: status["text"] == done, what="status of take 5")


async def test_two_presses_at_once_get_two_numbers(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        s.send(ANN, photo=photo_jpeg(), caption=LINE)
        [first] = await h.finished(1)
        [video] = await s.wait_for(lambda: [m for m in s.bot_messages(ANN.id) if "video" in m])
        another = buttons(video)["🔁 Another take"]
        s.press(ANN, video, another)
        s.press(ANN, video, another)
        await h.finished(3)
        takes = sorted((await _takes(h, 3))[1:])
        assert takes == [f"{first.seconds} s · take {n}/{n}" for n in (2, 3)]
