"""Loopback servers speaking the fal queue + platform APIs, Replicate and the GAGA platform.

One aiohttp app serves all three under /fal, /falapi, /replicate and /gaga, plus result
files under /files. Knobs script the failure modes of a test; counters record what the
server received, so "never twice" tests count submits where they land. Text-to-speech
models (``speech_models``) answer with a real audio file (a WAV tone) instead of the video.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import struct
import time
import wave
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

KEY = "test-provider-key"
# fal's text-to-image models served here: ``{"images": [{"url"}, ...]}`` of real images.
IMAGE_MODELS = frozenset({"fal-ai/bytedance/seedream/v4/text-to-image", "fal-ai/nano-banana"})
_COLORS = ((200, 60, 60), (60, 160, 70), (60, 90, 200), (220, 180, 40), (150, 60, 170))


def drawn_image(number: int, size: tuple[int, int] = (1920, 1080)) -> bytes:
    """Return a real PNG, different for each candidate number (its colour and a band)."""
    image = Image.new("RGB", size, _COLORS[(number - 1) % len(_COLORS)])
    band = Image.new("RGB", (size[0] // 4, size[1]), (240, 240, 240))
    image.paste(band, ((number - 1) % 4 * size[0] // 4, 0))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# The text-to-speech models of the shipped two-stage presets (fal, Replicate).
SPEECH_MODELS = frozenset({"fal-ai/minimax/speech-02-hd", "minimax/speech-02-hd"})


def tone_wav(seconds: float = 1.0, rate: int = 16000, hz: float = 220.0) -> bytes:
    """Return a real mono 16-bit WAV file: a tone, as a speech stage's audio."""
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * hz * n / rate)))
        for n in range(int(seconds * rate))
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buffer.getvalue()


@dataclass
class ServedJob:
    id: str
    protocol: str  # fal | replicate | gaga
    model: str
    input: dict[str, Any]
    created: float
    canceled: bool = False
    polls: int = 0
    cancel_after: str | None = None
    video: bytes | None = None  # this job's result, if not the server's video
    images: int = 0  # a text-to-image job: how many images it makes
    webhook: str | None = None  # where the client asked to be called back


