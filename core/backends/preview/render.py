"""Render a preview MP4: a slow camera move over the photo, burned-in subtitles and speech.

This is a local stand-in for a video model, not an AI render: nothing in the picture moves
except the camera, and every frame carries a "PREVIEW" label saying so. This module moves the
camera, builds the YUV frames and runs the encoder; ``subtitles`` draws the text over them and
``audio`` fits the speech into the clip.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import queue
import random
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.video.reformatter import Colorspace, VideoReformatter
from PIL import Image, ImageOps

from core.backends.base import RenderSpec
from core.backends.preview.audio import SPEECH_LEAD as SPEECH_LEAD
from core.backends.preview.audio import SPEECH_TAIL as SPEECH_TAIL
from core.backends.preview.audio import audio_track, fit_speech
from core.backends.preview.fonts import FontChoice
from core.backends.preview.subtitles import LABEL as LABEL
from core.backends.preview.subtitles import SUBTITLE_HOLD, Overlay, Timing, label, subtitles
from core.backends.preview.subtitles import wrap_text as wrap_text
from core.errors import BackendError

# The "X as X" imports are explicit re-exports: LABEL, SPEECH_LEAD, SPEECH_TAIL and wrap_text
# moved out of this module, but callers and tests still import them from here.

METADATA_COMMENT = (
    "actorbot preview renderer: a camera move over the still photo with synthetic speech "
    "(espeak-ng). Not the output of an AI video model."
)

ZOOM_RANGE = (1.10, 1.14)  # final zoom; the move always starts at 1.0

AUDIO_RATE = 48_000
AUDIO_BITRATE = 96_000
# Measured with bench/bench_render.py on 2 cores: "veryfast" with subme=1 encodes in ~60% of
# plain veryfast's CPU time and keeps most of its quality (~0.5 dB luma PSNR below it, ~1 dB
# above "superfast" at the same bitrate).
X264_PRESET = "veryfast"
X264_PARAMS = "subme=1"
_QUEUE_FRAMES = 6  # frames the producer may run ahead of the encoder

ProgressFn = Callable[[float], None]


class RenderCanceled(Exception):
    """The render was stopped through its ``stop`` event; nothing was written to ``dest``."""


@dataclass(frozen=True)
class _Motion:
    """A Ken Burns move: zoom from 1.0 to ``zoom`` while drifting towards ``focus``."""

    zoom: float
    focus: tuple[float, float]  # where the view centre ends, as fractions of the still

    @classmethod
    def from_seed(cls, seed: int) -> _Motion:
        rng = random.Random(seed)
        # Faces sit in the upper half of most portraits: drift there more often than down.
        return cls(
            zoom=rng.uniform(*ZOOM_RANGE),
            focus=(rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.6)),
        )

    def box(self, t: float, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """Return the crop box (left, top, right, bottom) of the still at time ``t`` in 0..1."""
        eased = 0.5 - 0.5 * math.cos(math.pi * min(1.0, max(0.0, t)))
        width, height = size
        zoom = 1.0 + (self.zoom - 1.0) * eased
        view_w, view_h = width / zoom, height / zoom
        cx = width * (0.5 + (self.focus[0] - 0.5) * eased)
        cy = height * (0.5 + (self.focus[1] - 0.5) * eased)
        # Keep the view inside the picture (at zoom 1.0 this pins it to the centre).
        cx = min(max(cx, view_w / 2), width - view_w / 2)
        cy = min(max(cy, view_h / 2), height - view_h / 2)
        return (cx - view_w / 2, cy - view_h / 2, cx + view_w / 2, cy + view_h / 2)


def render_preview(
    spec: RenderSpec,
    dest: Path,
    *,
    fps: int,
    video_bitrate: int,
    font: FontChoice | None,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Render ``spec`` to an MP4 at ``dest`` (H.264 + AAC, faststart); blocking and CPU-bound.

    ``font`` draws the subtitle (None: Pillow's built-in Latin font); ``progress`` gets 0..1
    from the rendering thread; setting ``stop`` aborts with RenderCanceled.
    """
    stop = stop or threading.Event()
    size = (spec.width, spec.height)
    if spec.width % 2 or spec.height % 2:
        raise BackendError(f"preview size must be even, got {size}", transient=False)
    frames = spec.seconds * fps
    still = _prepare_still(spec.image_jpeg, size)
    speech = fit_speech(spec)
    overlays = [label(font, size, frames)]
    if speech.samples:
        timing = Timing(
            first=round(SPEECH_LEAD * fps),
            speech_end=round((SPEECH_LEAD + speech.duration) * fps),
            last=min(frames - 1, round((SPEECH_LEAD + speech.duration + SUBTITLE_HOLD) * fps)),
        )
        overlays += subtitles(spec.speech, font, size, timing)
    motion = _Motion.from_seed(spec.seed)

    dest.parent.mkdir(parents=True, exist_ok=True)
    # faststart rewrites the file after encoding, which needs a seekable real file: write a
    # temporary next to dest and rename it into place only when it is complete.
    part = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        _encode(
            part,
            still=still,
            motion=motion,
            overlays=overlays,
            audio=audio_track(speech, spec.seconds),
            fps=fps,
            frames=frames,
            size=size,
            video_bitrate=video_bitrate,
            progress=progress,
            stop=stop,
        )
        os.replace(part, dest)
    except av.FFmpegError as exc:
        raise BackendError(f"preview encoding failed: {exc}", transient=False) from exc
    except OSError as exc:
        raise BackendError(f"cannot write the preview: {exc}", transient=True) from exc
    finally:
        part.unlink(missing_ok=True)


