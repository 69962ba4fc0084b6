"""A character from a description: candidates drawn by a hosted image model, one picked.

``Portraits`` is what adapters call: ``create`` debits the credits and records the request
in one transaction (nothing is sent yet), ``pick`` saves the chosen candidate through
``Characters.save`` (same preparation, limits and storage as a photo), ``cancel`` drops
them. ``PortraitRunner`` is the worker role's part: it leases recorded requests and takes
each to its end. Money and durability follow the job worker's rules:

- the state ``submitting`` is committed before the model is called, and the handle right
  after it answers; a request found ``submitting`` after a crash is looked up in the
  provider's listing (matched on its input), never submitted again;
- a definite failure or a content refusal fails the request and refunds it in the same
  transaction, once; an outcome that is not known yet (a poll that failed) is retried;
- candidates are stored (prepared 16:9 JPEGs) until one is picked or they expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from PIL import Image

from config.models import ImagePresetSettings, PortraitSettings, PresetSettings
from config.settings import ImageSettings
from core.backends.base import BackendState, RenderSpec
from core.backends.providers.fal import FalImages
from core.characters import MAX_DESCRIPTION_CHARS, Characters, check_name
from core.errors import BackendError, ContentFiltered, RequestRejected, UserError
from core.images import prepare_image_async
from core.models import DeliveryAddress, UserRef
from core.notify import NotifierRouter
from core.quotas import Quotas
from core.storage.types import Character, NewPortrait, Portrait, PortraitState, new_id

if TYPE_CHECKING:
    from config.models import FalSettings
    from core.storage import AccountStore, PortraitStore

log = logging.getLogger(__name__)

_RETRY_SECONDS = 2.0  # after a poll that could not reach the provider


def image_model(
    name: str,
    preset: ImagePresetSettings,
    fal: FalSettings,
    *,
    count: int,
    client: httpx.AsyncClient | None = None,
) -> FalImages:
    """Return the backend that asks ``preset``'s model for ``count`` images per request."""
    # The description (already put in the preset's template) travels as the line.
    as_video_preset = PresetSettings(
        provider=preset.provider,
        model=preset.model,
        title=preset.title,
        prompt_field=preset.prompt_field,
        prompt="{line}",
        duration_field="",
        extra={**preset.extra, preset.count_field: count},
        take_check=False,
    )
    return FalImages(name=name, preset=as_video_preset, settings=fal, client=client)


def _spec(portrait: Portrait) -> RenderSpec:
    """Return what the image backend sends for a request (rebuilt alike after a restart)."""
    return RenderSpec(
        job_id=portrait.id, image_jpeg=b"", width=0, height=0, line=portrait.prompt,
        speech="", language="other", seconds=5, seed=0, voice=None,
        submitted_after=portrait.submitted_at or portrait.created_at,
    )  # fmt: skip


