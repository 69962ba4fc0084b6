"""The composition root: build store, backend, worker and service from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from config.settings import Settings
from core.backends import VideoBackend, create_backend
from core.failpoints import Failpoints
from core.notify import Notifier, NotifierRouter
from core.retention import Retention
from core.service import Service
from core.storage import Storage, open_storage
from core.worker import Worker

# Until the store has measured real runs, the preview renderer is quick and providers slow.
_FIRST_GUESS_RUN_SECONDS = {"preview": 8.0, "jobapi": 120.0}
# Directories under data_dir whose entries are named after jobs (see core/retention.py).
_WORK_DIRS = ("results", "preview", "telegram")


@dataclass
class Runtime:
    """Everything one process runs, built once and closed together."""

    settings: Settings
    storage: Storage
    backend: VideoBackend
    router: NotifierRouter
    service: Service
    worker: Worker


@asynccontextmanager
async def open_runtime(
    settings: Settings, notifiers: Mapping[str, Notifier]
) -> AsyncIterator[Runtime]:
    """Open the store and backend, wire the worker and service, and close them on exit."""
    storage = await open_storage(settings)
    try:
        backend = create_backend(settings)
        try:
            router = NotifierRouter(notifiers)
            failpoints = Failpoints(settings.debug.failpoints)
            service = Service(
                storage=storage,
                notifier=router,
                images=settings.images,
                prompts=settings.prompts,
                slots=backend.slots,
                default_run_seconds=_FIRST_GUESS_RUN_SECONDS.get(backend.name, 60.0),
                failpoints=failpoints,
                quotas=settings.quotas,
            )
            worker = Worker(
                store=storage.jobs,
                backend=backend,
                notifier=router,
                settings=settings.worker,
                results_dir=settings.data_dir / "results",
                failpoints=failpoints,
                eta=service.eta_for,
                # Where per-job files live: results, preview renders, upload re-encodes.
                retention=Retention(
                    store=storage.jobs,
                    settings=settings.retention,
                    work_dirs=[settings.data_dir / name for name in _WORK_DIRS],
                ),
            )
            service.set_wake(worker.wake)
            yield Runtime(settings, storage, backend, router, service, worker)
        finally:
            await backend.aclose()
    finally:
        await storage.close()
