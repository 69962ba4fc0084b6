"""core.images against real Pillow and pillow-heif, with every test image made here."""

from __future__ import annotations

import asyncio
import io
import resource
import struct
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, features

from config.settings import ImageSettings
from core.errors import ImageRejected
from core.i18n import render
from core.images import PreparedImage, prepare_image, prepare_image_async

RED = (230, 20, 20)
GREEN = (20, 200, 40)
BLUE = (20, 40, 220)
GREY = (128, 128, 128)
MAGENTA = (255, 0, 255)


def _settings(**overrides: Any) -> ImageSettings:
    return ImageSettings(**overrides)


def _encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **params)
    return buffer.getvalue()


def _solid(size: tuple[int, int], colour: tuple[int, int, int] = GREEN) -> Image.Image:
    return Image.new("RGB", size, colour)


def _output(result: PreparedImage) -> Image.Image:
    """Decode the result and check the invariants every result must satisfy."""
    im = Image.open(io.BytesIO(result.jpeg))
    im.load()
    assert im.format == "JPEG"
    assert im.mode == "RGB"
    assert im.size == (result.width, result.height) == (1280, 720)
    return im


def _near(actual: Any, expected: tuple[int, ...], tolerance: int = 24) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def _rejected(data: bytes, image_settings: ImageSettings | None = None) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        prepare_image(data, image_settings or _settings())
    return caught.value


# -- formats and shapes ----------------------------------------------------------------

FORMATS = [
    pytest.param("JPEG", "JPEG", id="jpeg"),
    pytest.param("PNG", "PNG", id="png"),
    pytest.param("WEBP", "WEBP", id="webp"),
    pytest.param(
        "AVIF",
        "AVIF",
        id="avif",
        marks=pytest.mark.skipif(not features.check("avif"), reason="no AVIF in Pillow"),
    ),
    pytest.param("HEIF", "HEIF", id="heic"),  # written by pillow-heif's encoder
]
SHAPES = [
    pytest.param((600, 900), id="portrait"),
    pytest.param((1500, 500), id="landscape"),
    pytest.param((700, 700), id="square"),
]


@pytest.mark.parametrize("size", SHAPES)
@pytest.mark.parametrize(("writer", "expected_format"), FORMATS)
@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_every_format_and_shape_becomes_1280x720_rgb_jpeg(
    writer: str, expected_format: str, size: tuple[int, int], fit: str
) -> None:
    data = _encode(_solid(size), writer)

    result = prepare_image(data, _settings(fit=fit))

    assert result.source_format == expected_format
    assert result.source_size == size
    out = _output(result)
    assert _near(out.getpixel((640, 360)), GREEN)


def test_heic_is_recognised_by_content_not_name() -> None:
    data = _encode(_solid((320, 240), BLUE), "HEIF")
    assert data[4:12] == b"ftypheic"

    result = prepare_image(data, _settings())

    assert result.source_format == "HEIF"
    assert _near(_output(result).getpixel((640, 360)), BLUE)


def test_metadata_is_stripped() -> None:
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    data = _encode(_solid((640, 480)), "JPEG", exif=exif.tobytes(), comment=b"secret")

    out = _output(prepare_image(data, _settings()))

    assert "exif" not in out.info
    assert "comment" not in out.info
    assert "icc_profile" not in out.info


# -- geometry --------------------------------------------------------------------------


def _with_orientation(im: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(im, fmt, exif=exif.tobytes(), quality=95)


def test_exif_orientation_6_rotates_before_cropping() -> None:
    # Stored landscape 400x300 with a red marker in the stored top-left corner. Orientation 6
    # means "rotate 90° clockwise to display": the marker ends top-right of a 300x400 portrait.
    stored = _solid((400, 300), GREY)
    stored.paste(RED, (0, 0, 80, 80))
    data = _with_orientation(stored, 6)

    result = prepare_image(data, _settings(crop_bias=0.0))

    assert result.source_size == (300, 400)
    out = _output(result)
    # Crop keeps the top 300x168.75 of the portrait; the marker spans x 220..300, y 0..80,
    # which is x 939..1280, y 0..341 in the output.
    assert _near(out.getpixel((1200, 100)), RED)
    assert _near(out.getpixel((1000, 300)), RED)
    assert _near(out.getpixel((100, 100)), GREY)
    assert _near(out.getpixel((1200, 600)), GREY)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "AVIF", "HEIF"])
