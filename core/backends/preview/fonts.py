"""Find a font that can draw the subtitle, checking glyph coverage with the font itself."""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

# Well-known places, best first: bold/medium weights read better as subtitles.
CJK_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",  # Debian/Ubuntu fonts-noto-cjk
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Medium.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Bold.ttc",  # Arch
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Bold.ttc",  # Fedora
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # Debian/Ubuntu fonts-wqy-microhei
    "/usr/share/fonts/wqy-microhei/wqy-microhei.ttc",  # Fedora
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/adobe-source-han-sans/SourceHanSansSC-Bold.otf",
    "/usr/share/fonts/adobe-source-han-sans/SourceHanSansSC-Bold.otf",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",  # macOS
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/msyhbd.ttc",  # Windows: Microsoft YaHei
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simhei.ttf",
)
LATIN_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",  # Debian/Ubuntu
    "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",  # Arch
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans-Bold.ttf",  # Fedora
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    "/Library/Fonts/Arial Bold.ttf",
    "C:/Windows/Fonts/arialbd.ttf",
)

FIX_HINT = (
    "install a CJK font (Debian/Ubuntu: apt-get install fonts-noto-cjk or fonts-wqy-microhei) "
    "or set ACTORBOT_PREVIEW__FONT_PATH (preview.font_path) to a .ttf/.ttc/.otf with Chinese glyphs"
)

_CJK_PROBE = "中文字幕说"  # common Han characters every CJK font has
_NOTDEF_PROBE = "\U0010fffd"  # a private-use code point no real font maps: draws .notdef
_PROBE_SIZE = 32


@dataclass(frozen=True)
class FontChoice:
    """A font file (and face inside a collection) to draw text with."""

    path: str  # "" means Pillow's built-in font (Latin only)
    index: int = 0  # face index inside a .ttc collection
    covers_cjk: bool = False


BUILTIN = FontChoice(path="")


def has_cjk(text: str) -> bool:
    """Return whether ``text`` contains Chinese, Japanese or Korean characters."""
    return any(_is_cjk(ch) for ch in text)


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3000 <= code <= 0x30FF  # CJK punctuation, kana
        or 0x3400 <= code <= 0x4DBF  # extension A
        or 0x4E00 <= code <= 0x9FFF  # unified ideographs
        or 0xAC00 <= code <= 0xD7AF  # hangul
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
        or 0xFF00 <= code <= 0xFFEF  # full-width forms and punctuation
        or 0x20000 <= code <= 0x2FA1F  # supplementary ideographs
    )


def load_font(choice: FontChoice, size: int) -> ImageFont.FreeTypeFont:
    """Open the chosen font at ``size`` pixels."""
    if not choice.path:
        font = ImageFont.load_default(size)
        if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow built without FreeType
            raise OSError("Pillow has no FreeType support; cannot draw scalable text")
        return font
    return ImageFont.truetype(choice.path, size, index=choice.index)


def _ink(font: ImageFont.FreeTypeFont, ch: str) -> bytes:
    img = Image.new("L", (_PROBE_SIZE * 2, _PROBE_SIZE * 2), 0)
    ImageDraw.Draw(img).text((_PROBE_SIZE // 2, _PROBE_SIZE // 2), ch, font=font, fill=255)
    return img.tobytes()


def _glyph_checker(font: ImageFont.FreeTypeFont) -> functools.partial[bool]:
    return functools.partial(_draws, font, _ink(font, _NOTDEF_PROBE))


def _draws(font: ImageFont.FreeTypeFont, notdef: bytes, ch: str) -> bool:
    # A missing glyph draws as .notdef (a box) or as nothing; a real one draws something else.
    ink = _ink(font, ch)
    return ink != notdef and any(ink)


def missing_glyphs(font: ImageFont.FreeTypeFont, text: str) -> set[str]:
    """Return the characters of ``text`` that ``font`` would draw as tofu (or not at all)."""
    draws = _glyph_checker(font)
    return {ch for ch in set(text) if not ch.isspace() and not draws(ch)}


def _covers_cjk(font: ImageFont.FreeTypeFont) -> bool:
    draws = _glyph_checker(font)
    return all(draws(ch) for ch in _CJK_PROBE)


def _open(path: str) -> FontChoice | None:
    """Return a FontChoice for a usable font file, preferring a Simplified Chinese face."""
    faces: list[tuple[int, ImageFont.FreeTypeFont]] = []
    for index in range(16):  # a .ttc holds several faces; plain files have just one
        try:
            faces.append((index, ImageFont.truetype(path, _PROBE_SIZE, index=index)))
        except OSError:
            break
    if not faces:
        return None
    # Noto Sans CJK puts JP first; Mandarin wants the SC face's glyph shapes.
    preferred = sorted(faces, key=lambda face: not _family(face[1]).endswith((" SC", " CN")))
    index, font = preferred[0]
    return FontChoice(path=path, index=index, covers_cjk=_covers_cjk(font))


def _family(font: ImageFont.FreeTypeFont) -> str:
    family, _style = font.getname()
    return family or ""


def _fc_list_cjk() -> list[str]:
    """Ask fontconfig for fonts that claim Chinese; the glyph check decides."""
    if shutil.which("fc-list") is None:
        return []
    try:
        done = subprocess.run(
            ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return []
    paths = [line.strip().rstrip(":").strip() for line in done.stdout.splitlines()]
    # Bold and medium faces first: they read better over a moving picture.
    return sorted((p for p in paths if p), key=lambda p: ("Bold" not in p, "Medium" not in p, p))


@functools.lru_cache(maxsize=16)
def find_font(explicit: str = "", *, need_cjk: bool = False) -> FontChoice:
    """Pick the font to draw with: ``explicit`` if it will do, else the best one on the system.

    With ``need_cjk`` a font that really draws Chinese is preferred; the result's
    ``covers_cjk`` says whether one was found. Falls back to Pillow's built-in Latin font.
    """
    chosen: FontChoice | None = None
    if explicit:
        chosen = _open(explicit) if Path(explicit).is_file() else None
        if chosen is None:
            log.warning(
                "preview.font_path %r is not a readable font; searching the system", explicit
            )
        elif chosen.covers_cjk or not need_cjk:
            return chosen
        else:
            log.warning(
                "preview.font_path %r has no Chinese glyphs; searching the system", explicit
            )
    if need_cjk:
        seen: set[str] = set()
        for path in (*CJK_CANDIDATES, *_fc_list_cjk()):
            if path in seen or not Path(path).is_file():
                continue
            seen.add(path)
            choice = _open(path)
            if choice is not None and choice.covers_cjk:
                log.info("preview font for CJK text: %s (face %d)", path, choice.index)
                return choice
    if chosen is not None:  # the configured font still serves Latin text
        return chosen
    for path in LATIN_CANDIDATES:
        if Path(path).is_file():
            choice = _open(path)
            if choice is not None:
                return choice
    return BUILTIN


_warned_lock = threading.Lock()
_warned = False


def warn_no_cjk_font() -> None:
    """Log, once per process, that Chinese subtitles are skipped and how to fix it."""
    global _warned
    with _warned_lock:
        if _warned:
            return
        _warned = True
    log.warning(
        "No font with Chinese glyphs was found, so preview videos of Chinese lines are rendered "
        "WITHOUT subtitles (never with empty boxes). To fix it, %s.",
        FIX_HINT,
    )
