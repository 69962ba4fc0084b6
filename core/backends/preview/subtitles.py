"""Text drawn over the preview frames: the wrapped, timed subtitle pages and the corner label.

Everything here is drawn once per render as small RGBA pictures (``Overlay``); the renderer
converts them to YUV planes and pastes them onto the frames they cover.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from core.backends.preview import fonts
from core.backends.preview.fonts import FontChoice

log = logging.getLogger(__name__)

LABEL = "PREVIEW — not an AI render"
SUBTITLE_HOLD = 0.6  # the last subtitle page stays up this long after the voice stops


@dataclass(frozen=True)
class Overlay:
    """A pre-drawn RGBA picture pasted onto frames ``first``..``last`` (inclusive)."""

    image: Image.Image
    position: tuple[int, int]
    first: int
    last: int


@dataclass(frozen=True)
class Timing:
    """Frame numbers: the voice starts at ``first`` and stops at ``speech_end``; ``last`` holds."""

    first: int
    speech_end: int
    last: int


def label(font: FontChoice | None, size: tuple[int, int], frames: int) -> Overlay:
    """Draw the corner label that marks every frame as a preview."""
    height = size[1]
    face = fonts.load_font(font or fonts.BUILTIN, max(9, round(height * 0.026)))
    text = LABEL if not fonts.missing_glyphs(face, LABEL) else LABEL.replace("—", "-")
    pad = max(3, round(face.size * 0.45))
    left, top, right, bottom = (round(v) for v in face.getbbox(text))
    img = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((0, 0, img.width - 1, img.height - 1), radius=pad, fill=(0, 0, 0, 140))
    draw.text((pad - left, pad - top), text, font=face, fill=(255, 255, 255, 235))
    margin = max(4, round(height * 0.025))
    return Overlay(img, (margin, margin), 0, frames - 1)


# Words, runs of spaces, or any single character: Chinese wraps between characters.
_TOKENS = re.compile(r"\s+|[0-9A-Za-z\u00c0-\u024f\u0400-\u04ff'’_\-]+|.", re.DOTALL)
_NO_LINE_START = set("，。！？、；：,.!?;:)]}」』”’》〉）…～·%")  # hangs at the end of a line
_NO_LINE_END = set("（([{「『“‘《〈")  # moves to the next line with its word


def wrap_text(text: str, font: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    """Wrap ``text`` into lines no wider than ``max_width``; Chinese breaks between characters."""
    tokens: list[str] = []
    for token in _TOKENS.findall(" ".join(text.split())):
        # A word too long for one line is broken anywhere rather than overflowing.
        too_long = not token.isspace() and font.getlength(token) > max_width
        tokens.extend(token if too_long else [token])
    lines: list[str] = []
    line = ""
    for token in tokens:
        if token.isspace():
            line += " " if line else ""
            continue
        candidate = line + token
        if not line or token in _NO_LINE_START or font.getlength(candidate) <= max_width:
            line = candidate
            continue
        carry = ""
        while line and line[-1] in _NO_LINE_END:
            line, carry = line[:-1], line[-1] + carry
        if line.strip():
            lines.append(line.rstrip())
        line = carry + token
    if line.strip():
        lines.append(line.rstrip())
    return lines


def subtitles(
    text: str, font: FontChoice | None, size: tuple[int, int], timing: Timing
) -> list[Overlay]:
    """Pre-draw the subtitle as pages of at most two lines, timed across the speech."""
    text = " ".join(text.split())
    choice = font or fonts.BUILTIN
    if fonts.has_cjk(text) and not choice.covers_cjk:
        fonts.warn_no_cjk_font()  # better no subtitle than a row of empty boxes
        return []
    width, height = size
    max_width = width * 0.84
    face_size = max(8, round(height * 0.058))
    min_size = max(8, round(height * 0.042))
    face = fonts.load_font(choice, face_size)
    missing = fonts.missing_glyphs(face, text)
    if missing:
        log.info("subtitle: font lacks %d characters; leaving them out", len(missing))
        text = "".join(ch for ch in text if ch not in missing)
    lines = wrap_text(text, face, max_width)
    # Shrink until the line fits on two lines; past the minimum size, split into pages.
    while len(lines) > 2 and face_size > min_size:
        face_size = max(min_size, math.floor(face_size * 0.92))
        face = fonts.load_font(choice, face_size)
        lines = wrap_text(text, face, max_width)
    pages = [lines[i : i + 2] for i in range(0, len(lines), 2)]
    if not pages:
        return []
    # Each page stays up for a share of the speech matching its share of the characters.
    weights = [max(1, sum(len(line.replace(" ", "")) for line in page)) for page in pages]
    spoken = max(1, timing.speech_end - timing.first)
    overlays = []
    start, done = timing.first, 0
    for number, page in enumerate(pages):
        done += weights[number]
        is_last = number == len(pages) - 1
        end = timing.last if is_last else timing.first + round(spoken * done / sum(weights)) - 1
        end = min(max(end, start), timing.last)
        image = _draw_page(page, face)
        position = ((width - image.width) // 2, height - image.height - round(height * 0.06))
        overlays.append(Overlay(image, position, start, end))
        start = end + 1
    return overlays


def _draw_page(lines: list[str], face: ImageFont.FreeTypeFont) -> Image.Image:
    """Draw white text with a dark outline on a translucent rounded box."""
    stroke = max(1, round(face.size * 0.08))
    ascent, descent = face.getmetrics()
    line_height = round((ascent + descent) * 1.12)
    widths = [face.getlength(line) + 2 * stroke for line in lines]
    pad_x, pad_y = round(face.size * 0.6), round(face.size * 0.3)
    box_w = math.ceil(max(widths)) + 2 * pad_x
    box_h = line_height * len(lines) + 2 * pad_y
    img = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((0, 0, box_w - 1, box_h - 1), radius=pad_y * 2, fill=(0, 0, 0, 130))
    for row, (line, line_w) in enumerate(zip(lines, widths, strict=True)):
        x = (box_w - line_w) / 2 + stroke
        y = pad_y + row * line_height + (line_height - ascent - descent) / 2
        draw.text(
            (x, y),
            line,
            font=face,
            fill=(255, 255, 255, 255),
            stroke_width=stroke,
            stroke_fill=(0, 0, 0, 255),
        )
    return img
