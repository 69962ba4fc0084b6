"""Hosted video providers (fal, Replicate, the GAGA platform) behind model presets."""

from __future__ import annotations

import httpx

from config.settings import Settings
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
    """Build the backend for one preset, sharing ``client`` when the caller gives one."""
    preset = settings.presets[preset_name]
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
