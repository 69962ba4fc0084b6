from __future__ import annotations

import random
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.settings import PromptSettings
from core.errors import PromptRejected
from core.i18n import CATALOG, LOCALES, render
from core.prompts import (
    DIRECTION_SECONDS,
    EMOTIONAL_SLOWDOWN,
    GAP_SECONDS,
    LONG_DIRECTION_SECONDS,
    LONG_PAUSE_SECONDS,
    MAX_SEED,
    PAUSE_SECONDS,
    ParsedLine,
    SpeechEstimate,
    detect_language,
    estimate_speech,
    estimate_speech_seconds,
    parse_line,
    take_seeds,
)

SETTINGS = PromptSettings()
ZH_CHAR = 1 / SETTINGS.zh_chars_per_second
EN_WORD = 1 / SETTINGS.en_words_per_second
QUOTE_CHARS = "\"'＂＇“”‘’「」『』«»„"


def parse(text: str, **kwargs: object) -> ParsedLine:
    return parse_line(text, SETTINGS, **kwargs)  # type: ignore[arg-type]


def rejected(text: str, **kwargs: object) -> PromptRejected:
    with pytest.raises(PromptRejected) as info:
        parse(text, **kwargs)
    return info.value


# --- the lines from the brief -------------------------------------------------------------


def test_chinese_example() -> None:
    parsed = parse("女孩笑着说：'你不会真的以为，我是那种一哭就输的女孩？'")
    assert parsed.utterances == ("你不会真的以为，我是那种一哭就输的女孩？",)
    assert parsed.speech == "你不会真的以为，我是那种一哭就输的女孩？"
    assert parsed.language == "zh"
    # 18 Han characters and one comma pause; the final question mark is not a pause.
    assert parsed.speech_seconds == pytest.approx(18 * ZH_CHAR + PAUSE_SECONDS, abs=0.01)
    assert parsed.seconds == 10
    assert parsed.line == "女孩笑着说：'你不会真的以为，我是那种一哭就输的女孩？'"
    assert (parsed.takes, parsed.seed, parsed.voice) == (1, None, None)


def test_short_english_line_gets_five_seconds() -> None:
    parsed = parse('The girl sighs, then says firmly: "We\'re even now."')
    assert parsed.utterances == ("We're even now.",)
    assert parsed.language == "en"
    assert parsed.speech_seconds == pytest.approx(3 * EN_WORD, abs=0.01)
    assert parsed.seconds == 5


def test_apostrophes_inside_straight_single_quotes() -> None:
    parsed = parse("The girl smiles and says: 'you didn't really think I'd give up?'")
    assert parsed.utterances == ("you didn't really think I'd give up?",)
    assert parsed.language == "en"
    assert parsed.speech_seconds == pytest.approx(7 * EN_WORD, abs=0.01)  # didn't is one word
    assert parsed.seconds == 10


def test_curly_apostrophe_inside_curly_single_quotes() -> None:
    assert parse("She says: ‘you didn’t, did you?’").utterances == ("you didn’t, did you?",)


def test_possessive_apostrophe_outside_quotes_does_not_open() -> None:
    parsed = parse("The girl's brother says 'fine' and the boys' dog barks")
    assert parsed.utterances == ("fine",)


def test_multiple_utterances_with_stage_directions() -> None:
    parsed = parse('He shouts "Run!" then whispers "they\'re here."')
    assert parsed.utterances == ("Run!", "they're here.")
    assert parsed.speech == "Run! they're here."
    assert parsed.line == 'He shouts "Run!" then whispers "they\'re here."'
    # The gap between the utterances is one pause; shouting slows the words.
    words = 3 * EN_WORD * EMOTIONAL_SLOWDOWN
    assert parsed.speech_seconds == pytest.approx(words + GAP_SECONDS, abs=0.01)


def test_no_quotes_means_the_whole_line_is_spoken() -> None:
    parsed = parse("  我  回来了  ")
    assert parsed.utterances == ("我 回来了",)
    assert parsed.speech == parsed.line == "我 回来了"
    assert parsed.language == "zh"
    assert parsed.seconds == 5


