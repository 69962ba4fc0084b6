"""The composition root: build store, backends, worker and service from settings."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from bots.provider_webhooks import WebhookReceiver
from config.settings import Settings
from core.backends import VideoBackend, create_backends
from core.failpoints import Failpoints
from core.notify import Notifier, NotifierRouter
from core.portraits import PortraitRunner, image_model
from core.retention import Retention
from core.service import Service
from core.storage import Storage, open_storage
from core.takecheck import TakeChecks
from core.voice_ids import VoiceIds
from core.worker import Worker

# Until the store has measured real runs, the preview renderer is quick and providers slow
# (a preset says how slow: its expected_run_seconds).
_FIRST_GUESS_RUN_SECONDS = {"preview": 8.0, "jobapi": 120.0}
# Directories under data_dir whose entries are named after jobs (see core/retention.py).
_WORK_DIRS = ("results", "preview", "telegram", "discord", "web")


class Readiness(Protocol):
    """A running adapter, as readiness sees it."""

    def ready(self) -> bool:
        """Return whether it is connected and taking (or sending) platform traffic."""
        ...


@dataclass
class Runtime:
    """Everything one process runs, built once and closed together."""

    settings: Settings
    storage: Storage
    backend: VideoBackend  # the first of ``backends``: it takes every new job
    router: NotifierRouter
    service: Service
    worker: Worker
    client: httpx.AsyncClient  # every backend's HTTP calls share its connection pool
    backends: tuple[VideoBackend, ...] = ()
    webhooks: WebhookReceiver | None = None  # provider callbacks, when enabled
    # The adapters this process runs, by platform: None while one is still starting.
    adapters: dict[str, Readiness | None] = field(default_factory=dict)


def first_guess_run_seconds(settings: Settings) -> float:
    """Return the run time ETAs assume before the store has measured one."""
    name = settings.backend_chain[0]
    preset = settings.presets.get(name)
    if preset is not None:
        return preset.expected_run_seconds
    return _FIRST_GUESS_RUN_SECONDS.get(name, 60.0)


@asynccontextmanager
async def open_runtime(
    settings: Settings, notifiers: Mapping[str, Notifier]
) -> AsyncIterator[Runtime]:
    """Open the store and backends, wire the worker and service, and close them on exit."""
    storage = await open_storage(settings)
    try:
        async with httpx.AsyncClient() as client:
            backends = create_backends(settings, client)
            backend = backends[0]
            try:
                router = NotifierRouter(notifiers)
                failpoints = Failpoints(settings.debug.failpoints)
                service = Service(
                    storage=storage,
                    notifier=router,
                    images=settings.images,
                    prompts=settings.prompts,
                    slots=backend.slots,
                    default_run_seconds=first_guess_run_seconds(settings),
                    failpoints=failpoints,
                    quotas=settings.quotas,
                    run_backend=backend.name,
                    characters=settings.characters,
                    portraits=settings.portraits,
                    image_preset=settings.image_preset,
                )
                preset = settings.image_preset
                owner = f"portraits:{uuid.uuid4().hex[:12]}"
                portraits = PortraitRunner(
                    store=storage.portraits,
                    model=None if preset is None else image_model(
                        settings.portraits.image_preset, preset, settings.providers.fal,
                        count=settings.portraits.candidates, client=client,
                    ),
                    notifier=router,
                    settings=settings.portraits,
                    images=settings.images,
                    work_dir=settings.data_dir / "portraits",
                    owner=owner,
                    lease_seconds=settings.worker.lease_seconds,
                )  # fmt: skip
                service.portraits.set_wake(portraits.wake)
                worker = Worker(
                    store=storage.jobs,
                    backend=backend,
                    fallbacks=backends[1:],
                    notifier=router,
                    settings=settings.worker,
                    results_dir=settings.data_dir / "results",
                    failpoints=failpoints,
                    eta=service.eta_for,
                    # Where per-job files live: results, preview renders, upload re-encodes.
                    take_checks=TakeChecks(
                        settings.takecheck,
                        {
                            n: settings.presets[n]
                            for n in settings.backend_chain
                            if n in settings.presets
                        },
                    ),
                    wakeups=storage.wakeups,
                    voices=VoiceIds(storage.characters),
                    portraits=portraits,
                    retention=Retention(
                        store=storage.jobs,
                        chats=storage.chats,
                        settings=settings.retention,
                        work_dirs=[settings.data_dir / name for name in _WORK_DIRS],
                    ),
                )
                service.set_wake(worker.wake)
                webhooks = None
                if settings.webhooks.enabled:
                    webhooks = WebhookReceiver(settings.webhooks, backends)
                    await webhooks.start()
                try:
                    yield Runtime(
                        settings, storage, backend, router, service, worker, client,
                        tuple(backends), webhooks,
                    )  # fmt: skip
                finally:
                    if webhooks is not None:
                        await webhooks.stop()
            finally:
                for each in backends:
                    await each.aclose()
    finally:
        await storage.close()
