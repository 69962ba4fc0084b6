"""Model presets: our request (image, line, seconds, seed, voice) onto a model's fields.

A preset is configuration (config.settings.PresetSettings), not code: adding a model is a
config block. This module only reads presets; the provider backends send what it builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from config.settings import PresetSettings, Settings
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
        stable = []
        if preset.voice_field or "voice_id" in preset.keeps:
            stable.append("voice id")
        if "reference_audio" in preset.keeps:
            stable.append("reference audio")
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