# --- picture ---------------------------------------------------------------------------------


def _prepare_still(image_jpeg: bytes, size: tuple[int, int]) -> Image.Image:
    """Decode the prepared photo once, at the output size (the only full-size resize)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            source = Image.open(io.BytesIO(image_jpeg))
            source.draft("RGB", size)  # JPEG: let libjpeg scale down while decoding
            img = ImageOps.exif_transpose(source).convert("RGB")
    except (
        OSError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise BackendError(f"cannot decode the photo: {exc}", transient=False) from exc
    if img.size != size:
        img = ImageOps.fit(img, size, Image.Resampling.LANCZOS)
    return img


# --- encoding --------------------------------------------------------------------------------

# Frames are built directly as yuv420p planes: scaling one 8-bit luma plane plus two
# quarter-size chroma planes is about a third of the work of scaling RGB and converting every
# frame (measured: ~5.5 ms vs ~15 ms per 1280x720 frame). The still and the overlays are
# converted once, with BT.709 coefficients, which the stream is tagged with.
_BT709 = 1  # AVCOL_SPC_BT709 / AVCOL_PRI_BT709 / AVCOL_TRC_BT709
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG

Planes = tuple[Image.Image, Image.Image, Image.Image]  # Y, U, V as "L" images


@dataclass(frozen=True)
class _PlaneOverlay:
    """An overlay as yuv420p planes with its alpha at full and at chroma resolution."""

    planes: Planes
    alpha: Image.Image
    alpha_half: Image.Image
    position: tuple[int, int]  # even, so chroma lines up
    first: int
    last: int


def _to_planes(img: Image.Image) -> Planes:
    """Convert an RGB picture with even sides to Y, U and V planes."""
    rgb = av.VideoFrame.from_image(img)  # type: ignore[no-untyped-call]
    yuv = VideoReformatter().reformat(
        rgb, format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=_LIMITED_RANGE
    )
    y, u, v = (
        Image.frombuffer("L", (p.width, p.height), bytes(p), "raw", "L", p.line_size, 1)
        for p in yuv.planes
    )
    return y, u, v


def _overlay_planes(overlay: Overlay) -> _PlaneOverlay:
    """Convert an RGBA overlay, padded to even sides and placed on even coordinates."""
    width, height = overlay.image.size
    img = Image.new("RGBA", (width + width % 2, height + height % 2), (0, 0, 0, 0))
    img.paste(overlay.image, (0, 0))
    alpha = img.getchannel("A")
    x, y = overlay.position
    return _PlaneOverlay(
        planes=_to_planes(img.convert("RGB")),
        alpha=alpha,
        alpha_half=alpha.reduce(2),
        position=(x - x % 2, y - y % 2),
        first=overlay.first,
        last=overlay.last,
    )


def _fill(plane: av.video.plane.VideoPlane, img: Image.Image) -> None:
    """Copy an "L" image into a frame plane, honouring the plane's row padding."""
    if plane.line_size != img.width:
        padded = Image.new("L", (plane.line_size, img.height))
        padded.paste(img, (0, 0))
        img = padded
    plane.update(img.tobytes())


