"""Tests for optouts.keywords: keyword data and whole-reply matching.

Pure Python: no database, no Django settings needed.
"""

from __future__ import annotations

import doctest
import time
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optouts.keywords import (
    HELP_KEYWORDS,
    KEYWORDS,
    LANGUAGES,
    MAX_REPLY_LENGTH,
    START_KEYWORDS,
    STOP_KEYWORDS,
    Keyword,
    KeywordMatch,
    classify_reply,
    match_reply,
    normalize_reply,
)

# --------------------------------------------------------------------------------------------
# Independent, hard-coded requirements (not derived from the module's data)
# --------------------------------------------------------------------------------------------

# Twilio's default opt-out words plus the FCC 2024 TCPA list ("opt out", "revoke").
REQUIRED_ENGLISH_STOP = [
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "OPTOUT",
    "OPT OUT",
    "REVOKE",
]
REQUIRED_STOP = {
    "es": ["STOP", "PARAR", "DETENER", "CANCELAR", "BAJA", "ALTO"],
    "fr": ["STOP", "ARRET", "ARRÊT", "DESABONNER", "DÉSABONNER"],
    "de": ["STOP", "STOPP", "ABMELDEN", "BEENDEN", "KÜNDIGEN"],
    "pt": ["STOP", "PARAR", "CANCELAR", "SAIR"],
    "it": ["STOP", "ALT", "BASTA", "CANCELLA", "ANNULLA", "FERMA", "DISISCRIVIMI"],
    "nl": ["STOP", "AFMELDEN", "STOPPEN", "UITSCHRIJVEN"],
}
REQUIRED_START = ["START", "UNSTOP", "YES"]
REQUIRED_HELP = {
    "en": ["HELP", "INFO"],
    "es": ["AYUDA"],
    "fr": ["AIDE"],
    "de": ["HILFE"],
    "pt": ["AJUDA"],
    "it": ["AIUTO"],
}

ALL_ENTRIES = [
    (kind, language, word)
    for kind, by_language in KEYWORDS.items()
    for language, words in by_language.items()
    for word in sorted(words)
]


def _entry_id(entry: tuple[Keyword, str, str]) -> str:
    kind, language, word = entry
    return f"{kind.value}-{language}-{word}"


def strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def to_fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


# --------------------------------------------------------------------------------------------
# Data integrity
# --------------------------------------------------------------------------------------------


class TestData:
    def test_every_language_has_every_kind(self):
        for kind in (Keyword.STOP, Keyword.START, Keyword.HELP):
            assert tuple(KEYWORDS[kind]) == LANGUAGES, kind
            for language in LANGUAGES:
                words = KEYWORDS[kind][language]
                assert isinstance(words, frozenset)
                assert words, (kind, language)

    def test_named_sets_are_the_same_objects(self):
        assert KEYWORDS[Keyword.STOP] is STOP_KEYWORDS
        assert KEYWORDS[Keyword.START] is START_KEYWORDS
        assert KEYWORDS[Keyword.HELP] is HELP_KEYWORDS

    def test_data_is_read_only(self):
        with pytest.raises(TypeError):
            STOP_KEYWORDS["xx"] = frozenset({"NOPE"})  # type: ignore[index]

    def test_words_are_clean_uppercase(self):
        for _kind, _language, word in ALL_ENTRIES:
            assert word == word.strip() and word, repr(word)
            assert word == word.upper(), word
            assert "  " not in word
            assert unicodedata.is_normalized("NFC", word), word

    def test_no_word_means_two_things(self):
        seen: dict[str, Keyword] = {}
        for kind, _language, word in ALL_ENTRIES:
            key = normalize_reply(word)
            assert seen.setdefault(key, kind) == kind, f"{word} is both {seen[key]} and {kind}"

    def test_stop_is_understood_in_every_language(self):
        for language in LANGUAGES:
            assert "STOP" in STOP_KEYWORDS[language]
            assert "START" in START_KEYWORDS[language]
            assert "INFO" in HELP_KEYWORDS[language]

    def test_common_survey_answers_are_not_opt_outs(self):
        # Words a survey participant plausibly sends as an answer must never opt them out.
        for answer in ("NO", "NON", "NEIN", "NÃO", "NEE", "OK", "FINE", "MAYBE", "1", "10"):
            assert classify_reply(answer) != Keyword.STOP, answer