@pytest.mark.parametrize(
    ("opener", "closer"),
    [
        ('"', '"'),
        ("'", "'"),
        ("＂", "＂"),
        ("＇", "＇"),
        ("“", "”"),
        ("‘", "’"),
        ("「", "」"),
        ("『", "』"),
        ("«", "»"),
        ("„", "“"),
    ],
)
def test_each_quote_style(opener: str, closer: str) -> None:
    parsed = parse(f"她说：{opener}你好{closer}然后走了，他说{opener}再见{closer}")
    assert parsed.utterances == ("你好", "再见")
    assert parsed.language == "zh"


def test_quotes_do_not_nest() -> None:
    parsed = parse("He says: \"she told me 'no' yesterday\"")
    assert parsed.utterances == ("she told me 'no' yesterday",)


@pytest.mark.parametrize(
    ("text", "utterances"),
    [
        ('He says: "hello there', ("hello there",)),
        ("女孩说：「你好 --5s", ("你好 --5s",)),
        ('"one" and "two', ("one", "two")),
    ],
)
def test_unbalanced_quote_runs_to_the_end(text: str, utterances: tuple[str, ...]) -> None:
    parsed = parse(text)
    assert parsed.utterances == utterances
    assert parsed.takes == 1
    assert parsed.line == text  # nothing outside quotes was a flag


# --- flags --------------------------------------------------------------------------------


@pytest.mark.parametrize("dash", ["--", "—", "–", "——", "––"])
@pytest.mark.parametrize(
    ("flag", "field", "value"),
    [
        ("5s", "seconds", 5),
        ("10s", "seconds", 10),
        ("takes 3", "takes", 3),
        ("takes=3", "takes", 3),
        ("seed 42", "seed", 42),
        ("seed=42", "seed", 42),
        ("voice alice", "voice", "alice"),
        ("voice=zh-female.2", "voice", "zh-female.2"),
        ("TAKES 2", "takes", 2),
    ],
)
def test_each_flag_is_read_and_removed(dash: str, flag: str, field: str, value: object) -> None:
    parsed = parse(f'He says "hi" {dash}{flag} and waves')
    assert getattr(parsed, field) == value
    assert parsed.line == 'He says "hi" and waves'
    assert parsed.utterances == ("hi",)


def test_flags_without_quotes_never_reach_the_speech() -> None:
    parsed = parse("--10s 我回来了 --takes 2 --voice 小美")
    assert parsed.speech == parsed.line == "我回来了"
    assert (parsed.seconds, parsed.takes, parsed.voice) == (10, 2, "小美")


def test_flag_may_touch_chinese_text() -> None:
    parsed = parse("女孩说：--10s「你好」")
    assert parsed.seconds == 10
    assert parsed.line == "女孩说：「你好」"


def test_flags_inside_quotes_are_dialogue() -> None:
    parsed = parse('He reads aloud "--5s --takes 9 --bogus" --10s')
    assert parsed.utterances == ("--5s --takes 9 --bogus",)
    assert (parsed.seconds, parsed.takes) == (10, 1)
    assert parsed.line == 'He reads aloud "--5s --takes 9 --bogus"'


def test_last_repeated_flag_wins() -> None:
    assert parse("hi --5s --10s --takes 2 --takes 3").takes == 3
    assert parse("hi --5s --10s").seconds == 10


@pytest.mark.parametrize(
    "text", ["He paused —then said 'ok'", "wait--what 'ok'", "他停了——然后说'好'"]
)
def test_dashes_in_prose_are_not_flags(text: str) -> None:
    parsed = parse(text)
    assert parsed.line == text
    assert parsed.seconds == 5


def test_keyword_arguments_override_flags() -> None:
    parsed = parse("hi --5s --takes 2 --seed 1 --voice a", seconds=10, takes=4, seed=99, voice="b")
    assert (parsed.seconds, parsed.takes, parsed.seed, parsed.voice) == (10, 4, 99, "b")


def test_ranges_are_checked_on_the_value_that_wins() -> None:
    assert parse("hi --takes 9", takes=2).takes == 2
    assert parse("hi --7s", seconds=5).seconds == 5
    assert rejected("hi --takes 2", takes=9).key == "prompt.bad_takes"


