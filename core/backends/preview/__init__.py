"""The offline preview renderer: a local stand-in for a video model, not an AI model.

It turns the photo and the line into a short MP4 anyone can run without a GPU or a network:
a slow camera move (Ken Burns) over the still photo, the line spoken by espeak-ng, the words
burned in as subtitles and a "PREVIEW — not an AI render" label on every frame. Nothing in the
picture moves except the camera; use it to try the bot end to end, not to judge a performance.
"""

from __future__ import annotations

from core.backends.preview.backend import PreviewBackend

__all__ = ["PreviewBackend"]
