"""The offline preview renderer: speech, fonts, the MP4 it writes, and the backend protocol."""

from __future__ import annotations

import array
import asyncio
import hashlib
import io
import logging
import math
import os
import shutil
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from config.settings import PreviewSettings
from core.backends.base import BackendState, BackendStatus, RenderSpec
from core.backends.preview import PreviewBackend, audio, fonts, render, tts
from core.backends.preview.fonts import FontChoice
from core.errors import BackendError

ZH_LINE = "你不会真的以为，我是那种一哭就输的女孩？"
EN_LINE = "You really thought I was the kind of girl who loses the moment she cries?"
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def picture_jpeg(width: int = 320, height: int = 180) -> bytes:
    """A 16:9 test picture with detail, so motion and subtitles show up in frame diffs."""
    img = Image.new("RGB", (width, height), (40, 70, 110))
    draw = ImageDraw.Draw(img)
    for i in range(0, width, max(4, width // 24)):
        draw.line((i, 0, width - i, height), fill=(200, 120 + i % 100, 60), width=2)
    draw.ellipse((width * 0.35, height * 0.1, width * 0.65, height * 0.7), fill=(240, 200, 170))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_spec(
    *,
    speech: str = EN_LINE,
    language: str = "en",
    seconds: int = 5,
    size: tuple[int, int] = (320, 180),
    job_id: str = "job-1",
    image: bytes | None = None,
    voice: str | None = "lily",
) -> RenderSpec:
    return RenderSpec(
        job_id=job_id,
        image_jpeg=picture_jpeg(*size) if image is None else image,
        width=size[0],
        height=size[1],
        line=f"She says: '{speech}'",
        speech=speech,
        language=language,
        seconds=seconds,
        seed=11,
        voice=voice,
    )


def rms(pcm: bytes) -> float:
    samples = array.array("h", pcm)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def cjk_font() -> FontChoice:
    choice = fonts.find_font(need_cjk=True)
    if not choice.covers_cjk:
        pytest.skip("no CJK-capable font on this machine (install fonts-noto-cjk)")
    return choice


def top_level_boxes(path: Path) -> list[str]:
    """Return the MP4's top-level box types in file order."""
    boxes = []
    with path.open("rb") as f:
        while header := f.read(8):
            size, kind = struct.unpack(">I4s", header)
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0] - 8
            elif size == 0:
                boxes.append(kind.decode("latin-1"))
                break
            boxes.append(kind.decode("latin-1"))
            f.seek(size - 8, io.SEEK_CUR)
    return boxes


def decoded_audio(path: Path) -> tuple[array.array[float], int]:
    """Decode the audio track to mono float samples."""
    samples: array.array[float] = array.array("f")
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                samples.frombytes(bytes(out.planes[0])[: out.samples * 4])
        rate = stream.rate
    return samples, rate


def frame_at(path: Path, index: int) -> Image.Image:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_image()
    raise AssertionError(f"no frame {index}")


# --- speech ------------------------------------------------------------------------------------


def test_english_speech_is_audible_and_plausibly_long() -> None:
    speech = tts.synthesize("Hello there, how are you today?", "en", None)
    assert speech.sample_rate == 22050
    assert 1.0 < speech.duration < 3.5
    assert rms(speech.pcm) > 500


def test_mandarin_is_spoken_as_syllables_not_letter_names() -> None:
    mandarin = tts.synthesize("你好世界啊", "zh", None)
    # The English voice spells each character out ("Chinese letter ..."): far longer.
    spelled = tts.synthesize("你好世界啊", "en", None)
    assert 0.6 < mandarin.duration < 2.5
    assert rms(mandarin.pcm) > 500
    assert mandarin.duration < 0.5 * spelled.duration
    long_line = tts.synthesize(ZH_LINE, "zh", "lily")
    assert 2.5 < long_line.duration < 7.0  # 19 characters at ~3-6 per second


def test_a_voice_name_always_gives_the_same_voice() -> None:
    first = tts.synthesize(ZH_LINE, "zh", "lily")
    again = tts.synthesize(ZH_LINE, "zh", "lily")
    other = tts.synthesize(ZH_LINE, "zh", "marcus")
    assert first.pcm == again.pcm
    assert first.pcm != other.pcm
    assert tts.voice_params(" Lily ") == tts.voice_params("lily")
    assert tts.voice_params(None) == tts.DEFAULT_VOICE
    names = ["lily", "marcus", "Ms. Chen", "狐狸", "npc-7", "ann", "bo"]
    assert len({tts.voice_params(name) for name in names}) == len(names)


def test_the_same_voice_in_every_process() -> None:
    code = (
        "import hashlib; from core.backends.preview import tts; "
        "print(tts.voice_params('lily'), "
        "hashlib.sha256(tts.synthesize('你好', 'zh', 'lily').pcm).hexdigest())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},  # hash() would differ between these
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    here = hashlib.sha256(tts.synthesize("你好", "zh", "lily").pcm).hexdigest()
    assert outputs == {f"{tts.voice_params('lily')} {here}\n"}


def test_other_language_uses_english() -> None:
    assert tts.espeak_language("other") == "en"
    assert tts.espeak_language("zh") == "cmn"
    assert tts.synthesize("Bonjour", "other", None).pcm == tts.synthesize("Bonjour", "en", None).pcm


def test_synthesis_is_safe_from_many_threads() -> None:
    expected = tts.synthesize(EN_LINE, "en", "kai").pcm
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: tts.synthesize(EN_LINE, "en", "kai").pcm, range(4)))
    assert results == [expected] * 4


