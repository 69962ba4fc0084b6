"""Retention: delete what finished jobs leave behind, once nothing needs it any more.

- Results and work files (the downloaded result, the preview renderer's work directory,
  re-encodes made to fit an upload limit) of a finished job go ``results_days`` after it
  finished. Every such file or directory is named after its job: it starts with the job
  id (``<id>.mp4``, ``<id>-480p.mp4``, ``<id>-1-<token>/``, ``.<id>.mp4.<token>.part``),
  so a sweep needs no bookkeeping of its own. Files of unfinished jobs, and files no job
  in the store claims, are left alone.
- A request's photo (the prepared image stored with it) is emptied ``history_days`` after
  the request's last take ended: until then a retake button or a line that reuses the
  photo still needs it. The worker never does: every take has ended.
- Counters: a line's count of takes goes with the last photo of its requests (a take
  pressed later counts on from its own number); the per-chat and per-guild counts of a day
  go ``max(2, history_days)`` days after it, when it is long past "today" in any zone.

``/history`` re-sends a video by the platform's file id, so none of this is needed for it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from config.settings import RetentionSettings
from core.storage import ChatStore, JobStore

log = logging.getLogger(__name__)

DAY = 86_400.0
_JOB_FILE = re.compile(r"^\.?([0-9a-f]{16})(?![0-9a-f])")  # storage.types.new_id() names
_BATCH = 500  # ids per query and photos per write: keeps each write lock short


@dataclass(frozen=True)
class Swept:
    """What one sweep deleted."""

    paths: int  # files and directories removed
    images: int  # request photos emptied
    counters: int  # day counts of chats and guilds, and take counts of lines, deleted


class Retention:
    """Deletes old results, work files, request photos and counters; the worker runs ``run``."""

    def __init__(
        self,
        *,
        store: JobStore,
        chats: ChatStore,
        settings: RetentionSettings,
        work_dirs: Sequence[Path],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._chats = chats
        self._settings = settings
        self._work_dirs = tuple(work_dirs)
        self._clock = clock

    async def run(self) -> None:
        """Sweep now and then every ``sweep_interval_seconds`` until canceled."""
        if not self._settings.enabled:
            return
        while True:
            try:
                swept = await self.sweep()
                if swept.paths or swept.images or swept.counters:
                    log.info(
                        "retention: removed %d files, emptied %d photos, deleted %d counters",
                        swept.paths, swept.images, swept.counters,
                    )  # fmt: skip
            except Exception:
                # A full disk or a busy store must not stop the worker; try again later.
                log.exception("retention sweep failed")
            await asyncio.sleep(self._settings.sweep_interval_seconds)

    async def sweep(self) -> Swept:
        """Delete what is past its retention now, and say how much."""
        now = self._clock()
        paths = await self._sweep_files(now - self._settings.results_days * DAY)
        images = await self._sweep_images(now - self._settings.history_days * DAY)
        counters = await self._sweep_counters(now)
        return Swept(paths, images, counters)

    async def _sweep_files(self, cutoff: float) -> int:
        candidates = await asyncio.to_thread(self._job_entries)
        ids = sorted(candidates)
        removable: list[Path] = []
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            finished = await self._store.finished_before(batch, cutoff)
            for job_id in finished:
                removable.extend(candidates[job_id])
        return await asyncio.to_thread(_remove, removable)

    def _job_entries(self) -> dict[str, list[Path]]:
        """Map job ids to the files and directories named after them in the work dirs."""
        entries: dict[str, list[Path]] = {}
        for directory in self._work_dirs:
            try:
                children = list(directory.iterdir())
            except FileNotFoundError:
                continue
            for child in children:
                if match := _JOB_FILE.match(child.name):
                    entries.setdefault(match[1], []).append(child)
        return entries

    async def _sweep_images(self, cutoff: float) -> int:
        return await _batches(lambda: self._store.empty_old_images(cutoff, _BATCH))

    async def _sweep_counters(self, now: float) -> int:
        # The quota zone's today is within a day of UTC's: days before this one are at
        # least a day older than it, and no take counted or given back still touches them.
        keep = max(2.0, self._settings.history_days) * DAY
        before = datetime.fromtimestamp(now - keep, UTC).date().isoformat()
        # After _sweep_images: the photos it emptied end their lines now.
        return (
            await _batches(lambda: self._store.delete_old_chat_days(before, _BATCH))
            + await _batches(lambda: self._chats.delete_old_guild_days(before, _BATCH))
            + await _batches(lambda: self._chats.delete_ended_lines(_BATCH))
        )


async def _batches(step: Callable[[], Awaitable[int]]) -> int:
    """Repeat a bounded write until it does less than a whole batch; return its total."""
    total = 0
    while (done := await step()) > 0:
        total += done
        if done < _BATCH:
            break
    return total


def _remove(paths: Sequence[Path]) -> int:
    removed = 0
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # removed meanwhile (a delivery cleaning up its own re-encode)
        except OSError:
            log.warning("retention: cannot remove %s", path, exc_info=True)
            continue
        removed += 1
    return removed
