"""Checks on video files with PyAV: is it a playable MP4 with a video stream."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from core.errors import BackendError


@dataclass(frozen=True)
class VideoInfo:
    """What a result file holds."""

    duration: float
    width: int
    height: int
    video_codec: str
    has_audio: bool
    size_bytes: int


def probe_video(path: Path) -> VideoInfo:
    """Open a result and describe it; raise BackendError(bad result) if it is not a video."""
    try:
        with av.open(str(path)) as container:
            if container.format.name.split(",")[0] not in {"mov", "mp4"}:
                raise BackendError(
                    f"not an MP4: {container.format.name}", transient=False, key="job.bad_result"
                )
            if not container.streams.video:
                raise BackendError("no video stream", transient=False, key="job.bad_result")
            video = container.streams.video[0]
            # Decode one frame: a header alone does not prove the file plays.
            next(container.decode(video=0))
            duration = (
                float(container.duration) / av.time_base
                if container.duration
                else float(video.duration * video.time_base)
                if video.duration and video.time_base
                else 0.0
            )
            return VideoInfo(
                duration=duration,
                width=video.codec_context.width,
                height=video.codec_context.height,
                video_codec=video.codec_context.name,
                has_audio=bool(container.streams.audio),
                size_bytes=path.stat().st_size,
            )
    except BackendError:
        raise
    except (av.FFmpegError, StopIteration, OSError, ValueError) as exc:
        raise BackendError(
            f"unreadable video: {exc}", transient=False, key="job.bad_result"
        ) from exc
