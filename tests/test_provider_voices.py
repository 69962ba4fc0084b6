"""A character's voice sample at hosted presets: a voice id made once, or reference audio."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from core.models import DeliveryAddress, Job, JobState, UserRef, VideoRequest
from core.storage.types import VoiceState
from tests.conftest import photo_jpeg, voice_note
from tests.test_providers_worker import Take, take_harness

ANN = UserRef("cli", "local")
KLING_VOICE = "fal-ai/kling-video/create-voice"


async def cast(take: Take, key: str, takes: int = 1) -> list[Job]:
    """Admit a request casting @Ranxia and wait until its takes end."""
    admission = await take.service.submit(
        VideoRequest(
            user=ANN,
            image=b"",
            line="@Ranxia smiles and says: 'Hello again.'",
            address=DeliveryAddress("cli", "local"),
            source_key=key,
            takes=takes,
        )
    )
    ids = [job.id for job in admission.jobs]

    async def final() -> list[Job]:
        while True:
            jobs = await take.store.jobs_by_ids(ids)
            if all(job.state.is_terminal for job in jobs):
                return jobs
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(final(), 20)


async def save_with_voice(take: Take) -> str:
    """Save Ranxia with a photo and a 6 s voice note; return the stored sample's sha256."""
    characters = take.service.characters
    await characters.save(ANN, "Ranxia", photo_jpeg())
    saved = await characters.set_voice_sample(ANN, "Ranxia", voice_note(6.0))
    assert saved.voice_sample is not None
    return saved.voice_sample


async def test_a_kling_voice_id_is_made_once_and_reused(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with take_harness(tmp_path, tiny_mp4, "kling-3-pro") as take:
        sha = await save_with_voice(take)
        first = await cast(take, "one")
        second = await cast(take, "two", takes=2)  # two takes at once wait for one voice
        assert {job.state for job in first + second} == {JobState.DONE}
        # One create-voice request, counted where it landed, from the stored sample.
        assert take.server.voice_creations == 1
        [made] = [j for j in take.server.jobs.values() if j.model == KLING_VOICE]
        wav = base64.b64decode(made.input["voice_url"].removeprefix("data:audio/wav;base64,"))
        stored = await take.characters.voice_sample(sha)
        assert stored is not None and wav == stored.wav
        # Its id is sent in every video request, and kept with the sample.
        videos = [j for j in take.server.jobs.values() if j.model != KLING_VOICE]
        assert len(videos) == 3
        assert all(j.input["voice_ids"] == [f"voice-{made.id}"] for j in videos)
        row = await take.characters.provider_voice(sha, "fal", KLING_VOICE)
        assert row is not None and row.state is VoiceState.READY
        assert row.voice_id == f"voice-{made.id}"


async def test_a_lost_voice_request_is_not_repeated(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with take_harness(tmp_path, tiny_mp4, "kling-3-pro") as take:
        sha = await save_with_voice(take)
        # A take claimed the voice and died before it kept the request's handle: the
        # request may exist. The listing does not show it, so the take fails (refunded)
        # and nothing is sent again.
        admission = await take.service.submit(
            VideoRequest(
                user=ANN,
                image=b"",
                line="@Ranxia says: 'Hi.'",
                address=DeliveryAddress("cli", "local"),
                source_key="lost",
            )
        )
        [job] = admission.jobs
        claimed = await take.characters.claim_provider_voice(sha, "fal", KLING_VOICE, job.id, 0.0)
        assert claimed is not None and claimed[1]

        async def final() -> Job:
            while True:
                [seen] = await take.store.jobs_by_ids([job.id])
                if seen.state.is_terminal:
                    return seen
                await asyncio.sleep(0.02)

        ended = await asyncio.wait_for(final(), 20)
        assert (ended.state, ended.error_key) == (JobState.FAILED, "job.voice_failed")
        assert take.server.voice_creations == 0
        assert [j for j in take.server.jobs.values()] == []  # no video either
        row = await take.characters.provider_voice(sha, "fal", KLING_VOICE)
        assert row is not None and row.state is VoiceState.FAILED
        # The next take makes the voice afresh, once.
        [done] = await cast(take, "next")
        assert done.state is JobState.DONE and take.server.voice_creations == 1


async def test_a_voice_claim_left_by_an_ended_take_is_taken_over_and_polled(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    # One attempt per take; a take waiting for a voice that nobody makes fails at this
    # deadline.
    worker = {"max_attempts": 1, "job_deadline_seconds": 8}
    async with take_harness(tmp_path, tiny_mp4, "kling-3-pro", worker=worker) as take:
        sha = await save_with_voice(take)
        # The first take sends the creation request and keeps its handle, then cannot
        # reach the provider to poll it (every retry of the poll fails) and ends failed:
        # the claim stays with it, still being made, with its handle.
        take.server.poll_failures = [500] * 3
        [first] = await cast(take, "one")
        assert first.state is JobState.FAILED
        left = await take.characters.provider_voice(sha, "fal", KLING_VOICE)
        assert left is not None and left.state is VoiceState.CREATING
        assert left.owner == first.id and left.handle is not None
        assert take.server.voice_creations == 1
        # The next take takes the claim over and polls that request: the voice is made
        # once in all, and its video is delivered with it.
        [second] = await cast(take, "two")
        assert second.state is JobState.DONE and second.id in take.recorder.delivered
        assert take.server.voice_creations == 1
        [made] = take.server.jobs_of(KLING_VOICE)
        [video] = [j for j in take.server.jobs.values() if j.model != KLING_VOICE]
        assert video.input["voice_ids"] == [f"voice-{made.id}"]
        row = await take.characters.provider_voice(sha, "fal", KLING_VOICE)
        assert row is not None and (row.state, row.owner) == (VoiceState.READY, second.id)


async def test_a_reference_audio_preset_sends_the_sample(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with take_harness(tmp_path, tiny_mp4, "seedance-2") as take:
        sha = await save_with_voice(take)
        [job] = await cast(take, "one")
        assert job.state is JobState.DONE
        [sent] = take.server.jobs.values()
        [audio] = sent.input["reference_audios"]
        # Seedance takes reference audio beside a reference image, never a first frame.
        assert "image" not in sent.input
        [photo] = sent.input["reference_images"]
        assert photo.startswith("data:image/jpeg;base64,")
        stored = await take.characters.voice_sample(sha)
        assert stored is not None
        assert base64.b64decode(audio.removeprefix("data:audio/wav;base64,")) == stored.wav
        assert take.server.voice_creations == 0
