"""Groups with privacy mode: act only when addressed; forum topics; throttled status edits."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from core.models import JobState
from tests.botapi_server import BOT_USERNAME
from tests.conftest import photo_jpeg
from tests.telegram_harness import ANN, BOB, LINE, running_bot

GROUP = -100500


async def test_group_acts_only_when_addressed(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        s.chat(GROUP, "supergroup")
        s.send(BOB, GROUP, photo=photo_jpeg(), caption=LINE)  # chatter: not for the bot
        s.send(ANN, GROUP, photo=photo_jpeg(), caption=f"/gen@other_bot {LINE}")
        s.send(ANN, GROUP, text="just talking about @someone_else")
        await asyncio.sleep(0.4)
        assert s.sent("sendMessage") == [] and await h.jobs() == []

        s.send(ANN, GROUP, photo=photo_jpeg(), caption=f"/gen {LINE}")
        s.send(ANN, GROUP, photo=photo_jpeg(), caption=f"/gen@{BOT_USERNAME} {LINE}")
        mention = s.send(ANN, GROUP, photo=photo_jpeg(), caption=f"@{BOT_USERNAME} {LINE}")
        jobs = await h.finished(3)
        assert {job.line for job in jobs} == {LINE}  # command and mention stripped
        assert all(job.address.chat_id == str(GROUP) for job in jobs)
        acks = s.sent("sendMessage", GROUP)
        assert len(acks) == 3 and all(ack.reply_to is not None for ack in acks)
        assert mention["message_id"] in {ack.reply_to for ack in acks}


async def test_gen_as_a_reply_to_someone_elses_photo(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        s.chat(GROUP, "supergroup")
        photo = s.send(BOB, GROUP, photo=photo_jpeg())  # privacy mode: never delivered...
        s.forget_until(10**6)  # ...so the bot never saw it
        request = s.send(ANN, GROUP, text=f"/gen {LINE}", reply_to=photo)
        [job] = await h.finished()
        assert job.state is JobState.DONE
        [get_file] = s.sent("getFile")
        assert get_file.params["file_id"] == photo["photo"][-1]["file_id"]
        assert job.address.reply_to == str(request["message_id"])
        assert job.address.extra["user"] == str(ANN.id)
        # A reply to the bot with a new line reuses that photo.
        [video] = [m for m in s.bot_messages(GROUP) if "video" in m]
        s.send(ANN, GROUP, text='She whispers: "Once more."', reply_to=video)
        jobs = await h.finished(2)
        assert {j.line for j in jobs} == {LINE, 'She whispers: "Once more."'}


async def test_forum_topic_is_kept_for_every_answer(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        s.chat(GROUP, "supergroup", forum=True)
        s.send(ANN, GROUP, photo=photo_jpeg(), caption=f"/gen {LINE}", thread_id=77)
        await h.finished()
        [video] = await s.wait_for(lambda: s.sent("sendVideo", GROUP))
        [ack] = s.sent("sendMessage", GROUP)
        actions = s.sent("sendChatAction", GROUP)
        assert ack.params["message_thread_id"] == video.params["message_thread_id"] == "77"
        assert actions and all(a.params["message_thread_id"] == "77" for a in actions)


async def test_status_edits_are_throttled_in_groups(tmp_path: Path, tiny_mp4: bytes) -> None:
    interval = 0.8
    async with running_bot(
        tmp_path,
        video=tiny_mp4,
        telegram={"group_edit_interval_seconds": interval},
        worker={"status_interval_seconds": 0.05},
    ) as h:
        assert h.model is not None
        h.model.run_seconds = 2.5  # ~50 progress events while it runs (none is news)
        s = h.server
        s.chat(GROUP, "supergroup")
        s.send(ANN, GROUP, photo=photo_jpeg(), caption=f"/gen {LINE}")
        s.send(BOB, GROUP, photo=photo_jpeg(), caption=f"/gen {LINE}")
        await h.finished(2, timeout=30)
        await asyncio.sleep(interval * 2)
        # Acknowledgements and status edits share the group's pace.
        paced = [
            c.at
            for c in s.calls
            if c.method in ("sendMessage", "editMessageText") and c.chat_id == str(GROUP)
        ]
        gaps = [later - earlier for earlier, later in itertools.pairwise(paced)]
        assert len(paced) >= 4 and min(gaps) >= interval * 0.9, gaps
        # Both status messages still end with the summary, not a stale state.
        statuses = [m for m in s.bot_messages(GROUP) if "text" in m]
        assert len(statuses) == 2 and all(m["text"].startswith("Done") for m in statuses)
