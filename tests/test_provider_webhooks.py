"""Provider callbacks through the receiver of a real runtime: they wake a job, nothing more."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bots.runtime import open_runtime
from core.models import JobState
from tests.conftest import make_settings
from tests.providers_server import ProviderServer
from tests.test_providers_worker import Recorder, local_request

SIGNING_KEY = b"actorbot-test-signing-key-32byte"
SECRET = "whsec_" + base64.b64encode(SIGNING_KEY).decode()
PUBLIC_URL = "https://bot.example.com/hooks"


def signed(body: bytes, webhook_id: str, key: bytes = SIGNING_KEY) -> dict[str, str]:
    """Return Replicate's (Standard Webhooks) headers for ``body``."""
    stamp = str(int(time.time()))
    digest = hmac.new(key, f"{webhook_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "content-type": "application/json",
    }


async def until(check: Callable[[], bool]) -> None:
    async def loop() -> None:
        while not check():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), 15)


async def test_webhooks_wake_the_job_and_forged_or_replayed_ones_change_nothing(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    server = ProviderServer(video=tiny_mp4, run_seconds=3600)
    await server.start()
    settings = make_settings(
        tmp_path,
        backend="seedance-2",
        # Polled once, then not for ten minutes: only a webhook can bring a poll forward.
        providers=server.provider_settings(poll_interval_seconds=600),
        takecheck={"enabled": False},
        webhooks={
            "enabled": True, "port": 0, "public_url": PUBLIC_URL, "replicate_secret": SECRET,
        },
    )  # fmt: skip
    try:
        async with open_runtime(settings, {"cli": Recorder()}) as runtime:
            assert runtime.webhooks is not None
            hook = f"http://127.0.0.1:{runtime.webhooks.port}/replicate"
            admission = await runtime.service.submit(local_request("a"))
            worker = asyncio.create_task(runtime.worker.run())
            await until(lambda: any(job.polls for job in server.jobs.values()))
            [job] = server.jobs.values()
            assert job.webhook == PUBLIC_URL + "/replicate"
            polls = job.polls

            async def stored_state() -> JobState:
                [stored] = await runtime.storage.jobs.jobs_by_ids([admission.jobs[0].id])
                return stored.state

            async with httpx.AsyncClient() as client:
                # A valid callback claiming success: it wakes the job, whose poll finds it
                # still running at the provider. The callback's words decide nothing.
                lying = json.dumps({**server._prediction(job), "status": "succeeded"}).encode()
                answer = await client.post(hook, content=lying, headers=signed(lying, "msg_1"))
                assert (answer.status_code, answer.text) == (200, "woken")
                await until(lambda: job.polls == polls + 1)
                assert await stored_state() is JobState.RUNNING

                # The same delivery again (a replay), and a forged one: no poll.
                again = await client.post(hook, content=lying, headers=signed(lying, "msg_1"))
                assert again.text == "duplicate"
                forged = signed(lying, "msg_2", key=b"not-the-signing-key-at-all-32byt")
                answer = await client.post(hook, content=lying, headers=forged)
                assert answer.status_code == 401
                unsigned = await client.post(hook, content=lying)
                assert unsigned.status_code == 401
                await asyncio.sleep(0.3)  # time for a wrong wake to show up as a poll
                assert job.polls == polls + 1
                assert await stored_state() is JobState.RUNNING

                # The provider finishes and calls back: the job is polled and delivered.
                server.run_seconds = 0
                done = json.dumps(server._prediction(job)).encode()
                answer = await client.post(hook, content=done, headers=signed(done, "msg_3"))
                assert answer.text == "woken"
                await until(lambda: job.polls >= polls + 2)

            async def delivered() -> None:
                while await stored_state() is not JobState.DONE:
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(delivered(), 15)
            assert server.submit_requests == 1
            await runtime.worker.stop()
            worker.cancel()
    finally:
        await server.stop()


async def test_a_fal_webhook_signed_with_a_configured_key_wakes_the_job(
    tmp_path: Path, tiny_mp4: bytes
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    signer = Ed25519PrivateKey.generate()
    raw = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    public = base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def fal_headers(request_id: str, body: bytes, key: Ed25519PrivateKey) -> dict[str, str]:
        stamp = str(int(time.time()))
        message = "\n".join([request_id, "user-1", stamp, hashlib.sha256(body).hexdigest()])
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": "user-1",
            "X-Fal-Webhook-Timestamp": stamp,
            "X-Fal-Webhook-Signature": key.sign(message.encode()).hex(),
        }

    server = ProviderServer(video=tiny_mp4, run_seconds=3600)
    await server.start()
    settings = make_settings(
        tmp_path,
        backend="kling-2.6-pro",
        providers=server.provider_settings(poll_interval_seconds=600),
        takecheck={"enabled": False},
        webhooks={
            "enabled": True, "port": 0, "public_url": PUBLIC_URL, "fal_public_keys": [public],
        },
    )  # fmt: skip
    try:
        async with open_runtime(settings, {"cli": Recorder()}) as runtime:
            assert runtime.webhooks is not None
            hook = f"http://127.0.0.1:{runtime.webhooks.port}/fal"
            await runtime.service.submit(local_request("a"))
            worker = asyncio.create_task(runtime.worker.run())
            await until(lambda: any(job.polls for job in server.jobs.values()))
            [job] = server.jobs.values()
            assert job.webhook == PUBLIC_URL + "/fal"
            polls = job.polls
            body = json.dumps({"request_id": job.id, "status": "OK"}).encode()
            async with httpx.AsyncClient() as client:
                forged = fal_headers(job.id, body, Ed25519PrivateKey.generate())
                assert (await client.post(hook, content=body, headers=forged)).status_code == 401
                headers = fal_headers(job.id, body, signer)
                answer = await client.post(hook, content=body, headers=headers)
                assert (answer.status_code, answer.text) == (200, "woken")
                await until(lambda: job.polls == polls + 1)
                replay = await client.post(hook, content=body, headers=headers)
                assert replay.text == "duplicate"
            await runtime.worker.stop()
            worker.cancel()
    finally:
        await server.stop()


def test_webhooks_need_a_public_url(tmp_path: Path) -> None:
    import pytest

    from config.settings import ConfigError

    with pytest.raises(ConfigError, match=r"webhooks\.public_url"):
        make_settings(tmp_path, webhooks={"enabled": True})
