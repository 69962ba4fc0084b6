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
  1/en_words_per_second. Pauses take time too, but only when more speech follows them
  (silence after the last word costs the clip nothing): a run of punctuation is a breath
  (PAUSE_SECONDS), or a held beat when it has an ellipsis or a dash (LONG_PAUSE_SECONDS:
  ``……`` ``...`` ``——`` ``--``); two separate utterances are apart by at least
  GAP_SECONDS; and each clause of the prose between two utterances that asks for a pause
  adds DIRECTION_SECONDS for a short one (停了一下, 顿了顿, "pauses", "a beat") or
  LONG_DIRECTION_SECONDS when it asks for a long one (停顿了一会, 沉默良久, 许久, 半晌,
  片刻, "a long pause", "pauses for a while", "a moment of silence").
- Emotion: when the prose anywhere in the line (outside quotes) directs an emotional
  delivery (哭, 泣, 哽咽, 激动, 歇斯底里, 喊, 吼, 尖叫, 颤抖, 缓缓, 慢慢; "sobs",
  "in tears", "hysterical", "screams", "shouts", "slowly", "trembling", ...), the words
  take EMOTIONAL_SLOWDOWN times as long: sad or agitated speech runs roughly 20-35 %
  slower than neutral. It applies once per line, however many such words there are.
- Calibration: the line 女孩哭泣着说：'你，真的不爱我了吗？'，停顿了一会，
  她情绪激动歇斯底里的喊到：'我明白了！我不会再来找你了！' — whose ending the model
  swallowed in a 10 s clip — is 20 characters (4.4 s) said crying and shouting (x1.3:
  5.8 s), two breaths (0.5 s), the gap (0.4 s) and the long pause it asks for (2 s):
  8.7 s, beyond the 8.5 s a 10 s clip holds. Counting characters said 5.2 s; breaths and
  a one-second pause said 6.3 s. Without the emotion and with 停了一下 it is 6.3 s and
  fits. A refusal shows the words (at the pace asked for) and the pauses apart.
- Length: auto picks 5 s when the speech fits comfortably (short_clip_max_seconds),
  else 10 s. Speech beyond long_clip_max_seconds is refused (an explicit 10 s too), and
  so is an explicit 5 s clip with speech beyond half that: the model silently cuts long
  endings off.
- Characters: ``@Name`` outside quotes casts a saved character (``characters``, in
  order, each once); the mention leaves the prompt. A name is a word of any script with
  inner hyphens, ended by a space or punctuation (``@然霞 笑着说`` / ``@然霞：'…'``); an
  ``@`` after a letter or digit (an e-mail address) is no mention.
