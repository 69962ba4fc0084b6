"""Video backends and the factory that builds the configured one."""

from __future__ import annotations

import httpx

from config.settings import BUILTIN_BACKENDS, Settings
from core.backends.base import (
    BackendCapabilities,
    BackendState,
    BackendStatus,
    RenderSpec,
    VideoBackend,
    capabilities_of,
)

__all__ = [
    "BackendCapabilities",
    "BackendState",
    "BackendStatus",
    "RenderSpec",
    "VideoBackend",
    "capabilities_of",
    "create_backend",
    "create_backends",
]


def create_backends(
    settings: Settings, client: httpx.AsyncClient | None = None
) -> list[VideoBackend]:
    """Build one backend per entry of ``settings.backend``, in fallback order.

    Presets are served by their provider's backend over ``client``, one shared connection
    pool that the caller closes.
    """
    chain = settings.backend_chain
    if chain[0] not in BUILTIN_BACKENDS:
        from core.backends.providers import provider_backend

        return [provider_backend(settings, name, client) for name in chain]
    return [create_backend(settings, client)]


def create_backend(settings: Settings, client: httpx.AsyncClient | None = None) -> VideoBackend:
    """Build the (first) backend named by ``settings.backend``."""
    chain = settings.backend_chain
    if chain[0] not in BUILTIN_BACKENDS:
        from core.backends.providers import provider_backend

        return provider_backend(settings, chain[0], client)
    if settings.backend == "jobapi":
        from core.backends.jobapi import JobApiBackend

        return JobApiBackend(settings=settings.jobapi, client=client)
    from core.backends.preview import PreviewBackend

    return PreviewBackend(work_dir=settings.data_dir / "preview", settings=settings.preview)
