"""The characters contract: every engine saves, lists, shares and deletes them alike."""

from __future__ import annotations

import time

from core.characters import NAME
from core.models import DeliveryAddress, JobState, UserRef
from core.storage import Storage
from core.storage.characters import renames_for_move
from core.storage.types import CharacterImage, CharacterVoice, NewTake, VoiceState
from tests.conftest import Engine

IMAGE = CharacterImage(b"jpeg one", 1280, 720)
OTHER = CharacterImage(b"jpeg two", 1280, 720)


async def _account(storage: Storage, user: str) -> int:
    return await storage.accounts.ensure_account(UserRef("test", user), 1.0)


async def _running(storage: Storage, takes: int) -> list[str]:
    """Admit a request of ``takes`` takes and claim them all (SUBMITTING under a lease)."""
    admitted = await storage.jobs.admit(
        user=UserRef("test", "runner"), source_key=f"r{takes}", line="line",
        image_jpeg=b"jpeg", image_size=(16, 9), address=DeliveryAddress("test", "c1"),
        takes=[NewTake("line", "line", "en", 5, 1, None)] * takes,
    )  # fmt: skip
    claimed = await storage.jobs.claim(
        "w1", limit=takes, platforms=["test"], lease_seconds=60, deadline_seconds=900
    )
    assert {each.job.id for each in claimed} == {job.id for job in admitted.jobs}
    return [job.id for job in admitted.jobs]


async def test_save_list_get_by_name_in_any_case_and_set_voice(engine: Engine) -> None:
    storage = await engine.open()
    try:
        owner = await _account(storage, "u1")
        saved = await storage.characters.save_character(
            owner, "Ranxia", IMAGE, voice="alto", seed=7, description="the lead", limit=20,
            now=2.0,
        )  # fmt: skip
        assert saved is not None
        assert (saved.name, saved.voice, saved.seed, saved.description) == (
            "Ranxia", "alto", 7, "the lead",
        )  # fmt: skip
        await storage.characters.save_character(
            owner, "Bo", OTHER, voice=None, seed=None, description="", limit=20, now=3.0
        )
        assert [c.name for c in await storage.characters.characters(owner)] == ["Bo", "Ranxia"]
        found = await storage.characters.character(owner, "RANXIA")
        assert found is not None and found.id == saved.id
        image = await storage.characters.character_image(found.image_sha256)
        assert image == IMAGE
        assert await storage.characters.set_character_voice(owner, "ranxia", "tenor")
        assert not await storage.characters.set_character_voice(owner, "nobody", "tenor")
        again = await storage.characters.character(owner, "Ranxia")
        assert again is not None and again.voice == "tenor"
        # Another account has its own namespace.
        other = await _account(storage, "u2")
        assert await storage.characters.character(other, "Ranxia") is None
    finally:
        await storage.close()


async def test_saving_a_name_again_replaces_its_image_and_keeps_its_voice(engine: Engine) -> None:
    storage = await engine.open()
    try:
        owner = await _account(storage, "u1")
        first = await storage.characters.save_character(
            owner, "Ranxia", IMAGE, voice="alto", seed=7, description="", limit=1, now=2.0
        )
        assert first is not None
        # The limit counts characters, not saves: replacing one at the limit works.
        second = await storage.characters.save_character(
            owner, "ranxia", OTHER, voice=None, seed=None, description="", limit=1, now=3.0
        )
        assert second is not None and second.id == first.id
        assert (second.voice, second.seed) == ("alto", 7)
        assert second.image_sha256 != first.image_sha256
        # The image no character uses any more is gone.
        assert await storage.characters.character_image(first.image_sha256) is None
    finally:
        await storage.close()


async def test_an_image_is_stored_once_and_deleted_with_its_last_character(
    engine: Engine,
) -> None:
    storage = await engine.open()
    try:
        owner = await _account(storage, "u1")
        for name in ("A", "B"):
            await storage.characters.save_character(
                owner, name, IMAGE, voice=None, seed=None, description="", limit=20, now=2.0
            )
        assert await engine.rows("SELECT count(*) FROM character_images") == [(1,)]
        assert await storage.characters.delete_character(owner, "a")
        assert await engine.rows("SELECT count(*) FROM character_images") == [(1,)]
        assert await storage.characters.delete_character(owner, "B")
        assert await engine.rows("SELECT count(*) FROM character_images") == [(0,)]
        assert not await storage.characters.delete_character(owner, "B")
        assert await storage.characters.characters(owner) == []
    finally:
        await storage.close()