# --- clip length --------------------------------------------------------------------------


def test_explicit_durations() -> None:
    assert parse("hi --10s").seconds == 10
    assert parse("hi", seconds=10).seconds == 10
    line = "我" * 15  # 3.3 s: too long to choose 5 s, short enough to allow it
    assert parse(line).seconds == 10
    assert parse(line + " --5s").seconds == 5


def test_trailing_punctuation_is_not_a_pause() -> None:
    assert estimate_speech_seconds(["你好，朋友"], SETTINGS) == pytest.approx(
        4 * ZH_CHAR + PAUSE_SECONDS, abs=0.01
    )
    assert estimate_speech_seconds(["……你好！！"], SETTINGS) == pytest.approx(2 * ZH_CHAR, abs=0.01)


def test_an_explicit_ten_seconds_does_not_lift_the_speaking_limit() -> None:
    line = "她说：「" + "我" * 40 + "」"
    for text, kwargs in (
        (line + " --10s", {}),
        (line, {"seconds": 10}),
        (line + " --5s", {"seconds": 10}),
    ):
        assert rejected(text, **kwargs).key == "prompt.too_long_to_speak"


# --- pauses -------------------------------------------------------------------------------

SWALLOWED = (
    "女孩哭泣着说：'你，真的不爱我了吗？'，停顿了一会，"
    "她情绪激动歇斯底里的喊到：'我明白了！我不会再来找你了！'"
)


def test_the_swallowed_line_is_refused_with_its_breakdown() -> None:
    # 20 characters said crying and shouting, the comma and the ！ inside the quotes, the
    # gap between the utterances and the long pause 停顿了一会 asks for: beyond 10 s.
    neutral = 20 * ZH_CHAR
    words = neutral * EMOTIONAL_SLOWDOWN
    pauses = 2 * PAUSE_SECONDS + GAP_SECONDS + LONG_DIRECTION_SECONDS
    assert words + pauses > SETTINGS.long_clip_max_seconds
    for kwargs in ({}, {"seconds": 10}):
        error = rejected(SWALLOWED, **kwargs)
        assert error.key == "prompt.too_long_to_speak_emotional"
        assert error.params == {
            "estimate": pytest.approx(words + pauses, abs=0.01),
            "speech": pytest.approx(words, abs=0.01),
            "neutral": pytest.approx(neutral, abs=0.01),
            "pauses": pytest.approx(pauses, abs=0.01),
            "limit": SETTINGS.long_clip_max_seconds,
        }
        assert_renders(error)
    en, zh = (render(error.key, locale, **error.params) for locale in LOCALES)
    assert "8.7 s: 5.8 s of words" in en and "said plainly, 4.4 s) + 2.9 s of pauses" in en
    assert "8.7 秒：说话 5.8 秒" in zh and "平静地说约 4.4 秒）+ 停顿 2.9 秒" in zh


def test_the_same_line_said_calmly_with_a_short_pause_fits_ten_seconds() -> None:
    calm = SWALLOWED.replace("哭泣着", "").replace("情绪激动歇斯底里的喊到", "说")
    calm = calm.replace("停顿了一会", "停了一下")
    parsed = parse(calm)
    assert parsed.utterances == ("你，真的不爱我了吗？", "我明白了！我不会再来找你了！")
    pauses = 2 * PAUSE_SECONDS + GAP_SECONDS + DIRECTION_SECONDS
    assert parsed.speech_seconds == pytest.approx(20 * ZH_CHAR + pauses, abs=0.01)  # 6.3 s
    assert parsed.seconds == 10
    error = rejected(calm + " --5s")  # a calm line is refused with the plain breakdown
    assert error.key == "prompt.too_long_for_duration"
    assert "4.4 s of words + 1.9 s of pauses" in render(error.key, "en", **error.params)
    assert "说话 4.4 秒 + 停顿 1.9 秒" in render(error.key, "zh", **error.params)


