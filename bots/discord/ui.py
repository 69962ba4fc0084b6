"""Discord components: result buttons that survive restarts, the line and character forms."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bots.chat.platform import Keyboard
from core.characters import MAX_DESCRIPTION_CHARS
from core.storage.characters import MAX_NAME_CHARS

# A button's custom_id carries the chat layer's opaque button id and nothing else: what it
# does, and for whom, is in the store (ChatStore.button), readable by any process.
_PREFIX = "actorbot:"
_TEMPLATE = re.compile(_PREFIX + r"(?P<id>[A-Za-z0-9_-]{1,80})")
_TITLE_LIMIT = 45  # characters of a modal title and of a text input's label
_PLACEHOLDER_LIMIT = 100
LINE_LIMIT = 400  # characters of a line (settings' prompts.max_chars is checked in core)

Pressed = Callable[[discord.Interaction, str], Awaitable[None]]
LineHandler = Callable[[discord.Interaction, str], Awaitable[None]]


class ActionButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=_TEMPLATE):
    """A result or status button; its press goes to the client's ``pressed`` handler."""

    def __init__(self, button_id: str, label: str = "…") -> None:
        super().__init__(
            discord.ui.Button(
                label=label, style=discord.ButtonStyle.secondary, custom_id=_PREFIX + button_id
            )
        )
        self.button_id = button_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ActionButton:
        """Rebuild the button from a press (after a restart too)."""
        return cls(match["id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Hand the press to the adapter the client carries."""
        pressed: Pressed | None = getattr(interaction.client, "pressed", None)
        if pressed is not None:
            await pressed(interaction, self.button_id)


def keyboard_view(buttons: Keyboard | None) -> discord.ui.View | None:
    """Return the components for rows of buttons (None: no components)."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for row, actions in enumerate(buttons):
        for action in actions:
            item = ActionButton(action.id, action.label[:80])
            item.row = row
            view.add_item(item)
    # Dispatch goes through the dynamic item registered at start-up; a stopped view is
    # not kept in the client's view store (one per message would pile up).
    view.stop()
    return view


class LineModal(discord.ui.Modal):
    """A form with one field: the line the character should perform."""

    def __init__(self, title: str, placeholder: str, on_line: LineHandler) -> None:
        super().__init__(title=title[:_TITLE_LIMIT] or "…", timeout=None)
        self.line: discord.ui.TextInput[LineModal] = discord.ui.TextInput(
            label=title[:_TITLE_LIMIT] or "…",
            placeholder=placeholder[:_PLACEHOLDER_LIMIT] or None,
            style=discord.TextStyle.paragraph,
            max_length=LINE_LIMIT,
        )
        self.add_item(self.line)
        self._on_line = on_line

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Hand the line to the adapter."""
        await self._on_line(interaction, self.line.value)


CharacterHandler = Callable[[discord.Interaction, str, str], Awaitable[None]]


class CharacterModal(discord.ui.Modal):
    """A form for "Save as character": the name, and an optional description."""

    def __init__(
        self, title: str, name_label: str, description_label: str, on_save: CharacterHandler
    ) -> None:
        super().__init__(title=title[:_TITLE_LIMIT] or "…", timeout=None)
        self.name: discord.ui.TextInput[CharacterModal] = discord.ui.TextInput(
            label=name_label[:_TITLE_LIMIT] or "…", max_length=MAX_NAME_CHARS
        )
        self.description: discord.ui.TextInput[CharacterModal] = discord.ui.TextInput(
            label=description_label[:_TITLE_LIMIT] or "…",
            style=discord.TextStyle.paragraph,
            required=False,
            max_length=MAX_DESCRIPTION_CHARS,
        )
        self.add_item(self.name)
        self.add_item(self.description)
        self._on_save = on_save

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Hand the name and description to the adapter."""
        await self._on_save(interaction, self.name.value, self.description.value)