- Seeds: 0..MAX_SEED, checked here on the value that wins (flag, keyword, any adapter);
  the takes of one request use consecutive seeds that wrap around (``take_seeds``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from config.settings import PromptSettings
from core.errors import PromptRejected

PAUSE_SECONDS = 0.25  # a comma or full stop is a short breath, even when said fast
LONG_PAUSE_SECONDS = 0.5  # an ellipsis or a dash is a held beat: about two breaths
GAP_SECONDS = 0.4  # two utterances: the speaker stops, the direction turns, then speaks
DIRECTION_SECONDS = 1.0  # "停了一下" / "pauses": actors and the model hold about a second
LONG_DIRECTION_SECONDS = 2.0  # "停顿了一会" / "a long pause": held about twice as long
EMOTIONAL_SLOWDOWN = 1.3  # crying, shouting, trembling: 20-35 % slower than neutral speech
SYLLABLES_PER_SECOND = 7.0  # kana and Hangul are roughly one mora/syllable each
SHORT_CLIP, LONG_CLIP = 5, 10
MAX_SEED = 2**32 - 1  # providers take unsigned 32-bit seeds

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_SYLLABIC = "\u3040-\u30ff\uac00-\ud7af"
_IS_HAN = re.compile(f"[{_HAN}]")
_IS_CJK = re.compile(f"[{_HAN}{_SYLLABIC}]")
_WORD_CHAR = rf"[^\W_{_HAN}{_SYLLABIC}]"  # a letter or digit of an alphabetic script
_PAUSES = re.escape(",.!?;:…—–，。！？；：、～\n-")
_LONG_PAUSE = re.compile(r"…|\.\.|。。|[—–]|--")
# Words that ask for a pause; each clause of stage prose that has one counts once.
_DIRECTION = re.compile(
    r"停顿|停了一?下|停了一会|顿了顿|顿了一下|沉默|静默|片刻|良久|许久|半晌"
    r"|\b(?:pause[sd]?|pausing|a (?:long )?beat|beat of silence|silence|silent"
    r"|hesitat(?:es|ed|ing|e))\b",
    re.IGNORECASE,
)
# Words that make such a clause a long pause (停顿了一会, "pauses for a while").
_LONG_DIRECTION = re.compile(
    r"一会|良久|许久|半晌|片刻|好久|很久"
    r"|\b(?:long|longer|lengthy|a while|a moment|some time)\b",
    re.IGNORECASE,
)
# Directions for an emotional delivery, which is slower; whole words only in English
# ("sober", "yellow" are no sobbing or yelling).
_EMOTION = re.compile(
    r"哭|泣|哽咽|呜咽|泪|激动|歇斯底里|喊|吼|嚎|尖叫|咆哮|颤抖|发抖|缓缓|慢慢|悲伤|悲痛|伤心"
    r"|\b(?:sob(?:s|bed|bing|bingly)?|cr(?:y|ies|ied|ying)|weep(?:s|ing)?|wept|tearful(?:ly)?"
    r"|(?:in|through|with) tears|chok(?:e|es|ed|ing) (?:up|back)|hysteric(?:al|ally|s)?"
    r"|scream(?:s|ed|ing)?|shout(?:s|ed|ing)?|yell(?:s|ed|ing)?|shriek(?:s|ed|ing)?"
    r"|wail(?:s|ed|ing)?|howl(?:s|ed|ing)?|agitat(?:ed|edly|ion)|distraught"
    r"|trembl(?:e|es|ed|ing|ingly)|quaver(?:s|ed|ing)?|slowly)\b",
    re.IGNORECASE,
)
_CLAUSE_END = re.compile(r"[,.;:!?，。；：！？、\n]+")
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
_NUMBER_ARG = re.compile(r"(?:=|\s+)([+-]?[0-9]+)(?!\w)")
_NAME_ARG = re.compile(r"(?:=|\s+)(\w+(?:[.-]\w+)*)")
_MENTION = re.compile(r"(?<![\w@])@(?P<name>\w+(?:-\w+)*)")


@dataclass(frozen=True)
class ParsedLine:
    """A line ready for a backend: the prompt, what is spoken, and the chosen options."""

    line: str  # the line with option flags removed, whitespace tidied: the model's prompt
    utterances: tuple[str, ...]  # what is spoken, in order, quotes stripped
    speech: str  # utterances joined (the text to be spoken)
    language: str  # "zh" | "en" | "other"
    speech_seconds: float  # estimated speaking time, pauses included
    seconds: int  # chosen clip length: 5 or 10
    takes: int  # 1..settings.max_takes, default 1
    seed: int | None
    voice: str | None
    characters: tuple[str, ...] = ()  # names cast with @Name, in order, each once


class SpeechEstimate(NamedTuple):
    """How long a line takes to perform, in parts (seconds, unrounded)."""

    speech: float  # saying the words at a neutral pace
    pauses: float  # breaths at punctuation, ellipses and dashes, gaps between utterances
    directions: float  # pauses the stage prose asks for (停顿, "pauses", "a beat")
    slowdown: float = 0.0  # what an emotional delivery (哭, "sobs") adds to the words

    @property
    def total(self) -> float:
        """Return the whole estimate, to hundredths (beyond what the rates can promise)."""
        return round(self.speech + self.slowdown + self.pauses + self.directions, 2)

    def refusal(self, key: str, **params: Any) -> PromptRejected:
        """Return the refusal ``key`` with the breakdown: the words at their pace, the pauses."""
        breakdown: dict[str, Any] = {
            "estimate": self.total,
            "speech": round(self.speech + self.slowdown, 2),
            "pauses": round(self.pauses + self.directions, 2),
        }
        if self.slowdown:  # say why the words take longer than counting them suggests
            key += "_emotional"
            breakdown["neutral"] = round(self.speech, 2)
        return PromptRejected(key, **breakdown, **params)


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
    characters: list[str] = field(default_factory=list)


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
    before: list[str] = []  # the stage prose before each utterance
    prose = ""
    any_quotes = False
    for segment in _split_quotes(stripped):
        if segment.quoted:
            any_quotes = True
            pieces.append(segment.opener + segment.text + segment.closer)
            if segment.text.strip():
                utterances.append(segment.text.strip())
                before.append(prose)
                prose = ""
        else:
            # Removing a flag leaves its spaces behind; tidy prose, never dialogue.
            pieces.append(re.sub(r"\s+", " ", _strip_flags(segment.text, flags, settings)))
            prose += pieces[-1]
    line = "".join(pieces).strip()
    if not line:
        raise PromptRejected("prompt.empty")
    if not any_quotes:
        utterances, before, prose = [line], [""], ""
    speech = " ".join(utterances)
    if not any(ch.isalnum() for ch in speech):
        raise PromptRejected("prompt.empty")

    chosen = seconds if seconds is not None else flags.seconds
    if chosen is not None and chosen not in (SHORT_CLIP, LONG_CLIP):
        raise PromptRejected("prompt.bad_duration")
    takes = takes if takes is not None else (flags.takes if flags.takes is not None else 1)
    if not 1 <= takes <= settings.max_takes:
        raise PromptRejected("prompt.bad_takes", max_takes=settings.max_takes)

    seed = seed if seed is not None else flags.seed
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise PromptRejected("prompt.bad_seed", max_seed=MAX_SEED)

    parts = estimate_speech(utterances, settings, before=before, after=prose)
    estimate = parts.total
    if estimate > settings.long_clip_max_seconds:
        raise parts.refusal("prompt.too_long_to_speak", limit=settings.long_clip_max_seconds)
    short_capacity = settings.long_clip_max_seconds * SHORT_CLIP / LONG_CLIP
    if chosen == SHORT_CLIP and estimate > short_capacity:
        raise parts.refusal(
            "prompt.too_long_for_duration", seconds=SHORT_CLIP, limit=short_capacity
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
        seed=seed,
        voice=voice if voice is not None else flags.voice,
        characters=tuple(flags.characters),
    )


def take_seeds(seed: int, takes: int) -> list[int]:
    """Return the seeds of a request's takes: consecutive from ``seed``, wrapping in range."""
    return [(seed + index) % (MAX_SEED + 1) for index in range(takes)]


def estimate_speech_seconds(utterances: Sequence[str], settings: PromptSettings) -> float:
    """Estimate how long the utterances take to say, pauses included."""
    return estimate_speech(utterances, settings).total


def estimate_speech(
    utterances: Sequence[str],
    settings: PromptSettings,
    *,
    before: Sequence[str] = (),
    after: str = "",
) -> SpeechEstimate:
    """Estimate the words and pauses; ``before[i]`` is utterance i's prose, ``after`` the rest."""
    speech = pauses = directions = 0.0
    spoken = False
    pending = 0.0  # the pause so far since the last word: paid only if more speech follows
    asked = 0.0  # the pause directions since the last word, in seconds
    for index, utterance in enumerate(utterances):
        prose = before[index] if index < len(before) else ""
        if spoken:  # a direction before the first word delays no word the clip must hold
            asked += sum(
                LONG_DIRECTION_SECONDS if _LONG_DIRECTION.search(clause) else DIRECTION_SECONDS
                for clause in _CLAUSE_END.split(prose)
                if _DIRECTION.search(clause)
            )
            gap = LONG_PAUSE_SECONDS if _LONG_PAUSE.search(prose) else GAP_SECONDS
            pending = max(pending, gap)
        for token in _SPEECH_TOKEN.finditer(utterance):
            kind = token.lastgroup
            if kind == "pause":
                if spoken:  # a pause before any speech is silence, not speech
                    long = _LONG_PAUSE.search(token[0]) is not None
                    pending = max(pending, LONG_PAUSE_SECONDS if long else PAUSE_SECONDS)
                continue
            pauses += pending
            directions += asked
            pending, asked, spoken = 0.0, 0.0, True
            if kind == "han":
                speech += 1 / settings.zh_chars_per_second
            elif kind == "syllable":
                speech += 1 / SYLLABLES_PER_SECOND
            else:
                speech += 1 / settings.en_words_per_second
    # The emotion colours the whole delivery, wherever the prose asks for it, but only once.
    emotional = any(_EMOTION.search(prose) for prose in (*before, after))
    slowdown = speech * (EMOTIONAL_SLOWDOWN - 1) if emotional else 0.0
    return SpeechEstimate(speech, pauses, directions, slowdown)


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


def character_names(text: str) -> list[str]:
    """Return the characters a line casts with ``@Name`` outside quotes, in order, each once."""
    flags = _Flags()
    for segment in _split_quotes(text.strip()):
        if not segment.quoted:
            _strip_mentions(segment.text, flags)
    return flags.characters


def _strip_mentions(segment: str, flags: _Flags) -> str:
    for match in _MENTION.finditer(segment):
        if match["name"].casefold() not in {name.casefold() for name in flags.characters}:
            flags.characters.append(match["name"])
    return _MENTION.sub("", segment)


def _strip_flags(segment: str, flags: _Flags, settings: PromptSettings) -> str:
    segment = _strip_mentions(segment, flags)
    kept: list[str] = []
    pos = 0
    while (match := _FLAG.search(segment, pos)) is not None:
        name, end = match["name"].lower(), match.end()
        bad_flag = PromptRejected("prompt.bad_flag", flag=match[0], max_takes=settings.max_takes)
        if duration := _DURATION.fullmatch(name):
            flags.seconds = int(duration[1])
        elif name in ("takes", "seed"):
            arg = _NUMBER_ARG.match(segment, end)
            if arg is None:
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
