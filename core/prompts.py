"""Parse a user's line: what is spoken, in which language, for how long, and the options.

Rules, in the order they apply:

- Options are flags outside quotes: ``--5s``, ``--10s``, ``--takes N``, ``--seed N``,
  ``--voice NAME`` (``=`` also works: ``--takes=3``). Phones turn ``--`` into ``—`` or
  ``–``, so one or two of those dashes work too; but since an em dash is ordinary
  punctuation, only a known option name after it is an option. An unknown ``--word`` is
  refused. The last of repeated flags wins; keyword arguments (buttons, CLI) beat flags,
  and ranges are checked on the value that wins.
- Quotes: “ ” ‘ ’ 「 」 『 』 « » „ “ and the straight/full-width " ' ＂ ＇ (which pair
  with themselves). Quotes do not nest: inside one, only its closer counts. Because the
  straight ' and the curly ’ are also apostrophes, ' opens only when the character
  before it is not a letter or digit of an alphabetic script, and ' or ’ closes only
  when the character after it is not one (``didn't`` and ``I'd`` stay inside the
  quote). An opener that is never closed makes the rest of the line the utterance.
- Speech: the quoted utterances in order, joined with a space; with no quotes at all,
  the whole line (flags removed) is the speech. Speech without any letter or digit is
  no speech.
- Timing: each Han character takes 1/zh_chars_per_second, each kana or Hangul syllable
  1/SYLLABLES_PER_SECOND, each other word (letters/digits, joined by inner ' ’ -)
  1/en_words_per_second; a run of pause punctuation (or the gap between two
  utterances) adds PAUSE_SECONDS, but only when more speech follows it.
- Length: auto picks 5 s when the speech fits comfortably (short_clip_max_seconds),
  else 10 s. Speech beyond long_clip_max_seconds is refused, and so is an explicit
  5 s clip with speech beyond half that: the model silently cuts long endings off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from config.settings import PromptSettings
from core.errors import PromptRejected

PAUSE_SECONDS = 0.25  # a comma or full stop is a short breath, even when said fast
SYLLABLES_PER_SECOND = 7.0  # kana and Hangul are roughly one mora/syllable each
SHORT_CLIP, LONG_CLIP = 5, 10
MAX_SEED = 2**32 - 1  # providers take unsigned 32-bit seeds

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_SYLLABIC = "\u3040-\u30ff\uac00-\ud7af"
_IS_HAN = re.compile(f"[{_HAN}]")
_IS_CJK = re.compile(f"[{_HAN}{_SYLLABIC}]")
_WORD_CHAR = rf"[^\W_{_HAN}{_SYLLABIC}]"  # a letter or digit of an alphabetic script
_PAUSES = re.escape(",.!?;:…—，。！？；：、～\n")
_SPEECH_TOKEN = re.compile(
    rf"(?P<han>[{_HAN}])|(?P<syllable>[{_SYLLABIC}])"
    rf"|(?P<word>{_WORD_CHAR}+(?:['’-]{_WORD_CHAR}+)*)"
    rf"|(?P<pause>[{_PAUSES}][{_PAUSES}\s]*)"
)

_QUOTE_PAIRS = {
    '"': '"', "'": "'", "＂": "＂", "＇": "＇", "“": "”", "‘": "’",
    "「": "」", "『": "』", "«": "»", "„": "“",
}  # fmt: skip
_APOSTROPHES = "'’"

# The lookbehind keeps "wait--what" and "---" prose; Han may touch a flag (no spaces in zh).
_FLAG = re.compile(r"(?<![A-Za-z0-9_\-—–])(?P<dash>--|[—–]{1,2})(?P<name>[A-Za-z0-9][\w-]*)", re.A)
_DURATION = re.compile(r"([0-9]+)s")
_NUMBER_ARG = re.compile(r"(?:=|\s+)([0-9]+)(?!\w)")
_NAME_ARG = re.compile(r"(?:=|\s+)(\w+(?:[.-]\w+)*)")


@dataclass(frozen=True)
class ParsedLine:
    """A line ready for a backend: the prompt, what is spoken, and the chosen options."""

    line: str  # the line with option flags removed, whitespace tidied: the model's prompt
    utterances: tuple[str, ...]  # what is spoken, in order, quotes stripped
    speech: str  # utterances joined (the text to be spoken)
    language: str  # "zh" | "en" | "other"
    speech_seconds: float  # estimated speaking time
    seconds: int  # chosen clip length: 5 or 10
    takes: int  # 1..settings.max_takes, default 1
    seed: int | None
    voice: str | None


class _Segment(NamedTuple):
    text: str
    quoted: bool
    opener: str = ""
    closer: str = ""  # empty for an unbalanced quote that ran to the end


@dataclass
class _Flags:
    seconds: int | None = None
    takes: int | None = None
    seed: int | None = None
    voice: str | None = None


def parse_line(
    text: str,
    settings: PromptSettings,
    *,
    seconds: int | None = None,
    takes: int | None = None,
    seed: int | None = None,
    voice: str | None = None,
) -> ParsedLine:
    """Parse a line into speech, language, clip length and options, or raise PromptRejected."""
    stripped = text.strip()
    if not stripped:
        raise PromptRejected("prompt.empty")
    if len(stripped) > settings.max_chars:
        raise PromptRejected(
            "prompt.too_many_chars", length=len(stripped), limit=settings.max_chars
        )

    flags = _Flags()
    pieces: list[str] = []
    utterances: list[str] = []
    any_quotes = False
    for segment in _split_quotes(stripped):
        if segment.quoted:
            any_quotes = True
            pieces.append(segment.opener + segment.text + segment.closer)
            if segment.text.strip():
                utterances.append(segment.text.strip())
        else:
            # Removing a flag leaves its spaces behind; tidy prose, never dialogue.
            pieces.append(re.sub(r"\s+", " ", _strip_flags(segment.text, flags, settings)))
    line = "".join(pieces).strip()
    if not line:
        raise PromptRejected("prompt.empty")
    if not any_quotes:
        utterances = [line]
    speech = " ".join(utterances)
    if not any(ch.isalnum() for ch in speech):
        raise PromptRejected("prompt.empty")

    chosen = seconds if seconds is not None else flags.seconds
    if chosen is not None and chosen not in (SHORT_CLIP, LONG_CLIP):
        raise PromptRejected("prompt.bad_duration")
    takes = takes if takes is not None else (flags.takes if flags.takes is not None else 1)
    if not 1 <= takes <= settings.max_takes:
        raise PromptRejected("prompt.bad_takes", max_takes=settings.max_takes)

    estimate = estimate_speech_seconds(utterances, settings)
    if estimate > settings.long_clip_max_seconds:
        raise PromptRejected(
            "prompt.too_long_to_speak", estimate=estimate, limit=settings.long_clip_max_seconds
        )
    short_capacity = settings.long_clip_max_seconds * SHORT_CLIP / LONG_CLIP
    if chosen == SHORT_CLIP and estimate > short_capacity:
        raise PromptRejected(
            "prompt.too_long_for_duration",
            estimate=estimate,
            seconds=SHORT_CLIP,
            limit=short_capacity,
        )
    if chosen is None:
        chosen = SHORT_CLIP if estimate <= settings.short_clip_max_seconds else LONG_CLIP

    return ParsedLine(
        line=line,
        utterances=tuple(utterances),
        speech=speech,
        language=detect_language(speech),
        speech_seconds=estimate,
        seconds=chosen,
        takes=takes,
        seed=seed if seed is not None else flags.seed,
        voice=voice if voice is not None else flags.voice,
    )


def estimate_speech_seconds(utterances: Sequence[str], settings: PromptSettings) -> float:
    """Estimate how long the utterances take to say, pauses included."""
    total = 0.0
    spoken = pause_pending = False
    # A line break stands for the gap between two utterances: it is a pause too.
    for token in _SPEECH_TOKEN.finditer("\n".join(utterances)):
        kind = token.lastgroup
        if kind == "pause":
            pause_pending = spoken  # a pause before any speech is silence, not speech
            continue
        if pause_pending:
            total += PAUSE_SECONDS
            pause_pending = False
        spoken = True
        if kind == "han":
            total += 1 / settings.zh_chars_per_second
        elif kind == "syllable":
            total += 1 / SYLLABLES_PER_SECOND
        else:
            total += 1 / settings.en_words_per_second
    return round(total, 2)  # hundredths are already beyond what the rates can promise


def detect_language(speech: str) -> str:
    """Return "zh" when Han characters are most letters, "en" when Latin ones are, else "other"."""
    letters = [ch for ch in speech if ch.isalpha()]
    han = sum(1 for ch in letters if _IS_HAN.match(ch))
    latin = sum(1 for ch in letters if ch < "\u0250" or "\u1e00" <= ch <= "\u1eff")
    if han * 2 > len(letters):
        return "zh"
    if latin * 2 > len(letters):
        return "en"
    return "other"


def _is_word_char(ch: str) -> bool:
    # Only alphabetic scripts write apostrophes inside words; 说'你好' opens a quote.
    return ch.isalnum() and not _IS_CJK.match(ch)


def _split_quotes(text: str) -> list[_Segment]:
    segments: list[_Segment] = []
    start = i = 0
    while i < len(text):
        ch = text[i]
        closer = _QUOTE_PAIRS.get(ch)
        if closer is None or (ch == "'" and i > 0 and _is_word_char(text[i - 1])):
            i += 1
            continue
        segments.append(_Segment(text[start:i], quoted=False))
        end = _find_closer(text, i + 1, closer)
        if end is None:
            segments.append(_Segment(text[i + 1 :], quoted=True, opener=ch))
            return segments
        segments.append(_Segment(text[i + 1 : end], quoted=True, opener=ch, closer=closer))
        start = i = end + 1
    segments.append(_Segment(text[start:], quoted=False))
    return segments


def _find_closer(text: str, start: int, closer: str) -> int | None:
    for j in range(start, len(text)):
        if text[j] != closer:
            continue
        if closer in _APOSTROPHES and j + 1 < len(text) and _is_word_char(text[j + 1]):
            continue  # an apostrophe inside a word: didn't, I'd
        return j
    return None


def _strip_flags(segment: str, flags: _Flags, settings: PromptSettings) -> str:
    kept: list[str] = []
    pos = 0
    while (match := _FLAG.search(segment, pos)) is not None:
        name, end = match["name"].lower(), match.end()
        bad_flag = PromptRejected("prompt.bad_flag", flag=match[0], max_takes=settings.max_takes)
        if duration := _DURATION.fullmatch(name):
            flags.seconds = int(duration[1])
        elif name in ("takes", "seed"):
            arg = _NUMBER_ARG.match(segment, end)
            if arg is None or (name == "seed" and int(arg[1]) > MAX_SEED):
                raise bad_flag
            end = arg.end()
            if name == "takes":
                flags.takes = int(arg[1])
            else:
                flags.seed = int(arg[1])
        elif name == "voice":
            arg = _NAME_ARG.match(segment, end)
            if arg is None:
                raise bad_flag
            end, flags.voice = arg.end(), arg[1]
        elif match["dash"] == "--":
            raise bad_flag
        else:
            # An em dash before an unknown word is punctuation ("He paused —then said").
            kept.append(segment[pos:end])
            pos = end
            continue
        kept.append(segment[pos : match.start()])
        pos = end
    kept.append(segment[pos:])
    return "".join(kept)