@pytest.mark.parametrize(
    "text",
    [
        SWALLOWED.replace("停顿了一会", "停了一下"),  # crying and shouting, a short pause
        SWALLOWED.replace("哭泣着", "").replace("情绪激动歇斯底里的喊到", "说"),  # calm, long
    ],
)
def test_either_effect_alone_still_fits_ten_seconds(text: str) -> None:
    assert parse(text).seconds == 10


@pytest.mark.parametrize(
    ("text", "emotional"),
    [
        ("他哽咽着说：「我没事。」", True),
        ("她颤抖着，缓缓地说：「我没事。」", True),
        ('She sobs: "I am fine."', True),
        ('"I am fine," he says slowly.', True),  # the prose after the line counts too
        ('In tears, she says "I am fine."', True),
        ('He screams "I am fine!" and shouts "Fine!"', True),  # once, not per word
        ('She soberly says "I am fine."', False),  # "sober" is no sob
        ('He waves a yellow flag: "I am fine."', False),  # "yellow" is no yell
        ("她笑着说：「我一哭就输。」", False),  # crying inside the quotes is the line itself
        ("我哭了", False),  # without quotes the whole line is spoken, not directed
    ],
)
def test_an_emotional_direction_slows_the_words_once(text: str, emotional: bool) -> None:
    parsed = parse(text)
    calm = estimate_speech_seconds(parsed.utterances, SETTINGS)
    gaps = GAP_SECONDS * (len(parsed.utterances) - 1)
    words = calm - gaps  # no breaths inside these utterances
    factor = EMOTIONAL_SLOWDOWN if emotional else 1
    assert parsed.speech_seconds == pytest.approx(words * factor + gaps, abs=0.01)


@pytest.mark.parametrize(
    ("utterance", "words", "pause"),
    [
        ("你好，朋友", 4 * ZH_CHAR, PAUSE_SECONDS),
        ("你好……朋友", 4 * ZH_CHAR, LONG_PAUSE_SECONDS),
        ("你好——朋友", 4 * ZH_CHAR, LONG_PAUSE_SECONDS),
        ("你好。。。朋友", 4 * ZH_CHAR, LONG_PAUSE_SECONDS),
        ("wait, what", 2 * EN_WORD, PAUSE_SECONDS),
        ("wait... what", 2 * EN_WORD, LONG_PAUSE_SECONDS),
        ("wait -- what", 2 * EN_WORD, LONG_PAUSE_SECONDS),
        ("wait--what", 2 * EN_WORD, LONG_PAUSE_SECONDS),
        ("wait — what", 2 * EN_WORD, LONG_PAUSE_SECONDS),
        ("well-known", EN_WORD, 0.0),
        ("wait…", EN_WORD, 0.0),  # silence after the last word costs the clip nothing
    ],
)
def test_ellipses_and_dashes_hold_longer_than_a_comma(
    utterance: str, words: float, pause: float
) -> None:
    parts = estimate_speech([utterance], SETTINGS)
    assert parts.speech == pytest.approx(words)
    assert parts.pauses == pytest.approx(pause)
    assert parts.directions == 0


@pytest.mark.parametrize(
    ("text", "directions"),
    [
        ('He says "Go." He pauses for a beat. "Now."', DIRECTION_SECONDS),
        ('He says "Go." A beat. Silence. "Now."', 2 * DIRECTION_SECONDS),
        (
            'He says "Go." A beat. A long silence. "Now."',
            DIRECTION_SECONDS + LONG_DIRECTION_SECONDS,
        ),
        ("她说：「走。」沉默片刻，又说：「现在。」", LONG_DIRECTION_SECONDS),  # 片刻: a while
        ("她说：「走。」沉默良久，许久才说：「现在。」", 2 * LONG_DIRECTION_SECONDS),
        ("她说：「走。」停了一下，又说：「现在。」", DIRECTION_SECONDS),
        ("她说：「走。」然后说：「现在。」", 0),
        ('She pauses, then says "Go." and "Now." Then a long silence.', 0),  # not between
        ('He says "Go." and silently points: "Now."', 0),  # "silently" is no pause
        ('He says "Go." and a long way off, a dog barks: "Now."', 0),  # "long" asks no pause
    ],
)
def test_pause_directions_between_utterances(text: str, directions: float) -> None:
    parsed = parse(text)
    assert len(parsed.utterances) == 2
    first, second = parsed.utterances
    expected = estimate_speech_seconds([first], SETTINGS) + estimate_speech_seconds(
        [second], SETTINGS
    )
    expected += GAP_SECONDS + directions
    assert parsed.speech_seconds == pytest.approx(expected, abs=0.02)