async def test_a_shared_character_resolves_in_that_chat_only_until_deleted(
    engine: Engine,
) -> None:
    storage = await engine.open()
    try:
        owner = await _account(storage, "u1")
        await storage.characters.save_character(
            owner, "Ranxia", IMAGE, voice="alto", seed=None, description="", limit=20, now=2.0
        )
        assert not await storage.characters.share_character(owner, "nobody", "test", "g1", 3.0)
        assert await storage.characters.share_character(owner, "ranxia", "test", "g1", 3.0)
        assert await storage.characters.share_character(owner, "Ranxia", "test", "g1", 4.0)
        shared = await storage.characters.shared_character("test", "g1", "RANXIA")
        assert shared is not None and shared.account_id == owner
        assert shared.shared_in == (("test", "g1"),)
        assert await storage.characters.shared_character("test", "g2", "Ranxia") is None
        assert await storage.characters.shared_character("other", "g1", "Ranxia") is None
        assert await storage.characters.delete_character(owner, "Ranxia")
        assert await storage.characters.shared_character("test", "g1", "Ranxia") is None
        assert await engine.rows("SELECT count(*) FROM character_shares") == [(0,)]
    finally:
        await storage.close()


async def test_the_per_account_limit_refuses_one_more(engine: Engine) -> None:
    storage = await engine.open()
    try:
        owner = await _account(storage, "u1")
        for index in range(3):
            saved = await storage.characters.save_character(
                owner, f"c{index}", IMAGE, voice=None, seed=None, description="", limit=3,
                now=2.0,
            )  # fmt: skip
            assert saved is not None
        refused = await storage.characters.save_character(
            owner, "c3", OTHER, voice=None, seed=None, description="", limit=3, now=2.0
        )
        assert refused is None
        assert len(await storage.characters.characters(owner)) == 3
        assert await engine.rows("SELECT count(*) FROM character_images") == [(1,)]
    finally:
        await storage.close()


async def test_linking_moves_the_joining_accounts_characters_and_renames_a_clash(
    engine: Engine,
) -> None:
    storage = await engine.open()
    chars = storage.characters
    try:
        telegram, discord = UserRef("telegram", "1"), UserRef("discord", "2")
        staying = await storage.accounts.ensure_account(telegram, 1.0)
        joining = await storage.accounts.ensure_account(discord, 1.0)
        kept = await chars.save_character(
            staying, "Ranxia", IMAGE, voice="alto", seed=None, description="", limit=20, now=2.0
        )
        # The other account has its own Ranxia, from the same photo (one stored image).
        clash = await chars.save_character(
            joining, "ranxia", IMAGE, voice="tenor", seed=3, description="", limit=20, now=3.0
        )
        await chars.save_character(
            joining, "Mei", OTHER, voice=None, seed=None, description="", limit=20, now=4.0
        )
        assert await chars.share_character(joining, "Mei", "discord", "chan", 5.0)
        assert kept is not None and clash is not None
        await storage.accounts.save_link_code(telegram, "CODE1234", expires_at=99.0, now=6.0)

        redeemed = await storage.accounts.redeem_link_code("CODE1234", discord, 7.0)

        assert (redeemed.account_id, redeemed.refusal) == (staying, None)
        assert redeemed.renamed == (("ranxia", "ranxia-2"),)
        moved = {c.name: c for c in await chars.characters(staying)}
        assert sorted(moved) == ["Mei", "Ranxia", "ranxia-2"]
        assert moved["Ranxia"].voice == "alto"
        assert (moved["ranxia-2"].id, moved["ranxia-2"].voice, moved["ranxia-2"].seed) == (
            clash.id, "tenor", 3,
        )  # fmt: skip
        assert await chars.characters(joining) == []
        shared = await chars.shared_character("discord", "chan", "mei")
        assert shared is not None and shared.account_id == staying
        assert [c.name for c in await chars.shared_characters("discord", "chan")] == ["Mei"]
        assert await chars.shared_characters("discord", "elsewhere") == []
        # Still one image for both Ranxias: it goes with the last of them only.
        assert await engine.rows("SELECT count(*) FROM character_images") == [(2,)]
        assert await chars.delete_character(staying, "Ranxia-2")
        assert await chars.character_image(kept.image_sha256) == IMAGE
        assert await chars.delete_character(staying, "Ranxia")
        assert await chars.character_image(kept.image_sha256) is None
    finally:
        await storage.close()


