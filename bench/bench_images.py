"""Time photo preparation on a 12 MP camera-like JPEG: a plain pipeline vs prepare_image.

Run as ``.venv/bin/python bench/bench_images.py``. It prints figures and never fails.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable

from PIL import Image

from config.settings import ImageSettings
from core.images import prepare_image

TARGET_MS = 140.0
RUNS = 15
SOURCE_SIZE = (4000, 3000)


def photo_like_jpeg(size: tuple[int, int] = SOURCE_SIZE, quality: int = 90) -> bytes:
    """Build a JPEG that costs what a camera photo costs: gradients plus colour grain.

    Noise is what makes real photos expensive to decode; with this much a 12 MP frame
    weighs ~4 MB at quality 90, like a phone photo (a flat gradient would be ~0.5 MB and
    decode several times faster, flattering every figure).
    """
    # Smooth colour gradients, built small and scaled up, like sky and skin.
    small = Image.new("RGB", (64, 48))
    small.putdata(
        [
            (x * 4 % 256, y * 5 % 256, (x + y) * 2 % 256)
            for y in range(small.height)
            for x in range(small.width)
        ]
    )
    base = small.resize(size, Image.Resampling.BICUBIC)
    grain = Image.merge("RGB", [Image.effect_noise(size, 40) for _ in range(3)])
    photo = Image.blend(base, grain, 0.3)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def plain_pipeline(data: bytes, settings: ImageSettings) -> bytes:
    """Full-size decode, centre crop to 16:9, LANCZOS resize, encode: no draft."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        width, height = im.size
        crop_h = width * settings.height / settings.width
        top = (height - crop_h) * settings.crop_bias
        box = (0.0, top, float(width), top + crop_h)
        out = im.resize((settings.width, settings.height), Image.Resampling.LANCZOS, box=box)
    buffer = io.BytesIO()
    out.save(buffer, "JPEG", quality=settings.jpeg_quality)
    return buffer.getvalue()


def median_ms(func: Callable[[], object], runs: int = RUNS) -> float:
    """Return the median wall time of ``func`` in milliseconds, after one warm-up call."""
    func()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    """Print the figures."""
    settings = ImageSettings()
    data = photo_like_jpeg()
    print(
        f"source: {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} JPEG q90, {len(data) / 1e6:.1f} MB; "
        f"output {settings.width}x{settings.height} q{settings.jpeg_quality}; "
        f"median of {RUNS} runs"
    )

    def full_decode() -> None:
        with Image.open(io.BytesIO(data)) as im:
            im.load()

    figures = [
        ("full decode only (reference)", median_ms(full_decode)),
        (
            "(a) full decode + crop + resize + encode, no draft",
            median_ms(lambda: plain_pipeline(data, settings)),
        ),
        ("(b) prepare_image (crop, draft)", median_ms(lambda: prepare_image(data, settings))),
        (
            "(b') prepare_image (pad, draft)",
            median_ms(lambda: prepare_image(data, settings.model_copy(update={"fit": "pad"}))),
        ),
    ]
    for label, ms in figures:
        print(f"  {label:<52} {ms:7.1f} ms")
    verdict = "meets" if figures[2][1] <= TARGET_MS else "MISSES"
    print(f"target for prepare_image: <= {TARGET_MS:.0f} ms -> {verdict} it")


if __name__ == "__main__":
    main()
