"""Hosted provider backends against loopback servers that speak each protocol."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from config.settings import Settings
from core.backends import create_backend
from core.backends.base import BackendState, BackendStatus, RenderSpec, capabilities_of
from core.backends.providers.common import ProviderBackend
from core.errors import BackendError, ContentFiltered
from tests.conftest import make_settings, photo_jpeg
from tests.providers_server import ProviderServer

PRESETS = ["kling-2.6-pro", "seedance-2", "gaga-1"]  # one per protocol
MAX_BYTES = 50_000_000


def spec(job_id: str = "job1-1", seconds: int = 5, seed: int = 7, jpeg: bytes = b"") -> RenderSpec:
    return RenderSpec(
        job_id=job_id,
        image_jpeg=jpeg or photo_jpeg(320, 180),
        width=320,
        height=180,
        line='The girl smiles and says: "You did not think I would give up?"',
        speech="You did not think I would give up?",
        language="en",
        seconds=seconds,
        seed=seed,
        voice=None,
    )


def provider_settings(
    tmp_path: Path, server: ProviderServer, preset: str, **overrides: Any
) -> Settings:
    return make_settings(tmp_path, backend=preset, providers=server.provider_settings(**overrides))


@contextlib.asynccontextmanager
async def served(
    tmp_path: Path,
    video: bytes,
    preset: str,
    overrides: dict[str, Any] | None = None,
    **knobs: Any,
) -> AsyncIterator[tuple[ProviderServer, ProviderBackend]]:
    server = ProviderServer(video=video, **knobs)
    await server.start()
    async with httpx.AsyncClient() as client:
        backend = create_backend(
            provider_settings(tmp_path, server, preset, **(overrides or {})), client
        )
        assert isinstance(backend, ProviderBackend)
        try:
            yield server, backend
        finally:
            await backend.aclose()
            await server.stop()


async def until_final(backend: ProviderBackend, handle: str) -> list[BackendStatus]:
    seen = []
    for _ in range(500):
        status = await backend.wait(handle, 0.2)
        seen.append(status)
        if status.is_final:
            return seen
    raise AssertionError(f"never finished: {seen[-3:]}")


# --- happy path and queue position ------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
async def test_happy_path_makes_one_job_and_fetches_a_checked_video(
    tmp_path: Path, tiny_mp4: bytes, preset: str
) -> None:
    async with served(tmp_path, tiny_mp4, preset) as (server, backend):
        handle = await backend.submit(spec())
        seen = await until_final(backend, handle)
        assert seen[-1].state is BackendState.SUCCEEDED
        dest = tmp_path / "out.mp4"
        await backend.fetch(handle, dest, MAX_BYTES)
        assert dest.read_bytes() == tiny_mp4
        assert len(server.jobs) == 1 and server.submit_requests == 1
        assert server.auth_failures == 0
        [job] = server.jobs.values()
        # The image travels as bytes (data URI or upload), never as a chat platform URL.
        text = str(job.input)
        assert "api.telegram.org" not in text and "http" not in text.split("'prompt'")[0]


async def test_fal_maps_the_preset_fields(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with served(tmp_path, tiny_mp4, "kling-2.6-pro") as (server, backend):
        await backend.submit(spec(seconds=10))
        [job] = server.jobs.values()
        assert job.model == "fal-ai/kling-video/v2.6/pro/image-to-video"
        assert job.input["start_image_url"].startswith("data:image/jpeg;base64,")
        assert job.input["duration"] == "10" and job.input["generate_audio"] is True
        assert job.input["prompt"].startswith("The girl smiles")


async def test_veo_durations_map_onto_its_own_lengths(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with served(tmp_path, tiny_mp4, "veo-3.1-fast") as (server, backend):
        await backend.submit(spec(job_id="a", seconds=5))
        await backend.submit(spec(job_id="b", seconds=10))
        assert [job.input["duration"] for job in server.jobs.values()] == ["6s", "8s"]


async def test_replicate_sends_a_cancel_after_deadline_and_uploads_big_images(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    big = photo_jpeg(3000, 3000) + b"\0" * 1_000_000  # over Replicate's 1 MB data URI limit
    async with served(tmp_path, tiny_mp4, "seedance-2") as (server, backend):
        await backend.submit(spec(jpeg=big))
        [job] = server.jobs.values()
        assert server.uploads == 1
        assert job.input["image"].startswith(server.url + "/replicate/v1/files/")
        assert job.cancel_after == "30s"  # the job deadline of the test settings
        assert job.input["seed"] == 7


async def test_gaga_request_shape(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with served(tmp_path, tiny_mp4, "gaga-1") as (server, backend):
        handle = await backend.submit(spec(seconds=10))
        [job] = server.jobs.values()
        assert handle == job.id
        assert job.input["model"] == "gaga-1" and job.input["aspectRatio"] == "16:9"
        assert job.input["resolution"] == "720p"
        assert job.input["source"]["type"] == "image" and isinstance(
            job.input["source"]["content"], int
        )
        [chunk] = job.input["chunks"]
        assert chunk["duration"] == 10
        assert chunk["conditions"][0]["content"].startswith("The girl smiles")


async def test_fal_reports_the_providers_queue_position(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with served(tmp_path, tiny_mp4, "kling-2.6-pro", queue_seconds=0.3) as (_, backend):
        assert capabilities_of(backend).provider_queue
        handle = await backend.submit(spec())
        first = await backend.wait(handle, 0.05)
        assert first.state is BackendState.QUEUED
        assert first.queue_position == 3  # fal's 0-based position 2 is 3rd in line


# --- failures before and after acceptance -------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
async def test_poll_500_then_success(tmp_path: Path, tiny_mp4: bytes, preset: str) -> None:
    async with served(tmp_path, tiny_mp4, preset, poll_failures=[500, 502]) as (server, backend):
        handle = await backend.submit(spec())
        seen = await until_final(backend, handle)
        assert seen[-1].state is BackendState.SUCCEEDED
        assert len(server.jobs) == 1


@pytest.mark.parametrize("preset", PRESETS)
async def test_submit_503_is_transient_and_creates_nothing(
    tmp_path: Path, tiny_mp4: bytes, preset: str
) -> None:
    async with served(tmp_path, tiny_mp4, preset, refuse_submits=[503]) as (server, backend):
        with pytest.raises(BackendError) as failed:
            await backend.submit(spec())
        assert failed.value.transient
        assert server.jobs == {}
        # The worker retries a transient submit: the second one is the only job.
        handle = await backend.submit(spec())
        assert (await until_final(backend, handle))[-1].state is BackendState.SUCCEEDED
        assert len(server.jobs) == 1 and server.submit_requests == 2


@pytest.mark.parametrize("preset", PRESETS)
async def test_submit_429_waits_for_retry_after(
    tmp_path: Path, tiny_mp4: bytes, preset: str
) -> None:
    async with served(tmp_path, tiny_mp4, preset, refuse_submits=[429, 429], retry_after="0") as (
        server,
        backend,
    ):
        await backend.submit(spec())
        assert server.submit_requests == 3 and len(server.jobs) == 1


async def test_submit_429_past_patience_is_transient(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with served(
        tmp_path, tiny_mp4, "kling-2.6-pro", overrides={"rate_limit_patience_seconds": 5},
        refuse_submits=[429], retry_after="3600",
    ) as (server, backend):  # fmt: skip
        with pytest.raises(BackendError) as failed:
            await backend.submit(spec())
        assert failed.value.transient and "429" in str(failed.value)
        assert server.jobs == {}


@pytest.mark.parametrize("preset", ["kling-2.6-pro", "seedance-2"])
@pytest.mark.parametrize("lost", ["timeout", 500])
async def test_lost_submit_answer_adopts_the_job_from_the_listing(
    tmp_path: Path, tiny_mp4: bytes, preset: str, lost: str | int
) -> None:
    knobs: dict[str, Any] = {"lose_submit_answers": 1}
    if lost != "timeout":
        knobs["lose_with_status"] = lost
    async with served(tmp_path, tiny_mp4, preset, **knobs) as (server, backend):
        handle = await backend.submit(spec())
        # Exactly one provider job, found through the listing and adopted.
        assert server.submit_requests == 1 and len(server.jobs) == 1
        assert server.listings >= 1
        assert (await until_final(backend, handle))[-1].state is BackendState.SUCCEEDED
        assert server.submit_requests == 1


async def test_lost_submit_adopts_our_own_job_not_a_siblings(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    # Takes of one request share the line; the seed (and held handles) tell them apart.
    async with served(tmp_path, tiny_mp4, "seedance-2") as (server, backend):
        first = await backend.submit(spec(job_id="t1", seed=1))
        server.lose_submit_answers = 1
        second = await backend.submit(spec(job_id="t2", seed=2))
        assert first != second and len(server.jobs) == 2
        assert server.jobs[backend._job_id_of(second)].input["seed"] == 2


@pytest.mark.parametrize("preset", ["kling-2.6-pro", "seedance-2"])
async def test_find_after_a_restart_matches_the_input_rebuilt_from_the_store(
    tmp_path: Path, tiny_mp4: bytes, preset: str
) -> None:
    # Over 1 MB: Replicate gets it through the Files API and lists it as a file URL.
    big = photo_jpeg(3000, 3000) + b"\0" * 1_000_000
    async with served(tmp_path, tiny_mp4, preset) as (server, backend):
        handle = await backend.submit(spec(jpeg=big))
        # Another take of the same line already holds a provider job with the same input.
        sibling = await backend.submit(spec(job_id="job2-1", jpeg=big))
        settings = provider_settings(tmp_path, server, preset, reconcile_seconds=0.1)
        restarted = create_backend(settings, backend.client)  # nothing in memory
        assert isinstance(restarted, ProviderBackend)
        rebuilt = replace(spec(jpeg=big), taken=frozenset({sibling}))
        assert await restarted.find(rebuilt) == handle
        # A job that no listing shows is not found (after a bounded look).
        taken = frozenset({handle, sibling})
        assert await restarted.find(replace(rebuilt, taken=taken)) is None
        assert server.submit_requests == 2


@pytest.mark.parametrize("preset", PRESETS)
async def test_lost_submit_not_listed_fails_for_good_naming_the_orphan(
    tmp_path: Path, tiny_mp4: bytes, preset: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(
        tmp_path, tiny_mp4, preset, overrides={"reconcile_seconds": 0.1},
        lose_submit_answers=1, unlisted=True,
    ) as (server, backend):  # fmt: skip
        with pytest.raises(BackendError) as failed:
            await backend.submit(spec(job_id="job9-1"))
        # Not transient: the worker fails the take with a refund and never resubmits.
        assert not failed.value.transient
        assert "possible orphan" in str(failed.value)
        assert server.submit_requests == 1
    orphan = [r.getMessage() for r in caplog.records if "possible orphan" in r.getMessage()]
    assert orphan and "job9-1" in orphan[0]
    assert all("test-provider-key" not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("preset", PRESETS)
async def test_malformed_polls_are_transient_then_a_clear_failure(
    tmp_path: Path, tiny_mp4: bytes, preset: str
) -> None:
    async with served(tmp_path, tiny_mp4, preset, malformed_polls=2) as (_, backend):
        handle = await backend.submit(spec())
        for _ in range(2):
            with pytest.raises(BackendError) as failed:
                await backend.wait(handle, 0.1)
            assert failed.value.transient
        assert (await until_final(backend, handle))[-1].state is BackendState.SUCCEEDED
    async with served(tmp_path, tiny_mp4, preset, malformed_polls=100) as (_, backend):
        handle = await backend.submit(spec())
        errors = []
        while True:
            with pytest.raises(BackendError) as failed:
                await backend.wait(handle, 0.1)
            errors.append(failed.value)
            if not failed.value.transient:
                break
        assert len(errors) == 5 and "malformed" in str(errors[-1])


@pytest.mark.parametrize("preset", ["kling-2.6-pro", "gaga-1"])
async def test_unknown_status_keeps_polling(tmp_path: Path, tiny_mp4: bytes, preset: str) -> None:
    async with served(tmp_path, tiny_mp4, preset, unknown_status=3) as (_, backend):
        handle = await backend.submit(spec())
        assert (await until_final(backend, handle))[-1].state is BackendState.SUCCEEDED


@pytest.mark.parametrize("preset", PRESETS)
async def test_content_refusal_is_filtered_not_retried(
    tmp_path: Path, tiny_mp4: bytes, preset: str
) -> None:
    async with served(tmp_path, tiny_mp4, preset, refuse_content=True) as (server, backend):
        handle = await backend.submit(spec())
        final = (await until_final(backend, handle))[-1]
        assert final.state is BackendState.FILTERED
        assert server.submit_requests == 1


async def test_fal_refusal_on_the_result_is_content_filtered(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    async with served(tmp_path, tiny_mp4, "kling-2.6-pro", refuse_content=True) as (_, backend):
        handle = await backend.submit(spec())
        await until_final(backend, handle)
        with pytest.raises(ContentFiltered):
            await backend.fetch(handle, tmp_path / "out.mp4", MAX_BYTES)


@pytest.mark.parametrize("preset", ["kling-2.6-pro", "seedance-2"])
async def test_cancel_reaches_the_provider_once(
    tmp_path: Path, tiny_mp4: bytes, preset: str
) -> None:
    async with served(tmp_path, tiny_mp4, preset, never_finish=True) as (server, backend):
        handle = await backend.submit(spec())
        await backend.wait(handle, 0.05)
        await backend.cancel(handle)
        assert server.cancels == [backend._job_id_of(handle)]


async def test_wrong_key_fails_for_good_without_the_key(tmp_path: Path, tiny_mp4: bytes) -> None:
    async with served(tmp_path, tiny_mp4, "kling-2.6-pro", overrides={"key": "wrong"}) as (s, b):
        with pytest.raises(BackendError) as failed:
            await b.submit(spec())
        assert not failed.value.transient
        assert "providers.fal.key" in str(failed.value) and "wrong" not in str(failed.value)
        assert s.jobs == {}


# --- the result as untrusted input ----------------------------------------------------------


async def fetched(
    tmp_path: Path, video: bytes, overrides: dict[str, Any] | None = None, **knobs: Any
) -> tuple[ProviderServer, BaseException | None]:
    async with served(tmp_path, video, "kling-2.6-pro", overrides, **knobs) as (server, backend):
        handle = await backend.submit(spec())
        await until_final(backend, handle)
        dest = tmp_path / "result.mp4"
        try:
            await backend.fetch(handle, dest, MAX_BYTES)
        except BackendError as exc:
            assert not dest.exists()
            return server, exc
        return server, None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/files/x",  # loopback under a name that is not listed
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata address
        "https://evil.example/video.mp4",  # a host the provider does not serve from
    ],
)
async def test_result_url_off_the_result_hosts_is_refused(
    tmp_path: Path, tiny_mp4: bytes, url: str
) -> None:
    server = ProviderServer(video=tiny_mp4)  # only for its port in the URL
    await server.start()
    await server.stop()
    _, error = await fetched(tmp_path, tiny_mp4, result_url=url.format(port=server.port))
    assert isinstance(error, BackendError) and not error.transient
    assert error.key == "job.bad_result"


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/files/x", "http://169.254.169.254/"])
async def test_redirect_to_a_private_address_is_refused(
    tmp_path: Path, tiny_mp4: bytes, target: str
) -> None:
    server, error = await fetched(tmp_path, tiny_mp4, redirect_to=target.format(port=1))
    assert isinstance(error, BackendError) and not error.transient
    assert server.result_fetches == 1  # the redirect itself was read, its target never


async def test_loopback_result_without_allow_insecure_is_refused(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    # A listed host that resolves to loopback: refused unless the operator allowed it.
    _, error = await fetched(tmp_path, tiny_mp4, overrides={"allow_insecure": False})
    assert isinstance(error, BackendError) and error.key == "job.bad_result"


async def test_an_advertised_200_mb_result_is_refused_before_reading(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    _, error = await fetched(tmp_path, tiny_mp4, advertise_bytes=200_000_000)
    assert isinstance(error, BackendError) and "advertised" in str(error)


async def test_a_result_that_is_not_a_video_is_refused(tmp_path: Path, tiny_mp4: bytes) -> None:
    _, error = await fetched(tmp_path, tiny_mp4, result_body=b"<html>not a video</html>" * 100)
    assert isinstance(error, BackendError) and error.key == "job.bad_result"


async def test_a_video_without_audio_is_refused(
    tmp_path: Path, tiny_mp4: bytes, mute_mp4: bytes
) -> None:
    _, error = await fetched(tmp_path, tiny_mp4, result_body=mute_mp4)
    assert isinstance(error, BackendError) and "audio" in str(error)


@pytest.mark.parametrize("status", [404, 410])
async def test_an_expired_result_says_so(tmp_path: Path, tiny_mp4: bytes, status: int) -> None:
    _, error = await fetched(tmp_path, tiny_mp4, result_status=status)
    assert isinstance(error, BackendError) and not error.transient
    assert error.key == "job.result_expired"


# --- configuration ------------------------------------------------------------------------


def test_a_preset_without_its_key_is_one_line_naming_the_key(tmp_path: Path) -> None:
    from config.settings import ConfigError

    with pytest.raises(ConfigError) as failed:
        make_settings(tmp_path, backend="seedance-2")
    message = str(failed.value)
    assert (
        "providers.replicate.token" in message and "ACTORBOT_PROVIDERS__REPLICATE__TOKEN" in message
    )
    assert "\n" not in message


def test_fallback_lists_presets_only(tmp_path: Path) -> None:
    from config.settings import ConfigError

    keys = {"fal": {"key": "k"}, "replicate": {"token": "t"}}
    settings = make_settings(tmp_path, backend=["kling-2.6-pro", "seedance-2"], providers=keys)
    assert settings.backend_chain == ["kling-2.6-pro", "seedance-2"]
    for bad in (["preview", "seedance-2"], ["nope"], [], ["seedance-2", "seedance-2"]):
        with pytest.raises(ConfigError):
            make_settings(tmp_path, backend=bad, providers=keys)


def test_provider_keys_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTORBOT_PROVIDERS__FAL__KEY", "from-env")
    monkeypatch.setenv("ACTORBOT_PROVIDERS__REPLICATE__TOKEN", "tok-env")
    settings = make_settings(tmp_path, backend="kling-2.6-pro")
    assert settings.providers.fal.key.get_secret_value() == "from-env"
    assert settings.providers.replicate.token.get_secret_value() == "tok-env"
    assert "from-env" not in repr(settings)


async def test_backends_share_the_injected_client(tmp_path: Path, tiny_mp4: bytes) -> None:
    server = ProviderServer(video=tiny_mp4)
    await server.start()
    try:
        async with httpx.AsyncClient() as client:
            backend = create_backend(provider_settings(tmp_path, server, "gaga-1"), client)
            assert isinstance(backend, ProviderBackend) and backend.client is client
            await backend.aclose()
            assert not client.is_closed  # the composition root owns it
    finally:
        await server.stop()


async def test_a_listed_host_resolving_to_loopback_is_refused_on_https(tmp_path: Path) -> None:
    from core.backends.download import ResultFetcher

    async with httpx.AsyncClient() as client:
        fetcher = ResultFetcher(client, hosts=["localhost"], allow_insecure=False, timeout=5)
        with pytest.raises(BackendError) as failed:
            await fetcher.fetch("https://localhost:1/video.mp4", tmp_path / "x.mp4", max_bytes=10)
    assert "non-public address" in str(failed.value)


def test_address_rules() -> None:
    from core.backends.download import address_allowed, host_allowed

    assert not address_allowed("169.254.169.254", loopback_ok=True)
    assert not address_allowed("10.0.0.5", loopback_ok=True)
    assert not address_allowed("::ffff:127.0.0.1", loopback_ok=False)
    assert address_allowed("::1", loopback_ok=True)
    assert address_allowed("93.184.216.34", loopback_ok=False)
    assert host_allowed("v3.fal.media", ["*.fal.media"])
    assert not host_allowed("fal.media.evil.com", ["*.fal.media"])
    assert not host_allowed("evilfal.media", ["*.fal.media"])
