"""Hosted video providers (fal, Replicate, the GAGA platform) behind model presets."""

from __future__ import annotations

import httpx

from config.settings import Settings
from core.backends.providers.common import ProviderBackend


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
            client=client, deadline_seconds=deadline,
        )  # fmt: skip
    if preset.provider == "replicate":
        from core.backends.providers.replicate import ReplicateBackend

        return ReplicateBackend(
            name=preset_name, preset=preset, settings=settings.providers.replicate,
            client=client, deadline_seconds=deadline,
        )  # fmt: skip
    from core.backends.providers.gaga import GagaBackend

    return GagaBackend(
        name=preset_name, preset=preset, settings=settings.providers.gaga,
        client=client, deadline_seconds=deadline,
    )  # fmt: skip
