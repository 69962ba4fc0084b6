"""Interactions -> the conversation's intents: slash commands, the context menu, buttons, forms.

Thin glue: every interaction is acknowledged first (a deferred "thinking" response within
Discord's 3 s), its image starts downloading at once (attachment URLs are signed and
expire), and ``bots.chat`` decides the rest. A deferred response nothing answered is removed
at the end, so none is left "thinking" forever.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Collection, Sequence

import discord
from discord import app_commands

from bots.chat.conversation import Conversation
from bots.chat.intents import CharacterAction, Command, Generate, Person, Press, Said
from bots.chat.platform import Origin, PhotoRef, Place
from config.settings import DiscordSettings
from core.characters import Characters, check_name
from core.errors import UserError
from core.i18n import normalize_locale, render
from core.models import UserRef
from core.prompts import character_names

from .guilds import Counted, GuildRules, channel_list
from .platform import PLATFORM, DiscordPlatform
from .ui import CharacterModal, LineModal

log = logging.getLogger(__name__)

DURATIONS = ("auto", "5", "10")
CHOICES = 25  # autocomplete suggestions Discord shows at most


def request_line(line: str, duration: str, takes: int) -> str:
    """Return the line with the options written as a chat user would (``--5s --takes 2``)."""
    flags = [] if duration not in ("5", "10") else [f"--{duration}s"]
    if takes > 1:
        flags.append(f"--takes {takes}")
    return " ".join([line.strip(), *flags])


def is_admin(user: discord.User | discord.Member, admin_ids: Collection[int], role: str) -> bool:
    """Return whether a user administers the bot: listed by id, or holding the admin role."""
    if user.id in admin_ids:
        return True
    if not role or not isinstance(user, discord.Member):
        return False
    # Role ids come with the interaction; names need the guild in the client's cache.
    if role.isdigit() and int(role) in user._roles:
        return True
    return any(each.name == role for each in user.roles)


def person_of(interaction: discord.Interaction, settings: DiscordSettings) -> Person:
    """Return the conversation's view of the user behind an interaction."""
    user = interaction.user
    return Person(
        PLATFORM,
        str(user.id),
        user.display_name,
        user.name,
        normalize_locale(str(interaction.locale)),
        admin=is_admin(user, settings.admin_ids, settings.admin_role),
    )


def channels_of(interaction: discord.Interaction) -> tuple[str, ...]:
    """Return the interaction's channel and, in a thread, the channel the thread is in."""
    parent = getattr(interaction.channel, "parent_id", None)
    return tuple(str(each) for each in (interaction.channel_id, parent) if each is not None)


