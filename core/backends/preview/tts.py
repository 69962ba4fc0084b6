"""Offline speech for the preview renderer: espeak-ng from the ``espeakng-loader`` wheel.

espeak-ng keeps its state in C globals, and some of it survives from one utterance to the
next (the pitch "flutter" position, the roughness cycle counter, the gain control), so the
same text in the same voice comes out slightly different on every call within a process.
To give a character exactly the same voice on every take, each utterance is synthesized in
a short-lived child interpreter (about 35 ms) that loads the library through ctypes, speaks
once and exits. That also keeps a crash or hang inside the C library out of the bot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass

from core.errors import BackendError

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050  # what espeak-ng produces; the child checks espeak_Initialize's answer
_TIMEOUT_SECONDS = 30.0
_MIN_RATE, _MAX_RATE = 80, 450  # espeakRATE limits (faster is possible with sonic, not needed)

# Voice variants (espeak-ng-data/voices/!v) that stay intelligible in English and Mandarin;
# the robotic, whispering and novelty ones are left out.
_VARIANTS = ("f1", "f2", "f3", "f4", "m1", "m2", "m3", "m6", "m7", "Annie", "steph", "max", "ed")

# The child: plain ctypes against speak_lib.h, stdlib only so it can start with -I -S.
# argv: library path, data path; stdin: JSON job; stdout: raw PCM; exit 3 + stderr on error.
_CHILD = r"""
import ctypes, json, sys

def fail(message):
    sys.stderr.write(message)
    sys.exit(3)

AUDIO_OUTPUT_SYNCHRONOUS, POS_CHARACTER, CHARS_UTF8 = 2, 1, 1
job = json.loads(sys.stdin.buffer.read())
try:
    lib = ctypes.CDLL(sys.argv[1])
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]
except (OSError, AttributeError) as exc:
    fail("cannot load espeak-ng: %s" % exc)
rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, sys.argv[2].encode(), 0)
if rate != job["sample_rate"]:
    fail("espeak_Initialize returned %d (data at %s)" % (rate, sys.argv[2]))
chunks = []
CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

@CALLBACK
def on_audio(wav, count, events):
    if count > 0 and wav:
        chunks.append(ctypes.string_at(wav, count * 2))
    return 0

lib.espeak_SetSynthCallback(on_audio)
if hasattr(lib, "espeak_ng_SetRandSeed"):  # breathy variants mix in noise
    lib.espeak_ng_SetRandSeed(ctypes.c_long(1))
if lib.espeak_SetVoiceByName(job["voice"].encode()) != 0:
    fail("espeak-ng has no voice %r" % job["voice"])
# After the voice: selecting a voice resets these to its defaults.
for param, value in job["params"]:
    lib.espeak_SetParameter(param, value, 0)
text = job["text"].encode("utf-8") + b"\0"
status = lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
if status != 0:
    fail("espeak_Synth failed with status %d" % status)
