"""Video backends and the factory that builds the configured one."""

from __future__ import annotations

from config.settings import Settings
from core.backends.base import BackendState, BackendStatus, RenderSpec, VideoBackend

__all__ = ["BackendState", "BackendStatus", "RenderSpec", "VideoBackend", "create_backend"]


def create_backend(settings: Settings) -> VideoBackend:
    """Build the backend named by ``settings.backend``."""
    if settings.backend == "jobapi":
        from core.backends.jobapi import JobApiBackend

        return JobApiBackend(settings=settings.jobapi)
    from core.backends.preview import PreviewBackend

    return PreviewBackend(work_dir=settings.data_dir / "preview", settings=settings.preview)