class Handlers:
    """What each kind of interaction does."""

    def __init__(
        self,
        conversation: Conversation,
        platform: DiscordPlatform,
        settings: DiscordSettings,
        *,
        max_image_bytes: int,
        guilds: GuildRules | None = None,
        characters: Characters | None = None,
    ) -> None:
        self._conversation = conversation
        self._guilds = guilds
        self._characters = characters
        self._platform = platform
        self._settings = settings
        self._max_image_bytes = max_image_bytes
        platform.on_line = self.new_line

    def _said(
        self, interaction: discord.Interaction, original: str, target: str | None = None
    ) -> Said:
        """Return the request an interaction makes: who, where, and the way back."""
        guild = interaction.guild
        limit = interaction.filesize_limit or (guild.filesize_limit if guild else 0)
        place = Place(
            str(interaction.channel_id),
            None,  # a thread is a channel of its own on Discord
            interaction.guild_id is not None,
            self._platform.followup(interaction, int(original)).encode(),
            limit or self._settings.upload_limit_bytes,
        )
        person = person_of(interaction, self._settings)
        return Said(Origin(place, original), person, f"{PLATFORM}:{interaction.id}", target)

    async def _defer(self, interaction: discord.Interaction, *, ephemeral: bool) -> str | None:
        """Acknowledge at once; return the id of the response message to fill in later."""
        try:
            callback = await interaction.response.defer(thinking=True, ephemeral=ephemeral)
            message_id = None if callback is None else callback.message_id
            if message_id is None:
                message_id = (await interaction.original_response()).id
        except discord.HTTPException as exc:
            # Too late (10062) or refused: nothing was promised, so nothing is stored.
            log.warning("could not acknowledge interaction %s: %s", interaction.id, exc.status)
            return None
        self._platform.deferred(str(message_id), ephemeral=ephemeral)
        return str(message_id)

    async def _say(
        self,
        said: Said,
        intent: Generate | Command | CharacterAction,
        counted: Counted | None = None,
    ) -> None:
        try:
            await self._conversation.said(said, intent)
        finally:
            await self._platform.settle(said.origin.place, said.origin.message_id)
            if counted is not None and self._guilds is not None:
                await self._guilds.settle(counted, said.key)

    async def _guild_allows(
        self, interaction: discord.Interaction, line: str
    ) -> tuple[bool, Counted | None]:
        """Check the guild's channels and daily cap before acknowledging; refuse privately."""
        if interaction.guild_id is None or self._guilds is None:
            return True, None
        locale = normalize_locale(str(interaction.locale))
        takes = self._guilds.takes_of(line)
        result = await self._guilds.count(
            str(interaction.guild_id), channels_of(interaction), takes, locale
        )
        if isinstance(result, str):
            await interaction.response.send_message(result, ephemeral=True)
            return False, None
        return True, result

    async def _give_back(self, counted: Counted | None, key: str) -> None:
        if counted is not None and self._guilds is not None:
            await self._guilds.settle(counted, key)

    # --- requests --------------------------------------------------------------------

    async def generate(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment | None,
        line: str,
        duration: str,
        takes: int,
        character: str | None = None,
    ) -> None:
        """/generate: download the image, then the conversation checks and admits.

        ``character`` casts a saved character as ``@Name`` in the line would: its picture
        is used, so the image may be left out.
        """
        text = request_line(line, duration, takes)
        locale = normalize_locale(str(interaction.locale))
        if character:
            try:
                text = f"@{check_name(character)} {text}"
            except UserError as exc:
                answer = render(exc.key, locale, **exc.params)
                await interaction.response.send_message(answer, ephemeral=True)
                return
        if image is None and not character_names(text):
            answer = render("discord.need_image_or_character", locale)
            await interaction.response.send_message(answer, ephemeral=True)
            return
        allowed, counted = await self._guild_allows(interaction, text)
        if not allowed:
            return
        key = f"{PLATFORM}:{interaction.id}"
        if image is not None:
            self._platform.fetch(key, image, self._max_image_bytes)
        original = await self._defer(interaction, ephemeral=False)
        if original is None:
            self._platform.forget_download(key)
            await self._give_back(counted, key)
            return
        photo = None if image is None else PhotoRef(key, image.size, 0, as_document=True)
        try:
            await self._say(self._said(interaction, original), Generate(text, photo), counted)
        finally:
            self._platform.forget_download(key)

    async def make_it_talk(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        """Answer "Make it talk" on a message: fetch its image, ask for the line in a form."""
        locale = normalize_locale(str(interaction.locale))
        images = [a for a in message.attachments if (a.content_type or "").startswith("image/")]
        attachments = images or message.attachments
        if not attachments:
            await interaction.response.send_message(
                render("discord.need_image", locale), ephemeral=True
            )
            return
        if interaction.guild_id is not None and self._guilds is not None:
            # Only the channels here; the takes are counted once the line is known.
            refused, _ = await self._guilds.refusal(
                str(interaction.guild_id), channels_of(interaction), locale
            )
            if refused is not None:
                await interaction.response.send_message(refused, ephemeral=True)
                return
        attachment = attachments[0]
        key = f"{PLATFORM}:{interaction.id}"
        self._platform.fetch(key, attachment, self._max_image_bytes)
        on_line = functools.partial(self._line_for_image, key, attachment.size)
        modal = LineModal(
            render("discord.line_title", locale),
            render("chat.ask_line_placeholder", locale),
            on_line,
        )
        try:
            await interaction.response.send_modal(modal)
        except discord.HTTPException:
            self._platform.forget_download(key)
            raise

    async def _line_for_image(
        self, key: str, size: int, interaction: discord.Interaction, line: str
    ) -> None:
        allowed, counted = await self._guild_allows(interaction, line)
        if not allowed:
            self._platform.forget_download(key)
            return
        original = await self._defer(interaction, ephemeral=False)
        if original is None:
            self._platform.forget_download(key)
            await self._give_back(counted, f"{PLATFORM}:{interaction.id}")
            return
        photo = PhotoRef(key, size, 0, as_document=True)
        try:
            await self._say(self._said(interaction, original), Generate(line, photo), counted)
        finally:
            self._platform.forget_download(key)

    async def new_line(self, interaction: discord.Interaction, line: str) -> None:
        """Make a new line's video from the "New line" form (the button remembered the photo)."""
        allowed, counted = await self._guild_allows(interaction, line)
        if not allowed:
            return
        original = await self._defer(interaction, ephemeral=False)
        if original is None:
            await self._give_back(counted, f"{PLATFORM}:{interaction.id}")
            return
        await self._say(self._said(interaction, original), Generate(line, None), counted)

    # --- characters ------------------------------------------------------------------

    async def character(
        self,
        interaction: discord.Interaction,
        action: CharacterAction,
        image: discord.Attachment | None = None,
        sample: discord.Attachment | None = None,
    ) -> None:
        """/character: the conversation's character actions; only sharing is seen by all.

        ``image`` is the picture to save; ``sample`` a recording to take the voice from.
        """
        key = f"{PLATFORM}:{interaction.id}"
        if image is not None:
            self._platform.fetch(key, image, self._max_image_bytes)
            photo = PhotoRef(key, image.size, 0, as_document=True)
            action = dataclasses.replace(action, photo=photo)
        if sample is not None and self._characters is not None:
            # Its size is known: one over the limit is refused by the conversation, unread.
            self._platform.fetch(key, sample, self._characters.max_voice_bytes)
            audio = PhotoRef(key, sample.size, 0, as_document=True)
            action = dataclasses.replace(action, audio=audio)
        try:
            original = await self._defer(interaction, ephemeral=action.action != "share")
            if original is not None:
                await self._say(self._said(interaction, original), action)
        finally:
            self._platform.forget_download(key)

    async def character_voice(
        self,
        interaction: discord.Interaction,
        name: str,
        voice: str | None,
        sample: discord.Attachment | None,
    ) -> None:
        """/character voice: a voice by name, or one taken from a recording; not both."""
        if voice is not None and sample is not None:
            locale = normalize_locale(str(interaction.locale))
            await interaction.response.send_message(
                render("discord.voice_or_sample", locale), ephemeral=True
            )
            return
        await self.character(interaction, CharacterAction("voice", name, voice=voice), None, sample)

    async def save_as_character(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        """Answer "Save as character" on a message: fetch its image, ask for the name."""
        locale = normalize_locale(str(interaction.locale))
        images = [a for a in message.attachments if (a.content_type or "").startswith("image/")]
        attachments = images or message.attachments
        if not attachments:
            await interaction.response.send_message(
                render("discord.need_image", locale), ephemeral=True
            )
            return
        attachment = attachments[0]
        key = f"{PLATFORM}:{interaction.id}"
        self._platform.fetch(key, attachment, self._max_image_bytes)
        photo = PhotoRef(key, attachment.size, 0, as_document=True)
        modal = CharacterModal(
            render("discord.save_as_character", locale),
            render("discord.character_name_label", locale),
            render("discord.character_description_label", locale),
            functools.partial(self._save_from_form, photo),
        )
        try:
            await interaction.response.send_modal(modal)
        except discord.HTTPException:
            self._platform.forget_download(key)
            raise

    async def _save_from_form(
        self, photo: PhotoRef, interaction: discord.Interaction, name: str, description: str
    ) -> None:
        action = CharacterAction("save", name.strip(), photo=photo, description=description)
        try:
            original = await self._defer(interaction, ephemeral=True)
            if original is not None:
                await self._say(self._said(interaction, original), action)
        finally:
            self._platform.forget_download(photo.file_id)

    async def character_choices(
        self, interaction: discord.Interaction, typed: str, *, shared: bool
    ) -> list[app_commands.Choice[str]]:
        """Suggest the user's characters (``shared``: and those shared in this channel)."""
        if self._characters is None:
            return []
        user = UserRef(PLATFORM, str(interaction.user.id))
        channel = str(interaction.channel_id) if shared and interaction.channel_id else None
        found = await self._characters.castable(user, channel)
        typed = typed.strip().removeprefix("@").casefold()
        names = [each.name for each in found if typed in each.name.casefold()]
        return [app_commands.Choice(name=name, value=name) for name in names[:CHOICES]]

    # --- commands and buttons --------------------------------------------------------

    async def command(
        self,
        interaction: discord.Interaction,
        name: str,
        args: str = "",
        target: str | None = None,
    ) -> None:
        """Run one of the conversation's commands; only the user sees the answer."""
        original = await self._defer(interaction, ephemeral=True)
        if original is not None:
            await self._say(self._said(interaction, original, target), Command(name, args))

    async def pressed(self, interaction: discord.Interaction, button_id: str) -> None:
        """Act on a result or status button; the conversation checks who may press it."""
        token = str(interaction.id)
        self._platform.press(token, interaction)
        message = interaction.message
        origin = (
            None if message is None else Origin(Place(str(interaction.channel_id)), str(message.id))
        )
        person = person_of(interaction, self._settings)
        try:
            await self._conversation.pressed(
                Press(token, button_id, person, origin, message.content if message else "")
            )
        finally:
            self._platform.press(token, None)
            if not interaction.response.is_done():
                await interaction.response.defer()  # a press must be answered

    # --- the guild's settings (admins) ---------------------------------------------------

    async def _settings_refusal(self, interaction: discord.Interaction, locale: str) -> bool:
        """Answer privately and return True unless an admin asks inside a guild."""
        if self._guilds is None or interaction.guild_id is None:
            await interaction.response.send_message(
                render("discord.settings_guild_only", locale), ephemeral=True
            )
            return True
        if not is_admin(interaction.user, self._settings.admin_ids, self._settings.admin_role):
            await interaction.response.send_message(
                render("chat.admin_only", locale), ephemeral=True
            )
            return True
        return False

    async def set_channels(self, interaction: discord.Interaction, channels: Sequence[int]) -> None:
        """Set the channels the bot answers in here (/settings channels; none given: all)."""
        locale = normalize_locale(str(interaction.locale))
        if await self._settings_refusal(interaction, locale):
            return
        assert self._guilds is not None and interaction.guild_id is not None
        chosen = tuple(dict.fromkeys(str(channel) for channel in channels))
        await self._guilds.set_channels(str(interaction.guild_id), chosen)
        answer = (
            render("discord.settings_channels", locale, channels=channel_list(chosen))
            if chosen
            else render("discord.settings_all_channels", locale)
        )
        await interaction.response.send_message(answer, ephemeral=True)

    async def set_daily_cap(self, interaction: discord.Interaction, cap: int) -> None:
        """Set the guild's takes a day (/settings daily_cap; 0: no cap)."""
        locale = normalize_locale(str(interaction.locale))
        if await self._settings_refusal(interaction, locale):
            return
        assert self._guilds is not None and interaction.guild_id is not None
        await self._guilds.set_cap(str(interaction.guild_id), cap)
        answer = (
            render("discord.settings_cap", locale, limit=cap)
            if cap
            else render("discord.settings_no_cap", locale)
        )
        await interaction.response.send_message(answer, ephemeral=True)
