"""Fit a finished video under a platform's upload limit before anything is sent.

The ladder: send as is when it fits; otherwise re-encode at the bitrate the limit allows,
then at lower resolutions; otherwise refuse with a clear, permanent error (never upload
something the platform will reject with 413).
"""

from __future__ import annotations

import asyncio
import logging
from fractions import Fraction
from pathlib import Path

import av

from core.errors import BackendError, DeliveryError
from core.media import probe_video

log = logging.getLogger(__name__)

# Heights tried after the source's own; 16:9 widths follow.
_LADDER_HEIGHTS = (720, 480, 360)
_AUDIO_BITRATE = 64_000
_MIN_VIDEO_BITRATE = 150_000  # below this a talking face turns to mush: refuse instead
_HEADROOM = 0.92  # container overhead and encoder overshoot


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _reencode(src: Path, dest: Path, *, height: int, video_bitrate: int) -> None:
    """Transcode ``src`` to H.264 + AAC at ``height`` lines and about ``video_bitrate``."""
    options = {"movflags": "+faststart"}
    with av.open(str(src)) as source, av.open(str(dest), "w", "mp4", options=options) as out:
        in_video = source.streams.video[0]
        rate = in_video.average_rate or Fraction(24)
        width = _even(in_video.codec_context.width * height / in_video.codec_context.height)
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.bit_rate = video_bitrate
        video.options = {"preset": "veryfast", "maxrate": str(video_bitrate),
                         "bufsize": str(video_bitrate * 2)}  # fmt: skip
        audio = None
        if source.streams.audio:
            in_audio = source.streams.audio[0]
            audio = out.add_stream("aac", rate=in_audio.codec_context.sample_rate or 44100)
            audio.bit_rate = _AUDIO_BITRATE
        for frame in source.decode(*source.streams):
            if isinstance(frame, av.VideoFrame):
                scaled = frame.reformat(width=width, height=height, format="yuv420p")
                scaled.pts = frame.pts
                scaled.time_base = frame.time_base
                out.mux(video.encode(scaled))
            elif isinstance(frame, av.AudioFrame) and audio is not None:
                out.mux(audio.encode(frame))
        out.mux(video.encode())
        if audio is not None:
            out.mux(audio.encode())


def fit_video(src: Path, max_bytes: int, work_dir: Path) -> Path:
    """Return ``src`` if it is at most ``max_bytes``, else a re-encoded copy that is."""
    try:
        return _fit(src, max_bytes, work_dir)
    except (BackendError, av.FFmpegError, OSError) as exc:
        # Whatever broke while re-encoding, the adapter sees one delivery error.
        raise DeliveryError(f"cannot fit the video: {exc}", permanent=True) from exc


def _fit(src: Path, max_bytes: int, work_dir: Path) -> Path:
    size = src.stat().st_size
    if size <= max_bytes:
        return src
    info = probe_video(src)
    duration = max(info.duration, 0.1)
    budget = int(max_bytes * 8 * _HEADROOM / duration) - (_AUDIO_BITRATE if info.has_audio else 0)
    work_dir.mkdir(parents=True, exist_ok=True)
    heights = [h for h in _LADDER_HEIGHTS if h <= info.height] or [info.height]
    for height in heights:
        bitrate = budget
        # Encoders overshoot on short, busy clips: retry once at the bitrate that the
        # first try shows would fit, before giving up a resolution step.
        for _ in range(2):
            if bitrate < _MIN_VIDEO_BITRATE:
                break
            dest = work_dir / f"{src.stem}-{height}p.mp4"
            _reencode(src, dest, height=height, video_bitrate=bitrate)
            fitted = dest.stat().st_size
            if fitted <= max_bytes:
                log.info("fitted %s from %d to %d bytes at %dp", src.name, size, fitted, height)
                return dest
            dest.unlink()
            bitrate = int(bitrate * max_bytes / fitted * _HEADROOM)
    raise DeliveryError(
        f"video of {size} bytes does not fit {max_bytes}",
        permanent=True,
        key="job.too_large_to_deliver",
        size_mb=size / 1e6,
        limit_mb=max_bytes / 1e6,
    )


async def fit_video_async(src: Path, max_bytes: int, work_dir: Path) -> Path:
    """Run ``fit_video`` off the event loop."""
    return await asyncio.to_thread(fit_video, src, max_bytes, work_dir)