def test_empty_text_is_silence() -> None:
    assert tts.synthesize("  ", "en", None).samples == 0


def test_faster_speech_is_shorter() -> None:
    normal = tts.synthesize(EN_LINE, "en", None)
    fast = tts.synthesize(EN_LINE, "en", None, speed=1.6)
    assert fast.duration < 0.8 * normal.duration


def test_a_broken_library_is_a_permanent_backend_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _, data = tts._library_paths()
    monkeypatch.setattr(tts, "_library_paths", lambda: ("/nonexistent/libespeak-ng.so", data))
    with pytest.raises(BackendError, match="cannot load espeak-ng") as caught:
        tts.synthesize("hello", "en", None)
    assert caught.value.transient is False


# --- fonts -------------------------------------------------------------------------------------


def test_a_cjk_font_is_found_and_really_draws_chinese() -> None:
    choice = cjk_font()
    face = fonts.load_font(choice, 32)
    assert fonts.missing_glyphs(face, ZH_LINE) == set()


def test_coverage_is_checked_with_glyphs_not_file_names(tmp_path: Path) -> None:
    if not DEJAVU.is_file():
        pytest.skip("DejaVu Sans is not installed")
    impostor = tmp_path / "NotoSansCJK-Regular.ttc"
    shutil.copyfile(DEJAVU, impostor)
    fonts.find_font.cache_clear()
    try:
        assert fonts._open(str(impostor)) == FontChoice(path=str(impostor), covers_cjk=False)
        choice = fonts.find_font(str(impostor), need_cjk=False)
        assert choice.path == str(impostor)
        assert not choice.covers_cjk
    finally:
        fonts.find_font.cache_clear()
    face = fonts.load_font(fonts.FontChoice(str(DEJAVU)), 32)
    assert fonts.missing_glyphs(face, "Hi 你好") == {"你", "好"}


def test_explicit_font_without_chinese_falls_back_to_a_cjk_one() -> None:
    cjk_font()
    if not DEJAVU.is_file():
        pytest.skip("DejaVu Sans is not installed")
    fonts.find_font.cache_clear()
    try:
        assert fonts.find_font(str(DEJAVU), need_cjk=False).path == str(DEJAVU)
        assert fonts.find_font(str(DEJAVU), need_cjk=True).covers_cjk
    finally:
        fonts.find_font.cache_clear()


def test_has_cjk() -> None:
    assert fonts.has_cjk("他说：你好")
    assert fonts.has_cjk("ok，")  # a full-width comma needs a CJK font too
    assert not fonts.has_cjk("Hello — world")


# --- layout and motion -------------------------------------------------------------------------