def test_a_moved_name_gets_the_first_free_number_and_stays_a_valid_name() -> None:
    long = "A" * 32
    renames = renames_for_move(
        ["Ranxia", "ranxia-2", long], [(1, "RANXIA"), (2, "Ranxia-3"), (3, long), (4, "Bo")]
    )
    assert renames == [(3, long, "A" * 30 + "-2"), (1, "RANXIA", "RANXIA-4")]
    assert all(len(new) <= 32 and NAME.fullmatch(new) for _, _, new in renames)


VOICE = CharacterVoice(b"RIFF one", 6.0)
VOICE_TWO = CharacterVoice(b"RIFF two", 7.5)
KLING = ("fal", "fal-ai/kling-video/create-voice")


async def test_a_voice_sample_is_stored_once_replaced_and_deleted_with_its_voice_ids(
    engine: Engine,
) -> None:
    storage = await engine.open()
    chars = storage.characters
    try:
        owner = await _account(storage, "u1")
        for name in ("a", "b"):
            await chars.save_character(
                owner, name, IMAGE, voice=None, seed=None, description="", limit=20, now=1.0
            )
        assert await chars.set_character_voice_sample(owner, "nobody", VOICE) is None
        a = await chars.set_character_voice_sample(owner, "A", VOICE)
        b = await chars.set_character_voice_sample(owner, "b", VOICE)
        assert a is not None and b is not None and a.voice_sample == b.voice_sample
        sha = a.voice_sample
        assert sha is not None and await chars.voice_sample(sha) == VOICE
        assert await engine.rows("SELECT count(*) FROM voice_samples") == [(1,)]

        # A voice id at a provider model: claimed once, its handle and id kept. The
        # takes claiming it are running (leased), as they are when they get there.
        job1, job2, job3, job4, job5, job6 = await _running(storage, 6)
        claimed = await chars.claim_provider_voice(sha, *KLING, job1, 5.0)
        assert claimed is not None and claimed[1] and claimed[0].state is VoiceState.CREATING
        other = await chars.claim_provider_voice(sha, *KLING, job2, 6.0)
        assert other is not None and not other[1] and other[0].owner == job1
        assert not await chars.update_provider_voice(
            sha, *KLING, job2, state=VoiceState.READY, voice_id="x", now=7.0
        )
        assert await chars.update_provider_voice(
            sha, *KLING, job1, state=VoiceState.CREATING, handle="h1", now=7.0
        )
        assert await chars.update_provider_voice(
            sha, *KLING, job1, state=VoiceState.READY, voice_id="v1", now=8.0
        )
        ready = await chars.provider_voice(sha, *KLING)
        assert ready is not None
        assert (ready.state, ready.handle, ready.voice_id) == (VoiceState.READY, "h1", "v1")
        again = await chars.claim_provider_voice(sha, *KLING, job3, 9.0)
        assert again is not None and not again[1] and again[0].voice_id == "v1"
        # After a failure, the next take claims it afresh.
        await chars.claim_provider_voice(sha, "fal", "other-model", job4, 9.0)
        assert await chars.update_provider_voice(
            sha, "fal", "other-model", job4, state=VoiceState.FAILED, now=9.5
        )
        retried = await chars.claim_provider_voice(sha, "fal", "other-model", job5, 10.0)
        assert retried is not None and retried[1] and retried[0].owner == job5

        # Still used by b: replacing a's sample keeps it; b's replacement drops it.
        a = await chars.set_character_voice_sample(owner, "a", VOICE_TWO)
        assert a is not None and a.voice_sample != sha
        assert await chars.voice_sample(sha) == VOICE
        b = await chars.set_character_voice_sample(owner, "b", VOICE_TWO)
        assert b is not None
        assert await chars.voice_sample(sha) is None
        assert await chars.provider_voice(sha, *KLING) is None
        assert await chars.claim_provider_voice(sha, *KLING, job6, 11.0) is None
        # The last character with the new one goes, and so does its sample.
        assert await chars.delete_character(owner, "a")
        assert await engine.rows("SELECT count(*) FROM voice_samples") == [(1,)]
        assert await chars.delete_character(owner, "b")
        assert await engine.rows("SELECT count(*) FROM voice_samples") == [(0,)]
    finally:
        await storage.close()


