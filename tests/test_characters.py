"""Characters in the service: saved once, cast by @Name, refused before anything is spent."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from config.settings import CharacterSettings, ImageSettings
from core.characters import Characters
from core.errors import RequestRejected
from core.models import DeliveryAddress, UserRef, VideoRequest
from core.prompts import take_seeds
from core.storage.sqlite import open_sqlite
from tests.conftest import make_settings, photo_jpeg
from tests.test_quotas import QuotaService, db_rows, service

OWNER = UserRef("test", "owner")
FRIEND = UserRef("test", "friend")


def _request(
    user: UserRef, line: str, key: str, *, chat: str = "c1", **options: object
) -> VideoRequest:
    return VideoRequest(
        user=user, image=b"", line=line, address=DeliveryAddress("test", chat), source_key=key,
        **options,  # type: ignore[arg-type]
    )  # fmt: skip


async def _spent(svc: QuotaService) -> list[tuple[object, ...]]:
    """Return what the store holds that a request would have written or charged."""
    return [
        *await db_rows(svc, "SELECT count(*) FROM requests"),
        *await db_rows(svc, "SELECT count(*) FROM ledger WHERE reason = 'debit'"),
    ]


async def test_a_line_casts_a_saved_character_with_its_image_voice_and_seed(
    tmp_path: Path,
) -> None:
    async with service(tmp_path) as svc:
        saved = await svc.characters.save(OWNER, "Ranxia", photo_jpeg(), voice="alto", seed=41)
        admission = await svc.submit(_request(OWNER, "@ranxia 笑着说：'你好。'", "m1"))
        [job] = admission.jobs
        assert (job.voice, job.seed) == ("alto", 41)
        assert job.line == "笑着说：'你好。'"  # the mention is no part of the model's prompt
        [(image,)] = await db_rows(svc, "SELECT image FROM requests")
        assert hashlib.sha256(image).hexdigest() == saved.image_sha256
        # An explicit option beats the character's; takes keep consecutive seeds.
        admission = await svc.submit(
            _request(OWNER, "--voice bass --takes 2 @Ranxia says: 'Hi.'", "m2")
        )
        assert [(j.voice, j.seed) for j in admission.jobs] == [
            ("bass", seed) for seed in take_seeds(41, 2)
        ]


async def test_a_character_without_a_voice_keeps_one_of_its_own(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        await svc.characters.save(OWNER, "Bo", photo_jpeg())
        await svc.characters.save(OWNER, "Al", photo_jpeg())
        voices = {
            name: [j.voice for j in (await svc.submit(_request(OWNER, line, key))).jobs]
            for name, line, key in (
                ("bo", "@Bo says: 'Hi.'", "m1"),
                ("bo again", "@BO says: 'Hi.'", "m2"),
                ("al", "@Al says: 'Hi.'", "m3"),
            )
        }
        assert voices["bo"] == voices["bo again"] != voices["al"]


async def test_the_character_option_casts_without_a_mention(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        await svc.characters.save(OWNER, "Ranxia", photo_jpeg(), voice="alto")
        admission = await svc.submit(_request(OWNER, "She says: 'Hi.'", "m1", character="Ranxia"))
        assert admission.jobs[0].voice == "alto"


async def test_an_unknown_name_is_refused_before_anything_is_spent(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        await svc.characters.save(OWNER, "Ranxia", photo_jpeg())
        with pytest.raises(RequestRejected) as refused:
            await svc.submit(_request(OWNER, "@Nobody says: 'Hi.'", "m1"))
        assert (refused.value.key, refused.value.params) == (
            "character.unknown",
            {"name": "Nobody"},
        )
        # Another account's character is not castable either.
        with pytest.raises(RequestRejected, match=r"character\.unknown"):
            await svc.submit(_request(FRIEND, "@Ranxia says: 'Hi.'", "m2"))
        assert await _spent(svc) == [(0,), (0,)]


async def test_two_characters_in_one_line_are_refused_before_anything_is_spent(
    tmp_path: Path,
) -> None:
    async with service(tmp_path) as svc:
        await svc.characters.save(OWNER, "Ranxia", photo_jpeg())
        await svc.characters.save(OWNER, "Bo", photo_jpeg())
        with pytest.raises(RequestRejected) as refused:
            await svc.submit(_request(OWNER, "@Ranxia turns to @Bo: 'Hi.'", "m1"))
        assert refused.value.key == "character.two_person"
        assert refused.value.params == {"names": "Ranxia, Bo"}
        assert await _spent(svc) == [(0,), (0,)]


async def test_a_shared_character_is_castable_in_its_chat_only(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        await svc.characters.save(OWNER, "Ranxia", photo_jpeg(), voice="alto")
        await svc.characters.share(OWNER, "ranxia", "group")
        admission = await svc.submit(_request(FRIEND, "@Ranxia: 'Hi.'", "m1", chat="group"))
        assert admission.jobs[0].voice == "alto"
        with pytest.raises(RequestRejected, match=r"character\.unknown"):
            await svc.submit(_request(FRIEND, "@Ranxia: 'Hi.'", "m2", chat="elsewhere"))
        # Only the owner can change or delete it.
        with pytest.raises(RequestRejected, match=r"character\.unknown"):
            await svc.characters.delete(FRIEND, "Ranxia")
        await svc.characters.delete(OWNER, "Ranxia")
        with pytest.raises(RequestRejected, match=r"character\.unknown"):
            await svc.submit(_request(FRIEND, "@Ranxia: 'Hi.'", "m3", chat="group"))


async def test_the_per_account_limit_is_a_clear_refusal(tmp_path: Path) -> None:
    storage = await open_sqlite(tmp_path / "db.sqlite3")
    try:
        characters = Characters(
            storage.characters, storage.accounts, CharacterSettings(max_per_account=2),
            ImageSettings(),
        )  # fmt: skip
        await characters.save(OWNER, "A", photo_jpeg())
        await characters.save(OWNER, "B", photo_jpeg())
        with pytest.raises(RequestRejected) as refused:
            await characters.save(OWNER, "C", photo_jpeg())
        assert (refused.value.key, refused.value.params) == ("character.limit", {"limit": 2})
        await characters.save(OWNER, "a", photo_jpeg(640, 480))  # replacing one still works
        assert [c.name for c in await characters.list(OWNER)] == ["a", "B"]
    finally:
        await storage.close()


@pytest.mark.parametrize("name", ["", "two words", "x" * 33, "semi;colon"])
async def test_a_bad_name_is_refused(tmp_path: Path, name: str) -> None:
    async with service(tmp_path) as svc:
        with pytest.raises(RequestRejected, match=r"character\.bad_name"):
            await svc.characters.save(OWNER, name, photo_jpeg())


def test_the_readme_table_of_what_stays_stable_matches_the_presets(tmp_path: Path) -> None:
    presets = make_settings(tmp_path).presets
    section = (Path(__file__).parents[1] / "README.md").read_text().split("## Characters")[1]
    rows = {
        cells[0].split("`")[1]: cells
        for line in section.split("\n## ")[0].splitlines()
        if line.startswith("| `")
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    assert set(rows) == {*presets, "preview"}
    for name, preset in presets.items():
        _, photo, seed, voice = rows[name]
        keeps_seed = "seed" in preset.keeps or bool(preset.seed_field)
        if preset.speech is not None:
            kept_voice = "two-stage"
        elif "voice_id" in preset.keeps or preset.voice_field:
            kept_voice = "voice id"
        else:
            kept_voice = "reference audio" if "reference_audio" in preset.keeps else "no"
        assert (photo, seed.startswith("yes"), voice.split(" (")[0]) == (
            "yes", keeps_seed, kept_voice,
        ), name  # fmt: skip
