"""Time the offline preview renderer: wall seconds per second of 1280x720 24 fps video.

Run: .venv/bin/python bench/bench_render.py [--runs N] [--preset P] [--x264-params S]
Prints figures against the 0.45 s/s target; never fails on a timing. Each figure is the best of
``--runs`` renders, because other processes on a shared machine only ever make a run slower.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.backends.base import RenderSpec  # noqa: E402
from core.backends.preview import fonts, render  # noqa: E402

TARGET = 0.45  # wall seconds per second of video (the ffmpeg CLI's zoompan does ~0.44 here)
LINES = {
    5: "你不会真的以为，我是那种一哭就输的女孩？",
    10: "你不会真的以为，我是那种一哭就输的女孩？这一次，我一定会赢回来，谁也别想拦住我。",
}


def _prepared_image(width: int, height: int) -> bytes:
    img = Image.open(ROOT / "samples" / "portrait.jpg").convert("RGB")
    img = ImageOps.fit(img, (width, height), Image.Resampling.LANCZOS, centering=(0.5, 0.3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the speech process
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    """Render a 5 s and a 10 s preview and print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--preset", default=render.X264_PRESET, help="libx264 preset to try")
    parser.add_argument("--x264-params", default=render.X264_PARAMS, help='e.g. "subme=1"')
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--keep", action="store_true", help="keep the MP4s and print their paths")
    args = parser.parse_args()
    render.X264_PRESET = args.preset
    render.X264_PARAMS = args.x264_params

    image = _prepared_image(1280, 720)
    font = fonts.find_font(need_cjk=True)
    print(
        f"cpus={os.cpu_count()} preset={args.preset} x264-params={args.x264_params!r} "
        f"fps={args.fps} font={font.path or 'builtin'}"
    )
    out_dir = Path(tempfile.mkdtemp(prefix="bench_render_"))
    for seconds, line in LINES.items():
        spec = RenderSpec(
            job_id=f"bench-{seconds}",
            image_jpeg=image,
            width=1280,
            height=720,
            line=line,
            speech=line,
            language="zh",
            seconds=seconds,
            seed=7,
            voice="lily",
        )
        dest = out_dir / f"preview_{seconds}s.mp4"
        timings, cpu = [], []
        for _ in range(args.runs):
            cpu_start = _cpu_seconds()
            start = time.perf_counter()
            render.render_preview(spec, dest, fps=args.fps, video_bitrate=2_500_000, font=font)
            timings.append(time.perf_counter() - start)
            cpu.append(_cpu_seconds() - cpu_start)
        best = min(timings)
        verdict = "ok" if best / seconds <= TARGET else "OVER TARGET"
        runs = ", ".join(f"{t:.2f}" for t in timings)
        print(
            f"{seconds:>2} s clip: best {best:.2f} s wall = {best / seconds:.3f} s/s of video "
            f"(target {TARGET}) {verdict}; runs [{runs}] s; {dest.stat().st_size / 1e6:.2f} MB"
        )
        # CPU seconds barely move with other load: the number to compare variants by.
        print(f"   cpu {min(cpu):.2f} s = {min(cpu) / seconds:.3f} cpu-s per video second")
        if args.keep:
            print(f"   kept {dest}")
        else:
            dest.unlink()
    if not args.keep:
        out_dir.rmdir()


if __name__ == "__main__":
    main()
