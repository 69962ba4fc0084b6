"""Model presets: our request (image, line, seconds, seed, voice) onto a model's fields.

A preset is configuration (config.models.PresetSettings), not code: adding a model is a
config block. This module only reads presets; the provider backends send what it builds.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

from config.models import PresetSettings, SpeechStageSettings
from config.settings import Settings
from core.backends.base import RenderSpec


def made_seconds(preset: PresetSettings, requested: int) -> int:
    """Return the clip length the model makes for the ``requested`` 5 or 10 s."""
    if requested in preset.durations:
        return preset.durations[requested]
    # A model with one length only: the nearest one it has (the user is told, see notice).
    nearest = min(preset.durations, key=lambda asked: abs(asked - requested))
    return preset.durations[nearest]


def duration_notice(preset: PresetSettings, requested: int) -> int | None:
    """Return the seconds the user will get instead of ``requested``, or None if the same."""
    made = made_seconds(preset, requested)
    return None if made == requested else made


def fixed_voice(speech: SpeechStageSettings, voice: str | None) -> str:
    """Return the text-to-speech voice id for one of our voice names, the same every time.

    A mapped name gets its id; any other (a character's own ``character:<id>``, or none)
    gets one of the pool by a stable hash of the name, never by chance or by process.
    """
    if voice and voice in speech.voices:
        return speech.voices[voice]
    digest = hashlib.sha256((voice or "").encode()).digest()
    return speech.pool[int.from_bytes(digest[:8], "big") % len(speech.pool)]


def _put(fields: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``value`` at a dotted path, inside the nested objects the path names."""
    *parents, leaf = dotted.split(".")
    for name in parents:
        child = fields.get(name)
        fields[name] = child = dict(child) if isinstance(child, dict) else {}
        fields = child
    fields[leaf] = value


def speech_preset(preset: PresetSettings) -> PresetSettings:
    """Return stage one of a two-stage preset as a preset of its own (text in, audio out)."""
    assert preset.speech is not None
    speech = preset.speech
    return PresetSettings(
        provider=preset.provider,
        model=speech.model,
        title=f"{preset.title or preset.model}: speech",
        image_field="",
        prompt_field="",
        duration_field="",
        durations=preset.durations,
        extra=speech.extra,
        result_field=speech.result_field,
        take_check=False,
    )


def speech_input(speech: SpeechStageSettings, spec: RenderSpec) -> dict[str, Any]:
    """Return the text-to-speech model's fields for ``spec``: its speech, in a fixed voice."""
    fields: dict[str, Any] = copy.deepcopy(speech.extra)
    _put(fields, speech.text_field, spec.speech)
    _put(fields, speech.voice_field, fixed_voice(speech, spec.voice))
    return fields


def model_input(preset: PresetSettings, spec: RenderSpec) -> dict[str, Any]:
    """Return the model's input fields for ``spec``, without the image (sent separately)."""
    fields: dict[str, Any] = dict(preset.extra)
    if preset.prompt_field:
        fields[preset.prompt_field] = preset.prompt.format(
            line=spec.line, speech=spec.speech, language=spec.language
        )
    if preset.duration_field:
        seconds = made_seconds(preset, spec.seconds)
        fields[preset.duration_field] = (
            seconds if preset.duration_format is None else preset.duration_format.format(seconds)
        )
    if preset.seed_field:
        fields[preset.seed_field] = spec.seed
    voice_id = spec.voice_id or (preset.voices.get(spec.voice) if spec.voice else None)
    if preset.voice_field and voice_id:
        name = preset.voice_field.removesuffix("[]")
        fields[name] = [voice_id] if preset.voice_field.endswith("[]") else voice_id
    if preset.audio_field and spec.audio_url:
        fields[preset.audio_field] = spec.audio_url  # the spoken line from stage one
    return fields


@dataclass(frozen=True)
class PresetRow:
    """One line of ``actorbot presets``."""

    name: str
    title: str
    provider: str
    model: str
    durations: str
    price: str
    voice: str
    configured: bool


def preset_rows(settings: Settings) -> list[PresetRow]:
    """Describe every configured preset: lengths, price per clip, what stays stable."""
    rows = []
    for name, preset in sorted(settings.presets.items()):
        lengths = ", ".join(
            f"{asked} s" if made == asked else f"{asked}->{made} s"
            for asked, made in sorted(preset.durations.items())
        )
        if preset.price_per_second is None:
            price = "unknown"
        else:
            price = " / ".join(
                f"${preset.price_per_second * made:.2f}"
                for _, made in sorted(preset.durations.items())
            )
        if preset.speech is not None:
            # The clip is as long as its spoken line: these are the most it can be.
            lengths = f"as spoken, up to {lengths}"
            price = price if price == "unknown" else f"up to {price}"
        stable = []
        if preset.voice_field or "voice_id" in preset.keeps:
            stable.append("voice id")
        if "reference_audio" in preset.keeps:
            stable.append("reference audio")
        if preset.speech is not None:
            stable.append("voice (two-stage)")
        provider = getattr(settings.providers, preset.provider)
        rows.append(
            PresetRow(
                name=name,
                title=preset.title or name,
                provider=preset.provider,
                model=preset.model,
                durations=lengths,
                price=price,
                voice=", ".join(stable) or "no",
                configured=bool(provider.key.get_secret_value()),
            )
        )
    return rows
