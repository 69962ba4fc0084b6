"""A loopback model server speaking the actorbot job API, with knobs for failure modes."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class ServedJob:
    id: str
    client_ref: str
    payload: dict[str, Any]
    created: float
    canceled: bool = False
    polls: int = 0


@dataclass
class JobApiServer:
    """Serve the job API on 127.0.0.1; every knob models a failure seen in the field."""

    video: bytes
    run_seconds: float = 0.2
    token: str = ""
    hold: asyncio.Event | None = None  # while set-able and unset, jobs stay running
    lose_submit_answers: int = 0  # create the job, then answer 502 (outcome unknown)
    refuse_submits: int = 0  # answer 503 without creating anything (server overloaded)
    fail_jobs: int = 0  # the next N jobs end FAILED (retryable)
    filter_all: bool = False  # refuse every submit under the content policy
    malformed_polls: int = 0  # answer the next N polls with garbage
    result_delay: float = 0.0  # seconds between result chunks (slow download)
    foreign_result_url: str | None = None
    jobs: dict[str, ServedJob] = field(default_factory=dict)
    submits: list[str] = field(default_factory=list)  # client refs of created jobs
    # Every submit request received, answered or not, deduplicated or not: what a
    # provider that bills per request (or dedupes imperfectly) would count.
    submit_requests: list[str] = field(default_factory=list)
    result_fetches: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _port: int = 0
    url: str = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/jobs", self._submit)
        app.router.add_get("/v1/jobs", self._list)
        app.router.add_get("/v1/jobs/{id}", self._get)
        app.router.add_post("/v1/jobs/{id}/cancel", self._cancel)
        app.router.add_get("/v1/jobs/{id}/result", self._result)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{self._port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def go_down(self) -> None:
        """Close the listening socket and every open connection: clients get ConnectError."""
        await self.stop()

    async def come_back(self) -> None:
        """Listen again on the same port, with the jobs it had (a restarted server)."""
        await self.start()

    def _authorized(self, request: web.Request) -> bool:
        return not self.token or request.headers.get("Authorization") == f"Bearer {self.token}"

    def _state(self, job: ServedJob) -> str:
        if job.canceled:
            return "canceled"
        if job.payload.get("_fail"):
            return "failed"
        if self.hold is not None and not self.hold.is_set():
            return "running"
        return "succeeded" if time.monotonic() - job.created >= self.run_seconds else "running"

    def _body(self, job: ServedJob) -> dict[str, Any]:
        state = self._state(job)
        body: dict[str, Any] = {"id": job.id, "status": state, "client_ref": job.client_ref}
        if state == "running":
            body["progress"] = min(0.99, (time.monotonic() - job.created) / self.run_seconds)
        if state == "failed":
            body["error"] = {"message": "GPU fell over", "retryable": True}
        if state == "succeeded":
            body["result_url"] = self.foreign_result_url or f"/v1/jobs/{job.id}/result"
        return body

    async def _submit(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"message": "bad token"}}, status=401)
        payload = await request.json()
        self.submit_requests.append(
            request.headers.get("Idempotency-Key") or payload.get("client_ref", "")
        )
        if self.filter_all:
            error = {"type": "content_policy", "message": "real person"}
            return web.json_response({"error": error}, status=422)
        if self.refuse_submits > 0:
            self.refuse_submits -= 1
            return web.Response(status=503, text="overloaded")
        ref = request.headers.get("Idempotency-Key") or payload["client_ref"]
        for job in self.jobs.values():
            if job.client_ref == ref:
                return web.json_response(self._body(job))
        job = ServedJob(f"j{next(self._ids)}", ref, payload, time.monotonic())
        if self.fail_jobs > 0:
            self.fail_jobs -= 1
            job.payload["_fail"] = True
        self.jobs[job.id] = job
        self.submits.append(ref)
        if self.lose_submit_answers > 0:
            self.lose_submit_answers -= 1
            return web.Response(status=502, text="bad gateway")
        return web.json_response(self._body(job), status=201)

    async def _list(self, request: web.Request) -> web.Response:
        ref = request.query.get("client_ref")
        found = [self._body(job) for job in self.jobs.values() if job.client_ref == ref]
        return web.json_response({"jobs": found})

    async def _get(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"error": {"message": "no such job"}}, status=404)
        job.polls += 1
        if self.malformed_polls > 0:
            self.malformed_polls -= 1
            return web.Response(text="<html>oops</html>", content_type="text/html")
        return web.json_response(self._body(job))

    async def _cancel(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is not None:
            job.canceled = True
        return web.json_response({"ok": True}, status=202)

    async def _result(self, request: web.Request) -> web.StreamResponse:
        job = self.jobs.get(request.match_info["id"])
        if job is None or self._state(job) != "succeeded":
            return web.json_response({"error": {"message": "not ready"}}, status=404)
        self.result_fetches += 1
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(self.video)
        await response.prepare(request)
        chunk = 1024
        for start in range(0, len(self.video), chunk):
            await response.write(self.video[start : start + chunk])
            if self.result_delay:
                await asyncio.sleep(self.result_delay)
        await response.write_eof()
        return response
