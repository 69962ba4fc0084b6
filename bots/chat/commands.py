"""Commands: /start, /help, /cancel, /lang, /history, /quota, /link, /access, /character."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import RequestRejected, UserError
from core.i18n import DEFAULT_LOCALE, render, render_for
from core.models import UserRef
from core.quotas import time_left
from core.service import Service
from core.storage import ChatStore, JobStore
from core.storage.types import Character

from . import intents
from .access import AccessDesk, Applicant, applicant_of
from .intents import CharacterAction, Command, Said
from .platform import Platform, PlatformError, Video
from .replies import ReplyOnce
from .texts import stats_summary

log = logging.getLogger(__name__)

# The command menu, in order; each has a description key chat.cmd.<name>.
MENU = ("gen", "character", "help", "quota", "cancel", "history", "lang", "link", "start")
# Commands that only make sense beside another chat platform.
NEEDS_PEERS = frozenset({"link"})


def menu(peers: Sequence[str]) -> tuple[str, ...]:
    """Return the commands offered when ``peers`` run beside this platform."""
    return tuple(name for name in MENU if peers or name not in NEEDS_PEERS)


_LANGUAGE_NAMES = {
    "en": "en", "english": "en", "英文": "en", "英语": "en",
    "zh": "zh", "cn": "zh", "chinese": "zh", "中文": "zh", "汉语": "zh", "zh-cn": "zh",
    "zh-hans": "zh",
}  # fmt: skip


@dataclass(frozen=True)
class ChatOptions:
    """The conversation's settings, read from the platform's section of the settings."""

    admins: frozenset[str]  # platform user ids of the bot's admins
    photo_memory_seconds: float  # a line may follow its photo this long
    history_size: int  # videos /history sends again
    max_takes: int  # takes one request may ask for (named in /help)
    peers: tuple[str, ...] = ()  # other chat platforms running beside this one (/link)


class Commands:
    """Answer commands; every answer goes through ``ReplyOnce`` (no repeat on replay)."""

    def __init__(
        self,
        platform: Platform,
        service: Service,
        store: JobStore,
        chatstate: ChatStore,
        options: ChatOptions,
        access: AccessDesk,
    ) -> None:
        self._platform = platform
        self._service = service
        self._store = store
        self._chatstate = chatstate
        self._options = options
        self._access = access

    async def run(self, said: Said, command: Command, locale: str, reply: ReplyOnce) -> None:
        """Run one command."""
        handler = getattr(self, f"_c_{command.name}", None)
        if command.name in NEEDS_PEERS and not self._options.peers:
            handler = None  # nothing to reach: as unknown as any other bot's command
        if handler is None:
            return  # unknown commands are not ours to answer (other bots share groups)
        if command.name == "character":
            await self._character(said, command, locale, reply)
            return
        await handler(said, command.args, locale, reply)

    def _applicant(self, said: Said, locale: str) -> Applicant:
        return applicant_of(said.person, said.origin.place.chat_id, locale)

    def _is_admin(self, said: Said) -> bool:
        return said.person.admin or said.person.user_id in self._options.admins

    async def _c_start(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        text = render("chat.start", locale)
        if self._access.required:
            # A newcomer asks for access by starting the bot, not by a first refused request.
            asked = await self._access.ask(self._applicant(said, locale))
            text = text if asked is None else f"{text}\n\n{asked}"
        await reply.send(text)

    async def _c_access(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        if not self._access.required:
            await reply.send(render("chat.access_open", locale))
            return
        asked = await self._access.ask(self._applicant(said, locale))
        await reply.send(asked or render("chat.access_open", locale))

    async def _c_pending(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        if not self._is_admin(said):
            await reply.send(render("chat.admin_only", locale))
            return
        platform = self._platform.name
        waiting = [p for p in await self._service.accounts.pending() if p[1] == platform]
        if not waiting:
            await reply.send(render("chat.pending_none", locale))
            return
        await reply.send(render("chat.pending_count", locale, count=len(waiting)))
        for account_id, _, user_id, name in waiting:
            chosen = await self._chatstate.locale(platform, user_id)
            # Where they asked is not stored: the outcome goes to their private chat.
            applicant = Applicant(user_id, name, None, user_id, chosen or DEFAULT_LOCALE)
            await self._access.offer(said.origin.place.chat_id, account_id, applicant)

    async def _c_help(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        text = render("chat.help", locale, max_takes=self._options.max_takes)
        if self._options.peers:
            names = ", ".join(peer.capitalize() for peer in self._options.peers)
            text = f"{text}\n" + render("chat.help_link", locale, platforms=names)
        await reply.send(text)

    async def _c_lang(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        chosen = _LANGUAGE_NAMES.get(args.strip().lower())
        if chosen is None:
            await reply.send(render("chat.lang_usage", locale))
            return
        await self._chatstate.set_locale(self._platform.name, said.person.user_id, chosen)
        await reply.send(render("chat.lang_set", chosen))

    async def _c_cancel(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        user = said.person.ref(locale)
        canceled = await self._service.cancel_waiting(user, said.origin.place.chat_id)
        key = "chat.canceled" if canceled else "chat.nothing_to_cancel"
        await reply.send(render(key, locale, count=canceled))

    async def _c_history(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        items = await self._chatstate.history(
            self._platform.name, said.person.user_id, self._options.history_size
        )
        if not items:
            await reply.send(render("chat.history_empty", locale))
            return
        # Sent again by the platform's file id: nothing is uploaded again.
        place = said.origin.place
        videos = [Video(item.file_ref, item.caption) for item in items]
        album = self._platform.capabilities.albums
        if len(videos) == 1 or album < 2:
            for video in videos:
                await self._platform.send_video(place, video)
            return
        await self._platform.send_album(place, videos[:album])

    async def _c_quota(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        balance = await self._service.accounts.balance(said.person.ref(locale))
        hours, minutes = time_left(balance.resets_at, time.time())
        text = render(
            "quota.balance", locale, credits=balance.credits, hours=hours, minutes=minutes
        )
        await reply.send(text)

    async def _c_link(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        user = said.person.ref(locale)
        try:
            if args:
                linked = await self._service.accounts.link(user, args)
                lines = [render("access.linked", locale)]
                lines += [
                    render("character.renamed_on_link", locale, old=old, new=new)
                    for old, new in linked.renamed
                ]
                await reply.send("\n".join(lines))
                return
            code = await self._service.accounts.link_code(user)
        except RequestRejected as exc:
            await reply.send(self._refusal(exc, locale))
            return
        await reply.send(render("access.link_code", locale, code=code.code, minutes=code.minutes))

    async def _c_character(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        await self._character(said, Command("character", args), locale, reply)

    async def _character(self, said: Said, command: Command, locale: str, reply: ReplyOnce) -> None:
        """Parse /character's text (chat platforms' commands), then run it."""
        words = command.args.split(maxsplit=2)
        action = words[0].lower() if words else ""
        name = words[1] if len(words) > 1 else ""
        if action == "list":
            parsed = CharacterAction("list")
        elif action == "save" and name:
            about = words[2] if len(words) > 2 else ""
            parsed = CharacterAction("save", name, photo=command.photo, description=about)
        elif action == "create" and name:
            about = words[2] if len(words) > 2 else ""
            parsed = CharacterAction("create", name, description=about)
        elif action == "voice" and len(words) == 2:
            parsed = CharacterAction("voice", name, audio=command.audio)
        elif action == "voice" and len(words) == 3:
            parsed = CharacterAction("voice", name, voice=words[2])
        elif action in ("delete", "share") and len(words) == 2:
            parsed = CharacterAction(action, name)
        else:
            await reply.send(render("character.usage", locale))
            return
        await self.character(said, parsed, locale, reply)

    async def character(
        self, said: Said, act: CharacterAction, locale: str, reply: ReplyOnce
    ) -> None:
        """Save, list, voice, share or delete the user's characters (any platform)."""
        await reply.send(await self._character_answer(said, act, locale))

    async def _character_answer(self, said: Said, act: CharacterAction, locale: str) -> str:
        user = said.person.ref(locale)
        characters = self._service.characters
        name = act.name.removeprefix("@")
        try:
            if act.action == "list":
                return self._character_list(await characters.list(user), locale)
            if act.action == "save":
                if act.photo is None:
                    return render("character.need_photo", locale, name=act.name)
                try:
                    photo = await self._platform.download(act.photo)
                except PlatformError as exc:
                    log.warning("could not fetch the character photo: %s", exc)
                    return render("chat.fetch_failed", locale)
                saved = await characters.save(
                    user, act.name, photo, voice=act.voice, seed=act.seed,
                    description=act.description,
                )  # fmt: skip
                return render("character.saved", locale, name=saved.name)
            if act.action == "create":
                await self._create(said, act.name, act.description, locale)
                portraits = self._service.portraits
                return render(
                    "portrait.started", locale, name=name, count=portraits.count,
                    cost=portraits.cost(user),
                )  # fmt: skip
            if act.action == "voice" and act.voice is None:
                return await self._character_voice_sample(user, act, locale)
            if act.action == "voice" and act.voice is not None:
                await characters.set_voice(user, act.name, act.voice)
                return render("character.voice_set", locale, name=name, voice=act.voice)
            if act.action == "delete":
                await characters.delete(user, act.name)
                return render("character.deleted", locale, name=name)
            if act.action == "share":
                await characters.share(user, act.name, said.origin.place.chat_id)
                return render("character.shared", locale, name=name)
            return render("character.usage", locale)
        except UserError as exc:
            return self._refusal(exc, locale)

    def _refusal(self, exc: UserError, locale: str) -> str:
        """Render a refusal as this platform words it (its way to save a character)."""
        return render_for(self._platform.name, exc.key, locale, **exc.params)

    async def _character_voice_sample(
        self, user: UserRef, act: CharacterAction, locale: str
    ) -> str:
        """Store the recording a ``/character voice NAME`` carries or replies to as its voice."""
        bare = act.name.removeprefix("@")
        if act.audio is None:
            return render_for(self._platform.name, "character.need_voice", locale, name=bare)
        characters = self._service.characters
        size = act.audio.file_size
        if size is not None and size > characters.max_voice_bytes:
            # Refused before it is downloaded, let alone decoded.
            limit_mb = max(1, round(characters.max_voice_bytes / 1_000_000))
            return render("voice.too_big", locale, limit_mb=limit_mb)
        try:
            audio = await self._platform.download(act.audio)
        except PlatformError as exc:
            log.warning("could not fetch the voice sample: %s", exc)
            return render("chat.fetch_failed", locale)
        saved = await characters.set_voice_sample(user, bare, audio)
        return render("character.voice_sample_set", locale, name=saved.name)

    async def _create(self, said: Said, name: str, description: str, locale: str) -> None:
        """Record (and pay for) drawing a character; the worker shows the candidates here."""
        address = intents.address_for(
            self._platform.name, said.origin, user_id=said.person.user_id, locale=locale
        )
        await self._service.portraits.create(said.person.ref(locale), address, name, description)

    def _character_list(self, characters: list[Character], locale: str) -> str:
        if not characters:
            return render_for(self._platform.name, "character.list_empty", locale)
        limit = self._service.characters.limit
        lines = [render("character.list_header", locale, count=len(characters), limit=limit)]
        for character in characters:
            seed = "" if character.seed is None else f" · seed {character.seed}"
            about = f" · {character.description}" if character.description else ""
            recorded = render("character.voice_recorded", locale)
            voice = character.voice or (recorded if character.voice_sample else "—")
            item = {"name": character.name, "voice": voice, "seed": seed, "description": about}
            lines.append(render("character.list_item", locale, **item))
        return "\n".join(lines)

    async def _c_grant(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        await self._admin(said, "grant", args, locale, reply)

    async def _c_ban(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        await self._admin(said, "ban", args, locale, reply)

    async def _c_unban(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        await self._admin(said, "unban", args, locale, reply)

    async def _admin(
        self, said: Said, action: str, args: str, locale: str, reply: ReplyOnce
    ) -> None:
        """Run an admin action on a user named by id, or by replying to their message."""
        if not self._is_admin(said):
            await reply.send(render("chat.admin_only", locale))
            return
        words = args.split()
        if said.target is not None:
            target = said.target
        elif words and words[0].isdigit():
            target = words.pop(0)
        else:
            await reply.send(render("chat.admin_usage", locale))
            return
        accounts = self._service.accounts
        platform = self._platform.name
        user = UserRef(platform, target)
        actor = f"{platform}:{said.person.user_id}"
        account = await accounts.account_id(user, create=action == "grant")
        if account is None:
            await reply.send(render("access.unknown_account", locale))
            return
        if action == "grant":
            if not words or not words[0].isdigit():
                await reply.send(render("chat.admin_usage", locale))
                return
            await accounts.grant(account, int(words[0]), actor=actor)
        elif action == "ban":
            await accounts.ban(account, actor=actor, reason=" ".join(words))
        else:
            await accounts.unban(account, actor=actor)
        await reply.send(render("chat.admin_done", locale, action=action, user_id=target))

    async def _c_stats(self, said: Said, args: str, locale: str, reply: ReplyOnce) -> None:
        if not self._is_admin(said):
            await reply.send(render("chat.admin_only", locale))
            return
        counts = await self._store.count_by_state()
        summary = stats_summary({state.value: count for state, count in counts.items()})
        await reply.send(render("chat.stats", locale, summary=summary))