# --------------------------------------------------------------------------------------------
# Required words (independent list)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("word", REQUIRED_ENGLISH_STOP)
def test_required_english_stop_words(word):
    assert word in STOP_KEYWORDS["en"]
    for variant in (word, word.lower(), word.title(), f"  {word}  ", f"{word}."):
        assert classify_reply(variant) is Keyword.STOP, variant
    match = match_reply(word)
    assert match == KeywordMatch(Keyword.STOP, word, "en", match.languages)
    assert match.languages[0] == "en"


@pytest.mark.parametrize(
    ("language", "word"),
    [(language, word) for language, words in REQUIRED_STOP.items() for word in words],
)
def test_required_stop_words_per_language(language, word):
    assert word in STOP_KEYWORDS[language]
    assert classify_reply(word) is Keyword.STOP
    assert classify_reply(word.lower()) is Keyword.STOP
    assert language in match_reply(word).languages


@pytest.mark.parametrize("word", REQUIRED_START)
def test_required_start_words(word):
    assert word in START_KEYWORDS["en"]
    assert classify_reply(word.lower()) is Keyword.START
    expected_languages = tuple(lang for lang in LANGUAGES if word in START_KEYWORDS[lang])
    assert match_reply(word) == KeywordMatch(Keyword.START, word, "en", expected_languages)


@pytest.mark.parametrize(
    ("language", "word"),
    [(language, word) for language, words in REQUIRED_HELP.items() for word in words],
)
def test_required_help_words(language, word):
    assert word in HELP_KEYWORDS[language]
    assert classify_reply(word.capitalize()) is Keyword.HELP
    assert match_reply(word).language == language or word == "INFO"


# --------------------------------------------------------------------------------------------
# Every word in the data, with variants
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=_entry_id)
def test_every_keyword_matches_with_variants(entry):
    kind, language, word = entry
    variants = [
        word,
        word.lower(),
        word.casefold(),
        word.title(),
        word.swapcase(),
        strip_accents(word),
        strip_accents(word).lower(),
        f"   {word}   ",
        f"\t{word.lower()}\r\n",
        f"{word}.",
        f"{word}!!!",
        f"{word}?",
        f'"{word}"',
        f"\u201c{word.lower()}\u201d",
        f"\u00ab {word} \u00bb",
        f"({word})",
        f"{word} \U0001f64f",  # 🙏
        f"\u200b{word}\ufeff",
        f"\u00a0{word}\u3000",
        to_fullwidth(word),
        unicodedata.normalize("NFD", word),  # decomposed accents
    ]
    for variant in variants:
        assert classify_reply(variant) is kind, (variant, kind)
        match = match_reply(variant)
        assert match.kind is kind
        assert language in match.languages
        assert match.language in match.languages
        assert normalize_reply(match.keyword) == normalize_reply(word)
        assert not match.approximate


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=_entry_id)
def test_keyword_inside_a_sentence_is_not_a_keyword(entry):
    kind, _language, word = entry
    for sentence in (f"please {word} now", f"I said {word} and meant it", f"{word} {word}"):
        assert classify_reply(sentence) is Keyword.OTHER, sentence


# --------------------------------------------------------------------------------------------
# Specific behaviour
# --------------------------------------------------------------------------------------------


