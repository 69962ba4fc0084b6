"""Draw samples/portrait.jpg: a stylised character portrait for demos and benchmarks.

Run with ``python samples/make_portrait.py``; the output is deterministic.
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

W, H = 768, 1024
S = 3  # supersampling factor: draw big, shrink once, and every edge is antialiased

Point = tuple[float, float]


def _p(x: float, y: float) -> tuple[float, float]:
    return (x * S, y * S)


def _box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    return (x0 * S, y0 * S, x1 * S, y1 * S)


def _lerp(a: tuple[int, ...], b: tuple[int, ...], t: float) -> tuple[int, ...]:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def _bezier(p0: Point, p1: Point, p2: Point, p3: Point, n: int = 24) -> list[Point]:
    pts = []
    for i in range(n + 1):
        t = i / n
        u = 1 - t
        pts.append(
            (
                u**3 * p0[0] + 3 * u * u * t * p1[0] + 3 * u * t * t * p2[0] + t**3 * p3[0],
                u**3 * p0[1] + 3 * u * u * t * p1[1] + 3 * u * t * t * p2[1] + t**3 * p3[1],
            )
        )
    return pts


def _scaled(points: list[Point]) -> list[tuple[float, float]]:
    return [_p(x, y) for x, y in points]


def _background() -> Image.Image:
    # A dusk sky: warm at the top, violet at the bottom; drawn small and stretched (smooth, cheap).
    stops = [(0.0, (255, 214, 170)), (0.45, (241, 150, 150)), (1.0, (92, 84, 150))]
    column = Image.new("RGB", (1, 256))
    for y in range(256):
        t = y / 255
        for (t0, c0), (t1, c1) in itertools.pairwise(stops):
            if t0 <= t <= t1:
                column.putpixel((0, y), _lerp(c0, c1, (t - t0) / (t1 - t0)))
                break
    bg = column.resize((W * S, H * S), Image.Resampling.BICUBIC).convert("RGBA")
    # Bokeh: soft light discs, the usual shorthand for "portrait lens".
    rng = random.Random(7)
    bokeh = _soft_layer(bg.size, (245, 225, 220))
    draw = ImageDraw.Draw(bokeh)
    for _ in range(26):
        x, y = rng.uniform(0, W), rng.uniform(0, H * 0.75)
        r = rng.uniform(18, 60)
        colour = rng.choice([(255, 240, 200), (255, 200, 220), (220, 210, 255)])
        draw.ellipse(_box(x - r, y - r, x + r, y + r), fill=(*colour, rng.randint(40, 90)))
    bokeh = bokeh.filter(ImageFilter.GaussianBlur(4 * S))
    return Image.alpha_composite(bg, bokeh)


def _face_outline(cx: float, cy: float, a: float, b: float) -> list[Point]:
    pts = []
    for i in range(120):
        t = 2 * math.pi * i / 120
        s = math.sin(t)
        # Narrow the lower half towards a soft pointed chin.
        narrow = 1 - 0.28 * s * s if s > 0 else 1.0
        pts.append((cx + a * math.cos(t) * narrow, cy + b * s * (1.06 if s > 0 else 1.0)))
    return pts


def _eye(draw: ImageDraw.ImageDraw, cx: float, cy: float, flip: bool) -> None:
    d = -1 if flip else 1
    draw.ellipse(_box(cx - 40, cy - 26, cx + 40, cy + 26), fill=(252, 250, 255))
    # Iris: concentric ellipses fake a vertical gradient.
    for i in range(10):
        t = i / 9
        rx, ry = 25 - 9 * t, 31 - 11 * t
        colour = _lerp((70, 45, 110), (170, 120, 220), t)
        draw.ellipse(_box(cx - rx, cy - ry + 4 * t, cx + rx, cy + ry + 4 * t), fill=colour)
    draw.ellipse(_box(cx - 10, cy - 10, cx + 10, cy + 12), fill=(35, 20, 50))
    draw.ellipse(_box(cx - 15 * d - 8, cy - 20, cx - 15 * d + 6, cy - 6), fill=(255, 255, 255))
    draw.ellipse(_box(cx + 9 * d - 4, cy + 9, cx + 9 * d + 4, cy + 17), fill=(255, 255, 255))
    # Upper lash line and a flick at the outer corner.
    lash = _bezier((cx - 44, cy - 4), (cx - 28, cy - 36), (cx + 26, cy - 38), (cx + 46, cy - 10))
    if flip:
        lash = [(2 * cx - x, y) for x, y in lash]
    draw.line(_scaled(lash), fill=(45, 28, 45), width=7 * S, joint="curve")
    tip = (cx + 46 * d, cy - 10)
    draw.polygon(_scaled([tip, (cx + 58 * d, cy - 24), (cx + 40 * d, cy - 18)]), fill=(45, 28, 45))
    lower = _bezier((cx - 30, cy + 26), (cx - 10, cy + 33), (cx + 14, cy + 33), (cx + 34, cy + 24))
    draw.line(_scaled(lower), fill=(150, 95, 95), width=2 * S)


def _quad(p0: Point, c: Point, p1: Point, n: int = 16) -> list[Point]:
    return [
        (
            (1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * c[0] + t * t * p1[0],
            (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * c[1] + t * t * p1[1],
        )
        for t in (i / n for i in range(n + 1))
    ]


def _arc(
    cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 48
) -> list[Point]:
    return [
        (cx + rx * math.cos(a0 + (a1 - a0) * i / n), cy + ry * math.sin(a0 + (a1 - a0) * i / n))
        for i in range(n + 1)
    ]


def _soft_layer(size: tuple[int, int], tint: tuple[int, int, int]) -> Image.Image:
    # Transparent pixels carry the tint, so blurring does not drag dark fringes into the edges.
    return Image.new("RGBA", size, (*tint, 0))


def make_portrait() -> Image.Image:
    """Draw the portrait and return it as an RGB image of W x H."""
    img = _background()
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    hair, hair_light = (58, 40, 66), (112, 84, 128)
    skin, skin_shadow = (250, 218, 196), (234, 184, 164)
    top_colour, collar = (42, 110, 122), (245, 245, 240)

    # Long hair behind the head, falling past the shoulders with a soft wave at the ends.
    back = _bezier((186, 390), (130, 600), (150, 820), (168, 1000))
    back += _quad((168, 1000), (384, 1040), (600, 1000))
    back += _bezier((600, 1000), (618, 820), (638, 600), (582, 390))
    draw.polygon(_scaled(back), fill=hair)
    draw.ellipse(_box(184, 170, 584, 620), fill=hair)

    # Shoulders in a teal top with a white V collar.
    body = _bezier((20, 1024), (50, 820), (170, 740), (340, 705))
    body += [(428, 705)]
    body += _bezier((428, 705), (598, 740), (718, 820), (748, 1024))
    draw.polygon(_scaled(body), fill=top_colour)
    draw.polygon(
        _scaled([(318, 712), (384, 810), (450, 712), (424, 702), (384, 760), (344, 702)]),
        fill=collar,
    )
    # Neck, with the shade the chin throws.
    draw.polygon(_scaled([(346, 560), (422, 560), (424, 720), (384, 750), (344, 720)]), fill=skin)
    draw.polygon(
        _scaled([*_quad((346, 620), (384, 700), (422, 620)), (422, 600), (346, 600)]),
        fill=skin_shadow,
    )

    # Face.
    face = _face_outline(384, 430, 150, 190)
    draw.polygon(_scaled(face), fill=skin)

    # Fringe: the crown, then curved locks that end in points across the forehead.
    tips = [
        (590, 500),
        (524, 352),
        (492, 432),
        (446, 340),
        (404, 420),
        (362, 338),
        (318, 424),
        (270, 352),
        (236, 446),
        (178, 500),
    ]
    fringe = _arc(384, 395, 200, 225, math.pi, 2 * math.pi)
    for (x0, y0), (x1, y1) in itertools.pairwise(tips):
        bow = (x0 + x1) / 2 + (8 if y1 > y0 else -8), min(y0, y1) + abs(y1 - y0) * 0.25
        fringe += _quad((x0, y0), bow, (x1, y1), 10)
    draw.polygon(_scaled(fringe), fill=hair)
    for side in (-1, 1):
        x0 = 384 + side * 172
        lock = _bezier(
            (x0, 320), (x0 + side * 12, 480), (x0 - side * 4, 580), (x0 - side * 26, 690)
        )
        lock += _bezier(
            (x0 - side * 26, 690),
            (x0 - side * 40, 580),
            (x0 - side * 38, 470),
            (x0 - side * 70, 330),
        )
        draw.polygon(_scaled(lock), fill=hair)
    # A sheen that follows the crown.
    sheen = _arc(384, 395, 168, 192, math.pi * 1.18, math.pi * 1.62, 24)
    draw.line(_scaled(sheen), fill=hair_light, width=8 * S, joint="curve")
    sheen = _arc(384, 395, 168, 192, math.pi * 1.7, math.pi * 1.8, 8)
    draw.line(_scaled(sheen), fill=hair_light, width=7 * S, joint="curve")
    # Hair clip: a small gold star.
    sx, sy = 512, 300
    star = []
    for i in range(10):
        r = 24 if i % 2 == 0 else 10
        a = -math.pi / 2 + i * math.pi / 5
        star.append((sx + r * math.cos(a), sy + r * math.sin(a)))
    draw.polygon(_scaled(star), fill=(255, 205, 90), outline=(200, 140, 40), width=2 * S)

    # Brows, eyes, nose and a small smile.
    for side in (-1, 1):
        brow = _bezier(
            (384 + side * 30, 418),
            (384 + side * 50, 404),
            (384 + side * 80, 400),
            (384 + side * 104, 410),
        )
        draw.line(_scaled(brow), fill=(80, 52, 70), width=5 * S, joint="curve")
    _eye(draw, 320, 472, flip=True)
    _eye(draw, 448, 472, flip=False)
    draw.line(
        _scaled(_bezier((386, 520), (390, 536), (388, 546), (380, 550))),
        fill=skin_shadow,
        width=3 * S,
    )
    mouth = _quad((356, 582), (384, 612), (412, 582))
    draw.polygon(_scaled(mouth), fill=(205, 95, 105))
    draw.line(_scaled(_quad((350, 580), (384, 592), (418, 580))), fill=(150, 60, 70), width=3 * S)

    img = Image.alpha_composite(img, layer)

    # Blush, blurred so it melts into the skin and clipped to the face.
    blush_tint = (240, 120, 130)
    soft = _soft_layer(img.size, blush_tint)
    sd = ImageDraw.Draw(soft)
    for cx in (292, 476):
        sd.ellipse(_box(cx - 36, 526, cx + 36, 556), fill=(*blush_tint, 120))
    soft = soft.filter(ImageFilter.GaussianBlur(8 * S))
    face_mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(face_mask).polygon(_scaled(face), fill=255)
    soft.putalpha(ImageChops.multiply(soft.getchannel("A"), face_mask))
    img = Image.alpha_composite(img, soft)

    return img.convert("RGB").resize((W, H), Image.Resampling.LANCZOS)


def main() -> None:
    """Write portrait.jpg next to this script."""
    dest = Path(__file__).with_name("portrait.jpg")
    make_portrait().save(dest, "JPEG", quality=88, optimize=True, progressive=True)
    print(f"wrote {dest} ({dest.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
