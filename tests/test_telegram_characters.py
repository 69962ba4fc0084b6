"""Characters on Telegram: save from a photo, voice, list, cast by @Name, share, delete."""

from __future__ import annotations

from pathlib import Path

from core.models import UserRef
from tests.conftest import photo_jpeg
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
