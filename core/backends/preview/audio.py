"""The preview's sound track: the spoken line fitted into the clip, padded with silence.

The line is never cut: it is spoken faster until it fits, and resampled faster as a last resort.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import av

from core.backends.base import RenderSpec
from core.backends.preview import tts

log = logging.getLogger(__name__)

SPEECH_LEAD = 0.3  # seconds of silence before the line starts
SPEECH_TAIL = 0.2  # keep the line this far from the end of the clip


def fit_speech(spec: RenderSpec) -> tts.Speech:
    """Speak the line, faster if needed so it ends before the clip does (it is never cut)."""
    available = spec.seconds - SPEECH_LEAD - SPEECH_TAIL
    speech = tts.synthesize(spec.speech, spec.language, spec.voice)
    speed = 1.0
    for _ in range(3):
        if speech.duration <= available:
            return speech
        # Speaking faster keeps the pitch; duration scales roughly with 1 / rate.
        speed *= speech.duration / available * 1.04
        speech = tts.synthesize(spec.speech, spec.language, spec.voice, speed=speed)
    if speech.duration <= available:
        return speech
    log.info("speech still %.2f s for %.2f s: resampling it faster", speech.duration, available)
    return _squeeze(speech, available)


def _squeeze(speech: tts.Speech, seconds: float) -> tts.Speech:
    """Play ``speech`` faster (and higher) so it lasts ``seconds``: the last resort."""
    frame = av.AudioFrame(format="s16", layout="mono", samples=speech.samples)
    frame.planes[0].update(speech.pcm)
    # Claim a higher sample rate than the truth, then resample back: fewer samples, same sound.
    frame.sample_rate = math.ceil(speech.sample_rate * speech.duration / seconds)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=speech.sample_rate)
    out = resampler.resample(frame) + resampler.resample(None)
    pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in out)
    return tts.Speech(
        pcm=pcm[: int(seconds * speech.sample_rate) * 2], sample_rate=speech.sample_rate
    )


def audio_track(speech: tts.Speech, seconds: int) -> av.AudioFrame:
    """Place the speech SPEECH_LEAD seconds in and pad it with silence to the clip length."""
    rate = speech.sample_rate
    total = seconds * rate
    lead = round(SPEECH_LEAD * rate)
    body = speech.pcm[: (total - lead) * 2]
    pcm = bytes(lead * 2) + body + bytes((total - lead) * 2 - len(body))
    frame = av.AudioFrame(format="s16", layout="mono", samples=total)
    frame.planes[0].update(pcm)
    frame.sample_rate = rate
    frame.time_base = Fraction(1, rate)
    frame.pts = 0
    return frame