def test_five_chinese_characters_fit_five_seconds() -> None:
    assert parse("她说：「我不怕你！」").seconds == 5
    assert parse("她说：「我真的不怕你！」").seconds == 10


# --- refusals -----------------------------------------------------------------------------


def assert_renders(error: PromptRejected) -> None:
    """Check the params fill the template in every locale (render falls back silently)."""
    for locale in LOCALES:
        text = render(error.key, locale, **error.params)
        assert "{" not in text
        assert error.key in CATALOG[locale]


@pytest.mark.parametrize("text", ["", "   \n ", "--5s --takes 2", 'He says ""', "She says '…'"])
def test_empty(text: str) -> None:
    error = rejected(text)
    assert error.key == "prompt.empty"
    assert error.params == {}
    assert_renders(error)


def test_too_many_chars() -> None:
    error = rejected("a" * 401)
    assert (error.key, error.params) == ("prompt.too_many_chars", {"length": 401, "limit": 400})
    assert_renders(error)
    assert parse(" " * 50 + "a" * 400 + " " * 50).speech == "a" * 400  # padding is not the line


def test_too_long_to_speak() -> None:
    error = rejected("她说：「" + "我" * 40 + "」")
    assert error.key == "prompt.too_long_to_speak"
    assert error.params == {
        "estimate": pytest.approx(40 * ZH_CHAR, abs=0.01),
        "speech": pytest.approx(40 * ZH_CHAR, abs=0.01),
        "pauses": 0,
        "limit": 8.5,
    }
    assert_renders(error)


def test_too_long_for_five_seconds() -> None:
    error = rejected("她说：「" + "我" * 20 + "」 --5s")
    assert error.key == "prompt.too_long_for_duration"
    assert error.params == {
        "estimate": pytest.approx(20 * ZH_CHAR, abs=0.01),
        "speech": pytest.approx(20 * ZH_CHAR, abs=0.01),
        "pauses": 0,
        "seconds": 5,
        "limit": pytest.approx(4.25),
    }
    assert_renders(error)
    assert parse("她说：「" + "我" * 20 + "」").seconds == 10


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("hi --bogus", "--bogus"),
        ("hi --takes", "--takes"),
        ("hi --takes x", "--takes"),
        ("hi --takes=3x", "--takes"),
        ("hi --voice", "--voice"),
        ("hi —seed abc", "—seed"),
    ],
)
def test_bad_flag(text: str, flag: str) -> None:
    error = rejected(text)
    assert (error.key, error.params) == ("prompt.bad_flag", {"flag": flag, "max_takes": 5})
    assert_renders(error)


@pytest.mark.parametrize(
    ("text", "kwargs"),
    [
        ("hi --seed -1", {}),
        ("hi --seed=-1", {}),
        ("hi —seed 4294967296", {}),
        ("hi --seed 1099511627776", {}),
        ("hi", {"seed": -1}),
        ("hi", {"seed": 2**32}),
        ("hi --seed 5", {"seed": 2**40}),
    ],
)
def test_bad_seed(text: str, kwargs: dict[str, object]) -> None:
    error = rejected(text, **kwargs)
    assert (error.key, error.params) == ("prompt.bad_seed", {"max_seed": 2**32 - 1})
    assert_renders(error)
    assert "4294967295" in render(error.key, "en", **error.params)


def test_seeds_at_the_ends_of_the_range() -> None:
    assert parse("hi --seed 0").seed == 0
    assert parse("hi --seed 4294967295").seed == MAX_SEED == 2**32 - 1
    assert parse("hi --seed 9999999999", seed=7).seed == 7  # the value that wins is checked
    assert take_seeds(MAX_SEED, 3) == [MAX_SEED, 0, 1]


