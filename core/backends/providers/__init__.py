"""Hosted video providers (fal, Replicate, the GAGA platform) behind model presets."""

from __future__ import annotations

import httpx

from config.models import PresetSettings
from config.settings import Settings
from core.backends.presets import speech_preset
from core.backends.providers.common import ProviderBackend


def webhook_url(settings: Settings, provider: str) -> str:
    """Return where ``provider`` should call us back, or "" (off, or no way to verify it)."""
    hooks = settings.webhooks
    if not hooks.enabled or not hooks.public_url:
        return ""
    verifiable = {
        "replicate": bool(hooks.replicate_secret.get_secret_value()),
        "fal": bool(hooks.fal_public_keys),
    }
    # A callback we cannot verify is worth nothing: do not ask for it.
    return f"{hooks.public_url.rstrip('/')}/{provider}" if verifiable.get(provider) else ""


def provider_backend(
    settings: Settings, preset_name: str, client: httpx.AsyncClient | None = None
) -> ProviderBackend:
    """Build the backend for one preset, sharing ``client`` when the caller gives one.

    A two-stage preset's backend carries its speech stage: a backend of the same provider
    for the text-to-speech model (``speech_stage``).
    """
    preset = settings.presets[preset_name]
    backend = _backend(settings, preset_name, preset, client)
    if preset.speech is not None:
        stage = _backend(settings, f"{preset_name}:speech", speech_preset(preset), client)
        stage.speaks = preset.speech
        backend.speech_stage = stage
    return backend


def _backend(
    settings: Settings,
    preset_name: str,
    preset: PresetSettings,
    client: httpx.AsyncClient | None,
) -> ProviderBackend:
    deadline = settings.worker.job_deadline_seconds
    if preset.provider == "fal":
        from core.backends.providers.fal import FalBackend

        return FalBackend(
            name=preset_name, preset=preset, settings=settings.providers.fal,
            client=client, deadline_seconds=deadline, webhook_url=webhook_url(settings, "fal"),
        )  # fmt: skip
    if preset.provider == "replicate":
        from core.backends.providers.replicate import ReplicateBackend

        return ReplicateBackend(
            name=preset_name, preset=preset, settings=settings.providers.replicate,
            client=client, deadline_seconds=deadline,
            webhook_url=webhook_url(settings, "replicate"),
        )  # fmt: skip
    from core.backends.providers.gaga import GagaBackend

    return GagaBackend(
        name=preset_name, preset=preset, settings=settings.providers.gaga,
        client=client, deadline_seconds=deadline,
    )  # fmt: skip