class TestAccentsAndSpelling:
    @pytest.mark.parametrize("text", ["ARRÊT", "arrêt", "Arret", "ARRET", "arret", "ＡＲＲＥＴ"])
    def test_arret_all_spellings(self, text):
        assert classify_reply(text) is Keyword.STOP
        assert match_reply(text).language == "fr"

    def test_preferred_spelling_follows_the_reply(self):
        assert match_reply("arret").keyword == "ARRET"
        assert match_reply("Arrêt").keyword == "ARRÊT"
        assert match_reply("désabonner").keyword == "DÉSABONNER"
        assert match_reply("desabonner").keyword == "DESABONNER"

    def test_german_umlauts(self):
        for text in ("KÜNDIGEN", "kündigen", "kundigen", "kuendigen", "Aufhören", "aufhoeren"):
            match = match_reply(text)
            assert match.kind is Keyword.STOP, text
            assert match.language == "de"

    def test_dutch_diaeresis(self):
        assert match_reply("beëindigen").keyword == "BEËINDIGEN"
        assert classify_reply("beeindigen") is Keyword.STOP

    def test_shared_words_report_first_language_and_all_languages(self):
        match = match_reply("parar")
        assert (match.kind, match.keyword, match.language) == (Keyword.STOP, "PARAR", "es")
        assert match.languages == ("es", "pt")
        assert match_reply("stop").languages == LANGUAGES
        assert match_reply("info").kind is Keyword.HELP

    def test_spanish_and_italian_yes(self):
        assert match_reply("Sí").language == "es"
        assert match_reply("sì").language == "it"
        assert match_reply("si").language == "es"
        assert match_reply("si").languages == ("es", "it")

    def test_separators_inside(self):
        for text in ("opt out", "Opt-Out", "OPT_OUT", "opt  out", "S.T.O.P", "stop all", "un-stop"):
            assert classify_reply(text) in (Keyword.STOP, Keyword.START), text
        assert classify_reply("stop all") is Keyword.STOP
        assert classify_reply("un-stop") is Keyword.START
        assert classify_reply("opt in") is Keyword.START

    def test_eszett_casefold(self):
        # casefold, not lower: "ß" == "ss". No keyword has one, but it must not break anything.
        assert normalize_reply("STRASSE") == normalize_reply("Straße") == "strasse"
        assert classify_reply("Straße") is Keyword.OTHER

    def test_turkish_dotted_capital_i(self):
        assert classify_reply("İNFO") is Keyword.HELP


class TestNonMatches:
    @pytest.mark.parametrize(
        "text",
        [
            "Please stop texting me",
            "stop please",
            "don't stop",
            "STOPS",
            "stopped",
            "unstoppable",
            "stop2",
            "2 stop",
            "yes please",
            "help me",
            "I need info",
            "7",
            "Great service, thanks!",
            "st op it",
            "\U0001f6d1",  # 🛑 alone: no letters
            "!!!",
        ],
    )
    def test_other(self, text):
        assert classify_reply(text) is Keyword.OTHER
        assert match_reply(text) == KeywordMatch(Keyword.OTHER)