@given(st.integers(min_value=-(2**70), max_value=2**70), st.integers(1, 10))
def test_every_seed_reaching_a_provider_is_in_range(seed: int, takes: int) -> None:
    try:
        parsed = parse("hi", seed=seed)
    except PromptRejected as error:
        assert error.key == "prompt.bad_seed"
        assert not 0 <= seed <= MAX_SEED
        return
    assert parsed.seed == seed
    seeds = take_seeds(seed, takes)
    assert seeds[0] == seed and len(set(seeds)) == takes
    assert all(0 <= s <= MAX_SEED for s in seeds)


@pytest.mark.parametrize(
    ("text", "kwargs"), [("hi --takes 0", {}), ("hi --takes 6", {}), ("hi", {"takes": 0})]
)
def test_bad_takes(text: str, kwargs: dict[str, object]) -> None:
    error = rejected(text, **kwargs)
    assert (error.key, error.params) == ("prompt.bad_takes", {"max_takes": 5})
    assert_renders(error)


def test_max_takes_comes_from_settings() -> None:
    settings = PromptSettings(max_takes=2)
    assert parse_line("hi --takes 2", settings).takes == 2
    with pytest.raises(PromptRejected) as info:
        parse_line("hi --takes 3", settings)
    assert info.value.params == {"max_takes": 2}


@pytest.mark.parametrize(
    ("text", "kwargs"), [("hi --7s", {}), ("hi --0s", {}), ("hi", {"seconds": 6})]
)
def test_bad_duration(text: str, kwargs: dict[str, object]) -> None:
    error = rejected(text, **kwargs)
    assert (error.key, error.params) == ("prompt.bad_duration", {})
    assert_renders(error)


# --- language -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("speech", "language"),
    [
        ("我买了一个新的iPhone", "zh"),
        ("我买了iPhone", "en"),  # letters are counted, not words
        ("I love 北京", "en"),
        ("あなたは誰ですか", "other"),
        ("Привет, как дела", "other"),
        ("123", "other"),
        ("Ça va, très bien", "en"),
    ],
)
def test_detect_language(speech: str, language: str) -> None:
    assert detect_language(speech) == language


# --- properties ---------------------------------------------------------------------------

TRICKY = st.sampled_from(
    [*QUOTE_CHARS, "--", "—", "–", "--5s", "--10s", "--takes", "--seed", "--voice", "=", " ",
     "3", "'s", "n't", "，", "。", "?", "\n", "我", "a", "--x"]
)  # fmt: skip
LINES = st.text(max_size=450) | st.lists(TRICKY | st.text(max_size=5), max_size=60).map("".join)


@given(LINES)
def test_parse_never_raises_anything_but_prompt_rejected(text: str) -> None:
    try:
        parsed = parse(text)
    except PromptRejected as error:
        assert error.key in CATALOG["en"]
        assert_renders(error)
        if "estimate" in error.params:  # the breakdown adds up to what it explains
            parts = error.params["speech"] + error.params["pauses"]
            assert parts == pytest.approx(error.params["estimate"], abs=0.02)
        return
    assert parsed.seconds in (5, 10)
    assert 1 <= parsed.takes <= SETTINGS.max_takes
    assert 0 < parsed.speech_seconds <= SETTINGS.long_clip_max_seconds
    assert parsed.line == parsed.line.strip() != ""
    assert all(u == u.strip() != "" for u in parsed.utterances)
    assert parsed.language in ("zh", "en", "other")


UTTERANCE = st.text(
    st.characters(blacklist_characters=QUOTE_CHARS, blacklist_categories=("Cs",)), max_size=60
)


@given(UTTERANCE)
def test_quoted_utterance_comes_back_exactly(utterance: str) -> None:
    try:
        parsed = parse(f'He says: "{utterance}"')
    except PromptRejected as error:
        assert error.key in ("prompt.empty", "prompt.too_long_to_speak")
        if error.key == "prompt.empty":
            assert not any(ch.isalnum() for ch in utterance)
        return
    assert parsed.utterances == (utterance.strip(),)
    assert parsed.speech == utterance.strip()


