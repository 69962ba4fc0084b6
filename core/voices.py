"""Voice samples: a voice note checked once and stored as the character's voice.

A sample is refused (a ``RequestRejected`` with a message key, nothing stored) when it is
too big to decode, not audio, shorter or longer than a voice model takes, or silent. One
that passes is stored normalized: mono 16-bit PCM WAV at 24 kHz, a format every provider
that takes reference audio or builds a voice from a sample accepts (fal's Kling
create-voice: .mp3/.wav; Replicate's Seedance 2.0 reference_audios: MP3/WAV).
"""

from __future__ import annotations

import asyncio
import io
import math
import wave
from dataclasses import dataclass

import av
import numpy as np

from config.settings import CharacterSettings
from core.errors import RequestRejected
from core.takecheck import loudness_dbfs

SAMPLE_RATE = 24_000
_WIDTH = 2  # bytes per sample: s16


@dataclass(frozen=True)
class VoiceSample:
    """A checked, normalized voice sample: WAV bytes and their length."""

    wav: bytes
    seconds: float


def _wav(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(_WIDTH)
        file.setframerate(SAMPLE_RATE)
        file.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


def _decode(audio: bytes, limit_seconds: float) -> np.ndarray:
    """Decode the first audio stream to mono s16 at 24 kHz, stopping past ``limit_seconds``."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    count = 0
    with av.open(io.BytesIO(audio), mode="r") as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1)
                chunks.append(chunk)
                count += chunk.size
            if count > limit_seconds * SAMPLE_RATE:
                break  # already too long: the rest need not be decoded
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def prepare_voice_sample(audio: bytes, settings: CharacterSettings) -> VoiceSample:
    """Check a voice sample (size, decodable, length, loudness) and return it normalized."""
    if len(audio) > settings.max_voice_bytes:
        raise RequestRejected(
            "voice.too_big", limit_mb=max(1, round(settings.max_voice_bytes / 1_000_000))
        )
    try:
        samples = _decode(audio, settings.max_voice_seconds)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise RequestRejected("voice.not_audio") from exc
    seconds = samples.size / SAMPLE_RATE
    low, high = settings.min_voice_seconds, settings.max_voice_seconds
    if samples.size == 0:
        raise RequestRejected("voice.not_audio")
    if seconds < low:
        raise RequestRejected("voice.too_short", seconds=round(seconds, 1), min=low, max=high)
    if seconds > high:
        raise RequestRejected("voice.too_long", min=low, max=high)
    wav = _wav(samples)
    # The take check's loudness, measured on what will be stored.
    with av.open(io.BytesIO(wav), mode="r") as container:
        level = loudness_dbfs(container)
    if level < settings.voice_silent_below_dbfs:
        raise RequestRejected("voice.silent")
    return VoiceSample(wav, round(seconds, 3))


async def prepare_voice_sample_async(audio: bytes, settings: CharacterSettings) -> VoiceSample:
    """Run ``prepare_voice_sample`` off the event loop (decoding blocks)."""
    return await asyncio.to_thread(prepare_voice_sample, audio, settings)


def cut_wav(wav: bytes, seconds: float | None) -> bytes:
    """Return a stored sample cut to its first ``seconds`` (None: as it is)."""
    if seconds is None:
        return wav
    with wave.open(io.BytesIO(wav), "rb") as file:
        frames = file.getnframes()
        keep = min(frames, math.floor(seconds * file.getframerate()))
        if keep >= frames:
            return wav
        params = file.getparams()
        data = file.readframes(keep)
    out = io.BytesIO()
    with wave.open(out, "wb") as cut:
        cut.setparams(params)
        cut.writeframes(data)
    return out.getvalue()
