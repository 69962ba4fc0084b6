"""Shared fixtures: settings in a temp dir, test media made on the fly, no internet."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import socket
import sqlite3
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from config.settings import Settings, load_settings


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
