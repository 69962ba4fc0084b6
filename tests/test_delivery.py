"""The size ladder: videos are fitted under a platform's limit, or refused clearly."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from core.delivery import fit_video
from core.errors import DeliveryError
from core.media import probe_video


def noisy_clip(path: Path, seconds: int = 2, size: tuple[int, int] = (640, 360)) -> Path:
    """Write a hard-to-compress clip (random noise) at a high bitrate, with audio."""
    rng = np.random.default_rng(7)
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=Fraction(12))
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        video.options = {"crf": "10", "preset": "ultrafast"}
        audio = out.add_stream("aac", rate=22050)
        for _ in range(12 * seconds):
            pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(video.encode())
        tone = (np.sin(np.arange(22050 * seconds) / 10) * 8000).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 22050, 0, Fraction(1, 22050)
        out.mux(audio.encode(frame))
        out.mux(audio.encode())
    return path


def test_small_video_is_sent_as_is(tmp_path: Path) -> None:
    clip = noisy_clip(tmp_path / "clip.mp4")
    assert fit_video(clip, clip.stat().st_size, tmp_path / "work") == clip


def test_large_video_is_reencoded_under_the_limit(tmp_path: Path) -> None:
    clip = noisy_clip(tmp_path / "clip.mp4")
    limit = clip.stat().st_size // 4
    fitted = fit_video(clip, limit, tmp_path / "work")
    assert fitted != clip and fitted.stat().st_size <= limit
    info = probe_video(fitted)
    assert info.video_codec == "h264" and info.has_audio
    assert abs(info.duration - 2.0) < 0.3


def test_impossible_limit_is_a_permanent_error_with_sizes(tmp_path: Path) -> None:
    clip = noisy_clip(tmp_path / "clip.mp4")
    with pytest.raises(DeliveryError) as refused:
        fit_video(clip, 10_000, tmp_path / "work")
    assert refused.value.permanent and refused.value.key == "job.too_large_to_deliver"
    assert refused.value.params["limit_mb"] == pytest.approx(0.01)


def test_overshooting_reencodes_never_deliver_over_the_limit(tmp_path: Path) -> None:
    # One second of 720p noise: the encoder overshoots the bitrate the limit allows, so
    # the ladder's retry-at-a-lower-bitrate path runs before anything fits.
    clip = noisy_clip(tmp_path / "clip.mp4", seconds=1, size=(1280, 720))
    limit = clip.stat().st_size // 3
    work = tmp_path / "work"
    try:
        fitted = fit_video(clip, limit, work)
    except DeliveryError as refused:  # refusing is allowed; sending too much is not
        assert refused.permanent and refused.key == "job.too_large_to_deliver"
    else:
        assert fitted != clip and fitted.parent == work
        assert fitted.stat().st_size <= limit
        assert probe_video(fitted).video_codec == "h264"
    # No over-limit attempt is left where a later delivery could pick it up.
    assert all(path.stat().st_size <= limit for path in work.iterdir())
