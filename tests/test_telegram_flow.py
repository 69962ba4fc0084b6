"""Private chats end to end: the real PTB Application, worker and store against the emulator."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from core.media import probe_video
from core.models import JobState
from tests.botapi_server import BOT_ID, BotApiServer, Call
from tests.conftest import photo_jpeg
from tests.telegram_harness import ANN, LI, LINE, running_bot


def texts(server: BotApiServer, chat_id: int) -> list[str]:
    """Every text the bot showed in a chat, edits included, in order."""
    return [
        call.params["text"]
        for call in server.calls
        if call.method in ("sendMessage", "editMessageText") and call.chat_id == str(chat_id)
    ]


def button_messages(server: BotApiServer, chat_id: int) -> list[Call]:
    """The messages that carry the buttons of an album of takes."""
    return [
        call
        for call in server.sent("sendMessage", chat_id)
        if call.params["text"].endswith("takes above. Want another?")
    ]


async def test_photo_with_caption_becomes_a_real_preview_video(tmp_path: Path) -> None:
    small = {"width": 320, "height": 180}
    async with running_bot(tmp_path, images=small, preview={"fps": 8}) as h:
        request = h.server.send(ANN, photo=photo_jpeg(), caption=LINE)
        [job] = await h.finished(timeout=60)
        assert job.state is JobState.DONE, job.error_detail
        [video] = h.server.sent("sendVideo", ANN.id)
        assert video.reply_to == request["message_id"]
        assert video.params["supports_streaming"] == "true"
        assert "You didn't really think I'd give up?" in video.params["caption"]
        assert "take 1/1" in video.params["caption"]
        upload = tmp_path / "upload.mp4"
        upload.write_bytes(next(iter(video.files.values())))
        info = probe_video(upload)
        assert info.has_audio and (info.width, info.height) == (320, 180)
        assert abs(info.duration - job.seconds) < 0.5
        # The status message was edited in place from acknowledgement to summary.
        [status] = [m for m in h.server.bot_messages(ANN.id) if "text" in m]
        assert status["reply_to_message"]["message_id"] == request["message_id"]
        await h.server.wait_for(
            lambda: status["text"].startswith(f"Done: {job.seconds} s"), what="summary"
        )
        shown = texts(h.server, ANN.id)
        assert shown[0] == "Got it! Preparing your video…"
        assert "Generating…" in shown  # no clock that would stand still at "(0 s)"
        assert len(h.server.sent("sendMessage", ANN.id)) == 1  # one status message, edited
        assert h.server.sent("sendChatAction", ANN.id)[0].params["action"] == "upload_video"
        assert not h.server.unknown


async def test_status_sequence_and_result_buttons(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        h.server.send(ANN, photo=photo_jpeg(), caption=LINE + " --takes 2")
        jobs = await h.finished(count=2)
        assert [job.state for job in jobs] == [JobState.DONE] * 2
        [keys] = await h.server.wait_for(lambda: button_messages(h.server, ANN.id))
        keyboard = keys.json("reply_markup")["inline_keyboard"]
        buttons = [button for row in keyboard for button in row]
        other = 5 if jobs[0].seconds == 10 else 10
        assert [b["text"] for b in buttons] == ["🔁 Another take", "✏️ New line", f"⏱ {other} s"]
        # callback_data is an opaque short id, not data.
        assert all(
            len(b["callback_data"].encode()) <= 64 and LINE not in b["callback_data"]
            for b in buttons
        )
        status = next(m for m in h.server.bot_messages(ANN.id) if "text" in m)
        await h.server.wait_for(lambda: status["text"].count("Done") == 2, what="summary")
        assert status["text"].splitlines()[0].startswith("Take 1/2: Done")


async def test_several_takes_arrive_as_one_album_then_buttons(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        request = h.server.send(ANN, photo=photo_jpeg(), caption=LINE + " --takes 3")
        jobs = await h.finished(count=3)
        assert [job.state for job in jobs] == [JobState.DONE] * 3, [j.error_detail for j in jobs]
        [album] = h.server.sent("sendMediaGroup", ANN.id)
        assert album.reply_to == request["message_id"]
        media = album.json("media")
        assert [item["type"] for item in media] == ["video"] * 3
        assert all(item["supports_streaming"] is True for item in media)
        assert len(album.files) == 3 and set(album.files.values()) == {tiny_mp4}
        # One caption for the album, on its first item.
        assert "You didn't really think I'd give up?" in media[0]["caption"]
        assert "3 takes" in media[0]["caption"]
        assert all("caption" not in item for item in media[1:])
        assert h.server.sent("sendVideo") == []
        [keys] = button_messages(h.server, ANN.id)
        assert keys.params["text"] == "3 takes above. Want another?"
        buttons = [b["text"] for row in keys.json("reply_markup")["inline_keyboard"] for b in row]
        assert buttons[:2] == ["🔁 Another take", "✏️ New line"]
        first_video = min(m["message_id"] for m in h.server.bot_messages(ANN.id) if "video" in m)
        assert keys.reply_to == first_video
        # /history can send the takes again from their file ids.
        history = await h.runtime.storage.chats.history("telegram", str(ANN.id), 10)
        assert {item.job_id for item in history} == {job.id for job in jobs}
        assert not h.server.unknown


async def test_image_sent_as_a_file_keeps_full_resolution(tmp_path: Path, tiny_mp4: bytes) -> None:
    big = io.BytesIO()
    Image.new("RGB", (2400, 1600), (90, 120, 200)).save(big, "PNG")
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        h.server.send(ANN, document=big.getvalue(), mime_type="image/png", caption=LINE)
        [job] = await h.finished()
        assert job.state is JobState.DONE
        # The document was downloaded as is (no Telegram recompression in between).
        [get_file] = h.server.sent("getFile")
        assert h.server.files[get_file.params["file_id"]] == big.getvalue()


async def test_photo_without_caption_asks_for_the_line(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        photo = h.server.send(ANN, photo=photo_jpeg())
        [ask] = await h.server.wait_for(lambda: h.server.sent("sendMessage", ANN.id))
        assert ask.json("reply_markup")["force_reply"] is True
        assert "send the line" in ask.params["text"]
        line = h.server.send(ANN, text=LINE, reply_to=h.server.bot_messages(ANN.id)[-1])
        [job] = await h.finished()
        assert job.state is JobState.DONE
        assert job.address.reply_to == str(line["message_id"])
        [get_file] = h.server.sent("getFile")
        assert get_file.params["file_id"] == photo["photo"][-1]["file_id"]


async def test_line_without_photo_reuses_the_last_one_or_hints(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        h.server.send(ANN, text=LINE)
        [hint] = await h.server.wait_for(lambda: h.server.sent("sendMessage", ANN.id))
        assert hint.params["text"].startswith("First send a photo")
        assert await h.jobs() == []
        first = h.server.send(ANN, photo=photo_jpeg(), caption=LINE)
        await h.finished(1)
        h.server.send(ANN, text='She whispers: "Again."')
        jobs = await h.finished(2)
        assert {job.line for job in jobs} == {LINE, 'She whispers: "Again."'}
        file_ids = {call.params["file_id"] for call in h.server.sent("getFile")}
        assert file_ids == {first["photo"][-1]["file_id"]}


async def test_refusals_are_in_the_users_language(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        pdf = s.send(
            LI,
            document=b"%PDF-1.4 not an image",
            mime_type="application/pdf",
            caption="女孩说：'你好'",
        )
        s.send(ANN, photo=photo_jpeg(), caption='He says: "' + "word " * 40 + '"')
        await s.wait_for(lambda: any("不是图片" in t for t in texts(s, LI.id)), what="zh refusal")
        await s.wait_for(
            lambda: any("needs about" in t for t in texts(s, ANN.id)), what="en refusal"
        )
        assert await h.jobs() == []
        # A refusal is a reply of its own (what the notification shows), never an edit of
        # "Got it!": the line is refused before any acknowledgement...
        assert [c.method for c in s.calls if c.chat_id == str(ANN.id)] == ["sendMessage"]
        # ...and the file, found out only after its download, replaces the acknowledgement.
        acked, refused = s.sent("sendMessage", LI.id)
        assert acked.params["text"].startswith("收到") and len(s.sent("deleteMessage", LI.id)) == 1
        assert refused.reply_to == pdf["message_id"] and not s.sent("editMessageText", LI.id)
        assert [m["text"] for m in s.bot_messages(LI.id)] == [refused.params["text"]]


async def test_album_uses_the_captioned_item_and_says_so(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        h.server.send(ANN, photo=photo_jpeg(), caption=LINE, media_group_id="album1")
        h.server.send(ANN, photo=photo_jpeg(400, 500), media_group_id="album1")
        h.server.send(ANN, photo=photo_jpeg(500, 400), media_group_id="album1")
        [job] = await h.finished()
        assert job.state is JobState.DONE
        [ack] = h.server.sent("sendMessage", ANN.id)
        assert "album" in ack.params["text"]


async def test_bot_messages_are_not_requests(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        h.server.send(ANN, text="/help")
        [help_] = await h.server.wait_for(lambda: h.server.sent("sendMessage", ANN.id))
        assert "--takes N (up to 5 takes)" in help_.params["text"]
        assert BOT_ID not in {int(c.chat_id or 0) for c in h.server.calls}
