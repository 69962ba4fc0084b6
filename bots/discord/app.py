"""The discord.py client and its command tree, run beside the worker in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands

from bots.chat.commands import ChatOptions
from bots.chat.conversation import Conversation
from bots.chat.delivery import ChatNotifier
from bots.chat.intents import CharacterAction
from bots.chat.status import StatusBoard
from bots.runtime import Runtime
from core.characters import MAX_DESCRIPTION_CHARS
from core.i18n import render
from core.prompts import MAX_SEED
from core.storage.characters import MAX_NAME_CHARS

from .guilds import GuildRules
from .handlers import Handlers
from .platform import PLATFORM, DiscordPlatform
from .ui import LINE_LIMIT, ActionButton

log = logging.getLogger(__name__)

CharacterName = app_commands.Range[str, 1, MAX_NAME_CHARS + 1]  # a leading @ is allowed


def text(key: str) -> app_commands.locale_str:
    """Return a command string in English, translated by ``Translator`` for Discord's zh-CN."""
    return app_commands.locale_str(render(key, "en"), key=key)


class Translator(app_commands.Translator):
    """Localize command names and descriptions from the message catalog."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        """Return the Simplified Chinese text of a catalog string (None: keep English)."""
        key = string.extras.get("key")
        if key is None or locale is not discord.Locale.chinese:
            return None
        return render(key, "zh")


class _NoInbox:
    """Interactions are never redelivered: there is nothing to replay or answer twice."""

    def first_reply(self, key: str) -> str | None:
        """Return None: no interaction is handled twice."""
        return None

    async def record_first_reply(self, key: str, message_id: str) -> None:
        """Remember nothing."""


class DiscordClient(discord.Client):
    """A client with the command tree, the persistent buttons and the adapter's handlers."""

    def __init__(self, *, guild_ids: Sequence[int], **options: Any) -> None:
        # Slash commands, buttons and forms need no privileged intent; guilds brings the
        # guilds' roles (the admin role) and upload limits.
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(intents=intents, **options)
        self.tree = app_commands.CommandTree(self)
        self.handlers: Handlers | None = None
        self._guild_ids = list(guild_ids)

    async def pressed(self, interaction: discord.Interaction, button_id: str) -> None:
        """Hand a button press to the handlers (``ActionButton`` calls this)."""
        if self.handlers is not None:
            await self.handlers.pressed(interaction, button_id)

    async def setup_hook(self) -> None:
        """Register what must answer before READY: buttons of earlier runs, the commands."""
        self.add_dynamic_items(ActionButton)
        await self.tree.set_translator(Translator())
        try:
            if self._guild_ids:
                # A guild's commands update at once; global ones may take a while to show.
                for guild_id in self._guild_ids:
                    guild = discord.Object(guild_id)
                    self.tree.copy_global_to(guild=guild)
                    await self.tree.sync(guild=guild)
            else:
                await self.tree.sync()
        except discord.HTTPException as exc:
            # The commands of the last sync stay in place; running beats not running.
            log.warning("could not sync the slash commands: %s (%s)", exc.status, exc.code)