async def test_a_voice_id_claim_its_take_no_longer_holds_is_taken_over(engine: Engine) -> None:
    storage = await engine.open()
    chars = storage.characters
    try:
        owner = await _account(storage, "u1")
        await chars.save_character(
            owner, "a", IMAGE, voice=None, seed=None, description="", limit=20, now=1.0
        )
        a = await chars.set_character_voice_sample(owner, "a", VOICE)
        assert a is not None and a.voice_sample is not None
        sha = a.voice_sample
        first, second, third = await _running(storage, 3)
        now = time.time()

        # The first take sent its request and kept the handle; the second waits on it.
        assert await chars.claim_provider_voice(sha, *KLING, first, now - 50)
        assert await chars.update_provider_voice(
            sha, *KLING, first, state=VoiceState.CREATING, handle="h1", now=now - 40
        )
        waiting = await chars.claim_provider_voice(sha, *KLING, second, now, quiet_for=60)
        assert waiting is not None and not waiting[1] and waiting[0].owner == first
        # The first take's worker dies: its lease runs out, and the waiting take takes the
        # claim over with the handle (not fresh: polled, never sent again).
        await storage.jobs.expire_lease(first)
        taken = await chars.claim_provider_voice(sha, *KLING, second, now + 1, quiet_for=60)
        assert taken is not None and not taken[1]
        assert (taken[0].owner, taken[0].state, taken[0].handle) == (
            second, VoiceState.CREATING, "h1",
        )  # fmt: skip
        assert not await chars.update_provider_voice(
            sha, *KLING, first, state=VoiceState.READY, voice_id="v1", now=now + 2
        )
        # The second take is alive: a third one waits, until the handle has not moved
        # for longer than the bound.
        kept = await chars.claim_provider_voice(sha, *KLING, third, now + 30, quiet_for=60)
        assert kept is not None and kept[0].owner == second
        late = await chars.claim_provider_voice(sha, *KLING, third, now + 62, quiet_for=60)
        assert late is not None and not late[1] and late[0].owner == third
        assert late[0].handle == "h1"

        # No handle: the request may be on its way, so a live owner keeps it however long
        # it takes; once the take has ended it is taken over, keeping the time it was
        # claimed (a lost request is looked up from then on).
        model = ("fal", "other-model")
        assert await chars.claim_provider_voice(sha, *model, first, now - 500)
        await storage.jobs.transition(
            first, JobState.CANCELED, expect={JobState.SUBMITTING}, error_key="job.canceled"
        )
        orphan = await chars.claim_provider_voice(sha, *model, third, now, quiet_for=60)
        assert orphan is not None and not orphan[1]
        assert (orphan[0].owner, orphan[0].handle, orphan[0].updated_at) == (
            third, None, now - 500,
        )  # fmt: skip
        held = await chars.claim_provider_voice(sha, *model, second, now + 30, quiet_for=1)
        assert held is not None and held[0].owner == third
        # A claim whose take is gone altogether is taken over too.
        gone = ("fal", "third-model")
        assert await chars.claim_provider_voice(sha, *gone, "deleted-job", now)
        again = await chars.claim_provider_voice(sha, *gone, second, now)
        assert again is not None and not again[1] and again[0].owner == second
    finally:
        await storage.close()