def test_chinese_wraps_between_characters_and_keeps_punctuation_on_the_line() -> None:
    face = fonts.load_font(cjk_font(), 20)
    lines = render.wrap_text(ZH_LINE * 2, face, 150)
    assert len(lines) > 2
    assert "".join(lines) == ZH_LINE * 2
    for line in lines:
        assert line[0] not in "，？。"
        assert face.getlength(line.rstrip("，？。")) <= 150


def test_english_wraps_at_spaces() -> None:
    face = fonts.load_font(fonts.BUILTIN, 20)
    lines = render.wrap_text(EN_LINE, face, 200)
    assert " ".join(lines) == EN_LINE
    assert all(face.getlength(line) <= 200 for line in lines)
    broken = render.wrap_text("x" * 80, face, 100)  # one unbreakable word: split anywhere
    assert "".join(broken) == "x" * 80
    assert len(broken) > 1 and all(face.getlength(line) <= 100 for line in broken)


def test_the_camera_move_is_gentle_and_deterministic() -> None:
    motion = render._Motion.from_seed(5)
    assert motion == render._Motion.from_seed(5)
    assert motion != render._Motion.from_seed(6)
    size = (1280, 720)
    assert motion.box(0.0, size) == pytest.approx((0, 0, 1280, 720))
    left, top, right, bottom = motion.box(1.0, size)
    assert 1.10 <= 1280 / (right - left) <= 1.14
    for step in range(101):
        left, top, right, bottom = motion.box(step / 100, size)
        assert left >= 0 and top >= 0 and right <= 1280 + 1e-6 and bottom <= 720 + 1e-6


# --- rendering ---------------------------------------------------------------------------------