WORDS = st.lists(st.text(string.ascii_letters, min_size=1, max_size=8), min_size=1, max_size=8)
FLAGS = st.lists(
    st.tuples(
        st.sampled_from(["--", "—", "–"]),
        st.sampled_from(["5s", "10s", "takes {n}", "takes={n}", "seed {n}", "voice v{n}"]),
        st.integers(1, SETTINGS.max_takes),
    ).map(lambda t: t[0] + t[1].format(n=t[2])),
    max_size=5,
)


@given(WORDS, FLAGS, st.randoms(use_true_random=False), st.booleans())
def test_flags_are_removed_and_never_spoken(
    words: list[str], flags: list[str], rng: random.Random, quoted: bool
) -> None:
    tokens = list(words)
    for flag in flags:  # anywhere in the line, but the words keep their order
        tokens.insert(rng.randint(0, len(tokens)), flag)
    text = " ".join(tokens)
    if quoted:
        text = f'{text} "{" ".join(words)}"'
    parsed = parse(text, seconds=10)
    assert not any(dash in parsed.line for dash in "-—–")
    assert parsed.speech == " ".join(words)
    assert parsed.utterances == (" ".join(words),)
    takes = [int(t.split()[-1].split("=")[-1]) for t in tokens if t in flags and "takes" in t]
    assert parsed.takes == (takes[-1] if takes else 1)


@given(
    st.lists(st.text(string.ascii_letters, min_size=1, max_size=8), max_size=10).map(" ".join)
    | st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=20),
    st.text(string.ascii_letters, min_size=1, max_size=8)
    | st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    st.sampled_from(["", ",", "。", "!", "…"]),
)
def test_speech_seconds_grow_with_every_spoken_word(base: str, word: str, mark: str) -> None:
    before = estimate_speech_seconds([base + mark], SETTINGS)
    assert estimate_speech_seconds([f"{base}{mark} {word}"], SETTINGS) > before
    assert estimate_speech_seconds([base + mark, word], SETTINGS) > before


@given(st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=30))
def test_pure_han_is_chinese(text: str) -> None:
    assert detect_language(text) == "zh"
    parsed = parse(f"她说：「{text}」")
    assert parsed.language == "zh"
    assert parsed.seconds == (5 if len(text) * ZH_CHAR <= SETTINGS.short_clip_max_seconds else 10)


@given(WORDS)
def test_ascii_words_are_english(words: list[str]) -> None:
    assert detect_language(" ".join(words)) == "en"
    assert parse(f'He says "{" ".join(words)}"').language == "en"


CLAUSE = st.text("bcdfghjklmnpqrstvwxz ", max_size=12)  # no vowels: no direction fits in it
SHORT_DIRECTIONS = ["停了一下", "顿了顿", "沉默", "she pauses", "A beat", "he paused"]
LONG_DIRECTIONS = ["停顿了一会", "沉默良久", "半晌", "a long pause", "she pauses for a while"]
DIRECTIONS = st.sampled_from(
    [(d, DIRECTION_SECONDS) for d in SHORT_DIRECTIONS]
    + [(d, LONG_DIRECTION_SECONDS) for d in LONG_DIRECTIONS]
)


@given(WORDS, WORDS, CLAUSE, DIRECTIONS, st.sampled_from([",", ".", "，", "。"]))
def test_a_pause_direction_between_utterances_adds_its_time(
    first: list[str], second: list[str], prose: str, asked: tuple[str, float], mark: str
) -> None:
    direction, seconds = asked
    plain = f'He says "{" ".join(first)}" {prose} "{" ".join(second)}"'
    directed = f'He says "{" ".join(first)}" {prose}{mark} {direction}{mark} "{" ".join(second)}"'
    before = parse(plain, seconds=10).speech_seconds
    try:
        after = parse(directed, seconds=10).speech_seconds
    except PromptRejected as error:
        assert error.key == "prompt.too_long_to_speak"
        assert error.params["estimate"] == pytest.approx(before + seconds, abs=0.02)
        return
    assert after == pytest.approx(before + seconds, abs=0.02)
    # Prose without a direction only separates the utterances: one gap, whatever it says.
    words = estimate_speech_seconds([" ".join(first)], SETTINGS) + estimate_speech_seconds(
        [" ".join(second)], SETTINGS
    )
    assert before == pytest.approx(words + GAP_SECONDS, abs=0.02)


