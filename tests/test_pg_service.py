"""The real service and worker on PostgreSQL: ``actorbot`` as a user runs it, store.url set."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from core.media import probe_video
from tests.test_cli import LINE, actorbot

PASSWORD = "s3cret-PW"  # the test cluster trusts loopback: any password is accepted


def _with_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(
        parts._replace(netloc=f"{parts.username}:{PASSWORD}@{parts.hostname}:{parts.port}")
    )


async def test_generate_on_postgresql_makes_a_video_and_records_it(
    tmp_path: Path, portrait: bytes, pg_dsn: str
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(portrait)
    url = _with_password(pg_dsn)
    result = actorbot(
        tmp_path, "generate", str(photo), LINE + " --5s", "-o", "clip.mp4",
        ACTORBOT_STORE__URL=url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    info = probe_video(tmp_path / "clip.mp4")
    assert (info.width, info.height, info.video_codec, info.has_audio) == (1280, 720, "h264", True)
    # Nothing went to a SQLite file: the jobs and their events are in PostgreSQL.
    assert not (tmp_path / "data" / "actorbot.sqlite3").exists()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert [tuple(r) for r in await conn.fetch("SELECT state FROM jobs")] == [("done",)]
        states = [r[0] for r in await conn.fetch("SELECT state FROM job_events ORDER BY seq")]
        assert states[0] == "queued" and states[-1] == "done" and "submitting" in states
    finally:
        await conn.close()

    doctor = actorbot(tmp_path, "doctor", ACTORBOT_STORE__URL=url)
    [line] = [line for line in doctor.stderr.splitlines() if "store" in line]
    assert "✓ store" in line and "PostgreSQL at" in line and "done: 1" in line, doctor.stderr
    assert PASSWORD not in doctor.stderr + doctor.stdout and ":***@" in line


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://bot:{PASSWORD}@127.0.0.1:{port}/actorbot"
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not read before the store opens")
    result = actorbot(tmp_path, "generate", str(photo), LINE, ACTORBOT_STORE__URL=url)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and f"127.0.0.1:{port}" in lines[0]
    assert PASSWORD not in result.stderr + result.stdout and "Traceback" not in result.stderr
