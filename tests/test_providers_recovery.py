"""SIGKILL the real CLI process while a hosted provider has its job, restart, count submits.

The provider is the loopback server in tests/providers_server.py, in this test process, so
it outlives the killed service and counts every submit it received.
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

from tests.providers_server import KEY, ProviderServer
from tests.test_crash_recovery import REPO, job_rows

LINE = 'The girl smiles and says: "You did not think I would give up?"'
_PROVIDER = {"kling-2.6-pro": "FAL", "seedance-2": "REPLICATE", "gaga-1": "GAGA"}


def provider_env(
    data_dir: Path, server: ProviderServer, preset: str, failpoints: list[str]
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ACTORBOT_")}
    env.update(
        {
            "ACTORBOT_DATA_DIR": str(data_dir),
            "ACTORBOT_BACKEND": preset,
            "ACTORBOT_WORKER__LEASE_SECONDS": "1",
            "ACTORBOT_WORKER__HEARTBEAT_SECONDS": "0.2",
            "ACTORBOT_WORKER__STATUS_INTERVAL_SECONDS": "0.1",
            "ACTORBOT_WORKER__BACKOFF_BASE_SECONDS": "0.05",
            # Charge the local user, so that a failed take shows its refund in the ledger.
            "ACTORBOT_QUOTAS__EXEMPT_PLATFORMS": "[]",
            "ACTORBOT_DEBUG__FAILPOINTS": json.dumps(failpoints),
            "ACTORBOT_TAKECHECK__ENABLED": "false",  # the 1 s test clip is no performance
            "ACTORBOT_CONFIG": "",
            "COLUMNS": "120",
        }
    )
    for provider, settings in server.provider_settings().items():
        for name, value in settings.items():
            text = value if isinstance(value, str) else json.dumps(value)
            env[f"ACTORBOT_PROVIDERS__{provider.upper()}__{name.upper()}"] = text
    return env


async def run_cli(env: dict[str, str], *args: str, kill_when: object = None) -> tuple[int, str]:
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
    text = output.decode()
    assert KEY not in text  # the provider key never reaches a log or a message
    return process.returncode, text


def ledger(data_dir: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(data_dir / "actorbot.sqlite3") as db:
        rows = db.execute("SELECT reason, delta FROM ledger WHERE job_id IS NOT NULL ORDER BY id")
        return [(str(reason), int(delta)) for reason, delta in rows]


def error_key(data_dir: Path) -> str | None:
    with sqlite3.connect(data_dir / "actorbot.sqlite3") as db:
        [(key,)] = db.execute("SELECT error_key FROM jobs").fetchall()
        return None if key is None else str(key)


@pytest.mark.parametrize("preset", ["kling-2.6-pro", "seedance-2", "gaga-1"])
async def test_sigkill_while_the_provider_runs_the_job_resumes_polling_it(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes, preset: str
) -> None:
    server = ProviderServer(video=tiny_mp4, run_seconds=3600)
    await server.start()
    try:
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(portrait)
        data = tmp_path / "data"
        env = provider_env(data, server, preset, [])

        def polled() -> bool:
            # Killed once the handle is stored and the job was polled at least once.
            try:
                stored = any(handle for _, _, handle in job_rows(data))
            except sqlite3.Error:
                return False
            return stored and any(job.polls for job in server.jobs.values())

        args = ("generate", str(photo), LINE, "-o", str(tmp_path / "out.mp4"))
        code, _ = await run_cli(env, *args, kill_when=polled)
        assert code == -signal.SIGKILL
        [job] = server.jobs.values()
        polls_before = job.polls
        server.run_seconds = 0  # the provider finishes while the service is down

        code, output = await run_cli(env, "resume")
        assert code == 0, output
        [(_, state, handle)] = job_rows(data)
        assert state == "done"
        assert job.id in (handle or "")
        assert (tmp_path / "out.mp4").read_bytes() == tiny_mp4
        # The same provider job, polled again after the restart; never a second submit.
        assert job.polls > polls_before
        assert server.submit_requests == 1 and len(server.jobs) == 1
        [(reason, _)] = ledger(data)  # charged once, never refunded
        assert reason == "debit"
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("preset", "found"), [("kling-2.6-pro", True), ("seedance-2", True), ("gaga-1", False)]
)
async def test_sigkill_between_submit_and_stored_handle(
    tmp_path: Path, tiny_mp4: bytes, portrait: bytes, preset: str, found: bool
) -> None:
    server = ProviderServer(video=tiny_mp4)
    await server.start()
    try:
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(portrait)
        data = tmp_path / "data"
        args = ("generate", str(photo), LINE, "-o", str(tmp_path / "out.mp4"))
        # The submit reached the provider; the process dies before it stores the handle.
        code, _ = await run_cli(provider_env(data, server, preset, ["worker.after_submit"]), *args)
        assert code == -signal.SIGKILL
        [(_, state, handle)] = job_rows(data)
        assert (state, handle) == ("submitting", None)
        assert server.submit_requests == 1

        code, output = await run_cli(provider_env(data, server, preset, []), "resume")
        assert code == 0, output
        [(_, state, handle)] = job_rows(data)
        # Whatever happens, the provider received one submit: never a second paid job.
        assert server.submit_requests == 1 and len(server.jobs) == 1
        [job] = server.jobs.values()
        if found:
            # Found by the provider's listing, matched on the input rebuilt from the store.
            assert state == "done" and job.id in (handle or "")
            assert server.listings >= 1
            [(reason, _)] = ledger(data)
            assert reason == "debit"
        else:
            # No listing to look in: failed with a refund, and the log names the orphan.
            assert state == "failed" and error_key(data) == "job.interrupted"
            [(debit, charged), (refund, paid_back)] = ledger(data)
            assert (debit, refund, paid_back) == ("debit", "refund", -charged)
            assert "possible orphan" in output
    finally:
        await server.stop()
