"""The one entry point adapters call: admit, cancel and look up video requests."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from config.models import ImagePresetSettings, PortraitSettings
from config.settings import CharacterSettings, ImageSettings, PromptSettings, QuotaSettings
from core.accounts import Accounts
from core.characters import Characters, voice_of
from core.errors import RequestRejected
from core.failpoints import Failpoints
from core.images import prepare_image_async
from core.metrics import CREDITS_DEBITED, FLOOD_REFUSALS
from core.models import Account, EventKind, Job, JobEvent, JobState, UserRef, VideoRequest
from core.notify import NotifierRouter
from core.portraits import Portraits
from core.prompts import ParsedLine, parse_line, take_seeds
from core.quotas import Quotas
from core.storage import Storage
from core.storage.types import Character, NewTake

# Used for ETAs until the store has finished jobs to measure.
DEFAULT_RUN_SECONDS = 60.0


@dataclass(frozen=True)
class Checked:
    """A request that passed the cheap checks, waiting for its image."""

    source_key: str
    parsed: ParsedLine
    character: Character | None = None  # cast by @Name: its image, voice and seed are used


@dataclass(frozen=True)
class Admission:
    """The answer to an admitted request: its takes and where the first one stands."""

    request_id: str
    jobs: tuple[Job, ...]
    parsed: ParsedLine
    position: int | None  # 1-based place of the first take in the queue
    eta_seconds: float | None
    credits_left: int | None = None  # None when the request cost nothing


def _with_character(parsed: ParsedLine, character: Character) -> ParsedLine:
    """Return the line with the character's voice and seed where the user set none."""
    voice = parsed.voice or voice_of(character)
    seed = parsed.seed if parsed.seed is not None else character.seed
    return dataclasses.replace(parsed, voice=voice, seed=seed)


