"""``actorbot character`` and ``actorbot generate --character``: a real subprocess, real files."""

from __future__ import annotations

from pathlib import Path

from core.media import probe_video
from tests.conftest import db_rows, voice_note
from tests.test_cli import actorbot
from tests.test_preview import decoded_audio


def test_save_list_cast_and_delete_a_character(tmp_path: Path, portrait: bytes) -> None:
    photo = tmp_path / "ranxia.jpg"
    photo.write_bytes(portrait)
    saved = actorbot(
        tmp_path, "character", "save", "Ranxia", str(photo), "--voice", "alto", "--seed", "7",
        "--description", "the lead",
    )  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    assert "Saved Ranxia." in saved.stderr
    listed = actorbot(tmp_path, "character", "list")
    assert listed.returncode == 0, listed.stderr
    assert all(word in listed.stderr for word in ("Ranxia", "alto", "7", "the lead", "1/20"))

    # No photo: the character's is used, with its voice and seed.
    made = actorbot(
        tmp_path, "generate", "--character", "ranxia", "She says: 'Hello.' --5s", "-o", "a.mp4"
    )
    assert made.returncode == 0, made.stderr
    assert probe_video(tmp_path / "a.mp4").has_audio
    store = tmp_path / "data" / "actorbot.sqlite3"
    assert db_rows(store, "SELECT voice, seed FROM jobs") == [("alto", 7)]

    refused = actorbot(tmp_path, "generate", "@Nobody says: 'Hi.'")
    assert refused.returncode == 1
    assert "There is no character called Nobody" in refused.stderr

    deleted = actorbot(tmp_path, "character", "delete", "RANXIA")
    assert deleted.returncode == 0 and "Deleted RANXIA" in deleted.stderr
    assert db_rows(store, "SELECT count(*) FROM character_images") == [(0,)]
    again = actorbot(tmp_path, "character", "delete", "Ranxia")
    assert again.returncode == 1 and "no character called Ranxia" in again.stderr


def test_refusals_name_the_command_line_way_to_save_a_character(tmp_path: Path) -> None:
    refused = actorbot(tmp_path, "generate", "@Nobody says: 'Hi.'")
    assert refused.returncode == 1
    assert "Save one with actorbot character save Nobody PHOTO" in refused.stderr
    assert "/character" not in refused.stderr  # a chat's command means nothing here
    listed = actorbot(tmp_path, "character", "list")
    assert "actorbot character save NAME PHOTO" in listed.stderr
    assert "/character" not in listed.stderr


def test_generate_without_photo_or_character_says_what_to_give(tmp_path: Path) -> None:
    result = actorbot(tmp_path, "generate", "She says: 'Hello.'")
    assert result.returncode == 2
    assert "give a PHOTO" in result.stderr and "Traceback" not in result.stderr


def test_on_the_preview_renderer_a_character_sounds_the_same_in_every_take(
    tmp_path: Path, portrait: bytes
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(portrait)
    # Two characters from the same photo, neither given a voice: each keeps one of its own.
    for name in ("Ann", "Bea"):
        assert actorbot(tmp_path, "character", "save", name, str(photo)).returncode == 0
    # Ann's voice from a recording: offline, she still speaks with one fixed voice.
    sample = tmp_path / "ann.ogg"
    sample.write_bytes(voice_note(6.0))
    voiced = actorbot(tmp_path, "character", "voice", "Ann", "--sample", str(sample))
    assert voiced.returncode == 0, voiced.stderr
    assert "Ann now speaks with the voice from your recording" in voiced.stderr
    line = "She says: 'We meet again, at last.' --5s"
    for output, cast in (("ann1.mp4", "@Ann"), ("ann2.mp4", "@ann"), ("bea.mp4", "@Bea")):
        made = actorbot(tmp_path, "generate", f"{cast} {line}", "-o", output)
        assert made.returncode == 0, made.stderr
    store = tmp_path / "data" / "actorbot.sqlite3"
    [(first,), (second,), _] = db_rows(store, "SELECT seed FROM jobs ORDER BY seq")
    assert first != second  # different takes (random seeds), yet the same voice:
    ann1, rate = decoded_audio(tmp_path / "ann1.mp4")
    ann2, _ = decoded_audio(tmp_path / "ann2.mp4")
    bea, _ = decoded_audio(tmp_path / "bea.mp4")
    assert rate > 0 and max(abs(sample) for sample in ann1) > 0.05  # speech, not silence
    assert ann1 == ann2
    assert ann1 != bea


def test_a_voice_sample_from_a_file_is_checked(tmp_path: Path, portrait: bytes) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(portrait)
    assert actorbot(tmp_path, "character", "save", "Ann", str(photo)).returncode == 0
    short = tmp_path / "short.mp3"
    short.write_bytes(voice_note(2.0, fmt="mp3"))
    refused = actorbot(tmp_path, "character", "voice", "Ann", "--sample", str(short))
    assert refused.returncode != 0 and "a voice needs 5-30 s" in refused.stderr
    both = actorbot(tmp_path, "character", "voice", "Ann", "alto", "--sample", str(short))
    assert both.returncode != 0 and "one of them" in both.stderr
    store = tmp_path / "data" / "actorbot.sqlite3"
    assert db_rows(store, "SELECT count(*) FROM voice_samples") == [(0,)]
    good = tmp_path / "good.wav"
    good.write_bytes(voice_note(8.0, fmt="wav"))
    assert actorbot(tmp_path, "character", "voice", "Ann", "--sample", str(good)).returncode == 0
    listed = actorbot(tmp_path, "character", "list")
    assert "from a recording" in listed.stderr
    assert db_rows(store, "SELECT count(*) FROM voice_samples") == [(1,)]
