"""Kill the real CLI process with SIGKILL at each step of a job, restart, and check the job.

The service runs as a subprocess (``python -m bots.cli``) with the job-API backend against a
loopback model server in this test process. After the kill, ``actorbot resume`` must finish
every job: done (the video at its path) or failed with a message; none lost, and none
submitted to the provider again once its handle was stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from core.media import probe_video
from tests.jobapi_server import JobApiServer

REPO = Path(__file__).resolve().parents[1]
LINE = 'She leans in and whispers: "We\'re even now."'


def cli_env(data_dir: Path, server_url: str, failpoints: list[str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ACTORBOT_")}
    env.update(
        {
            "ACTORBOT_DATA_DIR": str(data_dir),
            "ACTORBOT_BACKEND": "jobapi",
            "ACTORBOT_JOBAPI__URL": server_url,
            "ACTORBOT_JOBAPI__POLL_INTERVAL_SECONDS": "0.05",
            "ACTORBOT_WORKER__LEASE_SECONDS": "1",
            "ACTORBOT_WORKER__HEARTBEAT_SECONDS": "0.2",
            "ACTORBOT_WORKER__STATUS_INTERVAL_SECONDS": "0.1",
            "ACTORBOT_WORKER__BACKOFF_BASE_SECONDS": "0.05",
            "ACTORBOT_DEBUG__FAILPOINTS": json.dumps(failpoints),
            "ACTORBOT_CONFIG": "",
            "COLUMNS": "120",
        }
    )
    return env


async def run_cli(env: dict[str, str], *args: str, kill_when: object = None) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots.cli", *args,
        cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    if kill_when is not None:
        assert callable(kill_when)
        while not kill_when():
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    output, _ = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    if process.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"cli exited {process.returncode}:\n{output.decode()}")
    return process.returncode


def job_rows(data_dir: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(data_dir / "actorbot.sqlite3") as db:
        return db.execute("SELECT id, state, handle FROM jobs ORDER BY seq").fetchall()


def resubmitted(data_dir: Path) -> list[int]:
    with sqlite3.connect(data_dir / "actorbot.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT resubmitted FROM jobs ORDER BY seq")]


@pytest.mark.parametrize(
    "failpoint",
    [
        "service.after_admission",
        "worker.after_claim",
        "worker.after_submit",
        "worker.after_handle_stored",
        "worker.after_fetch",
        "worker.before_deliver",
        "worker.after_deliver",
    ],
)
async def test_sigkill_at_failpoint_then_resume(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes, failpoint: str
) -> None:
    server = JobApiServer(video=tiny_mp4, run_seconds=0.1)
    url = await server.start()
    try:
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(portrait)
        output = tmp_path / "out.mp4"
        data = tmp_path / "data"
        code = await run_cli(
            cli_env(data, url, [failpoint]), "generate", str(photo), LINE, "-o", str(output)
        )
        assert code == -signal.SIGKILL
        [(_, state, _)] = job_rows(data)
        assert state not in ("done", "failed")
        submits_before = len(server.submits)

        assert await run_cli(cli_env(data, url, []), "resume") == 0

        [(_, state, handle)] = job_rows(data)
        assert state == "done"
        assert handle is not None
        assert probe_video(output).video_codec == "h264"
        # One provider job in every case: a stored handle (or a reconciled submit) is
        # never submitted again.
        assert len(server.submits) == 1
        if failpoint not in ("service.after_admission", "worker.after_claim"):
            assert submits_before == 1
        # Only a crash between claim and submit leaves the outcome unknown; it is recorded.
        assert resubmitted(data) == [int(failpoint == "worker.after_claim")]
    finally:
        await server.stop()


async def test_external_sigkill_while_provider_runs_the_job(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    hold = asyncio.Event()
    server = JobApiServer(video=tiny_mp4, hold=hold)
    url = await server.start()
    try:
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(portrait)
        output = tmp_path / "out.mp4"
        data = tmp_path / "data"

        def handle_stored() -> bool:
            try:
                return any(handle for _, _, handle in job_rows(data))
            except sqlite3.Error:
                return False

        env = cli_env(data, url, [])
        args = ("generate", str(photo), LINE + " --takes 2", "-o", str(output))
        assert await run_cli(env, *args, kill_when=handle_stored) == -signal.SIGKILL
        hold.set()
        assert await run_cli(env, "resume") == 0
        assert [state for _, state, _ in job_rows(data)] == ["done", "done"]
        assert len(server.submits) == 2
        assert probe_video(output).has_audio
        assert probe_video(output.with_name("out-2.mp4")).width == 64
    finally:
        await server.stop()


async def test_sigkill_during_slow_download(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes
) -> None:
    server = JobApiServer(video=tiny_mp4, run_seconds=0.05, result_delay=0.2)
    url = await server.start()
    try:
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(portrait)
        data = tmp_path / "data"
        env = cli_env(data, url, [])
        args = ("generate", str(photo), LINE, "-o", str(tmp_path / "out.mp4"))
        code = await run_cli(env, *args, kill_when=lambda: server.result_fetches > 0)
        assert code == -signal.SIGKILL
        server.result_delay = 0
        assert await run_cli(env, "resume") == 0
        assert [state for _, state, _ in job_rows(data)] == ["done"]
        assert len(server.submits) == 1 and server.result_fetches == 2
    finally:
        await server.stop()
