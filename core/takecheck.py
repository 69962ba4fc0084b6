"""Take check: decide whether a finished video is a usable performance before delivery.

The reference model fails often in ways a file check does not catch: no speech (no audio
stream, or a silent one), a clip far from the length asked for (long lines cut off), or
a still picture with sound (frozen video). ``check_take`` names the first such failure.
It is pure (a file in, a reason out) and runs in a worker thread: PyAV decoding blocks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from config.models import PresetSettings
from config.settings import TakeCheckSettings
from core.backends.presets import made_seconds
from core.models import Job

# Reasons, stable names for logs, metrics and message keys ("take.<reason>").
NO_AUDIO = "no_audio"
SILENT = "silent"
DURATION = "duration"
FROZEN = "frozen"
UNREADABLE = "unreadable"
REASONS = (NO_AUDIO, SILENT, DURATION, FROZEN, UNREADABLE)

_THUMB = (64, 36)  # frames are compared small and grey: cheap, and blind to noise


def loudness_dbfs(container: av.container.InputContainer) -> float:
    """Return the whole audio track's RMS level in dBFS (-inf for digital silence)."""
    total = 0.0
    count = 0
    for frame in container.decode(audio=0):
        samples = frame.to_ndarray()
        if samples.dtype.kind in "iu":
            # Integer PCM: full scale is the type's largest value (s16: 32767).
            scale = float(2 ** (8 * samples.dtype.itemsize - 1) - 1)
            values = samples.astype(np.float64) / scale
        else:
            values = samples.astype(np.float64)
        total += float(np.square(values).sum())
        count += values.size
    if count == 0 or total == 0:
        return -math.inf
    return 20 * math.log10(math.sqrt(total / count))


def _largest_change(container: av.container.InputContainer, samples_per_second: float) -> float:
    """Return how far any sampled frame strays from the first one (mean grey level change)."""
    stream = container.streams.video[0]
    rate = float(stream.average_rate or 24)
    step = max(1, round(rate / samples_per_second))
    first: np.ndarray | None = None
    largest = 0.0
    for index, frame in enumerate(container.decode(video=0)):
        if index % step:
            continue
        grey = frame.reformat(width=_THUMB[0], height=_THUMB[1], format="gray").to_ndarray()
        grey = grey.astype(np.float32)
        if first is None:
            first = grey
            continue
        largest = max(largest, float(np.abs(grey - first).mean()))
    return largest


def _duration(container: av.container.InputContainer) -> float:
    if container.duration:
        return float(container.duration) / av.time_base
    stream = container.streams.video[0]
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return 0.0


def check_take(path: Path, expected_seconds: float, settings: TakeCheckSettings) -> str | None:
    """Return why the take at ``path`` failed (no_audio, silent, duration, frozen), or None."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return UNREADABLE
            if not container.streams.audio:
                return NO_AUDIO
            duration = _duration(container)
        if expected_seconds > 0:
            error = abs(duration - expected_seconds) / expected_seconds
            if error > settings.max_duration_error:
                return DURATION
        # Separate passes: demuxing audio and video together would buffer one for the other.
        with av.open(str(path)) as container:
            if loudness_dbfs(container) < settings.silent_below_dbfs:
                return SILENT
        with av.open(str(path)) as container:
            if _largest_change(container, settings.samples_per_second) < settings.frozen_below:
                return FROZEN
    except (av.FFmpegError, OSError, ValueError):
        return UNREADABLE
    return None


@dataclass(frozen=True)
class TakeChecks:
    """Which takes are checked before delivery: those of presets that ask for it."""

    settings: TakeCheckSettings
    presets: Mapping[str, PresetSettings]

    def expected_seconds(self, job: Job) -> float | None:
        """Return the length a job's take should have if it is to be checked, else None."""
        preset = self.presets.get(job.backend or "")
        if not self.settings.enabled or preset is None or not preset.take_check:
            return None
        if preset.speech is not None:
            return 0.0  # as long as its spoken line: no length to hold it to
        return float(made_seconds(preset, job.seconds))
