"""Characters on Telegram: save from a photo, voice, list, cast by @Name, share, delete."""

from __future__ import annotations

import io
from pathlib import Path

import av

from core.models import UserRef
from tests.conftest import photo_jpeg, voice_note
from tests.telegram_harness import ANN, BOB, running_bot

GROUP = -100700


async def test_save_voice_list_cast_share_and_delete(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server

        async def answer(user_chat: int, after: int) -> str:
            messages = await s.wait_for(lambda: s.sent("sendMessage", user_chat)[after:])
            return str(messages[0].params["text"])

        s.send(ANN, text="/character save Ranxia")  # no photo: say how
        assert "with a photo" in await answer(ANN.id, 0)
        s.send(ANN, photo=photo_jpeg(), caption="/character save Ranxia the lead")
        assert (await answer(ANN.id, 1)).startswith("Saved Ranxia.")
        s.send(ANN, text="/character voice ranxia alto")
        assert await answer(ANN.id, 2) == "ranxia now speaks with the voice alto."
        s.send(ANN, text="/character list")
        listing = await answer(ANN.id, 3)
        assert listing.splitlines() == [
            "Your characters (1/20):",
            "@Ranxia · voice alto · the lead",
        ]

        # Cast by name, with no photo ever sent as a request: the saved one is used.
        s.send(ANN, text="@Ranxia smiles and says: 'Hello.'")
        [job] = await h.finished(1)
        assert job.voice == "alto" and job.line == "smiles and says: 'Hello.'"

        # Bob cannot cast it until Ann shares it in a chat they are both in.
        s.chat(GROUP, "supergroup")
        s.send(BOB, GROUP, text="/gen @Ranxia: 'Hi.'")
        refusal = await answer(GROUP, 0)
        assert refusal.startswith("There is no character called Ranxia.")
        s.send(ANN, GROUP, text="/character share Ranxia")
        assert (await answer(GROUP, 1)).startswith("Everyone in this chat can now cast Ranxia")
        s.send(BOB, GROUP, text="/gen @Ranxia: 'Hi.'")
        jobs = await h.finished(2)
        assert {j.voice for j in jobs} == {"alto"}

        # Two characters in one line: refused before anything is spent.
        s.send(ANN, photo=photo_jpeg(), caption="/character save Bo")
        assert (await answer(ANN.id, 5)).startswith("Saved Bo.")
        s.send(ANN, text="@Ranxia looks at @Bo: 'Hi.'")
        assert "two-person scenes are not supported" in await answer(ANN.id, 6)

        s.send(ANN, text="/character delete Ranxia")
        assert await answer(ANN.id, 7) == "Deleted Ranxia and its photo."
        s.send(BOB, GROUP, text="/gen @Ranxia: 'Hi.'")
        # (after the refusal, the share and the acknowledgement of Bob's take)
        assert (await answer(GROUP, 3)).startswith("There is no character called Ranxia.")
        assert len(await h.jobs()) == 2


async def test_save_by_replying_to_a_photo_in_chinese(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        s.send(ANN, text="/lang zh")
        await s.wait_for(lambda: s.sent("sendMessage", ANN.id))
        photo = s.send(ANN, photo=photo_jpeg(), caption=None)
        s.send(ANN, text="/character save 然霞", reply_to=photo)
        saved = await s.wait_for(
            lambda: [m for m in s.sent("sendMessage", ANN.id) if "已保存" in m.params["text"]]
        )
        assert saved[0].params["text"].startswith("已保存 然霞。")
        characters = await h.runtime.service.characters.list(UserRef("telegram", str(ANN.id)))
        assert [c.name for c in characters] == ["然霞"]


async def test_a_voice_note_becomes_the_characters_voice(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with running_bot(tmp_path, video=tiny_mp4) as h:
        s = h.server
        store = h.runtime.storage.characters
        ann = UserRef("telegram", str(ANN.id))

        async def answer(after: int) -> str:
            messages = await s.wait_for(lambda: s.sent("sendMessage", ANN.id)[after:])
            return str(messages[0].params["text"])

        async def sample() -> str | None:
            [character] = await h.runtime.service.characters.list(ann)
            return character.voice_sample

        s.send(ANN, photo=photo_jpeg(), caption="/character save Ranxia")
        assert (await answer(0)).startswith("Saved Ranxia.")
        s.send(ANN, text="/character voice Ranxia")  # nothing to take the voice from
        assert "Reply /character voice Ranxia to a voice message" in await answer(1)

        # Refused recordings: a clear reason each, and nothing stored.
        refusals = [
            (voice_note(2.0), "is 2.0 s long; a voice needs 5-30 s"),
            (voice_note(31.0), "longer than 30 s"),
            (voice_note(8.0, amplitude=0.0), "silent"),
            (b"not a recording at all" * 50, "not a recording I can play"),
        ]
        for count, (recording, reason) in enumerate(refusals, start=2):
            note = s.send(ANN, voice=recording)
            s.send(ANN, text="/character voice Ranxia", reply_to=note)
            assert reason in await answer(count)
            assert await sample() is None

        # A voice note replied to: stored, normalized, once.
        note = s.send(ANN, voice=voice_note(6.0))
        s.send(ANN, text="/character voice Ranxia", reply_to=note)
        assert (await answer(6)).startswith("Ranxia now speaks with the voice from your recording")
        first = await sample()
        assert first is not None
        stored = await store.voice_sample(first)
        assert stored is not None and abs(stored.seconds - 6.0) < 0.1
        with av.open(io.BytesIO(stored.wav)) as container:
            audio = container.streams.audio[0]
            assert (audio.codec_context.name, audio.rate, audio.channels) == ("pcm_s16le", 24000, 1)

        # An MP3 sent with the command as its caption replaces it; the old one is deleted.
        s.send(ANN, audio=voice_note(7.0, fmt="mp3"), mime_type="audio/mpeg",
               caption="/character voice Ranxia")  # fmt: skip
        assert (await answer(7)).startswith("Ranxia now speaks with the voice from your recording")
        second = await sample()
        assert second not in (None, first)
        assert await store.voice_sample(first) is None

        # A take casting it keeps the sample; deleting the character deletes the sample.
        s.send(ANN, text="@Ranxia says: 'Hello.'")
        [job] = await h.finished(1)
        assert job.voice_sample == second
        s.send(ANN, text="/character delete Ranxia")
        assert await s.wait_for(
            lambda: [m for m in s.sent("sendMessage", ANN.id) if "Deleted" in m.params["text"]]
        )
        assert second is not None and await store.voice_sample(second) is None


async def test_a_recording_over_the_size_limit_is_not_downloaded(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    limits = {"max_voice_bytes": 20_000}
    async with running_bot(tmp_path, video=tiny_mp4, characters=limits) as h:
        s = h.server
        s.send(ANN, photo=photo_jpeg(), caption="/character save Ranxia")
        await s.wait_for(lambda: s.sent("sendMessage", ANN.id))
        note = s.send(ANN, voice=voice_note(10.0, fmt="wav"))
        s.send(ANN, text="/character voice Ranxia", reply_to=note)
        messages = await s.wait_for(lambda: s.sent("sendMessage", ANN.id)[1:])
        assert messages[0].params["text"].startswith("That recording is too big (the limit is")
        fetched = [c for c in s.calls if c.method == "getFile"]
        assert len(fetched) == 1  # the photo only
