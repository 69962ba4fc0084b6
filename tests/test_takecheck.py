"""Take check on clips made with PyAV: a talking clip passes, each failure is named."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from config.settings import TakeCheckSettings
from core.takecheck import DURATION, FROZEN, NO_AUDIO, SILENT, UNREADABLE, check_take

RATE = 16000
FPS = 12


def clip(
    path: Path, *, seconds: float = 5.0, audio: bool = True, loud: float = 0.3, moving: bool = True
) -> Path:
    """Write an H.264 + AAC MP4: a bar that moves (or not) and a tone (or silence)."""
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 128, 72, "yuv420p"
        sound = container.add_stream("aac", rate=RATE) if audio else None
        frames = int(seconds * FPS)
        for index in range(frames):
            picture = np.full((72, 128, 3), 40, dtype=np.uint8)
            x = (index * 7) % 100 if moving else 10
            picture[:, x : x + 28] = 220
            container.mux(video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(video.encode())
        if sound is not None:
            t = np.arange(int(seconds * RATE)) / RATE
            wave = (loud * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
            for start in range(0, wave.size, 1024):
                chunk = wave[start : start + 1024].reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
                frame.sample_rate = RATE
                frame.time_base = Fraction(1, RATE)
                frame.pts = start
                container.mux(sound.encode(frame))
            container.mux(sound.encode())
    return path


SETTINGS = TakeCheckSettings()


def test_a_talking_clip_passes(tmp_path: Path) -> None:
    assert check_take(clip(tmp_path / "ok.mp4"), 5, SETTINGS) is None


@pytest.mark.parametrize(
    ("knobs", "expected", "reason"),
    [
        ({"audio": False}, 5, NO_AUDIO),
        ({"loud": 0.0}, 5, SILENT),
        ({"loud": 0.0005}, 5, SILENT),  # hiss, not speech (about -70 dBFS)
        ({"moving": False}, 5, FROZEN),
        ({"seconds": 5.0}, 10, DURATION),  # a 10 s line cut off at 5 s
        ({"seconds": 2.0}, 5, DURATION),
    ],
)
def test_failed_takes_are_named(
    tmp_path: Path, knobs: dict[str, object], expected: int, reason: str
) -> None:
    assert check_take(clip(tmp_path / "take.mp4", **knobs), expected, SETTINGS) == reason  # type: ignore[arg-type]


def test_the_shared_tiny_clip_is_silent(tmp_path: Path, tiny_mp4: bytes) -> None:
    # The fixture every backend test serves has a silent track: the check must see it.
    path = tmp_path / "tiny.mp4"
    path.write_bytes(tiny_mp4)
    assert check_take(path, 1, SETTINGS) == SILENT


def test_a_file_that_is_not_a_video_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "x.mp4"
    path.write_bytes(b"<html>nope</html>")
    assert check_take(path, 5, SETTINGS) == UNREADABLE