lib.espeak_Synchronize()
sys.stdout.buffer.write(b"".join(chunks))
"""


@dataclass(frozen=True)
class Speech:
    """Mono signed 16-bit PCM (native byte order) and its sample rate."""

    pcm: bytes
    sample_rate: int

    @property
    def samples(self) -> int:
        """Return the number of samples."""
        return len(self.pcm) // 2

    @property
    def duration(self) -> float:
        """Return the length in seconds."""
        return self.samples / self.sample_rate


@dataclass(frozen=True)
class VoiceParams:
    """What a voice name resolves to: an espeak variant and prosody settings."""

    variant: str
    pitch: int  # espeakPITCH, 0..100; 50 is the variant's own base pitch
    pitch_range: int  # espeakRANGE, 0..100; intonation range
    rate: int  # espeakRATE, words per minute


DEFAULT_VOICE = VoiceParams(variant="f2", pitch=50, pitch_range=55, rate=165)


def voice_params(voice: str | None) -> VoiceParams:
    """Map a voice name to fixed voice settings, the same in every process and on every run."""
    if voice is None or not voice.strip():
        return DEFAULT_VOICE
    # A stable hash, not hash() (salted per process): a character keeps its voice across
    # takes and restarts.
    digest = hashlib.sha256(voice.strip().casefold().encode("utf-8")).digest()
    return VoiceParams(
        variant=_VARIANTS[digest[0] % len(_VARIANTS)],
        pitch=35 + digest[1] % 31,  # 35..65
        pitch_range=40 + digest[2] % 41,  # 40..80
        rate=150 + digest[3] % 31,  # 150..180 words per minute
    )


def espeak_language(language: str) -> str:
    """Return the espeak-ng language for a request language: Mandarin for "zh", else English."""
    # "cmn" reads Han characters as Mandarin syllables with tones; other voices spell each
    # one out as "Chinese letter ...". Latin words inside Mandarin text switch to English.
    return "cmn" if language == "zh" else "en"


def _library_paths() -> tuple[str, str]:
    try:
        import espeakng_loader

        return str(espeakng_loader.get_library_path()), str(espeakng_loader.get_data_path())
    except (ImportError, RuntimeError) as exc:
        raise BackendError(f"espeak-ng is not available: {exc}", transient=False) from exc


def check_speech() -> None:
    """Raise BackendError unless espeak-ng's library and voice data are on disk."""
    library, data = _library_paths()
    if not os.path.isfile(library) or not os.path.isdir(data):
        raise BackendError("espeak-ng is not installed where espeakng-loader says", transient=False)


def _trim_silence(pcm: bytes, threshold: int = 96) -> bytes:
    """Drop the near-silent samples espeak puts before and after the speech."""
    view = memoryview(pcm).cast("h")
    start, end = 0, len(view)
    while start < end and abs(view[start]) < threshold:
        start += 1
    while end > start and abs(view[end - 1]) < threshold:
        end -= 1
    if end <= start:
        return b""
    # Keep 10 ms either side so the first consonant and the last release are not clipped.
    pad = SAMPLE_RATE // 100
    return bytes(view[max(0, start - pad) : min(len(view), end + pad)].cast("B"))


def synthesize(text: str, language: str, voice: str | None, *, speed: float = 1.0) -> Speech:
    """Speak ``text`` offline and return mono 16-bit PCM at 22050 Hz (blocking, thread-safe).

    ``language`` is "zh" (Mandarin), "en" or "other" (English); ``voice`` is any name and always
    maps to the same voice; ``speed`` scales the speaking rate.
    """
    if not text.strip():
        return Speech(pcm=b"", sample_rate=SAMPLE_RATE)
    params = voice_params(voice)
    job = {
        "text": text,
        "voice": f"{espeak_language(language)}+{params.variant}",
        "sample_rate": SAMPLE_RATE,
        # (espeak_PARAMETER, value): espeakRATE, espeakVOLUME, espeakPITCH, espeakRANGE.
        "params": [
            (1, max(_MIN_RATE, min(_MAX_RATE, round(params.rate * speed)))),
            (2, 100),
            (3, params.pitch),
            (4, params.pitch_range),
        ],
    }
    lib_path, data_path = _library_paths()
    try:
        # -I -S: the child needs only the standard library, so skip site and user paths.
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _CHILD, lib_path, data_path],
            input=json.dumps(job).encode("utf-8"),
            capture_output=True,
            timeout=_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BackendError(f"espeak-ng took over {_TIMEOUT_SECONDS:.0f} s", transient=True) from exc
    except OSError as exc:
        raise BackendError(f"cannot start the speech process: {exc}", transient=False) from exc
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()[-500:]
        raise BackendError(f"speech process failed ({done.returncode}): {message}", transient=False)
    return Speech(pcm=_trim_silence(done.stdout), sample_rate=SAMPLE_RATE)