class Service:
    """Validate and persist requests; answer with queue position and ETA.

    ``accounts`` is the adapters' door to balances, access requests, admin actions and
    ``/link``.
    """

    def __init__(
        self,
        *,
        storage: Storage,
        notifier: NotifierRouter,
        images: ImageSettings,
        prompts: PromptSettings,
        slots: int,
        wake: Callable[[], None] | None = None,
        default_run_seconds: float = DEFAULT_RUN_SECONDS,
        failpoints: Failpoints | None = None,
        quotas: QuotaSettings | None = None,
        clock: Callable[[], float] = time.time,
        run_backend: str | None = None,
        characters: CharacterSettings | None = None,
        portraits: PortraitSettings | None = None,
        image_preset: ImagePresetSettings | None = None,
    ) -> None:
        self._store = storage.jobs
        self._notifier = notifier
        self._images = images
        self._prompts = prompts
        self._slots = max(1, slots)
        # After an admission or a cancel: the store's wake-ups reach workers elsewhere too.
        self._wake = wake if wake is not None else storage.wakeups.notify
        self._default_run_seconds = default_run_seconds
        # ETAs learn from this backend's runs only: a hosted model takes minutes, and
        # runs of another backend (before a config change) would mislead.
        self._run_backend = run_backend
        self._run_seconds: float | None = None
        self._failpoints = failpoints or Failpoints()
        self._clock = clock
        self.quotas = Quotas(quotas or QuotaSettings())
        self.accounts = Accounts(
            storage.accounts, storage.jobs, self.quotas, notifier=notifier, clock=clock
        )
        self.characters = Characters(
            storage.characters, storage.accounts, characters or CharacterSettings(), images,
            clock=clock,
        )  # fmt: skip
        # Characters drawn from a description (``image_preset``: None when none is usable).
        self.portraits = Portraits(
            storage.portraits, storage.accounts, self.characters, self.quotas,
            portraits or PortraitSettings(), preset=image_preset, clock=clock,
        )  # fmt: skip

    def set_wake(self, wake: Callable[[], None]) -> None:
        """Connect the worker's wake-up (it notifies the store's), called after every admission."""
        self._wake = wake

    async def check(
        self,
        user: UserRef,
        line: str,
        source_key: str,
        *,
        seconds: int | None = None,
        takes: int | None = None,
        seed: int | None = None,
        voice: str | None = None,
        character: str | None = None,
        chat_id: str | None = None,
    ) -> Checked:
        """Run the cheap checks of a request before its image is fetched; raise UserError.

        Flood, access, duplicate, line, the character it casts, caps and credits as last
        seen: an adapter calls this before it acknowledges anything, so a refused request
        costs one answer at most (and none after the flood warning: ``UserError.silent``).
        A character (``@Name`` in the line, or ``character``) is the user's own or one
        shared in ``chat_id``. Pass the result to ``submit``.
        """
        try:
            self.quotas.check_flood(user)
        except RequestRejected:
            FLOOD_REFUSALS.labels(platform=user.platform).inc()
            raise
        policy = self.quotas.policy(user, self._clock())
        seen = await self._store.precheck(user, source_key, policy.period.key)
        policy.check_access(seen.account)
        if seen.existing_request is not None:
            raise RequestRejected("request.duplicate", request_id=seen.existing_request)
        parsed = parse_line(
            line, self._prompts, seconds=seconds, takes=takes, seed=seed, voice=voice
        )
        cast = await self._cast(seen.account, user, chat_id, parsed, character)
        limits = policy.limits(seen.account.role if seen.account else "user")
        queued = seen.account.queued if seen.account else 0
        policy.check_caps(
            queued=queued, total_queued=seen.total_queued, takes=parsed.takes, limits=limits
        )
        cost = parsed.takes * policy.cost(parsed.seconds)
        if cost:
            policy.check_credits(limits.credits if seen.credits is None else seen.credits, cost)
        return Checked(source_key, parsed, cast)

    async def _cast(
        self,
        account: Account | None,
        user: UserRef,
        chat_id: str | None,
        parsed: ParsedLine,
        character: str | None,
    ) -> Character | None:
        """Return the character a request casts, or refuse one this model cannot perform."""
        names = list(parsed.characters)
        if character is not None and character.casefold() not in map(str.casefold, names):
            names.insert(0, character.removeprefix("@"))
        if not names:
            return None
        if len(names) > 1:
            # No preset declares two-person scenes yet: refuse before anything is spent.
            raise RequestRejected("character.two_person", names=", ".join(names))
        account_id = None if account is None else account.id
        return await self.characters.resolve(account_id, user.platform, chat_id, names[0])

    async def submit(self, request: VideoRequest, checked: Checked | None = None) -> Admission:
        """Validate a request, store it with its takes, and return its place in the queue.

        Cheap checks run first (``check``, unless ``checked`` says they passed for this
        request), then the image is decoded off the event loop; nothing is written unless
        everything is valid, and admission checks caps and credits again atomically.
        """
        if checked is None or checked.source_key != request.source_key:
            checked = await self.check(
                request.user,
                request.line,
                request.source_key,
                seconds=request.seconds,
                takes=request.takes,
                seed=request.seed,
                voice=request.voice,
                character=request.character,
                chat_id=request.address.chat_id,
            )
        if checked.character is not None:
            # The character's image was prepared when it was saved; a photo sent along
            # is not used (a remembered photo must not replace the cast).
            saved = await self.characters.image(checked.character)
            parsed = _with_character(checked.parsed, checked.character)
            return await self.admit_prepared(
                request, parsed, saved.jpeg, (saved.width, saved.height),
                voice_sample=checked.character.voice_sample,
            )  # fmt: skip
        image = await prepare_image_async(request.image, self._images)
        return await self.admit_prepared(
            request, checked.parsed, image.jpeg, (image.width, image.height)
        )

    async def admit_prepared(
        self,
        request: VideoRequest,
        parsed: ParsedLine,
        image_jpeg: bytes,
        image_size: tuple[int, int],
        *,
        voice_sample: str | None = None,
    ) -> Admission:
        """Store an already validated request (the second half of ``submit``).

        ``voice_sample`` is the cast character's voice sample, kept with every take.
        """
        seed = parsed.seed if parsed.seed is not None else random.randrange(2**31)
        # Without an explicit voice, every take of a user speaks with that user's own
        # voice: the reference model changes voice between takes, we do not.
        voice = parsed.voice or f"{request.user.platform}:{request.user.platform_user_id}"
        policy = self.quotas.policy(request.user, self._clock())
        takes = [
            NewTake(
                line=parsed.line,
                speech=parsed.speech,
                language=parsed.language,
                seconds=parsed.seconds,
                seed=take_seed,
                voice=voice,
                voice_sample=voice_sample,
            )
            for take_seed in take_seeds(seed, parsed.takes)
        ]
        admitted = await self._store.admit(
            user=request.user,
            source_key=request.source_key,
            line=request.line,
            image_jpeg=image_jpeg,
            image_size=image_size,
            address=request.address,
            takes=takes,
            policy=policy,
            run_backend=self._run_backend,
        )
        if admitted.credits_left is not None:  # charged: what admission debited
            debited = sum(policy.cost(take.seconds) for take in takes)
            CREDITS_DEBITED.labels(platform=request.user.platform).inc(debited)
        self._failpoints.hit("service.after_admission")
        self._wake()
        # Position and recent run time come from the admission transaction itself.
        run_seconds = admitted.run_seconds or self._default_run_seconds
        self._run_seconds = run_seconds
        position = admitted.position
        return Admission(
            request_id=admitted.request_id,
            jobs=admitted.jobs,
            parsed=parsed,
            position=position,
            eta_seconds=None if position is None else self.eta_for(position, run_seconds),
            credits_left=admitted.credits_left,
        )

    async def eta_seconds(self, position: int) -> float:
        """Estimate when a job at this queue position will be finished."""
        recent = await self._store.recent_run_seconds(backend=self._run_backend)
        run_seconds = recent if recent is not None else self._default_run_seconds
        self._run_seconds = run_seconds
        return self.eta_for(position, run_seconds)

    def eta_for(self, position: int, run_seconds: float | None = None) -> float:
        """Estimate completion time for a queue position from the mean run time."""
        per_job = run_seconds or self._run_seconds or self._default_run_seconds
        # The job starts once the jobs ahead of it have drained through the slots.
        rounds = math.ceil(position / self._slots)
        return rounds * per_job

    async def status(self, request_id: str) -> list[Job]:
        """Return every take of a request."""
        jobs = await self._store.jobs_for_request(request_id)
        if not jobs:
            raise RequestRejected("request.unknown_job")
        return jobs

    async def cancel_waiting(self, user: UserRef, chat_id: str) -> int:
        """Cancel every waiting take a user asked for in one chat; return how many."""
        canceled = 0
        for job in await self._store.waiting_jobs_of(user, chat_id):
            try:
                await self.cancel(job.id, user)
            except RequestRejected:
                continue  # it started meanwhile
            canceled += 1
        return canceled

    async def cancel(self, job_id: str, user: UserRef, *, admin: bool = False) -> Job:
        """Cancel a waiting take; only its requester (or an admin) may."""
        job = await self._store.job(job_id)
        if job is None:
            raise RequestRejected("request.unknown_job")
        if not admin and await self._store.user_id(user) != job.user_id:
            raise RequestRejected("request.not_owner")
        changed = await self._store.transition(
            job.id, JobState.CANCELED, expect={JobState.QUEUED}, error_key="job.canceled"
        )
        if not changed:
            raise RequestRejected("request.not_cancelable")
        canceled = await self._store.job(job.id)
        assert canceled is not None
        self._wake()
        await self._notifier.notify(JobEvent(EventKind.CANCELED, canceled))
        return canceled
