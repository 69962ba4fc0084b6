"""Shared fixtures: settings in a temp dir, test media made on the fly, no internet."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import re
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import av
import numpy as np
import pytest
from PIL import Image

from config.settings import Settings, load_settings
from core.storage import Storage
from core.storage.postgres import open_postgres
from core.storage.postgres.connection import Pool, create_pool
from core.storage.postgres.schema import migrate
from core.storage.sqlite import open_sqlite


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to reach beyond the loopback interface."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = host == "localhost"
            if not loopback:
                raise RuntimeError(f"test tried to reach {host}: tests stay on loopback")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def db_rows(path: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Read rows straight from a SQLite store's file, for tests that inspect the database."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [tuple(row) for row in db.execute(sql, params)]


def db_execute(path: Path, sql: str, params: Sequence[Any] = ()) -> None:
    """Change a SQLite store's file behind its back, for tests that inject state."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(sql, params)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Return settings rooted in tmp_path with quick worker timings."""
    worker = {
        "lease_seconds": 2.0,
        "heartbeat_seconds": 0.2,
        "status_interval_seconds": 0.05,
        "backoff_base_seconds": 0.01,
        "backoff_max_seconds": 0.05,
        "job_deadline_seconds": 30,
    }
    worker.update(overrides.pop("worker", {}))
    return load_settings(data_dir=tmp_path / "data", worker=worker, **overrides)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


def photo_jpeg(width: int = 800, height: int = 1000) -> bytes:
    """Return a portrait-like JPEG: gradient background, a face-coloured oval."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 128)], axis=-1)
    image = Image.fromarray(rgb.astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def voice_note(
    seconds: float, *, amplitude: float = 0.3, pitch: float = 220.0, fmt: str = "ogg"
) -> bytes:
    """Return a real recording: a vowel-like tone, as OGG/Opus (a voice note) or MP3 / WAV."""
    codec, rate = {"ogg": ("libopus", 48_000), "mp3": ("libmp3lame", 44_100)}.get(
        fmt, ("pcm_s16le", 44_100)
    )
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        t = np.arange(int(seconds * rate)) / rate
        # A fundamental with a few harmonics, so it sounds (and measures) like a voice.
        wave = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in (1, 2, 3))
        samples = (amplitude * wave / 1.83).astype(np.float32)
        frame_size = 960
        for start in range(0, samples.size, frame_size):
            chunk = samples[start : start + frame_size]
            if chunk.size < frame_size:
                chunk = np.pad(chunk, (0, frame_size - chunk.size))
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_mp4() -> bytes:
    """Return a real 1 s 64x36 H.264 + AAC MP4."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=12)
        video.width, video.height, video.pix_fmt = 64, 36, "yuv420p"
        audio = container.add_stream("aac", rate=22050)
        for index in range(12):
            frame = av.VideoFrame.from_ndarray(
                np.full((36, 64, 3), index * 20, dtype=np.uint8), format="rgb24"
            )
            container.mux(video.encode(frame))
        container.mux(video.encode())
        samples = np.zeros((1, 22050), dtype=np.int16)
        audio_frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        audio_frame.sample_rate = 22050
        audio_frame.time_base = Fraction(1, 22050)
        audio_frame.pts = 0
        container.mux(audio.encode(audio_frame))
        container.mux(audio.encode())
    return buffer.getvalue()


@pytest.fixture
def portrait() -> bytes:
    return photo_jpeg()


