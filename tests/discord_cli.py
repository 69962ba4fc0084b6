"""``actorbot`` as a subprocess with discord.py pointed at a loopback server.

discord.py has no setting for its hosts; tests in one process patch them (``DiscordServer
.patch``), and a test that kills the process runs the CLI through this module instead:
``python -m tests.discord_cli run`` with ``LOOPBACK_DISCORD_URL`` set.
"""

from __future__ import annotations

import os
import sys

import discord

from bots.cli import main
from tests.discord_server import api_base, gateway_url

if __name__ == "__main__":
    url = os.environ["LOOPBACK_DISCORD_URL"]
    discord.http.Route.BASE = api_base(url)
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway_url(url)
    sys.exit(main(sys.argv[1:]))
