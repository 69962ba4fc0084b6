"""Turn an uploaded photo into the 16:9 RGB JPEG the video backends start from.

Every upload is untrusted: it is recognised by its bytes (never by a file name), limited in
bytes and pixels before any pixel is decoded, decoded fully or refused (no grey-filled
truncated JPEGs), turned upright by its EXIF orientation, flattened onto a background, and
cropped or padded to exactly ``settings.width`` x ``settings.height``.

Pillow's exceptions are translated into ``ImageRejected`` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import pillow_heif
from PIL import (
    AvifImagePlugin,
    ExifTags,
    GifImagePlugin,
    Image,
    ImageColor,
    ImageFile,
    ImageFilter,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
    features,
)

from config.settings import ImageSettings
from core.errors import ImageRejected

# Importing the plugin modules above registers exactly the decoders we want, without
# Image.init() loading every format Pillow knows. pillow-heif adds HEIC/HEIF. Pillow 13
# decodes AVIF natively (pillow-heif 1.x dropped its AVIF opener); the check stays so a
# Pillow built without libavif fails loudly at import instead of refusing every AVIF.
pillow_heif.register_heif_opener()
if not features.check("avif"):  # pragma: no cover - depends on the Pillow build
    raise ImportError("this Pillow build cannot decode AVIF; install a wheel with libavif")

# The formats we accept, in the order their signatures are tried. Anything else Pillow could
# open (EPS runs Ghostscript, TIFF/PSD are large attack surfaces) is "not an image" to us.
# MPO (multi-picture JPEGs from phone cameras) comes out of the JPEG opener.
_FORMATS = (
    JpegImagePlugin.JpegImageFile.format,
    PngImagePlugin.PngImageFile.format,
    WebPImagePlugin.WebPImageFile.format,
    AvifImagePlugin.AvifImageFile.format,
    pillow_heif.HeifImageFile.format,
    GifImagePlugin.GifImageFile.format,
)

# What Pillow and its plugins raise on malformed input while parsing headers or decoding.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
    RuntimeError,
)

# EXIF orientations 5-8 rotate by a quarter turn, so width and height swap.
_SWAPS_AXES = frozenset({5, 6, 7, 8})

# resize() first shrinks by an integer factor with reduce() while the remaining scale is at
# least this large; 3.0 is where Pillow documents the result as indistinguishable from a
# plain LANCZOS resize, at a fraction of the cost for big downscales.
_REDUCING_GAP = 3.0

# Pad mode's background: a cover-scaled copy shrunk by this factor, blurred, darkened and
# scaled back up. Blurring the small copy costs almost nothing and the upscale smooths it.
_PAD_SHRINK = 8
_PAD_BLUR_RADIUS = 4
_PAD_BRIGHTNESS = 0.45


@dataclass(frozen=True)
class PreparedImage:
    """The photo re-encoded as a JPEG of the target size, with what we learned of the source."""

    jpeg: bytes
    width: int
    height: int
    source_format: str
    source_size: tuple[int, int]


def prepare_image(data: bytes, settings: ImageSettings) -> PreparedImage:
    """Validate an uploaded photo and return it cropped or padded to the target 16:9 JPEG."""
    if not data:
        raise ImageRejected("image.empty")
    if len(data) > settings.max_bytes:
        raise ImageRejected(
            "image.too_many_bytes",
            size_mb=len(data) / 1_000_000,
            limit_mb=settings.max_bytes / 1_000_000,
        )
    background = _background_rgb(settings.background)

    limit_mp = settings.max_pixels / 1_000_000
    with _pillow_errors(None, limit_mp):
        im = _identify(data)
    source_format = im.format or "unknown"
    orientation = _orientation(im)
    width, height = im.size
    if orientation in _SWAPS_AXES:
        width, height = height, width
    # Our own bomb check, from the header alone, before a single pixel is decoded.
    if width * height > settings.max_pixels:
        raise ImageRejected(
            "image.too_many_pixels",
            width=width,
            height=height,
            limit_mp=limit_mp,
        )
    if min(width, height) < settings.min_side:
        raise ImageRejected(
            "image.too_small", width=width, height=height, min_side=settings.min_side
        )

    # Everything that still reads the untrusted bytes happens in here; what follows works on
    # decoded pixels, so an exception there is our bug and must not pass as "corrupt".
    with _pillow_errors((width, height), limit_mp):
        if isinstance(im, JpegImagePlugin.JpegImageFile):
            _draft(im, (width, height), orientation, settings)
        # Forces the decode of frame 0 now, so a truncated or damaged file fails here
        # (LOAD_TRUNCATED_IMAGES is left False) rather than as grey pixels later.
        im.load()
        upright = ImageOps.exif_transpose(im) if orientation != 1 else im

    out = _fit(_to_rgb(upright, background), settings)
    return PreparedImage(
        jpeg=_encode(out, settings.jpeg_quality),
        width=out.width,
        height=out.height,
        source_format=source_format,
        source_size=(width, height),
    )


async def prepare_image_async(data: bytes, settings: ImageSettings) -> PreparedImage:
    """Run ``prepare_image`` on a worker thread; Pillow releases the GIL while it decodes."""
    return await asyncio.to_thread(prepare_image, data, settings)


@contextmanager
def _pillow_errors(size: tuple[int, int] | None, limit_mp: float) -> Iterator[None]:
    """Translate whatever Pillow raises on a hostile or broken file into ImageRejected."""
    try:
        yield
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's process-wide guard fired before ours could (WebP and GIF check inside
        # their openers; the warning is an exception only under an "error" warnings filter).
        # Its message carries no dimensions, so report them when we already know them.
        width, height = size if size is not None else ("?", "?")
        raise ImageRejected(
            "image.too_many_pixels", width=width, height=height, limit_mp=limit_mp
        ) from exc
    except _DECODE_ERRORS as exc:
        raise ImageRejected("image.corrupt") from exc


def _identify(data: bytes) -> ImageFile.ImageFile:
    """Open the header with the first accepted format whose signature matches the bytes.

    This is ``Image.open`` restricted to ``_FORMATS``, minus its decompression-bomb check:
    that check reads the process-wide ``Image.MAX_IMAGE_PIXELS``, so honouring
    ``settings.max_pixels`` through it would mean mutating a global that other threads
    (other uploads with other settings, the preview renderer) read at the same time. We
    apply ``settings.max_pixels`` ourselves right after, from the header size, and leave
    Pillow's global untouched as a backstop.
    """
    prefix = data[:16]
    recognised = False
    for name in _FORMATS:
        factory, accept = Image.OPEN[name]
        # accept() may return a string: "this is the format, but I cannot read it".
        if accept is not None and accept(prefix) is not True:
            continue
        recognised = True
        try:
            return factory(io.BytesIO(data), "")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise
        except _DECODE_ERRORS:
            continue  # the next format may share the signature (AVIF and HEIF share mif1)
    raise ImageRejected("image.corrupt" if recognised else "image.not_an_image")


def _orientation(im: Image.Image) -> int:
    """Return the EXIF orientation (1-8), treating unreadable EXIF as upright."""
    try:
        # The base method reads only what the header parse found (EXIF, XMP). PngImageFile's
        # override decodes the whole image to look for an eXIf chunk after the pixel data,
        # which here would run before the pixel limit is checked.
        value = Image.Image.getexif(im).get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS:
        # A damaged EXIF block should not cost the user their otherwise good photo.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _draft(
    im: JpegImagePlugin.JpegImageFile,
    upright: tuple[int, int],
    orientation: int,
    settings: ImageSettings,
) -> None:
    """Ask libjpeg to decode at 1/2, 1/4 or 1/8 scale when that still covers the output."""
    width, height = upright
    scale_x, scale_y = settings.width / width, settings.height / height
    # Crop fills the frame, so the larger scale binds; pad fits inside it, so the smaller
    # one does (pad's background is blurred, so it never needs more resolution).
    scale = max(scale_x, scale_y) if settings.fit == "crop" else min(scale_x, scale_y)
    if scale >= 1:
        return
    # The smallest decode that still covers the output; the epsilon keeps 1280.0000001
    # from rounding up and costing a whole scale step.
    need = (math.ceil(width * scale - 1e-6), math.ceil(height * scale - 1e-6))
    if orientation in _SWAPS_AXES:
        need = (need[1], need[0])  # draft() works on the stored, not yet rotated, image
    im.draft("RGB", need)


def _to_rgb(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Convert any decoded mode to RGB, compositing transparency onto the background."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I"):
        # 16-bit greyscale: scale to 8 bits; a plain convert would clip most of it to white.
        return im.convert("I").point(lambda value: value / 256).convert("L").convert("RGB")
    has_alpha = "A" in im.getbands() or im.mode in ("La", "RGBa")
    if has_alpha or "transparency" in im.info:
        # Flatten before dropping alpha: transparent pixels keep whatever colour the
        # encoder left under them, and convert("RGB") alone would show it.
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, background)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")


def _cover_box(
    size: tuple[int, int], target: tuple[int, int], bias: float
) -> tuple[float, float, float, float]:
    """Return the largest target-aspect box inside ``size``, centred across, biased down."""
    width, height = size
    target_w, target_h = target
    if width * target_h > height * target_w:  # wider than the target: trim the sides
        box_w = height * target_w / target_h
        left = (width - box_w) / 2
        return (left, 0.0, left + box_w, float(height))
    # Taller than the target: trim top and bottom; bias 0 keeps the top edge, where faces
    # in portraits usually are.
    box_h = width * target_h / target_w
    top = (height - box_h) * bias
    return (0.0, top, float(width), top + box_h)


def _fit(im: Image.Image, settings: ImageSettings) -> Image.Image:
    """Crop or pad an RGB image to exactly the target size."""
    target = (settings.width, settings.height)
    lanczos = Image.Resampling.LANCZOS
    box = _cover_box(im.size, target, settings.crop_bias)
    if settings.fit == "crop":
        return im.resize(target, lanczos, box=box, reducing_gap=_REDUCING_GAP)

    scale = min(settings.width / im.width, settings.height / im.height)
    inner = (
        min(settings.width, max(1, round(im.width * scale))),
        min(settings.height, max(1, round(im.height * scale))),
    )
    front = im.resize(inner, lanczos, reducing_gap=_REDUCING_GAP)
    if inner == target:
        return front
    small = (
        max(1, math.ceil(settings.width / _PAD_SHRINK)),
        max(1, math.ceil(settings.height / _PAD_SHRINK)),
    )
    back = im.resize(small, Image.Resampling.BOX, box=box, reducing_gap=_REDUCING_GAP)
    back = back.filter(ImageFilter.GaussianBlur(_PAD_BLUR_RADIUS))
    back = back.point(lambda value: value * _PAD_BRIGHTNESS)
    back = back.resize(target, Image.Resampling.BICUBIC)
    back.paste(front, ((settings.width - inner[0]) // 2, (settings.height - inner[1]) // 2))
    return back


def _encode(im: Image.Image, quality: int) -> bytes:
    """Encode as a baseline JPEG without metadata."""
    # resize() copies info from its source, and the JPEG writer picks the comment up from
    # there: clear it so no EXIF, ICC profile or comment of the upload is passed on.
    im.info = {}
    buffer = io.BytesIO()
    # optimize=True (optimal Huffman tables) measured 15-25 % smaller at 1280x720 for
    # 1-2.5 ms more on a 2-core machine: worth it for every upload to a backend.
    im.save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


@lru_cache(maxsize=8)
def _background_rgb(spec: str) -> tuple[int, int, int]:
    """Parse the configured background colour once per distinct value."""
    try:
        red, green, blue, *_ = ImageColor.getrgb(spec)
    except ValueError:
        # A configuration mistake, not the user's: fail loudly, not as an image refusal.
        raise ValueError(f"images.background: not a colour: {spec!r}") from None
    return (red, green, blue)