def add_commands(
    tree: app_commands.CommandTree[Any], handlers: Handlers, peers: Sequence[str]
) -> None:
    """Add /generate, the context menus, the users' commands and the admins' commands."""
    everywhere = app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)

    @app_commands.command(name=text("discord.generate"), description=text("discord.generate.about"))
    @app_commands.rename(
        image=text("discord.image"), line=text("discord.line"),
        duration=text("discord.duration"), takes=text("discord.takes"),
        character=text("discord.character"),
    )  # fmt: skip
    @app_commands.describe(
        image=text("discord.image.about"), line=text("discord.line.about"),
        duration=text("discord.duration.about"), takes=text("discord.takes.about"),
        character=text("discord.character.about"),
    )  # fmt: skip
    @app_commands.choices(
        duration=[
            app_commands.Choice(name=text("discord.duration.auto"), value="auto"),
            app_commands.Choice(name="5s", value="5"),
            app_commands.Choice(name="10s", value="10"),
        ]
    )
    @everywhere
    async def generate(
        interaction: discord.Interaction,
        line: app_commands.Range[str, 1, LINE_LIMIT],
        image: discord.Attachment | None = None,
        character: CharacterName | None = None,
        duration: str = "auto",
        takes: app_commands.Range[int, 1, 5] = 1,
    ) -> None:
        await handlers.generate(interaction, image, line, duration, takes, character)

    @generate.autocomplete("character")
    async def castable(
        interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        return await handlers.character_choices(interaction, typed, shared=True)

    async def make_it_talk(interaction: discord.Interaction, message: discord.Message) -> None:
        await handlers.make_it_talk(interaction, message)

    async def save_as_character(interaction: discord.Interaction, message: discord.Message) -> None:
        await handlers.save_as_character(interaction, message)

    def simple(name: str) -> app_commands.Command[Any, Any, None]:
        async def run(interaction: discord.Interaction) -> None:
            await handlers.command(interaction, name)

        return app_commands.Command(name=name, description=text(f"chat.cmd.{name}"), callback=run)

    tree.add_command(generate)
    tree.add_command(
        everywhere(
            app_commands.ContextMenu(name=text("discord.make_it_talk"), callback=make_it_talk)
        )
    )
    tree.add_command(
        everywhere(
            app_commands.ContextMenu(
                name=text("discord.save_as_character"), callback=save_as_character
            )
        )
    )
    tree.add_command(everywhere(character_group(handlers)))
    for name in ("quota", "history", "cancel", "help"):
        tree.add_command(everywhere(simple(name)))

    if peers:  # one balance across platforms: only when another one runs

        @app_commands.command(name="link", description=text("chat.cmd.link"))
        @app_commands.rename(code=text("discord.code"))
        @app_commands.describe(code=text("discord.code.about"))
        @everywhere
        async def link(interaction: discord.Interaction, code: str = "") -> None:
            await handlers.command(interaction, "link", code.strip())

        tree.add_command(link)

    admins = app_commands.default_permissions(manage_guild=True)

    @app_commands.command(name="grant", description=text("discord.cmd.grant"))
    @app_commands.rename(user=text("discord.user"), credits=text("discord.credits"))
    @app_commands.describe(user=text("discord.user.about"), credits=text("discord.credits.about"))
    @admins
    async def grant(
        interaction: discord.Interaction,
        user: discord.User,
        credits: app_commands.Range[int, 1, 1_000_000],
    ) -> None:
        await handlers.command(interaction, "grant", str(credits), target=str(user.id))

    @app_commands.command(name="ban", description=text("discord.cmd.ban"))
    @app_commands.rename(user=text("discord.user"), reason=text("discord.reason"))
    @app_commands.describe(user=text("discord.user.about"), reason=text("discord.reason.about"))
    @admins
    async def ban(interaction: discord.Interaction, user: discord.User, reason: str = "") -> None:
        await handlers.command(interaction, "ban", reason, target=str(user.id))

    @app_commands.command(name="stats", description=text("discord.cmd.stats"))
    @admins
    async def stats(interaction: discord.Interaction) -> None:
        await handlers.command(interaction, "stats")

    tree.add_command(grant)
    tree.add_command(ban)
    tree.add_command(stats)
    tree.add_command(settings_group(handlers))


def character_group(handlers: Handlers) -> app_commands.Group:
    """Return /character: save, create, list, voice, share and delete the user's characters."""
    group = app_commands.Group(name="character", description=text("chat.cmd.character"))

    async def own(interaction: discord.Interaction, typed: str) -> list[app_commands.Choice[str]]:
        return await handlers.character_choices(interaction, typed, shared=False)

    @group.command(name="save", description=text("discord.cmd.character_save"))
    @app_commands.rename(
        name=text("discord.name"), image=text("discord.image"), voice=text("discord.voice"),
        seed=text("discord.seed"), description=text("discord.description"),
    )  # fmt: skip
    @app_commands.describe(
        name=text("discord.name.about"), image=text("discord.character_image.about"),
        voice=text("discord.voice.about"), seed=text("discord.seed.about"),
        description=text("discord.description.about"),
    )  # fmt: skip
    @app_commands.autocomplete(name=own)
    async def save(
        interaction: discord.Interaction,
        name: CharacterName,
        image: discord.Attachment,
        voice: app_commands.Range[str, 1, MAX_NAME_CHARS] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        description: app_commands.Range[str, 1, MAX_DESCRIPTION_CHARS] = "",
    ) -> None:
        action = CharacterAction("save", name, voice=voice, seed=seed, description=description)
        await handlers.character(interaction, action, image)

    @group.command(name="list", description=text("discord.cmd.character_list"))
    async def listing(interaction: discord.Interaction) -> None:
        await handlers.character(interaction, CharacterAction("list"))

    @group.command(name="create", description=text("discord.cmd.character_create"))
    @app_commands.rename(name=text("discord.name"), description=text("discord.description"))
    @app_commands.describe(
        name=text("discord.name.about"), description=text("discord.draw_description.about")
    )
    async def create(
        interaction: discord.Interaction,
        name: CharacterName,
        description: app_commands.Range[str, 1, MAX_DESCRIPTION_CHARS],
    ) -> None:
        action = CharacterAction("create", name, description=description)
        await handlers.character(interaction, action)

    @group.command(name="voice", description=text("discord.cmd.character_voice"))
    @app_commands.rename(
        name=text("discord.name"), voice=text("discord.voice"), sample=text("discord.sample")
    )
    @app_commands.describe(
        name=text("discord.name.about"), voice=text("discord.voice.about"),
        sample=text("discord.sample.about"),
    )  # fmt: skip
    @app_commands.autocomplete(name=own)
    async def voice(
        interaction: discord.Interaction,
        name: CharacterName,
        voice: app_commands.Range[str, 1, MAX_NAME_CHARS] | None = None,
        sample: discord.Attachment | None = None,
    ) -> None:
        await handlers.character_voice(interaction, name, voice, sample)

    def by_name(action: str) -> app_commands.Command[Any, Any, None]:
        @app_commands.rename(name=text("discord.name"))
        @app_commands.describe(name=text("discord.name.about"))
        @app_commands.autocomplete(name=own)
        async def run(interaction: discord.Interaction, name: CharacterName) -> None:
            await handlers.character(interaction, CharacterAction(action, name))

        return app_commands.Command(
            name=action, description=text(f"discord.cmd.character_{action}"), callback=run
        )

    group.add_command(by_name("share"))
    group.add_command(by_name("delete"))
    return group


def settings_group(handlers: Handlers) -> app_commands.Group:
    """Return /settings: the guild's allowed channels and daily cap (admins, guilds only)."""
    group = app_commands.Group(
        name="settings",
        description=text("discord.cmd.settings"),
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    @group.command(name="channels", description=text("discord.cmd.settings_channels"))
    @app_commands.describe(
        channel=text("discord.channel.about"), channel_2=text("discord.channel.about"),
        channel_3=text("discord.channel.about"),
    )  # fmt: skip
    async def channels(
        interaction: discord.Interaction,
        channel: app_commands.AppCommandChannel | None = None,
        channel_2: app_commands.AppCommandChannel | None = None,
        channel_3: app_commands.AppCommandChannel | None = None,
    ) -> None:
        chosen = [each.id for each in (channel, channel_2, channel_3) if each is not None]
        await handlers.set_channels(interaction, chosen)

    @group.command(name="daily_cap", description=text("discord.cmd.settings_cap"))
    @app_commands.describe(takes=text("discord.daily_cap.about"))
    async def daily_cap(
        interaction: discord.Interaction, takes: app_commands.Range[int, 0, 1_000_000]
    ) -> None:
        await handlers.set_daily_cap(interaction, takes)

    return group


@dataclass
class DiscordBot:
    """The running adapter: its client and the parts tests look at."""

    client: DiscordClient
    platform: DiscordPlatform
    board: StatusBoard
    notifier: ChatNotifier
    intake: asyncio.Task[None]
    gateway: bool = True  # connected to the gateway; False: a worker process, REST only

    def ready(self) -> bool:
        """Return whether the bot is up: logged in, its intake alive, the gateway ready."""
        if self.intake.done() or self.client.is_closed() or self.client.user is None:
            return False
        return self.client.is_ready() or not self.gateway


@contextlib.asynccontextmanager
async def run_discord(
    runtime: Runtime,
    *,
    peers: Sequence[str] = (),
    intake: bool = True,
    clock: Callable[[], float] = time.time,
    **client_options: Any,
) -> AsyncIterator[DiscordBot]:
    """Log in, sync the commands, connect to the gateway and deliver Discord's jobs.

    Start the bot before the worker claims jobs and leave it after the worker stopped: the
    worker delivers through it. ``clock`` decides when interaction tokens expire (tests).
    Without ``intake`` (a worker process) it logs in over HTTP only: it sends and edits
    through the REST API and opens no gateway connection.
    """
    settings = runtime.settings.discord
    if settings.application_id:
        client_options.setdefault("application_id", settings.application_id)
    client = DiscordClient(guild_ids=settings.guild_ids, **client_options)
    chatstate = runtime.storage.chats
    platform = DiscordPlatform(client, upload_limit=settings.upload_limit_bytes, clock=clock)
    # One lane per channel; Discord paces per route itself (and says so with a 429).
    interval = settings.edit_interval_seconds
    board = StatusBoard(
        platform, chatstate, runtime.storage.jobs, private_interval=interval,
        group_interval=interval, eta=runtime.service.eta_for,
    )  # fmt: skip
    notifier = ChatNotifier(
        platform, board, chatstate, work_dir=runtime.settings.data_dir / PLATFORM
    )
    options = ChatOptions(
        admins=frozenset(str(admin) for admin in settings.admin_ids),
        photo_memory_seconds=settings.photo_memory_seconds,
        history_size=settings.history_size,
        max_takes=runtime.settings.prompts.max_takes,
        peers=tuple(peers),
    )
    conversation = Conversation(
        platform=platform, service=runtime.service, store=runtime.storage.jobs,
        chatstate=chatstate, board=board, inbox=_NoInbox(), options=options,
    )  # fmt: skip
    guilds = GuildRules(
        chatstate, runtime.storage.jobs, runtime.service.quotas, runtime.settings.prompts,
        clock=clock,
    )  # fmt: skip
    handlers = Handlers(
        conversation, platform, settings, max_image_bytes=runtime.settings.images.max_bytes,
        guilds=guilds, characters=runtime.service.characters,
    )  # fmt: skip
    client.handlers = handlers
    add_commands(client.tree, handlers, peers)
    runtime.router.add(PLATFORM, notifier)
    try:
        await client.login(settings.token.get_secret_value())  # setup_hook runs in here
        # A worker process sends through the REST API only: no gateway of its own.
        gateway = client.connect() if intake else _forever()
        taking = asyncio.create_task(gateway, name="discord-intake")
        taking.add_done_callback(_report_intake)
        log.info("discord bot %s running", client.user)
        try:
            yield DiscordBot(client, platform, board, notifier, taking, gateway=intake)
        finally:
            await client.close()
            taking.cancel()
            await asyncio.gather(taking, return_exceptions=True)
            await board.close()
    finally:
        if not client.is_closed():
            await client.close()


async def _forever() -> None:
    await asyncio.Event().wait()


def _report_intake(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("discord gateway stopped", exc_info=task.exception())
