"""PreviewBackend: the offline preview renderer behind the VideoBackend protocol.

Every job lives in ``work_dir/<handle>/``: ``spec.json`` and ``image.jpg`` (written at submit),
then ``preview.mp4`` when the render succeeds or ``error.json`` when it fails. Local rendering
is free and deterministic, so a handle whose render was cut short by a restart is simply
rendered again; a finished one is served from disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av

from config.settings import PreviewSettings
from core.backends.base import BackendCapabilities, BackendState, BackendStatus, RenderSpec
from core.backends.preview import fonts, tts
from core.backends.preview.render import RenderCanceled, render_preview
from core.errors import BackendError

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
IMAGE_FILE = "image.jpg"
OUTPUT_FILE = "preview.mp4"
ERROR_FILE = "error.json"

_HANDLE = re.compile(r"^[A-Za-z0-9_-]{1,120}$")  # also keeps handles from escaping work_dir
_FINAL = frozenset(
    {BackendState.SUCCEEDED, BackendState.FAILED, BackendState.FILTERED, BackendState.CANCELED}
)


def _slug(job_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", job_id)[:80] or "job"


@dataclass
class _Job:
    """One render known to this process; fields change under PreviewBackend._lock."""

    handle: str
    job_id: str
    seq: int  # submission order, for queue positions
    state: BackendState = BackendState.QUEUED
    progress: float = 0.0
    detail: str = ""
    transient: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    future: Future[None] | None = None
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(
        default_factory=list
    )


class PreviewBackend:
    """Renders previews locally: a camera move over the photo with offline speech.

    A preview renderer, not an AI model: the output says so on every frame.
    """

    name = "preview"
    # Its own disk is the listing: a submit under a job id it already has returns that job.
    capabilities = BackendCapabilities(idempotent_submit=True, lookup=True)

    def __init__(self, *, work_dir: Path, settings: PreviewSettings) -> None:
        self.slots = settings.slots
        self._work_dir = work_dir
        self._settings = settings
        self._executor = ThreadPoolExecutor(
            max_workers=settings.slots, thread_name_prefix="preview-render"
        )
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._seq = itertools.count()
        self._closed = False

    # --- VideoBackend ----------------------------------------------------------------------

    async def submit(self, spec: RenderSpec) -> str:
        """Store the spec under work_dir and start rendering it; return the new handle."""
        if self._closed:
            raise BackendError("preview backend is closed", transient=True)
        existing = await self.find(spec)
        if existing is not None:
            return existing
        return await asyncio.to_thread(self._submit, spec)

    async def find(self, spec: RenderSpec) -> str | None:
        """Return the handle of the newest work dir made for ``spec.job_id``, if any."""
        job_id = spec.job_id
        with self._lock:
            known = [
                job
                for job in self._jobs.values()
                if job.job_id == job_id and job.state is not BackendState.CANCELED
            ]
        if known:
            return max(known, key=lambda job: job.seq).handle
        return await asyncio.to_thread(self._find_on_disk, job_id)

    async def wait(self, handle: str, timeout: float) -> BackendStatus:
        """Return the status once the job's state changes, or after ``timeout`` seconds."""
        job = await self._job(handle)
        if job is None:
            return BackendStatus(BackendState.FAILED, detail="unknown handle")
        loop = asyncio.get_running_loop()
        with self._lock:
            if job.state in _FINAL:
                return self._status(job)
            changed: asyncio.Future[None] = loop.create_future()
            waiter = (loop, changed)
            job.waiters.append(waiter)
        try:
            await asyncio.wait_for(changed, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock, contextlib.suppress(ValueError):
                job.waiters.remove(waiter)
        with self._lock:
            return self._status(job)

    async def cancel(self, handle: str) -> None:
        """Stop the render if it runs and delete its files; unknown handles are ignored."""
        if not _HANDLE.match(handle):
            return
        with self._lock:
            job = self._jobs.get(handle)
            if job is not None:
                job.stop.set()
                if job.state not in _FINAL:
                    self._set_state(job, BackendState.CANCELED, detail="canceled")
                future = job.future
            else:
                future = None
        if future is not None and not future.cancel():  # not started yet: never will be
            # The renderer checks its stop flag between frames, so this is quick.
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(future)
        await asyncio.to_thread(shutil.rmtree, self._work_dir / handle, True)

    async def fetch(self, handle: str, dest: Path, max_bytes: int) -> None:
        """Copy the finished MP4 to ``dest``; refuse it if it is over ``max_bytes``."""
        if not _HANDLE.match(handle):
            raise BackendError(f"unknown preview handle {handle!r}", transient=False)
        await asyncio.to_thread(self._fetch, self._work_dir / handle / OUTPUT_FILE, dest, max_bytes)
        with self._lock:
            job = self._jobs.get(handle)
            # Fetched: forget it in memory (the output on disk still answers a later wait
            # or fetch after a crash), so a long-running bot does not grow without bound.
            if job is not None and job.state is BackendState.SUCCEEDED and not job.waiters:
                del self._jobs[handle]

    async def probe(self) -> None:
        """Raise BackendError if a tool the renderer needs is missing (speech, codecs)."""
        if self._closed:
            raise BackendError("preview backend is closed", transient=True)
        missing = [name for name in ("libx264", "aac") if name not in av.codecs_available]
        if missing:
            raise BackendError(f"PyAV's FFmpeg lacks {', '.join(missing)}", transient=False)
        await asyncio.to_thread(tts.check_speech)

    async def aclose(self) -> None:
        """Stop running renders (they resume from disk next time) and join the threads."""
        self._closed = True
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop.set()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    # --- inside threads --------------------------------------------------------------------

    def _submit(self, spec: RenderSpec) -> str:
        handle = f"{_slug(spec.job_id)}-{secrets.token_hex(4)}"
        job_dir = self._work_dir / handle
        job_dir.mkdir(parents=True, exist_ok=False)
        (job_dir / IMAGE_FILE).write_bytes(spec.image_jpeg)
        # (the lookup hints are not part of the render)
        skip = {"image_jpeg", "submitted_after", "taken"}
        meta = {key: value for key, value in asdict(spec).items() if key not in skip}
        # spec.json goes last and atomically: a directory without it was never submitted.
        _write_json(job_dir / SPEC_FILE, meta)
        with self._lock:
            job = _Job(handle=handle, job_id=spec.job_id, seq=next(self._seq))
            self._jobs[handle] = job
            self._start(job, spec)
        log.info("preview %s: submitted for job %s", handle, spec.job_id)
        return handle

    def _start(self, job: _Job, spec: RenderSpec) -> None:
        """Queue the render on the executor (called with the lock held)."""
        job.future = self._executor.submit(self._render, job, spec)

    def _render(self, job: _Job, spec: RenderSpec) -> None:
        with self._lock:
            if job.stop.is_set():
                return
            self._set_state(job, BackendState.RUNNING)
        job_dir = self._work_dir / job.handle
        try:
            font = fonts.find_font(self._settings.font_path, need_cjk=fonts.has_cjk(spec.speech))
            render_preview(
                spec,
                job_dir / OUTPUT_FILE,
                fps=self._settings.fps,
                video_bitrate=self._settings.video_bitrate,
                font=font,
                progress=lambda done: setattr(job, "progress", done),
                stop=job.stop,
            )
        except RenderCanceled:
            log.info("preview %s: stopped", job.handle)
            with self._lock:
                if job.state not in _FINAL:  # stopped by aclose(): resumable later
                    self._set_state(job, BackendState.CANCELED, detail="stopped")
            return
        except BackendError as exc:
            self._fail(job, job_dir, str(exc), transient=exc.transient)
            return
        except Exception as exc:  # a bug or a library surprise: report it, never hang
            log.exception("preview %s: render crashed", job.handle)
            self._fail(job, job_dir, f"{type(exc).__name__}: {exc}", transient=False)
            return
        log.info("preview %s: done", job.handle)
        with self._lock:
            job.progress = 1.0
            self._set_state(job, BackendState.SUCCEEDED)

    def _fail(self, job: _Job, job_dir: Path, detail: str, *, transient: bool) -> None:
        log.warning("preview %s: failed: %s", job.handle, detail)
        if not transient and job_dir.is_dir():
            # Remember a permanent failure so a restart reports it instead of rendering again.
            with contextlib.suppress(OSError):
                _write_json(job_dir / ERROR_FILE, {"detail": detail})
        with self._lock:
            if job.state not in _FINAL:
                self._set_state(job, BackendState.FAILED, detail=detail, transient=transient)

    def _recover(self, handle: str) -> _Job | None:
        """Rebuild a job this process does not know from its work dir (after a restart)."""
        job_dir = self._work_dir / handle
        try:
            meta = json.loads((job_dir / SPEC_FILE).read_text("utf-8"))
            image = (job_dir / IMAGE_FILE).read_bytes()
            error = (
                json.loads((job_dir / ERROR_FILE).read_text("utf-8"))
                if (job_dir / ERROR_FILE).is_file()
                else None
            )
        except (OSError, ValueError):
            return None
        for stale in job_dir.glob(f".{OUTPUT_FILE}.*.part"):  # a render killed mid-way
            stale.unlink(missing_ok=True)
        with self._lock:
            if handle in self._jobs:  # another caller recovered it meanwhile
                return self._jobs[handle]
            job = _Job(handle=handle, job_id=str(meta.get("job_id", "")), seq=next(self._seq))
            self._jobs[handle] = job
            if (job_dir / OUTPUT_FILE).is_file():
                job.progress = 1.0
                job.state = BackendState.SUCCEEDED
            elif error is not None:
                job.state = BackendState.FAILED
                job.detail = str(error.get("detail", "failed"))
            else:
                log.info("preview %s: resuming an unfinished render", handle)
                try:
                    spec = RenderSpec(image_jpeg=image, **meta)
                except TypeError as exc:
                    job.state = BackendState.FAILED
                    job.detail = f"unreadable spec: {exc}"
                else:
                    self._start(job, spec)
            return job

    def _find_on_disk(self, job_id: str) -> str | None:
        found: list[tuple[float, str]] = []
        for spec_file in self._work_dir.glob(f"{_slug(job_id)}-*/{SPEC_FILE}"):
            try:
                if json.loads(spec_file.read_text("utf-8")).get("job_id") == job_id:
                    found.append((spec_file.stat().st_mtime, spec_file.parent.name))
            except (OSError, ValueError):
                continue
        return max(found)[1] if found else None

    @staticmethod
    def _fetch(source: Path, dest: Path, max_bytes: int) -> None:
        try:
            size = source.stat().st_size
        except FileNotFoundError:
            raise BackendError("the preview has no finished video", transient=False) from None
        if size > max_bytes:
            raise BackendError(
                f"preview is {size} bytes, over the {max_bytes} byte limit", transient=False
            )
        part = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        try:
            shutil.copyfile(source, part)
            os.replace(part, dest)
        except OSError as exc:
            raise BackendError(f"cannot copy the preview: {exc}", transient=True) from exc
        finally:
            part.unlink(missing_ok=True)

    # --- state -----------------------------------------------------------------------------

    async def _job(self, handle: str) -> _Job | None:
        if not _HANDLE.match(handle):
            return None
        with self._lock:
            job = self._jobs.get(handle)
        if job is not None:
            return job
        return await asyncio.to_thread(self._recover, handle)

    def _status(self, job: _Job) -> BackendStatus:
        """Describe a job (called with the lock held)."""
        position = None
        if job.state is BackendState.QUEUED:
            position = sum(
                1
                for other in self._jobs.values()
                if other.state is BackendState.QUEUED and other.seq < job.seq
            )
        return BackendStatus(
            state=job.state,
            progress=job.progress,
            queue_position=position,
            detail=job.detail,
            transient=job.transient,
        )

    def _set_state(
        self, job: _Job, state: BackendState, *, detail: str = "", transient: bool = False
    ) -> None:
        """Change a job's state and wake its waiters (called with the lock held)."""
        job.state, job.detail, job.transient = state, detail, transient
        waiters, job.waiters = job.waiters, []
        for loop, changed in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_resolve, changed)


def _resolve(changed: asyncio.Future[None]) -> None:
    if not changed.done():
        changed.set_result(None)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    part = path.with_name(f".{path.name}.part")
    part.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    os.replace(part, path)
