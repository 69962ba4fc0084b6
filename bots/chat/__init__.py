"""The conversation a creator has with actorbot, shared by every chat platform.

Adapters (``bots.telegram``, and next ``bots.discord``) translate their events into the
intents of ``intents`` and implement the small ``platform.Platform`` protocol; everything
said and decided in between lives here.
"""