def _encode(
    path: Path,
    *,
    still: Image.Image,
    motion: _Motion,
    overlays: list[Overlay],
    audio: av.AudioFrame,
    fps: int,
    frames: int,
    size: tuple[int, int],
    video_bitrate: int,
    progress: ProgressFn | None,
    stop: threading.Event,
) -> None:
    """Encode the frames made on a producer thread while this thread runs the encoder."""
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        out.metadata["comment"] = METADATA_COMMENT
        options = {"preset": X264_PRESET}
        if X264_PARAMS:
            options["x264-params"] = X264_PARAMS
        video = out.add_stream("libx264", rate=fps, options=options)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        video.bit_rate = video_bitrate
        video.codec_context.gop_size = fps * 2  # a keyframe every 2 s keeps seeking snappy
        video.codec_context.thread_count = 0  # let x264 use every core
        video.codec_context.colorspace = _BT709
        video.codec_context.color_primaries = _BT709
        video.codec_context.color_trc = _BT709
        video.codec_context.color_range = _LIMITED_RANGE
        sound = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        sound.bit_rate = AUDIO_BITRATE

        out.mux(sound.encode(audio))
        out.mux(sound.encode(None))

        made: queue.Queue[av.VideoFrame | BaseException | None] = queue.Queue(_QUEUE_FRAMES)
        halt = threading.Event()  # set when the encoder stops early, for any reason
        producer = threading.Thread(
            target=_produce,
            args=(made, _to_planes(still), motion, overlays, frames, size, stop, halt),
            name="preview-frames",
            daemon=True,
        )
        producer.start()
        try:
            step = max(1, fps // 2)
            for index in range(frames):
                item = made.get()
                if isinstance(item, BaseException):
                    raise item
                if item is None or stop.is_set():
                    raise RenderCanceled()
                item.pts = index
                item.time_base = Fraction(1, fps)
                out.mux(video.encode(item))
                if progress is not None and (index % step == 0 or index == frames - 1):
                    progress((index + 1) / frames)
            out.mux(video.encode(None))
        finally:
            halt.set()
            _drain(made, producer)


def _produce(
    made: queue.Queue[av.VideoFrame | BaseException | None],
    still: Planes,
    motion: _Motion,
    overlays: list[Overlay],
    frames: int,
    size: tuple[int, int],
    stop: threading.Event,
    halt: threading.Event,
) -> None:
    """Make every frame: crop+scale the still's planes, then paste the overlays onto them."""
    try:
        width, height = size
        half = (width // 2, height // 2)
        layers = [_overlay_planes(overlay) for overlay in overlays]
        last = max(1, frames - 1)
        for index in range(frames):
            if halt.is_set():
                return
            if stop.is_set():
                made.put(None)
                return
            # BILINEAR with a float box gives sub-pixel motion without visible stepping.
            box = motion.box(index / last, size)
            half_box = (box[0] / 2, box[1] / 2, box[2] / 2, box[3] / 2)
            y = still[0].resize(size, Image.Resampling.BILINEAR, box=box)
            u = still[1].resize(half, Image.Resampling.BILINEAR, box=half_box)
            v = still[2].resize(half, Image.Resampling.BILINEAR, box=half_box)
            for layer in layers:
                if layer.first <= index <= layer.last:
                    x0, y0 = layer.position
                    y.paste(layer.planes[0], (x0, y0), layer.alpha)
                    u.paste(layer.planes[1], (x0 // 2, y0 // 2), layer.alpha_half)
                    v.paste(layer.planes[2], (x0 // 2, y0 // 2), layer.alpha_half)
            frame = av.VideoFrame(width, height, "yuv420p")
            frame.colorspace = _BT709
            frame.color_range = _LIMITED_RANGE
            for plane, img in zip(frame.planes, (y, u, v), strict=True):
                _fill(plane, img)
            made.put(frame)
    except BaseException as exc:  # handed to the encoder thread, which raises it
        made.put(exc)


def _drain(
    made: queue.Queue[av.VideoFrame | BaseException | None], producer: threading.Thread
) -> None:
    """Unblock and join the producer after the encoder loop ends, normally or not."""
    while producer.is_alive():
        with contextlib.suppress(queue.Empty):
            made.get(timeout=0.05)
    producer.join()