@given(
    st.lists(st.text(string.ascii_letters, min_size=1, max_size=8), min_size=1, max_size=6),
    st.lists(st.sampled_from([",", ";", "…", "...", "——", " -- ", "，", "……"]), min_size=1),
)
def test_the_breakdown_adds_up_and_long_marks_cost_more(words: list[str], marks: list[str]) -> None:
    text = "".join(word + marks[i % len(marks)] for i, word in enumerate(words))
    parts = estimate_speech([text], SETTINGS)
    assert min(parts) >= 0
    assert parts.total == pytest.approx(sum(parts), abs=0.01)
    shorter = estimate_speech([text.replace("……", "，").replace("…", ",")], SETTINGS)
    assert shorter.speech == pytest.approx(parts.speech)
    assert shorter.pauses <= parts.pauses


@pytest.mark.parametrize(
    ("long", "short"),
    [
        ("停顿了一会", "停了一下"),
        ("沉默良久", "顿了顿"),
        ("许久", "停顿"),
        ("半晌", "停了一下"),
        ("片刻", "顿了一下"),
        ("She takes a long pause.", "She pauses."),
        ("He pauses for a while.", "He pauses."),
        ("A moment of silence.", "A beat."),
    ],
)
def test_a_long_pause_direction_costs_more_than_a_short_one(long: str, short: str) -> None:
    def timed(direction: str) -> SpeechEstimate:
        return estimate_speech(["你好", "再见"], SETTINGS, before=["她说：", f"，{direction}，"])

    assert timed(short).directions == DIRECTION_SECONDS
    assert timed(long).directions == LONG_DIRECTION_SECONDS > DIRECTION_SECONDS
    assert timed(long).total > timed(short).total


PROSE = st.sampled_from(
    ["她说：", "，", "。", " ", "停了一下", "停顿了一会", "沉默良久", "he says", "a beat",
     "she pauses for a while", "then", "哭着", "slowly", "…", "——", "she smiles"]
)  # fmt: skip
EMOTIONS = st.sampled_from(
    ["哭泣着", "哽咽", "歇斯底里地喊", "尖叫", "颤抖着", "缓缓地", "she sobs", "in tears",
     "hysterically", "screams", "shouts", "slowly", "trembling"]
)  # fmt: skip
SPOKEN = st.lists(
    st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=8)
    | WORDS.map(" ".join)
    | st.sampled_from(["你好，朋友", "wait... what", "我——不"]),
    min_size=1,
    max_size=4,
)


@given(
    SPOKEN,
    st.lists(st.lists(PROSE, max_size=6), min_size=5, max_size=5),
    EMOTIONS,
    st.integers(0, 4),
    st.integers(0, 6),
)
def test_an_emotional_direction_never_shortens_the_estimate(
    spoken: list[str], prose: list[list[str]], emotion: str, where: int, at: int
) -> None:
    # The emotion goes between two pieces of some prose (or after the last utterance).
    pieces = [list(p) for p in prose[: len(spoken) + 1]]
    target = pieces[min(where, len(spoken))]
    target.insert(min(at, len(target)), f" {emotion} ")
    before, after = [" ".join(p) for p in prose[: len(spoken)]], " ".join(prose[len(spoken)])
    directed = [" ".join(p) for p in pieces]
    plain = estimate_speech(spoken, SETTINGS, before=before, after=after)
    slowed = estimate_speech(spoken, SETTINGS, before=directed[:-1], after=directed[-1])
    assert slowed.total >= plain.total
    assert slowed.speech == plain.speech and slowed.pauses == plain.pauses
    assert slowed.directions == plain.directions
    assert slowed.slowdown == pytest.approx(plain.speech * (EMOTIONAL_SLOWDOWN - 1))
