"""Delivery of playground takes: the finished video is kept where the page can play it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

from core.errors import DeliveryError
from core.models import Job, JobEvent

PLATFORM = "web"
_JOB_ID = re.compile(r"[0-9a-f]{16}")  # core.storage.types.new_id()


class WebNotifier:
    """The core's Notifier for the playground.

    Status needs no push from here: the page follows the store's job events. Delivering
    copies the result to ``<data_dir>/web/<job id>.mp4``, named after its job so that
    retention removes it with the job's other files.
    """

    def __init__(self, videos_dir: Path) -> None:
        self._dir = videos_dir

    def video_path(self, job_id: str) -> Path | None:
        """Return where a delivered take's video is, if the id is a job id and it is there."""
        if not _JOB_ID.fullmatch(job_id):
            return None
        path = self._dir / f"{job_id}.mp4"
        return path if path.is_file() else None

    def recent(self, limit: int) -> list[str]:
        """Return the job ids of the newest delivered videos, newest first."""
        try:
            videos = [p for p in self._dir.iterdir() if p.suffix == ".mp4" and p.is_file()]
        except FileNotFoundError:
            return []
        videos.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return [p.stem for p in videos[:limit] if _JOB_ID.fullmatch(p.stem)]

    async def notify(self, event: JobEvent) -> None:
        """Do nothing: the page reads every change from the store's job events."""

    async def deliver(self, job: Job, video: Path) -> None:
        """Keep the video for the page: copy it next to its place, then rename it in."""
        final = self._dir / f"{job.id}.mp4"
        partial = self._dir / f".{job.id}.mp4.part"
        try:
            await asyncio.to_thread(self._dir.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(shutil.copyfile, video, partial)
            os.replace(partial, final)
        except OSError as exc:
            raise DeliveryError(f"cannot keep the video: {exc.strerror}", permanent=False) from exc