def _check_image(path: Path) -> None:
    """Refuse a downloaded candidate that is not an image (decoded later, when prepared)."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as exc:  # Pillow raises many kinds for a bad file
        raise BackendError(
            "result refused: not an image", transient=False, key="job.bad_result"
        ) from exc


class Portraits:
    """Create, pick and cancel candidate portraits for a user's new character."""

    def __init__(
        self,
        store: PortraitStore,
        accounts: AccountStore,
        characters: Characters,
        quotas: Quotas,
        settings: PortraitSettings,
        *,
        preset: ImagePresetSettings | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._characters = characters
        self._quotas = quotas
        self._settings = settings
        self._preset = preset
        self._clock = clock
        self._wake: Callable[[], None] = lambda: None

    def set_wake(self, wake: Callable[[], None]) -> None:
        """Tell the runner there is a new request (set once the worker exists)."""
        self._wake = wake

    @property
    def available(self) -> bool:
        """Return whether an image model with a key is configured."""
        return self._preset is not None

    @property
    def count(self) -> int:
        """Return how many candidates a request draws."""
        return self._settings.candidates

    def cost(self, user: UserRef) -> int:
        """Return what drawing a character costs this user in credits."""
        if not self._quotas.enabled or self._quotas.exempt(user):
            return 0
        return self._quotas.settings.portrait_cost

    async def create(
        self, user: UserRef, address: DeliveryAddress, name: str, description: str
    ) -> Portrait:
        """Debit and record a request for candidates; the worker draws them."""
        if self._preset is None:
            raise RequestRejected("portrait.unavailable")
        name = check_name(name)
        description = " ".join(description.split())
        if not description:
            raise RequestRejected("portrait.need_description", name=name)
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise RequestRejected("character.description_too_long", limit=MAX_DESCRIPTION_CHARS)
        self._quotas.check_flood(user)
        now = self._clock()
        new = NewPortrait(
            id=new_id(), name=name, description=description,
            prompt=self._preset.prompt.format(description=description),
            preset=self._settings.image_preset, address=address,
        )  # fmt: skip
        portrait = await self._store.create_portrait(
            new, user, policy=self._quotas.policy(user, now), cost=self.cost(user), now=now
        )
        self._wake()
        return portrait

    async def pick(self, user: UserRef, portrait_id: str, number: int) -> Character:
        """Save candidate ``number`` as the character, once; a later press is refused."""
        account = await self._accounts.account_of(user)
        now = self._clock()
        jpeg = None
        if account is not None:
            jpeg = await self._store.pick_portrait(portrait_id, account.id, number, now)
        portrait = await self._store.portrait(portrait_id)
        if jpeg is None or portrait is None:
            raise RequestRejected("portrait.gone")
        try:
            saved = await self._characters.save(
                user, portrait.name, jpeg, description=portrait.description
            )
        except UserError:
            # Not saved (e.g. the account is full): the candidates stay for another press.
            await self._store.unpick_portrait(portrait_id, now)
            raise
        await self._store.drop_candidates(portrait_id)
        return saved

    async def cancel(self, user: UserRef, portrait_id: str) -> None:
        """Drop a ready request's candidates without saving any."""
        account = await self._accounts.account_of(user)
        if account is None or not await self._store.cancel_portrait(
            portrait_id, account.id, self._clock()
        ):
            raise RequestRejected("portrait.gone")

    async def portrait(self, portrait_id: str) -> Portrait | None:
        """Return a request as stored."""
        return await self._store.portrait(portrait_id)

    async def candidates(self, portrait_id: str) -> list[bytes]:
        """Return a ready request's candidates (prepared 16:9 JPEGs), in order."""
        return await self._store.candidates(portrait_id)


class PortraitRunner:
    """The worker role's part: take every recorded request to its end, after a crash too."""

    def __init__(
        self,
        *,
        store: PortraitStore,
        model: FalImages | None,
        notifier: NotifierRouter,
        settings: PortraitSettings,
        images: ImageSettings,
        work_dir: Path,
        owner: str,
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._model = model
        self._notifier = notifier
        self._settings = settings
        self._images = images
        self._work_dir = work_dir
        self._owner = owner
        self._lease = lease_seconds
        self._clock = clock
        self._woken = asyncio.Event()
        self._driving: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Look for new requests now."""
        self._woken.set()

    async def run(self) -> None:
        """Claim and drive requests until canceled; expire unpicked candidates."""
        try:
            while True:
                self._woken.clear()
                try:
                    await self.claim()
                except Exception:
                    log.exception("claiming portraits failed; retrying")
                with contextlib.suppress(TimeoutError):
                    # A lease that ran out (another process died) is found on this beat.
                    await asyncio.wait_for(self._woken.wait(), self._lease / 3)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def claim(self) -> list[asyncio.Task[None]]:
        """Lease what has work left and start driving it; return the new tasks."""
        now = self._clock()
        expired = await self._store.expire_portraits(now - self._settings.keep_hours * 3600, now)
        if expired:
            log.info("expired the unpicked candidates of %d portrait requests", expired)
        claimed = await self._store.claim_portraits(
            self._owner, lease_seconds=self._lease, now=now, limit=16
        )
        started = []
        for portrait in claimed:
            if portrait.id in self._driving:
                continue
            self._driving.add(portrait.id)
            task = asyncio.create_task(self._guarded(portrait), name=f"portrait-{portrait.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started.append(task)
        return started

    async def finish_all(self) -> None:
        """Drive everything claimable now to its end (the command line's one-shot run)."""
        while tasks := await self.claim():
            await asyncio.gather(*tasks)

    async def _guarded(self, portrait: Portrait) -> None:
        try:
            await self.drive(portrait)
        except Exception:
            # Left leased: the lease runs out and the next claim tries again.
            log.exception("portrait %s: driving it failed", portrait.id)
        finally:
            self._driving.discard(portrait.id)

    async def drive(self, portrait: Portrait) -> None:
        """Take one leased request on from its stored state."""
        if portrait.state.is_open:
            ended = await self._draw(portrait)
            if ended is None:
                return  # lease lost, or left for the next claim
            portrait = ended
        if portrait.state in (PortraitState.READY, PortraitState.FAILED) and not portrait.shown:
            await self._show(portrait)

    async def _draw(self, portrait: Portrait) -> Portrait | None:
        if self._model is None:
            return await self._fail(portrait, "portrait.unavailable", "no image model")
        spec = _spec(portrait)
        try:
            handle = await self._handle(portrait, spec)
            if handle is None:
                return None
            if isinstance(handle, Portrait):
                return handle
            return await self._finish(portrait, handle)
        except ContentFiltered as exc:
            return await self._fail(portrait, "portrait.refused", str(exc))

    async def _handle(self, portrait: Portrait, spec: RenderSpec) -> str | Portrait | None:
        """Return the model's handle: stored, found after a lost answer, or a new submit."""
        assert self._model is not None
        if portrait.state is PortraitState.RUNNING and portrait.handle:
            return portrait.handle
        if portrait.state is PortraitState.SUBMITTING:
            # The submit may have left before the crash: look it up, never send it again.
            try:
                found = await self._model.find(spec)
            except BackendError as exc:
                return await self._fail(portrait, "portrait.failed", str(exc))
            if found is None:
                log.error("portrait %s: a submit may have left, no listing shows it", portrait.id)
                return await self._fail(portrait, "portrait.failed", "submit outcome unknown")
            return await self._advance(portrait, PortraitState.RUNNING, found)
        now = self._clock()
        if not await self._store.advance_portrait(
            portrait.id, self._owner, PortraitState.SUBMITTING, lease_seconds=self._lease, now=now
        ):
            return None
        try:
            # A lost answer is settled through the listing inside submit, never repeated.
            handle = await self._model.submit(_spec(_submitted(portrait, now)))
        except ContentFiltered:
            raise
        except BackendError as exc:
            return await self._fail(portrait, "portrait.failed", str(exc))
        return await self._advance(portrait, PortraitState.RUNNING, handle)

    async def _advance(self, portrait: Portrait, state: PortraitState, handle: str) -> str | None:
        ok = await self._store.advance_portrait(
            portrait.id, self._owner, state, handle=handle, lease_seconds=self._lease,
            now=self._clock(),
        )  # fmt: skip
        return handle if ok else None

    async def _finish(self, portrait: Portrait, handle: str) -> Portrait | None:
        """Poll to the end, then store the candidates (or fail and refund)."""
        assert self._model is not None
        started = portrait.submitted_at or portrait.created_at
        give_up = started + self._settings.deadline_seconds
        while True:
            try:
                status = await self._model.wait(handle, timeout=self._lease / 3)
            except BackendError as exc:
                if not exc.transient:
                    return await self._fail(portrait, "portrait.failed", str(exc))
                log.warning("portrait %s: poll failed (%s); polling again", portrait.id, exc)
                await asyncio.sleep(_RETRY_SECONDS)
                status = None
            if await self._advance(portrait, PortraitState.RUNNING, handle) is None:
                return None  # another worker took it over
            if status is not None and status.is_final:
                break
            if self._clock() > give_up:
                with contextlib.suppress(BackendError):
                    await self._model.cancel(handle)
                return await self._fail(portrait, "portrait.failed", "deadline passed")
        if status.state is BackendState.FILTERED:
            return await self._fail(portrait, "portrait.refused", status.detail)
        if status.state is not BackendState.SUCCEEDED:
            return await self._fail(portrait, "portrait.failed", status.detail)
        try:
            candidates = await self._download(portrait, handle)
        except BackendError as exc:
            if exc.transient:
                raise  # the next claim tries the download again (the result is kept)
            return await self._fail(portrait, "portrait.failed", str(exc))
        if not await self._store.store_candidates(
            portrait.id, self._owner, candidates, self._clock()
        ):
            return None
        return await self._store.portrait(portrait.id)

    async def _download(self, portrait: Portrait, handle: str) -> list[bytes]:
        """Fetch the images under the provider's host list and caps, prepared as a photo is."""
        assert self._model is not None
        urls = (await self._model.image_urls(handle))[: self._settings.candidates]
        candidates = []
        for number, url in enumerate(urls, start=1):
            path = self._work_dir / f"{portrait.id}-{number}"
            try:
                await self._model.results.fetch(
                    url, path, max_bytes=self._settings.max_image_bytes, check=_check_image
                )
                raw = await asyncio.to_thread(path.read_bytes)
            finally:
                path.unlink(missing_ok=True)
            try:
                prepared = await prepare_image_async(raw, self._images)
            except RequestRejected as exc:
                raise BackendError(
                    f"result refused: {exc.key}", transient=False, key="job.bad_result"
                ) from exc
            candidates.append(prepared.jpeg)
        return candidates

    async def _fail(self, portrait: Portrait, key: str, detail: str) -> Portrait | None:
        log.warning("portrait %s failed (%s): %s", portrait.id, key, detail)
        if not await self._store.fail_portrait(portrait.id, self._owner, key, self._clock()):
            return None
        return await self._store.portrait(portrait.id)

    async def _show(self, portrait: Portrait) -> None:
        """Show the candidates (or the failure) to the requester, then mark it shown."""
        try:
            if portrait.state is PortraitState.READY:
                candidates = await self._store.candidates(portrait.id)
                await self._notifier.show_portraits(portrait, candidates)
            else:
                await self._notifier.portrait_failed(portrait)
        except Exception:
            # Shown at the next claim, once this lease runs out.
            log.exception("portrait %s: showing it failed", portrait.id)
            return
        await self._store.mark_shown(portrait.id, self._owner)


def _submitted(portrait: Portrait, now: float) -> Portrait:
    """Return the request as it is once marked submitting at ``now``."""
    return replace(portrait, state=PortraitState.SUBMITTING, submitted_at=now)
