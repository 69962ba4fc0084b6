"""Two-stage presets: the line spoken once with a fixed voice, that audio driving the video.

The loopback provider server (tests/providers_server.py) runs both models, a text-to-speech
model answering a real WAV file and OmniHuman answering the test video; it counts the jobs
each model received, so "one speech job, one video job" is counted where they land.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bots.runtime import open_runtime
from config.settings import ConfigError, Settings
from core.backends.presets import fixed_voice
from core.models import Job, JobState, UserRef
from tests.conftest import db_rows, make_settings, photo_jpeg
from tests.providers_server import ProviderServer, ServedJob
from tests.test_providers_recovery import ledger, provider_env, run_cli
from tests.test_providers_worker import LINE, Recorder, local_request

FAL_SPEECH, FAL_VIDEO = "fal-ai/minimax/speech-02-hd", "fal-ai/bytedance/omnihuman/v1.5"
MODELS = {
    "omnihuman-1.5": (FAL_SPEECH, FAL_VIDEO),
    "omnihuman-1.5-replicate": ("minimax/speech-02-hd", "bytedance/omni-human-1.5"),
}
CHARGES = "SELECT reason, delta FROM ledger WHERE job_id IS NOT NULL ORDER BY id"


def pipeline_settings(
    tmp_path: Path, server: ProviderServer, preset: str, **worker: Any
) -> Settings:
    return make_settings(
        tmp_path,
        backend=preset,
        providers=server.provider_settings(),
        quotas={"exempt_platforms": []},  # charge the local user: count refunds
        takecheck={"enabled": False},  # the 1 s test clip is no performance
        worker=worker,
    )


def voice_id(job: ServedJob) -> Any:
    """Return the voice a speech job was sent (fal: nested in voice_setting)."""
    setting = job.input.get("voice_setting")
    return setting["voice_id"] if isinstance(setting, dict) else job.input["voice_id"]


def stored(data_dir: Path) -> tuple[str, str | None, str | None, str | None, str | None]:
    with sqlite3.connect(data_dir / "actorbot.sqlite3") as db:
        [row] = db.execute(
            "SELECT state, stage, speech_handle, speech_result, handle FROM jobs"
        ).fetchall()
    return row  # type: ignore[no-any-return]


@pytest.mark.parametrize("preset", sorted(MODELS))
async def test_a_two_stage_take_speaks_once_and_that_audio_drives_the_video(
    tmp_path: Path, tiny_mp4: bytes, preset: str
) -> None:
    speech_model, video_model = MODELS[preset]
    server = ProviderServer(video=tiny_mp4)
    await server.start()
    settings = pipeline_settings(tmp_path, server, preset)
    recorder = Recorder()
    try:
        async with open_runtime(settings, {"cli": recorder}) as runtime:
            admission = await runtime.service.submit(local_request("one"))
            await runtime.worker.run_until_idle()
            [job] = await runtime.storage.jobs.jobs_by_ids([admission.jobs[0].id])
    finally:
        await server.stop()
    assert job.state is JobState.DONE, job.error_detail
    assert recorder.delivered == {job.id: tiny_mp4}
    # One speech job, then one video job sent the speech job's audio, never more.
    [spoken] = server.jobs_of(speech_model)
    [video] = server.jobs_of(video_model)
    assert server.submit_requests == 2 and len(server.jobs) == 2
    assert spoken.created < video.created
    assert spoken.input["text"] == job.speech == "You did not think I would give up?"
    assert voice_id(spoken) in settings.presets[preset].speech.pool  # type: ignore[union-attr]
    audio_field = settings.presets[preset].audio_field
    assert video.input[audio_field] == job.speech_result
    assert job.speech_result is not None and job.speech_result.endswith(f"/files/{spoken.id}")
    image_field = settings.presets[preset].image_field
    assert video.input[image_field].startswith("data:image/jpeg;base64,")
    # Both handles are kept with the take.
    assert spoken.id in (job.speech_handle or "") and video.id in (job.handle or "")
    assert job.stage == "video"


async def test_a_free_retake_of_a_two_stage_take_keeps_its_spoken_line(tmp_path: Path) -> None:
    from tests.test_takecheck import clip

    silent = clip(tmp_path / "silent.mp4", seconds=2, loud=0.0).read_bytes()
    good = clip(tmp_path / "good.mp4", seconds=2).read_bytes()
    server = ProviderServer(video=good, job_videos=[silent])
    await server.start()
    settings = pipeline_settings(tmp_path, server, "omnihuman-1.5")
    settings = settings.model_copy(update={"takecheck": settings.takecheck.model_copy(
        update={"enabled": True})})  # fmt: skip
    recorder = Recorder()
    try:
        async with open_runtime(settings, {"cli": recorder}) as runtime:
            admission = await runtime.service.submit(local_request("retake"))
            await runtime.worker.run_until_idle()
            [job] = await runtime.storage.jobs.jobs_by_ids([admission.jobs[0].id])
    finally:
        await server.stop()
    assert job.state is JobState.DONE and job.retake_reason == "silent"
    assert recorder.delivered == {job.id: good}
    # The video is made again from the same audio; the line is not spoken (paid) twice.
    [spoken] = server.jobs_of(FAL_SPEECH)
    first, second = server.jobs_of(FAL_VIDEO)
    assert first.input["audio_url"] == second.input["audio_url"] == job.speech_result
    assert job.speech_result.endswith(f"/files/{spoken.id}")


async def test_a_failed_speech_stage_refunds_once_and_never_submits_a_video(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    # A server error at the speech model: retried once (a new attempt), then failed.
    server = ProviderServer(video=tiny_mp4, fail_models={FAL_SPEECH: "internal_server_error"})
    await server.start()
    settings = pipeline_settings(tmp_path, server, "omnihuman-1.5", max_attempts=2)
    recorder = Recorder()
    try:
        async with open_runtime(settings, {"cli": recorder}) as runtime:
            admission = await runtime.service.submit(local_request("fails"))
            await runtime.worker.run_until_idle()
            [job] = await runtime.storage.jobs.jobs_by_ids([admission.jobs[0].id])
    finally:
        await server.stop()
    assert job.state is JobState.FAILED and job.error_key == "job.backend_failed"
    assert "speech stage" in (job.error_detail or "")
    assert len(server.jobs_of(FAL_SPEECH)) == 2 and server.jobs_of(FAL_VIDEO) == []
    [(debit, charged), (refund, paid_back)] = db_rows(settings.store_path, CHARGES)
    assert (debit, refund, paid_back) == ("debit", "refund", -charged)
    assert recorder.delivered == {}


async def test_a_line_refused_at_the_speech_stage_is_a_refusal(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    server = ProviderServer(video=tiny_mp4, refuse_content_on_submit=True)
    await server.start()
    settings = pipeline_settings(tmp_path, server, "omnihuman-1.5")
    try:
        async with open_runtime(settings, {"cli": Recorder()}) as runtime:
            admission = await runtime.service.submit(local_request("refused"))
            await runtime.worker.run_until_idle()
            [job] = await runtime.storage.jobs.jobs_by_ids([admission.jobs[0].id])
    finally:
        await server.stop()
    assert job.state is JobState.FAILED and job.error_key == "job.filtered"
    assert server.submit_requests == 1 and server.jobs_of(FAL_VIDEO) == []
    assert [reason for reason, _ in db_rows(settings.store_path, CHARGES)] == ["debit", "refund"]


async def test_a_characters_takes_speak_with_the_same_voice(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    server = ProviderServer(video=tiny_mp4)
    await server.start()
    settings = pipeline_settings(tmp_path, server, "omnihuman-1.5")
    user = UserRef("cli", "local")
    jobs: list[Job] = []
    try:
        async with open_runtime(settings, {"cli": Recorder()}) as runtime:
            service = runtime.service
            await service.characters.save(user, "Ranxia", photo_jpeg())
            await service.characters.save(user, "Bo", photo_jpeg(), voice="man")
            for key, line in [
                ("a", '@Ranxia smiles: "You did not think I would give up?"'),
                ("b", '@Ranxia whispers: "We are even now."'),
                ("c", '@Bo shrugs: "Not yet."'),
            ]:
                request = local_request(key, line)
                admission = await service.submit(request)
                jobs.extend(admission.jobs)
            await runtime.worker.run_until_idle()
            jobs = await runtime.storage.jobs.jobs_by_ids([job.id for job in jobs])
    finally:
        await server.stop()
    assert all(job.state is JobState.DONE for job in jobs), [j.error_detail for j in jobs]
    voices = {job.input["text"]: voice_id(job) for job in server.jobs_of(FAL_SPEECH)}
    assert len(voices) == 3
    # Ranxia has no voice of her own: both of her takes get the one her name hashes to.
    assert voices["You did not think I would give up?"] == voices["We are even now."]
    assert voices["Not yet."] == "Deep_Voice_Man"  # a mapped voice name: its fixed id


def test_presets_command_shows_the_two_stage_voice(tmp_path: Path) -> None:
    from tests.test_cli import actorbot

    result = actorbot(tmp_path, "presets", COLUMNS="240")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr  # (the console writes to stderr)
    [row] = [line for line in out.splitlines() if "omnihuman-1.5 " in line]
    assert "voice (two-stage)" in row and "as spoken" in row and "up to $0.80" in row


def test_an_unmapped_voice_always_gets_the_same_voice_id_from_the_pool(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    speech = settings.presets["omnihuman-1.5"].speech
    assert speech is not None
    assert fixed_voice(speech, "woman") == "Wise_Woman"
    picked = [fixed_voice(speech, f"character:{n}") for n in range(40)]
    # Stable (a hash, not chance or the process's hash seed), from the pool, and spread.
    assert picked == [fixed_voice(speech, f"character:{n}") for n in range(40)]
    assert set(picked) <= set(speech.pool) and len(set(picked)) > 5
    assert fixed_voice(speech, None) == fixed_voice(speech, "")


def test_a_speech_stage_shorter_than_the_longest_line_is_refused_at_start_up(
    tmp_path: Path,
) -> None:
    preset = make_settings(tmp_path).presets["omnihuman-1.5"].model_dump()
    preset["speech"]["max_seconds"] = 5
    with pytest.raises(ConfigError, match=r"speech\.max_seconds \(5\.0\) is under"):
        make_settings(
            tmp_path,
            backend="short",
            presets={"short": preset},
            providers={"fal": {"key": "k"}},
        )


# --- SIGKILL between and inside the stages (the real CLI in a subprocess) ------------------


@pytest.mark.parametrize(
    ("failpoint", "looked_up"),
    [
        # The speech job's audio is stored; the process dies before the video submit.
        ("pipeline.after_speech_stored", False),
        # The speech submit reached the provider; the process dies before storing its handle.
        ("pipeline.after_speech_submit", True),
    ],
)
async def test_sigkill_in_the_speech_stage_never_pays_for_the_speech_twice(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes, failpoint: str, looked_up: bool
) -> None:
    server = ProviderServer(video=tiny_mp4)
    await server.start()
    try:
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(portrait)
        data = tmp_path / "data"
        args = ("generate", str(photo), LINE, "-o", str(tmp_path / "out.mp4"))
        env = provider_env(data, server, "omnihuman-1.5", [failpoint])
        code, _ = await run_cli(env, *args)
        assert code == -signal.SIGKILL
        state, stage, speech_handle, speech_result, handle = stored(data)
        assert (state, stage, handle) == ("submitting", "speech", None)
        assert (speech_result is None) is looked_up and (speech_handle is None) is looked_up
        [spoken] = server.jobs_of(FAL_SPEECH)
        assert server.jobs_of(FAL_VIDEO) == []

        code, output = await run_cli(provider_env(data, server, "omnihuman-1.5", []), "resume")
        assert code == 0, output
        # Still one speech job and one video job at the provider, the video delivered.
        assert server.jobs_of(FAL_SPEECH) == [spoken]
        [video] = server.jobs_of(FAL_VIDEO)
        assert server.submit_requests == 2
        assert (server.listings >= 1) is looked_up
        state, stage, speech_handle, speech_result, handle = stored(data)
        assert (state, stage) == ("done", "video")
        assert spoken.id in (speech_handle or "") and video.id in (handle or "")
        assert video.input["audio_url"] == speech_result
        assert (tmp_path / "out.mp4").read_bytes() == tiny_mp4
        [(reason, _)] = ledger(data)  # charged once, never refunded
        assert reason == "debit"
    finally:
        await server.stop()


async def test_sigkill_in_a_free_retake_before_its_video_submit_makes_a_new_video(
    tmp_path: Path, portrait: bytes
) -> None:
    from tests.test_takecheck import clip

    silent = clip(tmp_path / "silent.mp4", seconds=2, loud=0.0).read_bytes()
    good = clip(tmp_path / "good.mp4", seconds=2).read_bytes()
    server = ProviderServer(video=good, job_videos=[silent])
    await server.start()
    try:
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(portrait)
        data = tmp_path / "data"
        args = ("generate", str(photo), LINE, "-o", str(tmp_path / "out.mp4"))

        def env(failpoints: list[str]) -> dict[str, str]:
            checked = provider_env(data, server, "omnihuman-1.5", failpoints)
            return {**checked, "ACTORBOT_TAKECHECK__ENABLED": "true"}

        # The first video is silent: the take gets a free re-take, and the process dies
        # once that re-take is claimed, before its video submit.
        code, _ = await run_cli(env(["worker.after_claim#2"]), *args)
        assert code == -signal.SIGKILL
        state, _, speech_handle, speech_result, handle = stored(data)
        assert (state, handle) == ("submitting", None)
        [spoken] = server.jobs_of(FAL_SPEECH)
        [rejected] = server.jobs_of(FAL_VIDEO)
        assert spoken.id in (speech_handle or "") and speech_result is not None

        # The re-take is its own submit: never the rejected video found again by lookup.
        code, output = await run_cli(env([]), "resume")
        assert code == 0, output
        assert server.jobs_of(FAL_SPEECH) == [spoken]  # the line is spoken (paid) once
        first, second = server.jobs_of(FAL_VIDEO)
        assert first is rejected
        assert first.input["audio_url"] == second.input["audio_url"] == speech_result
        state, stage, _, _, handle = stored(data)
        assert (state, stage) == ("done", "video") and second.id in (handle or "")
        assert (tmp_path / "out.mp4").read_bytes() == good
        [(reason, _)] = ledger(data)  # charged once, never refunded
        assert reason == "debit"
    finally:
        await server.stop()