class TestOddInput:
    @pytest.mark.parametrize("text", [None, "", " ", "\t\r\n", "\u3000\u00a0", b"", b"   "])
    def test_empty_like(self, text):
        assert classify_reply(text) is Keyword.OTHER
        assert match_reply(text) == KeywordMatch(Keyword.OTHER, None, None, (), False)
        assert normalize_reply(text) == ""

    def test_bytes_are_decoded(self):
        assert classify_reply(b"STOP") is Keyword.STOP
        assert classify_reply("Arrêt".encode()) is Keyword.STOP
        assert classify_reply(bytearray(b"help")) is Keyword.HELP
        assert classify_reply(b"\xffSTOP\xfe") is Keyword.STOP  # invalid UTF-8 around it

    def test_wrong_type(self):
        with pytest.raises(TypeError):
            classify_reply(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            match_reply(["STOP"])  # type: ignore[arg-type]

    def test_very_long_text_is_fast_and_other(self):
        start = time.perf_counter()
        assert classify_reply("a" * 1_000_000) is Keyword.OTHER
        assert classify_reply("stop " * 200_000) is Keyword.OTHER
        assert classify_reply("\ufffd" * 1_000_000) is Keyword.OTHER
        assert time.perf_counter() - start < 1.0

    def test_keyword_with_huge_whitespace_padding(self):
        assert classify_reply(" " * 100_000 + "STOP" + "\n" * 100_000) is Keyword.STOP

    def test_length_cap(self):
        assert classify_reply("STOP" + "!" * (MAX_REPLY_LENGTH - 4)) is Keyword.STOP
        assert classify_reply("STOP" + "!" * (MAX_REPLY_LENGTH - 3)) is Keyword.OTHER

    def test_non_bmp_characters(self):
        assert classify_reply("STOP \U0001f621\U0001f621") is Keyword.STOP
        assert classify_reply("\U0001d412\U0001d413\U0001d40e\U0001d40f") is Keyword.STOP  # 𝐒𝐓𝐎𝐏
        assert classify_reply("\U0001f600") is Keyword.OTHER
        assert classify_reply("\U00020000stop") is Keyword.OTHER  # CJK ideograph is a letter

    def test_lone_surrogates(self):
        assert classify_reply("\udcffSTOP") is Keyword.STOP
        assert classify_reply("\ud800") is Keyword.OTHER

    def test_control_characters(self):
        assert classify_reply("\x00STOP\x1b") is Keyword.STOP


class TestReplacementCharacters:
    def test_around_the_keyword(self):
        assert match_reply("STOP\ufffd").kind is Keyword.STOP
        assert match_reply("\ufffd\ufffdstop").kind is Keyword.STOP

    @pytest.mark.parametrize(
        ("text", "keyword"),
        [
            ("ARR\ufffdT", "ARRET"),  # Ê lost in a single-byte decode
            ("ARR\ufffd\ufffdT", "ARRET"),  # Ê lost as two UTF-8 bytes
            ("D\ufffdSABONNER", "DESABONNER"),
            ("K\ufffdNDIGEN", "KÜNDIGEN"),
            ("AUFH\ufffd\ufffdREN", "AUFHÖREN"),
            ("BE\ufffdINDIGEN", "BEËINDIGEN"),
        ],
    )
    def test_lost_accented_letter_is_repaired(self, text, keyword):
        match = match_reply(text)
        assert match.kind is Keyword.STOP
        assert match.keyword == keyword
        assert match.approximate
        assert classify_reply(text) is Keyword.STOP

    @pytest.mark.parametrize(
        "text",
        [
            "\ufffd",
            "\ufffd\ufffd\ufffd\ufffd",  # an emoji lost entirely
            "S\ufffd",  # too few readable letters to guess
            "I don\ufffdt know",
            "ARR\ufffdT please",
        ],
    )
    def test_not_repaired(self, text):
        assert classify_reply(text) is Keyword.OTHER


def test_keyword_enum_is_a_str():
    assert classify_reply("stop") == "STOP"
    assert {k.value for k in Keyword} == {"STOP", "START", "HELP", "OTHER"}
    assert Keyword("HELP") is Keyword.HELP


def test_match_is_frozen():
    with pytest.raises(AttributeError):
        match_reply("stop").kind = Keyword.OTHER  # type: ignore[misc]


def test_classify_speed(capsys):
    replies = ["Stop", "8", "Great, thanks!", "ARRÊT", "yes", "The nurse was lovely"] * 500
    start = time.perf_counter()
    for reply in replies:
        classify_reply(reply)
    rate = len(replies) / (time.perf_counter() - start)
    with capsys.disabled():
        print(f"\n[keywords] classify_reply: {rate:,.0f} calls/s on mixed replies")
    assert rate > 5_000


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

JUNK = st.text(
    st.sampled_from(list(" \t\n.,!?\"'()-_*~\u00a0\u200b\u2019\u201c\u201d") + ["\U0001f64f"]),
    max_size=6,
)


@given(st.one_of(st.text(), st.binary(), st.none()))
@settings(max_examples=500)
def test_never_raises(value):
    kind = classify_reply(value)
    assert isinstance(kind, Keyword)
    match = match_reply(value)
    assert match.kind is kind
    if kind is Keyword.OTHER:
        assert match.keyword is None and match.language is None
    else:
        assert match.keyword is not None and match.language in LANGUAGES


@given(st.sampled_from(ALL_ENTRIES), JUNK, JUNK, st.booleans())
@settings(max_examples=500)
def test_punctuation_and_space_around_a_keyword_never_matter(entry, before, after, lower):
    kind, language, word = entry
    text = before + (word.lower() if lower else word) + after
    assert classify_reply(text) is kind
    assert language in match_reply(text).languages


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_normalize_is_idempotent(text):
    once = normalize_reply(text)
    assert normalize_reply(once) == once
    assert all(c.isalnum() for c in once)


def test_docstring_examples():
    import optouts.keywords as module

    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