def test_renders_a_faststart_h264_aac_mp4(tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"
    seen: list[float] = []
    render.render_preview(
        make_spec(), dest, fps=12, video_bitrate=400_000, font=None, progress=seen.append
    )
    with av.open(str(dest)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert audio.codec_context.name == "aac"
        assert (video.codec_context.width, video.codec_context.height) == (320, 180)
        assert video.codec_context.pix_fmt == "yuv420p"
        assert video.average_rate == 12
        assert container.duration is not None
        assert abs(container.duration / 1e6 - 5.0) <= 0.15
        assert "Not the output of an AI" in container.metadata.get("comment", "")
        assert sum(1 for _ in container.decode(video=0)) == 60
    boxes = top_level_boxes(dest)
    assert boxes.index("moov") < boxes.index("mdat")
    samples, rate = decoded_audio(dest)
    assert abs(len(samples) / rate - 5.0) <= 0.15
    lead = samples[: int(0.25 * rate)]
    assert max(abs(s) for s in lead) < 0.01  # the line starts ~0.3 s in
    spoken = samples[int(0.3 * rate) : int(2.5 * rate)]
    assert math.sqrt(sum(s * s for s in spoken) / len(spoken)) > 0.02
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temp file left over


def test_full_size_render(tmp_path: Path) -> None:
    dest = tmp_path / "full.mp4"
    spec = make_spec(size=(1280, 720), speech=ZH_LINE, language="zh")
    render.render_preview(spec, dest, fps=24, video_bitrate=2_500_000, font=cjk_font())
    with av.open(str(dest)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (1280, 720)
        assert video.average_rate == 24
        assert container.duration is not None
        assert abs(container.duration / 1e6 - 5.0) <= 0.15
        assert video.frames == 120
    boxes = top_level_boxes(dest)
    assert boxes.index("moov") < boxes.index("mdat")


def test_chinese_subtitle_draws_real_glyphs(tmp_path: Path) -> None:
    font = cjk_font()
    spec = make_spec(speech=ZH_LINE, language="zh", size=(640, 360))
    with_text, without = tmp_path / "with.mp4", tmp_path / "without.mp4"
    render.render_preview(spec, with_text, fps=12, video_bitrate=1_500_000, font=font)
    # The same take with no subtitle to compare against (a plain Latin font skips Chinese).
    latin = FontChoice(path=str(DEJAVU)) if DEJAVU.is_file() else fonts.BUILTIN
    render.render_preview(spec, without, fps=12, video_bitrate=1_500_000, font=latin)
    index = 12 * 2  # 2 s in: the line is being spoken
    a, b = frame_at(with_text, index), frame_at(without, index)
    bottom = (0, int(360 * 0.6), 640, 360)
    changed = ImageStat.Stat(ImageChops.difference(a.crop(bottom), b.crop(bottom))).mean
    assert sum(changed) / 3 > 8  # a box and many white strokes
    # White strokes of 19 glyphs at this size: ~1300 px (a missing-glyph font draws none).
    white = sum(a.crop(bottom).convert("L").histogram()[221:])
    assert white > 800
    assert fonts.missing_glyphs(fonts.load_font(font, 20), ZH_LINE) == set()
    top = (0, int(360 * 0.2), 640, int(360 * 0.5))  # away from the label and the subtitle
    assert sum(ImageStat.Stat(ImageChops.difference(a.crop(top), b.crop(top))).mean) / 3 < 2


def test_chinese_without_a_cjk_font_skips_the_subtitle_and_says_how_to_fix_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fonts, "_warned", False)
    spec = make_spec(speech=ZH_LINE, language="zh")
    caplog.set_level(logging.WARNING)
    render.render_preview(spec, tmp_path / "a.mp4", fps=12, video_bitrate=400_000, font=None)
    render.render_preview(spec, tmp_path / "b.mp4", fps=12, video_bitrate=400_000, font=None)
    warnings = [r for r in caplog.records if "Chinese glyphs" in r.getMessage()]
    assert len(warnings) == 1  # once per process, not once per render
    message = warnings[0].getMessage()
    assert "fonts-noto-cjk" in message and "fonts-wqy-microhei" in message
    assert "ACTORBOT_PREVIEW__FONT_PATH" in message
    # Nothing was drawn at the bottom: no subtitle box and no tofu.
    frame = frame_at(tmp_path / "a.mp4", 24)
    plain = picture_jpeg()
    reference = Image.open(io.BytesIO(plain)).convert("RGB")
    box = render._Motion.from_seed(spec.seed).box(24 / 59, (320, 180))
    reference = reference.resize((320, 180), Image.Resampling.BILINEAR, box=box)
    bottom = (0, 120, 320, 180)
    diff = ImageStat.Stat(ImageChops.difference(frame.crop(bottom), reference.crop(bottom))).mean
    assert sum(diff) / 3 < 6


def test_a_line_too_long_for_the_clip_is_sped_up_not_cut() -> None:
    long_line = " ".join([EN_LINE] * 2)
    natural = tts.synthesize(long_line, "en", "lily")
    assert natural.duration > 5.0
    fitted = audio.fit_speech(make_spec(speech=long_line, seconds=5))
    assert natural.duration / 2 < fitted.duration <= 5 - render.SPEECH_LEAD - render.SPEECH_TAIL
    assert rms(fitted.pcm[-(22050 // 4) * 2 :]) > 200  # it still ends in speech, not cut short


def test_the_last_resort_squeeze_keeps_all_of_the_speech() -> None:
    speech = tts.synthesize(EN_LINE, "en", None)
    squeezed = audio._squeeze(speech, speech.duration / 2)
    assert squeezed.duration == pytest.approx(speech.duration / 2, abs=0.01)
    assert rms(squeezed.pcm[-(22050 // 10) * 2 :]) > 100  # ends in speech: nothing was cut


def test_stop_aborts_without_leaving_files(tmp_path: Path) -> None:
    stop = threading.Event()

    def progress(done: float) -> None:
        if done > 0.2:
            stop.set()

    dest = tmp_path / "out.mp4"
    with pytest.raises(render.RenderCanceled):
        render.render_preview(
            make_spec(),
            dest,
            fps=12,
            video_bitrate=400_000,
            font=None,
            progress=progress,
            stop=stop,
        )
    assert list(tmp_path.iterdir()) == []


def test_an_undecodable_photo_is_a_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="cannot decode") as caught:
        render.render_preview(
            make_spec(image=b"not a jpeg"), tmp_path / "x.mp4", fps=12, video_bitrate=1, font=None
        )
    assert caught.value.transient is False


# --- the backend -------------------------------------------------------------------------------


@pytest.fixture
def preview_settings() -> PreviewSettings:
    return PreviewSettings(slots=1, fps=12, video_bitrate=400_000)


async def wait_final(backend: PreviewBackend, handle: str, limit: float = 60) -> BackendStatus:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        status = await backend.wait(handle, timeout=5)
        if status.is_final:
            return status
    raise AssertionError("the render did not finish")


async def wait_running(backend: PreviewBackend, handle: str) -> BackendStatus:
    for _ in range(400):
        status = await backend.wait(handle, timeout=0.05)
        if status.state is BackendState.RUNNING and (status.progress or 0) > 0:
            return status
        assert not status.is_final, status
    raise AssertionError("the render never started")


async def test_submit_wait_fetch(tmp_path: Path, preview_settings: PreviewSettings) -> None:
    backend = PreviewBackend(work_dir=tmp_path / "work", settings=preview_settings)
    try:
        handle = await backend.submit(make_spec(job_id="job/42"))
        assert handle.startswith("job_42-")
        assert await backend.find(make_spec(job_id="job/42")) == handle
        assert await backend.find(make_spec(job_id="job/43")) is None
        status = await wait_final(backend, handle)
        assert status.state is BackendState.SUCCEEDED
        assert status.progress == 1.0
        dest = tmp_path / "fetched.mp4"
        await backend.fetch(handle, dest, max_bytes=50_000_000)
        with av.open(str(dest)) as container:
            assert container.streams.video[0].codec_context.name == "h264"
        # A finished job answers at once, whatever the timeout.
        assert (await backend.wait(handle, timeout=30)).state is BackendState.SUCCEEDED
        # Fetched jobs leave memory, not the disk: recovery can still find and fetch it.
        assert await backend.find(make_spec(job_id="job/42")) == handle
        await backend.fetch(handle, tmp_path / "again.mp4", max_bytes=50_000_000)
        assert (tmp_path / "again.mp4").stat().st_size == dest.stat().st_size
    finally:
        await backend.aclose()


async def test_wait_reports_running_progress_and_queue_position(
    tmp_path: Path, preview_settings: PreviewSettings
) -> None:
    backend = PreviewBackend(work_dir=tmp_path, settings=preview_settings)
    try:
        first = await backend.submit(make_spec(job_id="a", size=(640, 360)))
        second = await backend.submit(make_spec(job_id="b"))
        queued = await backend.wait(second, timeout=0.01)
        assert queued.state is BackendState.QUEUED
        assert queued.queue_position == 0
        running = await wait_running(backend, first)
        assert running.progress is not None and 0 < running.progress < 1
        assert (await wait_final(backend, second)).state is BackendState.SUCCEEDED
    finally:
        await backend.aclose()


async def test_find_after_a_restart(tmp_path: Path, preview_settings: PreviewSettings) -> None:
    backend = PreviewBackend(work_dir=tmp_path, settings=preview_settings)
    handle = await backend.submit(make_spec(job_id="job-7"))
    await backend.aclose()
    again = PreviewBackend(work_dir=tmp_path, settings=preview_settings)
    try:
        assert await again.find(make_spec(job_id="job-7")) == handle
        assert await again.find(make_spec(job_id="job-")) is None
    finally:
        await again.aclose()


async def test_an_interrupted_render_resumes_after_a_restart(
    tmp_path: Path, preview_settings: PreviewSettings
) -> None:
    crashed = PreviewBackend(work_dir=tmp_path, settings=preview_settings)
    handle = await crashed.submit(make_spec(job_id="job-9", size=(640, 360)))
    await crashed.aclose()  # stops the render as a crash would
    assert not (tmp_path / handle / "preview.mp4").exists()
    restarted = PreviewBackend(work_dir=tmp_path, settings=preview_settings)
    try:
        status = await wait_final(restarted, handle)
        assert status.state is BackendState.SUCCEEDED
        dest = tmp_path / "out.mp4"
        await restarted.fetch(handle, dest, max_bytes=50_000_000)
        assert dest.stat().st_size > 10_000
        assert not list((tmp_path / handle).glob(".*.part"))
    finally:
        await restarted.aclose()
    # Finished on disk: a third instance serves it without rendering again.
    third = PreviewBackend(work_dir=tmp_path, settings=preview_settings)
    try:
        status = await third.wait(handle, timeout=0)
        assert status.state is BackendState.SUCCEEDED
    finally:
        await third.aclose()


async def test_cancel_stops_the_render_and_removes_its_files(
    tmp_path: Path, preview_settings: PreviewSettings
) -> None:
    backend = PreviewBackend(work_dir=tmp_path, settings=preview_settings)
    try:
        handle = await backend.submit(make_spec(seconds=10, size=(1280, 720)))
        await wait_running(backend, handle)
        started = asyncio.get_running_loop().time()
        await backend.cancel(handle)
        assert asyncio.get_running_loop().time() - started < 5
        status = await backend.wait(handle, timeout=1)
        assert status.state is BackendState.CANCELED
        assert not (tmp_path / handle).exists()
        with pytest.raises(BackendError):
            await backend.fetch(handle, tmp_path / "x.mp4", max_bytes=10**9)
        assert await backend.find(make_spec(job_id="job-1")) is None
        await backend.cancel(handle)  # again: not an error
        await backend.cancel("never-submitted")
    finally:
        await backend.aclose()


async def test_cancel_a_queued_job(tmp_path: Path, preview_settings: PreviewSettings) -> None:
    backend = PreviewBackend(work_dir=tmp_path, settings=preview_settings)
    try:
        first = await backend.submit(make_spec(job_id="a"))
        second = await backend.submit(make_spec(job_id="b"))
        await backend.cancel(second)
        assert (await backend.wait(second, timeout=0)).state is BackendState.CANCELED
        assert (await wait_final(backend, first)).state is BackendState.SUCCEEDED
        assert not (tmp_path / second).exists()
    finally:
        await backend.aclose()


async def test_fetch_refuses_a_result_over_the_limit(
    tmp_path: Path, preview_settings: PreviewSettings
) -> None:
    backend = PreviewBackend(work_dir=tmp_path / "work", settings=preview_settings)
    try:
        handle = await backend.submit(make_spec())
        assert (await wait_final(backend, handle)).state is BackendState.SUCCEEDED
        dest = tmp_path / "out.mp4"
        with pytest.raises(BackendError, match="over the 1000 byte limit") as caught:
            await backend.fetch(handle, dest, max_bytes=1000)
        assert caught.value.transient is False
        assert not dest.exists()
        assert list(tmp_path.glob(".*")) == []
    finally:
        await backend.aclose()


async def test_unknown_handles(tmp_path: Path, preview_settings: PreviewSettings) -> None:
    (tmp_path / "outside").mkdir()
    backend = PreviewBackend(work_dir=tmp_path / "work", settings=preview_settings)
    try:
        for handle in ["nope-123", "../outside", "", "a/b"]:
            status = await backend.wait(handle, timeout=0.01)
            assert status.state is BackendState.FAILED
            assert status.detail == "unknown handle"
        with pytest.raises(BackendError):
            await backend.fetch("../outside", tmp_path / "x.mp4", max_bytes=10**9)
        await backend.cancel("../outside")
        assert (tmp_path / "outside").is_dir()
    finally:
        await backend.aclose()


async def test_a_failed_render_stays_failed_after_a_restart(
    tmp_path: Path, preview_settings: PreviewSettings
) -> None:
    backend = PreviewBackend(work_dir=tmp_path, settings=preview_settings)
    try:
        handle = await backend.submit(make_spec(image=b"garbage"))
        status = await wait_final(backend, handle)
        assert status.state is BackendState.FAILED
        assert not status.transient
        assert "cannot decode" in status.detail
    finally:
        await backend.aclose()
    again = PreviewBackend(work_dir=tmp_path, settings=preview_settings)
    try:
        status = await again.wait(handle, timeout=0)
        assert status.state is BackendState.FAILED
        assert "cannot decode" in status.detail
    finally:
        await again.aclose()


async def test_a_closed_backend_refuses_new_work(
    tmp_path: Path, preview_settings: PreviewSettings
) -> None:
    backend = PreviewBackend(work_dir=tmp_path, settings=preview_settings)
    await backend.aclose()
    with pytest.raises(BackendError) as caught:
        await backend.submit(make_spec())
    assert caught.value.transient