@dataclass
class ProviderServer:
    """Serve the three protocols on 127.0.0.1; result files are named by ``result_host``."""

    video: bytes
    queue_seconds: float = 0.05  # reported as queued (fal: with a position) this long
    run_seconds: float = 0.1
    result_host: str = "localhost"  # results are fetched from here (allow-listed in tests)
    # Submit knobs: statuses answered without creating a job (e.g. [503, 429]).
    refuse_submits: list[int] = field(default_factory=list)
    retry_after: str = "1"
    lose_submit_answers: int = 0  # create the job, then never answer (the client times out)
    lose_with_status: int | None = None  # ... or answer this status instead (e.g. 500)
    unlisted: bool = False  # the listing does not show jobs (a lost submit stays lost)
    refuse_content: bool = False  # the provider's content policy refuses every job
    refuse_content_on_submit: bool = False  # ... already at submit (fal: 422)
    # Poll knobs.
    poll_failures: list[int] = field(default_factory=list)  # statuses for the next polls
    malformed_polls: int = 0
    never_finish: bool = False
    fail_jobs: bool = False  # jobs end failed (fal: COMPLETED with an error)
    unknown_status: int = 0  # the next N polls answer a status nobody documented
    # Result knobs.
    result_url: str | None = None  # a result URL of the test's choosing
    result_status: int = 200  # 404 / 410: expired
    result_body: bytes | None = None  # instead of the video (e.g. not a video)
    advertise_bytes: int | None = None  # Content-Length claimed without sending it
    redirect_to: str | None = None  # the result URL redirects here
    job_videos: list[bytes] = field(default_factory=list)  # results of the next new jobs
    audio: bytes = field(default_factory=tone_wav)  # what speech models' jobs make
    speech_models: frozenset[str] = SPEECH_MODELS
    # Jobs of these models end failed, with this fal error_type (Replicate: as the error).
    fail_models: dict[str, str] = field(default_factory=dict)
    # What the server saw.
    jobs: dict[str, ServedJob] = field(default_factory=dict)
    submit_requests: int = 0  # every submit POST received, refused or not
    cancels: list[str] = field(default_factory=list)
    uploads: int = 0
    voice_creations: int = 0  # fal create-voice requests received (Kling's voice ids)
    listings: int = 0
    result_fetches: int = 0
    auth_failures: int = 0
    url: str = ""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> str:
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/fal/{tail:.+}", self._fal)
        app.router.add_get("/falapi/v1/models/requests/by-endpoint", self._fal_listing)
        app.router.add_post("/replicate/v1/models/{owner}/{name}/predictions", self._rep_create)
        app.router.add_get("/replicate/v1/predictions", self._rep_listing)
        app.router.add_get("/replicate/v1/predictions/{id}", self._rep_get)
        app.router.add_post("/replicate/v1/predictions/{id}/cancel", self._rep_cancel)
        app.router.add_post("/replicate/v1/files", self._rep_files)
        app.router.add_post("/gaga/v1/assets", self._gaga_assets)
        app.router.add_post("/gaga/v1/generations", self._gaga_create)
        app.router.add_get("/gaga/v1/generations/{id}", self._gaga_get)
        app.router.add_get("/files/{id}", self._file)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{self.port}"
        return self.url

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def provider_settings(self, **overrides: Any) -> dict[str, Any]:
        """Return [providers] settings pointing every provider at this server."""
        common = {
            "key": KEY,
            "result_hosts": [self.result_host],
            "allow_insecure": True,
            "poll_interval_seconds": 0.02,
            "max_polls_per_second": 1000.0,
            "request_timeout_seconds": 0.5,
            "reconcile_seconds": 1.0,
            "rate_limit_patience_seconds": 10.0,
            **overrides,
        }
        return {
            "fal": {
                **common,
                "queue_url": f"{self.url}/fal",
                "api_url": f"{self.url}/falapi/v1",
            },
            "replicate": {**common, "api_url": f"{self.url}/replicate"},
            "gaga": {**common, "api_url": f"{self.url}/gaga"},
        }

    # --- shared ------------------------------------------------------------------------

    def _authorized(self, request: web.Request, scheme: str) -> bool:
        ok = request.headers.get("Authorization") == f"{scheme} {KEY}"
        self.auth_failures += not ok
        return ok

    def _state(self, job: ServedJob) -> str:
        """Return queued | running | succeeded | canceled | filtered | failed."""
        if job.canceled:
            return "canceled"
        age = time.monotonic() - job.created
        if age < self.queue_seconds:
            return "queued"
        if self.never_finish or age < self.queue_seconds + self.run_seconds:
            return "running"
        if self.fail_jobs or job.model in self.fail_models:
            return "failed"
        return "filtered" if self.refuse_content else "succeeded"

    def jobs_of(self, model: str) -> list[ServedJob]:
        """Return the jobs made for ``model``, oldest first."""
        return [job for job in self.jobs.values() if job.model == model]

    def _file_url(self, job: ServedJob) -> str:
        return self.result_url or f"http://{self.result_host}:{self.port}/files/{job.id}"

    async def _submit_gate(self) -> web.Response | None:
        """Apply the submit knobs that answer before any job exists."""
        self.submit_requests += 1
        if self.refuse_submits:
            status = self.refuse_submits.pop(0)
            headers = {"Retry-After": self.retry_after} if status == 429 else {}
            return web.json_response({"detail": "try later"}, status=status, headers=headers)
        return None

    async def _lose_answer(self) -> web.Response | None:
        """After creating a job: lose the answer if asked to."""
        if self.lose_submit_answers <= 0:
            return None
        self.lose_submit_answers -= 1
        if self.lose_with_status is not None:
            return web.Response(status=self.lose_with_status, text="upstream error")
        # Hold the answer until the client has given up (or the server stops).
        await self._release.wait()
        return web.Response(status=504)

    def _poll_gate(self, job: ServedJob) -> web.Response | None:
        job.polls += 1
        if self.poll_failures:
            return web.Response(status=self.poll_failures.pop(0), text="oops")
        if self.malformed_polls > 0:
            self.malformed_polls -= 1
            return web.Response(text="<html>bad gateway</html>", content_type="text/html")
        return None

    def _new_job(
        self, protocol: str, model: str, payload: dict[str, Any], job_id: str = ""
    ) -> ServedJob:
        job_id = job_id or f"{protocol[0]}{next(self._ids)}"
        job = ServedJob(job_id, protocol, model, payload, time.monotonic())
        if self.job_videos and model not in self.speech_models:
            job.video = self.job_videos.pop(0)
        self.jobs[job.id] = job
        return job

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.result_fetches += 1
        if self.redirect_to is not None:
            raise web.HTTPFound(self.redirect_to)
        if self.result_status != 200:
            return web.Response(status=self.result_status, text="gone")
        if self.advertise_bytes is not None:
            response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
            response.content_length = self.advertise_bytes
            await response.prepare(request)
            await response.write(self.video[:1024])
            return response  # (the client refuses on the header and closes)
        job_id, _, number = request.match_info["id"].partition("-")
        job = self.jobs.get(job_id)
        if job is not None and job.images and number.isdigit():
            return web.Response(body=drawn_image(int(number)), content_type="image/png")
        if job is not None and job.model in self.speech_models:
            return web.Response(body=self.audio, content_type="audio/wav")
        video = job.video if job is not None and job.video is not None else self.video
        body = self.result_body if self.result_body is not None else video
        return web.Response(body=body, content_type="video/mp4")

    # --- fal -----------------------------------------------------------------------------

    async def _fal(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request, "Key"):
            return web.json_response({"detail": "bad key"}, status=401)
        tail = request.match_info["tail"]
        if request.method == "POST":
            return await self._fal_submit(request, tail)
        parts = tail.split("/")
        # {owner}/{alias}/requests/{id}[/status|/cancel]
        if len(parts) < 4 or parts[2] != "requests" or parts[3] not in self.jobs:
            return web.json_response({"detail": "not found"}, status=404)
        job = self.jobs[parts[3]]
        if request.method == "PUT" and parts[-1] == "cancel":
            self.cancels.append(job.id)
            job.canceled = True
            return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)
        if parts[-1] == "status":
            return self._fal_status(job)
        state = self._state(job)
        if state == "filtered":
            detail = [{"type": "content_policy_violation", "msg": "flagged", "loc": ["body"]}]
            return web.json_response({"detail": detail}, status=422)
        if state != "succeeded":
            return web.json_response({"detail": "not ready"}, status=400)
        if job.model.endswith("/create-voice"):  # Kling's create-voice output
            return web.json_response({"voice_id": f"voice-{job.id}"})
        if job.images:
            base = self._file_url(job)
            images = [
                {"url": f"{base}-{n}", "content_type": "image/png", "width": 1920, "height": 1080}
                for n in range(1, job.images + 1)
            ]
            return web.json_response({"images": images, "seed": 42})
        if job.model in self.speech_models:
            # fal's MiniMax speech result: the audio file and its length.
            audio = {"url": self._file_url(job), "content_type": "audio/wav"}
            return web.json_response({"audio": audio, "duration_ms": 1000})
        return web.json_response(
            {"video": {"url": self._file_url(job), "content_type": "video/mp4"}}
        )

    async def _fal_submit(self, request: web.Request, model: str) -> web.Response:
        creating_voice = model.endswith("/create-voice")
        self.voice_creations += creating_voice
        # (The submit knobs script the video model; a voice request is always answered.)
        refused = None if creating_voice else await self._submit_gate()
        if refused is not None:
            return refused
        payload = await request.json()
        if self.refuse_content_on_submit:
            detail = [{"type": "content_policy_violation", "msg": "flagged", "loc": ["body"]}]
            return web.json_response({"detail": detail}, status=422)
        job = self._new_job("fal", model, payload)
        job.webhook = request.query.get("fal_webhook")
        if model in IMAGE_MODELS:
            job.images = int(payload.get("num_images", 1))
        lost = None if creating_voice else await self._lose_answer()
        if lost is not None:
            return lost
        base = f"{self.url}/fal/{'/'.join(model.split('/')[:2])}/requests/{job.id}"
        return web.json_response(
            {
                "request_id": job.id,
                "status": "IN_QUEUE",
                "status_url": base + "/status",
                "response_url": base,
                "cancel_url": base + "/cancel",
                "queue_position": 2,
            }
        )

    def _fal_status(self, job: ServedJob) -> web.Response:
        failed = self._poll_gate(job)
        if failed is not None:
            return failed
        if self.unknown_status > 0:
            self.unknown_status -= 1
            return web.json_response({"status": "WARMING_UP"})
        state = self._state(job)
        if state == "queued":
            return web.json_response({"status": "IN_QUEUE", "queue_position": 2})
        if state == "running":
            return web.json_response({"status": "IN_PROGRESS", "logs": []})
        body: dict[str, Any] = {"status": "COMPLETED", "logs": [], "metrics": {}}
        if state == "filtered":
            body.update(error="flagged by a content checker", error_type="content_policy_violation")
        if state == "failed":
            error_type = self.fail_models.get(job.model, "generation_error")
            body.update(error="the model failed", error_type=error_type)
        return web.json_response(body)

    async def _fal_listing(self, request: web.Request) -> web.Response:
        self.listings += 1
        if not self._authorized(request, "Key"):
            return web.json_response({"detail": "bad key"}, status=401)
        endpoint = request.query.get("endpoint_id")
        items = [
            {"request_id": job.id, "endpoint_id": job.model, "json_input": job.input}
            for job in self.jobs.values()
            if job.protocol == "fal" and job.model == endpoint and not self.unlisted
        ]
        return web.json_response({"items": items[::-1], "has_more": False, "next_cursor": None})

    # --- Replicate --------------------------------------------------------------------------

    def _prediction(self, job: ServedJob) -> dict[str, Any]:
        state = self._state(job)
        status = {
            "queued": "starting",
            "running": "processing",
            "succeeded": "succeeded",
            "canceled": "canceled",
            "filtered": "failed",
            "failed": "failed",
        }[state]
        base = f"{self.url}/replicate/v1/predictions/{job.id}"
        body: dict[str, Any] = {
            "id": job.id,
            "model": job.model,
            "version": "v1",
            "input": job.input,
            "status": status,
            "output": self._file_url(job) if status == "succeeded" else None,
            "error": "The input or output was flagged as sensitive (E005)"
            if state == "filtered"
            else self.fail_models.get(job.model),
            "urls": {"get": base, "cancel": base + "/cancel"},
        }
        return body

    async def _rep_create(self, request: web.Request) -> web.Response:
        if not self._authorized(request, "Bearer"):
            return web.json_response({"detail": "bad token"}, status=401)
        refused = await self._submit_gate()
        if refused is not None:
            return refused
        body = await request.json()
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        job = self._new_job("replicate", model, body["input"])
        job.cancel_after = request.headers.get("Cancel-After")
        job.webhook = body.get("webhook")
        lost = await self._lose_answer()
        if lost is not None:
            return lost
        return web.json_response(self._prediction(job), status=201)

    async def _rep_listing(self, request: web.Request) -> web.Response:
        self.listings += 1
        if not self._authorized(request, "Bearer"):
            return web.json_response({"detail": "bad token"}, status=401)
        results = [
            self._prediction(job)
            for job in reversed(self.jobs.values())
            if job.protocol == "replicate" and not self.unlisted
        ]
        return web.json_response({"results": results, "next": None, "previous": None})

    async def _rep_get(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"detail": "not found"}, status=404)
        failed = self._poll_gate(job)
        if failed is not None:
            return failed
        return web.json_response(self._prediction(job))

    async def _rep_cancel(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is not None:
            self.cancels.append(job.id)
            job.canceled = True
            return web.json_response(self._prediction(job))
        return web.json_response({"detail": "not found"}, status=404)

    async def _rep_files(self, request: web.Request) -> web.Response:
        self.uploads += 1
        form = await request.post()
        content = form["content"]
        assert isinstance(content, web.FileField)
        file_id = f"file{next(self._ids)}"
        return web.json_response(
            {"id": file_id, "urls": {"get": f"{self.url}/replicate/v1/files/{file_id}"}}, status=201
        )

    # --- GAGA -----------------------------------------------------------------------------

    async def _gaga_assets(self, request: web.Request) -> web.Response:
        if not self._authorized(request, "Bearer"):
            return web.json_response({"message": "bad key"}, status=401)
        self.uploads += 1
        form = await request.post()
        assert isinstance(form["file"], web.FileField)
        return web.json_response({"id": 1000 + next(self._ids)})

    async def _gaga_create(self, request: web.Request) -> web.Response:
        if not self._authorized(request, "Bearer"):
            return web.json_response({"message": "bad key"}, status=401)
        refused = await self._submit_gate()
        if refused is not None:
            return refused
        body = await request.json()
        job = self._new_job("gaga", body["model"], body, job_id=str(90000 + next(self._ids)))
        lost = await self._lose_answer()
        if lost is not None:
            return lost
        return web.json_response({"id": int(job.id), "status": "pending"})

    async def _gaga_get(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"message": "not found"}, status=404)
        failed = self._poll_gate(job)
        if failed is not None:
            return failed
        if self.unknown_status > 0:
            self.unknown_status -= 1
            return web.json_response({"id": int(job.id), "status": "rendering_frames"})
        state = self._state(job)
        status = {
            "queued": "pending",
            "running": "processing",
            "succeeded": "completed",
            "canceled": "failed",
            "filtered": "failed",
            "failed": "failed",
        }[state]
        body: dict[str, Any] = {"id": int(job.id), "status": status}
        if state == "succeeded":
            body["creations"] = [{"url": self._file_url(job)}]
        if state == "filtered":
            body["message"] = "image failed moderation: sensitive content"
        return web.json_response(body)