@pytest.fixture(scope="session")
def mute_mp4() -> bytes:
    """Return a real 1 s 64x36 H.264 MP4 with no audio stream."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=12)
        video.width, video.height, video.pix_fmt = 64, 36, "yuv420p"
        for index in range(12):
            frame = av.VideoFrame.from_ndarray(
                np.full((36, 64, 3), index * 20, dtype=np.uint8), format="rgb24"
            )
            container.mux(video.encode(frame))
        container.mux(video.encode())
    return buffer.getvalue()


# --- PostgreSQL: one throwaway cluster per session, a fresh database per test ---------

ROOT = Path(__file__).resolve().parent.parent
PG_DSN_ENV = "ACTORBOT_TEST_PG_DSN"  # set by scripts/check.sh (scripts/postgres.sh start)


def _pg_unavailable(reason: str) -> None:
    # In CI PostgreSQL tests must run: a missing server fails them instead of skipping.
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL: {reason} (scripts/check.sh starts one)")


@pytest.fixture(scope="session")
def pg_cluster(request: pytest.FixtureRequest) -> str:
    """Return the DSN of a loopback PostgreSQL cluster: $ACTORBOT_TEST_PG_DSN or our own."""
    dsn = os.environ.get(PG_DSN_ENV)
    if dsn:
        return dsn
    # Run straight from pytest: start one for this session, as check.sh would.
    started = subprocess.run(
        ["bash", str(ROOT / "scripts" / "postgres.sh"), "start"],
        capture_output=True,
        text=True,
        check=False,
    )
    if started.returncode != 0:
        _pg_unavailable(started.stderr.strip().splitlines()[-1] if started.stderr else "?")
    values = dict(line.split("=", 1) for line in started.stdout.split())
    request.addfinalizer(
        lambda: subprocess.run(
            ["bash", str(ROOT / "scripts" / "postgres.sh"), "stop", values["ACTORBOT_TEST_PG_DIR"]],
            check=False,
        )
    )
    return values[PG_DSN_ENV]


@pytest.fixture
async def pg_dsn(pg_cluster: str) -> AsyncIterator[str]:
    """Return the DSN of a new empty database, dropped after the test."""
    dsn = await _new_database(pg_cluster)
    try:
        yield dsn
    finally:
        await _drop_database(pg_cluster, dsn)


@pytest.fixture
async def pg_pool(pg_dsn: str) -> AsyncIterator[Pool]:
    """Return a pool on a new database with the actorbot schema."""
    pool = await create_pool(pg_dsn, max_size=10)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        yield pool
    finally:
        await pool.close()


async def _new_database(cluster: str) -> str:
    """Create an empty database on the cluster and return its DSN."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(cluster)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    return urlunsplit(urlsplit(cluster)._replace(path=f"/{name}"))


async def _drop_database(cluster: str, dsn: str) -> None:
    admin = await asyncpg.connect(cluster)
    try:
        # FORCE: a test that failed may have left connections open.
        await admin.execute(f'DROP DATABASE "{urlsplit(dsn).path[1:]}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass(frozen=True)
class Engine:
    """One storage engine under test: open its stores, read its tables straight."""

    name: str  # "sqlite" or "postgres"
    path: Path  # the SQLite file (unused by PostgreSQL)
    dsn: str  # the PostgreSQL database ("" for SQLite)

    async def open(self, clock: Callable[[], float] = time.time) -> Storage:
        """Open the engine's stores (creating and migrating the database if new)."""
        if self.name == "postgres":
            return await open_postgres(self.dsn, clock=clock)
        return await open_sqlite(self.path, clock=clock)

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read rows straight from the database; ``?`` marks parameters on both engines."""
        if self.name == "sqlite":
            return db_rows(self.path, sql, params)
        numbered = iter(range(1, len(params) + 1))
        query = re.sub(r"\?", lambda _: f"${next(numbered)}", sql)
        conn = await asyncpg.connect(self.dsn)
        try:
            return [tuple(row) for row in await conn.fetch(query, *params)]
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    """Yield each storage engine in turn, on a new empty database: the contract suite."""
    if request.param == "sqlite":
        yield Engine("sqlite", tmp_path / "db.sqlite3", "")
        return
    cluster: str = request.getfixturevalue("pg_cluster")
    dsn = await _new_database(cluster)
    try:
        yield Engine("postgres", tmp_path / "unused", dsn)
    finally:
        await _drop_database(cluster, dsn)
