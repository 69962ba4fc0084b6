"""Retention: old finished jobs' files and photos go, everything still needed stays."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from config.settings import RetentionSettings
from core.models import DeliveryAddress, JobState, UserRef
from core.quotas import AdmissionPolicy, Period
from core.retention import DAY, Retention, Swept
from core.storage import JobStore
from core.storage.sqlite import open_sqlite
from core.storage.types import NewTake
from tests.conftest import db_rows, photo_jpeg
from tests.telegram_harness import ANN, LINE, running_bot
from tests.test_quotas import T0, Clock, small_jpeg

TAKE = NewTake(line="hi", speech="hi", language="en", seconds=5, seed=1, voice=None)


async def _request(
    store: JobStore, key: str, takes: int = 1, policy: AdmissionPolicy | None = None
) -> list[str]:
    admitted = await store.admit(
        user=UserRef("test", "u1"), source_key=key, line="hi", image_jpeg=small_jpeg(),
        image_size=(64, 36), address=DeliveryAddress("test", "c"), takes=[TAKE] * takes,
        policy=policy,
    )  # fmt: skip
    return [job.id for job in admitted.jobs]


def _job_files(root: Path, job_id: str) -> list[Path]:
    """Write what a job leaves behind: result, partial download, re-encode, preview dir."""
    paths = [
        root / "results" / f"{job_id}.mp4",
        root / "results" / f".{job_id}.mp4.ab12cd34.part",
        root / "telegram" / f"{job_id}-480p.mp4",
        root / "preview" / f"{job_id}-1-0a1b2c3d",
    ]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    paths[-1].mkdir()
    (paths[-1] / "preview.mp4").write_bytes(b"video")
    for path in paths[:-1]:
        path.write_bytes(b"video")
    return paths


async def test_old_finished_jobs_lose_files_and_photos_unfinished_ones_keep_them(
    tmp_path: Path,
) -> None:
    storage = await open_sqlite(tmp_path / "db.sqlite3")
    store = storage.jobs
    root = tmp_path / "data"
    try:
        [old] = await _request(store, "old")  # done 20 days ago: everything goes
        [failed] = await _request(store, "failed")  # failed 10 days ago: files go, photo stays
        [recent] = await _request(store, "recent")  # done yesterday: everything stays
        first, running = await _request(store, "open", takes=2)  # one take still running
        ended = {old: T0 - 20 * DAY, failed: T0 - 10 * DAY, recent: T0 - DAY, first: T0 - 20 * DAY}
        for job_id, finished_at in ended.items():
            state = JobState.FAILED if job_id == failed else JobState.DONE
            assert await store.transition(job_id, state, finished_at=finished_at)
        assert await store.transition(running, JobState.RUNNING)
        files = {job_id: _job_files(root, job_id) for job_id in [*ended, running]}
        strangers = [root / "results" / "0123456789abcdef.mp4", root / "telegram" / "notes.txt"]
        for path in strangers:
            path.write_bytes(b"not ours")

        settings = RetentionSettings(results_days=7, history_days=14)
        work_dirs = [root / "results", root / "preview", root / "telegram", root / "absent"]
        retention = Retention(
            store=store, chats=storage.chats, settings=settings, work_dirs=work_dirs, clock=Clock()
        )
        swept = await retention.sweep()

        gone = [*files[old], *files[failed], *files[first]]
        kept = [*files[recent], *files[running], *strangers]
        assert not [path for path in gone if path.exists()]
        assert all(path.exists() for path in kept)
        jobs = await store.jobs_by_ids(list(files))
        photos = {job.id: len((await store.request_image(job.request_id))[0]) for job in jobs}
        assert photos[old] == 0
        assert photos[failed] > 0 and photos[recent] > 0 and photos[first] > 0
        assert swept.paths == len(gone) and swept.images == 1
        # Nothing is left to sweep; later, the failed request's photo goes too.
        assert await retention.sweep() == Swept(paths=0, images=0, counters=0)
        later = Retention(
            store=store, chats=storage.chats, settings=settings, work_dirs=work_dirs,
            clock=Clock(T0 + 5 * DAY),
        )  # fmt: skip
        assert await later.sweep() == Swept(paths=0, images=1, counters=0)
        [job] = await store.jobs_by_ids([failed])
        assert (await store.request_image(job.request_id))[0] == b""
        assert all(path.exists() for path in kept)
    finally:
        await storage.close()


async def test_one_sweep_deletes_the_counts_no_decision_reads_any_more(tmp_path: Path) -> None:
    """Chat and guild counts of days past the bound go, and lines whose photos went."""
    storage = await open_sqlite(tmp_path / "db.sqlite3")
    store, chats = storage.jobs, storage.chats
    days = {
        age: datetime.fromtimestamp(T0 - age * DAY, UTC).date().isoformat() for age in (9, 1, 0)
    }
    lines = {}
    try:
        for age, day in days.items():  # a line a day, its one take ended that day
            policy = AdmissionPolicy(enforce=True, chat_day=Period(day, 0.0), max_chat_takes=10)
            [job_id] = await _request(store, f"day-{age}", policy=policy)
            assert await store.transition(job_id, JobState.DONE, finished_at=T0 - age * DAY)
            assert await chats.add_guild_takes("discord", "g1", day, 1)
            [job] = await store.jobs_by_ids([job_id])
            lines[age] = job.request_id
            assert await chats.add_line_take("test", job.request_id, 1) == 2

        settings = RetentionSettings(results_days=7, history_days=7)
        retention = Retention(
            store=store, chats=chats, settings=settings, work_dirs=[], clock=Clock()
        )
        # The 9-day-old day's chat and guild counts, and the line its photo ended.
        assert await retention.sweep() == Swept(paths=0, images=1, counters=3)
        path = tmp_path / "db.sqlite3"
        kept = [(days[1],), (days[0],)]
        assert db_rows(path, "SELECT day FROM chat_days ORDER BY day") == kept
        assert db_rows(path, "SELECT day FROM guild_takes ORDER BY day") == kept
        left = {row[0] for row in db_rows(path, "SELECT request_id FROM line_takes")}
        assert left == {lines[1], lines[0]}
        assert await retention.sweep() == Swept(paths=0, images=0, counters=0)
    finally:
        await storage.close()


async def test_retention_can_be_turned_off(tmp_path: Path) -> None:
    storage = await open_sqlite(tmp_path / "db.sqlite3")
    store = storage.jobs
    try:
        [job_id] = await _request(store, "old")
        await store.transition(job_id, JobState.DONE, finished_at=T0 - 30 * DAY)
        files = _job_files(tmp_path, job_id)
        settings = RetentionSettings(enabled=False)
        work_dirs = [tmp_path / "results", tmp_path / "preview", tmp_path / "telegram"]
        retention = Retention(
            store=store, chats=storage.chats, settings=settings, work_dirs=work_dirs, clock=Clock()
        )
        await asyncio.wait_for(retention.run(), 5)  # returns at once: nothing to do
        assert all(path.exists() for path in files)
    finally:
        await storage.close()


async def test_the_worker_sweeps_and_history_needs_no_local_file(tmp_path: Path) -> None:
    """The running bot deletes a finished take's files; /history re-sends it by file id."""
    retention = {"results_days": 1e-9, "history_days": 1e-9, "sweep_interval_seconds": 0.05}
    async with running_bot(tmp_path, retention=retention) as h:  # the real preview renderer
        s = h.server
        s.send(ANN, photo=photo_jpeg(), caption=LINE + " --5s")
        [job] = await h.finished(1, timeout=60)
        assert job.state is JobState.DONE
        [uploaded] = await s.wait_for(lambda: s.sent("sendVideo"))
        data = h.runtime.settings.data_dir

        async def swept() -> None:
            while True:
                left = [p for d in ("results", "preview", "telegram") for p in (data / d).glob("*")]
                photo = (await h.runtime.storage.jobs.request_image(job.request_id))[0]
                if not left and not photo:
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(swept(), 10)
        s.send(ANN, text="/history")
        resent = await s.wait_for(lambda: s.sent("sendVideo")[1:])
        assert resent[0].files == {} and uploaded.files  # nothing uploaded again
        assert resent[0].params["video"] in s.uploads