def test_exif_orientation_6_in_pad_mode_shows_the_whole_upright_image(fmt: str) -> None:
    # pillow-heif turns the orientation into the container's rotation and resets EXIF to 1;
    # the others keep it in EXIF. Either way the result must come out upright, once.
    stored = _solid((400, 300), GREY)
    stored.paste(RED, (0, 0, 80, 80))
    data = _with_orientation(stored, 6, fmt)

    out = _output(prepare_image(data, _settings(fit="pad")))

    # The 300x400 portrait is scaled to 540x720 and centred at x = 370; the marker spans
    # display x 220..300, y 0..80 -> output x 766..910, y 0..144.
    assert _near(out.getpixel((840, 70)), RED)
    assert _near(out.getpixel((440, 70)), GREY)
    assert _near(out.getpixel((840, 650)), GREY)


def _vertical_ramp(width: int, height: int) -> Image.Image:
    """Red channel = row // 5, so a pixel's red value says which source row it came from."""
    column = Image.new("L", (1, height))
    column.putdata([min(255, y // 5) for y in range(height)])
    red = column.resize((width, height))
    return Image.merge("RGB", (red, Image.new("L", red.size, 0), Image.new("L", red.size, 0)))


@pytest.mark.parametrize(
    ("bias", "expected_top_row"),
    [(0.0, 0.0), (0.3, 262.5), (0.5, 437.5), (1.0, 875.0)],
)
def test_crop_bias_positions_the_crop_vertically(bias: float, expected_top_row: float) -> None:
    # A 720x1280 portrait keeps a 720x405 band; its top row is (1280 - 405) * bias.
    data = _encode(_vertical_ramp(720, 1280), "PNG")

    out = _output(prepare_image(data, _settings(crop_bias=bias)))

    top_red = out.getpixel((640, 2))
    assert isinstance(top_red, tuple)
    assert abs(top_red[0] - expected_top_row / 5) <= 3


def test_crop_is_centred_horizontally() -> None:
    # Red channel = column // 8 across 2000 columns; a 2000x720 source keeps x 360..1640.
    row = Image.new("L", (2000, 1))
    row.putdata([x // 8 for x in range(2000)])
    red = row.resize((2000, 720))
    zero = Image.new("L", red.size, 0)
    data = _encode(Image.merge("RGB", (red, zero, zero)), "PNG")

    out = _output(prepare_image(data, _settings()))

    left, right = out.getpixel((1, 360)), out.getpixel((1278, 360))
    assert isinstance(left, tuple)
    assert isinstance(right, tuple)
    assert abs(left[0] - 360 // 8) <= 3
    assert abs(right[0] - 1640 // 8) <= 3


def test_crop_with_top_bias_keeps_a_top_band() -> None:
    portrait = _solid((900, 1600), BLUE)
    portrait.paste(RED, (0, 0, 900, 240))  # the top 15 %: where the face would be

    out = _output(prepare_image(_encode(portrait, "JPEG"), _settings(crop_bias=0.0)))

    # The kept band is 900x506.25; the red rows 0..240 become output rows 0..341.
    assert _near(out.getpixel((640, 10)), RED)
    assert _near(out.getpixel((640, 300)), RED)
    assert _near(out.getpixel((640, 500)), BLUE)


def _framed(size: tuple[int, int]) -> Image.Image:
    """A blue image with a 20 px red frame, to see whether every edge survives."""
    im = _solid(size, RED)
    im.paste(BLUE, (20, 20, size[0] - 20, size[1] - 20))
    return im


def test_pad_keeps_the_whole_portrait() -> None:
    data = _encode(_framed((600, 900)), "PNG")

    out = _output(prepare_image(data, _settings(fit="pad")))

    # Scaled to 480x720, centred at x = 400: all four red edges are inside the frame.
    for point in [(405, 360), (875, 360), (640, 5), (640, 714)]:
        assert _near(out.getpixel(point), RED), point
    assert _near(out.getpixel((640, 360)), BLUE)
    # Left and right of it: the blurred, darkened copy, never the bright original.
    side = out.getpixel((100, 360))
    assert isinstance(side, tuple)
    assert max(side) < 150


def test_pad_keeps_the_whole_panorama() -> None:
    data = _encode(_framed((2000, 500)), "PNG")

    out = _output(prepare_image(data, _settings(fit="pad")))

    # Scaled to 1280x320, centred at y = 200.
    for point in [(3, 360), (1276, 360), (640, 203), (640, 516)]:
        assert _near(out.getpixel(point), RED), point
    top = out.getpixel((640, 100))
    assert isinstance(top, tuple)
    assert max(top) < 150


# -- colour modes ----------------------------------------------------------------------


def _hidden_magenta(mode_size: tuple[int, int] = (400, 400)) -> Image.Image:
    """Fully transparent magenta everywhere except an opaque green square in the middle."""
    im = Image.new("RGBA", mode_size, (*MAGENTA, 0))
    w, h = mode_size
    im.paste((*GREEN, 255), (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    return im


@pytest.mark.parametrize(
    ("background", "expected"), [("#000000", (0, 0, 0)), ("white", (255,) * 3)]
)
def test_transparent_pixels_show_the_background_not_their_hidden_colour(
    background: str, expected: tuple[int, int, int]
) -> None:
    data = _encode(_hidden_magenta(), "PNG")
    assert Image.open(io.BytesIO(data)).getpixel((0, 0)) == (*MAGENTA, 0)

    out = _output(prepare_image(data, _settings(fit="pad", background=background)))

    # 400x400 -> 720x720 at x = 280: the transparent corner is at (290, 10).
    assert _near(out.getpixel((290, 10)), expected, tolerance=8)
    assert _near(out.getpixel((640, 360)), GREEN)


def test_transparent_webp_and_la_are_flattened_too() -> None:
    webp = _encode(_hidden_magenta(), "WEBP", lossless=True, exact=True)
    la = Image.new("LA", (400, 400), (250, 0))
    la.paste((60, 255), (100, 100, 300, 300))

    for data in (webp, _encode(la, "PNG")):
        out = _output(prepare_image(data, _settings(fit="pad")))
        assert _near(out.getpixel((290, 10)), (0, 0, 0), tolerance=8)


def test_palette_with_transparency_is_flattened() -> None:
    im = Image.new("P", (300, 300), 1)
    im.putpalette([*MAGENTA, *GREEN] + [0] * 762)
    im.paste(1, (75, 75, 225, 225))
    im.paste(0, (0, 0, 300, 75))
    data = _encode(im, "PNG", transparency=0)

    out = _output(prepare_image(data, _settings(fit="pad")))

    assert _near(out.getpixel((290, 10)), (0, 0, 0), tolerance=8)
    assert _near(out.getpixel((640, 360)), GREEN)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (500, 400), (0, 255, 255, 0))  # pure red in CMYK
    data = _encode(cmyk, "JPEG")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"

    out = _output(prepare_image(data, _settings()))

    assert _near(out.getpixel((640, 360)), (255, 0, 0))


def test_palette_without_transparency() -> None:
    data = _encode(_solid((500, 400), BLUE).convert("P", palette=Image.Palette.ADAPTIVE), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "P"

    assert _near(_output(prepare_image(data, _settings())).getpixel((640, 360)), BLUE)


def test_greyscale_8_and_16_bit() -> None:
    grey8 = _encode(Image.new("L", (500, 400), 100), "PNG")
    grey16 = _encode(Image.new("I;16", (500, 400), 100 * 256), "PNG")
    assert Image.open(io.BytesIO(grey16)).mode.startswith("I")

    for data in (grey8, grey16):
        out = _output(prepare_image(data, _settings()))
        assert _near(out.getpixel((640, 360)), (100, 100, 100), tolerance=3)


def test_bilevel_image() -> None:
    data = _encode(Image.new("1", (300, 300), 1), "PNG")

    assert _near(_output(prepare_image(data, _settings())).getpixel((640, 360)), (255,) * 3, 3)


# -- animation -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_images_use_the_first_frame(fmt: str) -> None:
    frames = [_solid((320, 240), colour) for colour in (RED, GREEN, BLUE)]
    data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    with Image.open(io.BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 3

    out = _output(prepare_image(data, _settings()))

    assert _near(out.getpixel((640, 360)), RED)


# -- refusals --------------------------------------------------------------------------


def test_empty_file() -> None:
    assert _rejected(b"").key == "image.empty"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"Hello! This is a text file someone renamed to photo.jpg\n" * 20, id="text"),
        pytest.param(b"%PDF-1.7\n" + b"\0" * 500, id="pdf"),
        pytest.param(b"\0" * 1000, id="zeros"),
    ],
)
def test_not_an_image(data: bytes) -> None:
    assert _rejected(data).key == "image.not_an_image"


def test_formats_outside_the_list_are_not_images() -> None:
    # Pillow could read these, but they are not what the bot accepts (and TIFF/EPS are
    # large attack surfaces).
    for fmt in ("TIFF", "BMP"):
        assert _rejected(_encode(_solid((200, 200)), fmt)).key == "image.not_an_image"


def _noisy(size: tuple[int, int]) -> Image.Image:
    return Image.merge("RGB", [Image.effect_noise(size, 50) for _ in range(3)])


@pytest.mark.parametrize("fraction", [0.3, 0.7, 0.95])
def test_truncated_jpeg_is_corrupt_not_grey(fraction: float) -> None:
    data = _encode(_noisy((1200, 900)), "JPEG", quality=90)
    cut = data[: int(len(data) * fraction)]

    error = _rejected(cut)

    assert error.key == "image.corrupt"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_jpeg_is_corrupt_when_decoded_at_draft_scale() -> None:
    # Big enough for a 1/2-scale draft decode: truncation must still be caught there.
    data = _encode(_noisy((3000, 2000)), "JPEG", quality=85)

    assert _rejected(data[: len(data) // 2]).key == "image.corrupt"


def test_damaged_png_is_corrupt() -> None:
    data = bytearray(_encode(_noisy((300, 300)), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # zeroed IDAT bytes: a broken zlib stream

    assert _rejected(bytes(data)).key == "image.corrupt"


def test_png_with_damage_at_the_end_of_its_data_is_corrupt() -> None:
    # Every row inflates fine; only zlib's closing checksum shows the damage.
    data = bytearray(_encode(_noisy((300, 300)), "PNG"))
    adler32 = data.index(b"IEND") - 4 - 4 - 4  # IDAT ends: ... adler32, CRC; IEND length
    data[adler32] ^= 0xFF

    assert _rejected(bytes(data)).key == "image.corrupt"


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "HEIF", "AVIF"])
def test_truncated_files_are_corrupt(fmt: str) -> None:
    data = _encode(_noisy((300, 300)), fmt)

    assert _rejected(data[: len(data) // 2]).key == "image.corrupt"


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _huge_bilevel_png(side: int) -> bytes:
    """A valid side x side 1-bit PNG of zeros, built row by row: ~50 kB, never held whole."""
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    block = row * 500
    idat = b"".join(packer.compress(block) for _ in range(side // 500))
    idat += packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_from_its_header() -> None:
    data = _huge_bilevel_png(20_000)
    assert len(data) < 200_000
    pillow_limit = Image.MAX_IMAGE_PIXELS
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    error = _rejected(data)

    assert error.key == "image.too_many_pixels"
    assert error.params == {"width": 20_000, "height": 20_000, "limit_mp": 60.0}
    # Decoding it would take 400 MB; reading the header takes almost nothing.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100_000
    assert pillow_limit == Image.MAX_IMAGE_PIXELS  # no global was touched


def _huge_header(fmt: str, side: int) -> bytes:
    """A small real file of ``fmt`` whose header claims side x side pixels."""
    if fmt == "JPEG":
        data = bytearray(_encode(_solid((64, 64)), "JPEG"))
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    elif fmt == "GIF":
        data = bytearray(_encode(_solid((64, 64)), "GIF"))
        data[6:10] = struct.pack("<HH", side, side)  # the logical screen
    else:  # an animated WebP: its VP8X header carries the canvas size
        frames = [_solid((64, 64), RED), _solid((64, 64), BLUE)]
        data = bytearray(_encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]))
        assert data[12:16] == b"VP8X"
        data[24:27] = (side - 1).to_bytes(3, "little")
        data[27:30] = (side - 1).to_bytes(3, "little")
    return bytes(data)


@pytest.mark.parametrize(
    ("fmt", "side"),
    [("JPEG", 20_000), ("GIF", 20_000), ("WEBP", 9_000), ("WEBP", 13_000)],
)
def test_huge_headers_are_refused_with_their_size(fmt: str, side: int) -> None:
    error = _rejected(_huge_header(fmt, side))

    assert error.key == "image.too_many_pixels"
    assert error.params == {"width": side, "height": side, "limit_mp": 60.0}


def test_webp_beyond_pillows_own_limit_is_still_too_many_pixels() -> None:
    # Pillow's WebP opener refuses canvases over 2 x Image.MAX_IMAGE_PIXELS itself, before
    # we see the size; the refusal is the same, without dimensions.
    error = _rejected(_huge_header("WEBP", 16_000))

    assert error.key == "image.too_many_pixels"
    assert error.params["limit_mp"] == 60.0


def test_pixel_limit_comes_from_each_calls_settings() -> None:
    data = _encode(_solid((400, 300)), "PNG")

    error = _rejected(data, _settings(max_pixels=100_000))
    assert error.key == "image.too_many_pixels"
    assert error.params == {"width": 400, "height": 300, "limit_mp": 0.1}

    # The same bytes pass with the default settings right after: nothing leaked.
    assert prepare_image(data, _settings()).source_size == (400, 300)
    assert _rejected(data, _settings(max_pixels=119_999)).key == "image.too_many_pixels"
    assert prepare_image(data, _settings(max_pixels=120_000)).source_size == (400, 300)


def test_too_many_bytes_is_checked_before_decoding() -> None:
    # Garbage over the limit: refused for its size, never looked at as an image.
    error = _rejected(b"x" * 2_500_001, _settings(max_bytes=2_500_000))

    assert error.key == "image.too_many_bytes"
    assert error.params == {"size_mb": 2.500001, "limit_mb": 2.5}


def test_too_small() -> None:
    error = _rejected(_encode(_solid((50, 300)), "PNG"))

    assert error.key == "image.too_small"
    assert error.params == {"width": 50, "height": 300, "min_side": 64}
    assert prepare_image(_encode(_solid((64, 64)), "PNG"), _settings()).source_size == (64, 64)


def test_too_small_reports_upright_dimensions() -> None:
    data = _with_orientation(_solid((300, 40)), 8)

    assert _rejected(data).params == {"width": 40, "height": 300, "min_side": 64}


def test_refusals_render_in_both_locales() -> None:
    error = _rejected(_huge_bilevel_png(20_000))
    for locale in ("en", "zh"):
        text = render(error.key, locale, **error.params)
        assert "20000×20000" in text
        assert "60" in text


# -- properties and async --------------------------------------------------------------


@hypothesis_settings(max_examples=40, deadline=None)
@given(
    width=st.integers(64, 1800),
    height=st.integers(64, 1800),
    orientation=st.sampled_from([1, 3, 6, 8]),
    fit=st.sampled_from(["crop", "pad"]),
    bias=st.floats(0.0, 1.0),
    target=st.sampled_from([(1280, 720), (640, 360), (160, 90), (854, 480)]),
)
def test_output_is_always_exactly_the_target_size(
    width: int,
    height: int,
    orientation: int,
    fit: str,
    bias: float,
    target: tuple[int, int],
) -> None:
    data = _with_orientation(_solid((width, height)), orientation)
    image_settings = _settings(width=target[0], height=target[1], fit=fit, crop_bias=bias)

    result = prepare_image(data, image_settings)

    upright = (height, width) if orientation in (6, 8) else (width, height)
    assert result.source_size == upright
    out = Image.open(io.BytesIO(result.jpeg))
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", target)
    assert (result.width, result.height) == target


async def test_async_variant_matches_the_sync_one() -> None:
    data = _encode(_framed((900, 600)), "JPEG")

    result = await prepare_image_async(data, _settings())

    assert result == prepare_image(data, _settings())
    _output(result)
    with pytest.raises(ImageRejected) as caught:
        await prepare_image_async(b"not an image", _settings())
    assert caught.value.key == "image.not_an_image"


async def test_concurrent_calls_with_different_limits_do_not_interfere() -> None:
    data = _encode(_solid((400, 300)), "PNG")
    strict, lenient = _settings(max_pixels=100_000), _settings()

    outcomes = await asyncio.gather(
        *(prepare_image_async(data, strict if i % 2 else lenient) for i in range(8)),
        return_exceptions=True,
    )

    for index, outcome in enumerate(outcomes):
        if index % 2:
            assert isinstance(outcome, ImageRejected)
            assert outcome.key == "image.too_many_pixels"
        else:
            assert isinstance(outcome, PreparedImage)
            assert outcome.source_size == (400, 300)
