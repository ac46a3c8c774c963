"""Tests for credits.segments (and its browser twin static/js/segments.js).

Pure Python: no database, no Django settings needed.
"""

from __future__ import annotations

import doctest
import json
import math
import random
import re
import shutil
import subprocess
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credits.segments import (
    GSM7,
    GSM_BASIC_CHARS,
    GSM_EXTENSION_CHARS,
    GSM_LOOKALIKES,
    UCS2,
    SegmentInfo,
    count_segments,
    gsm_replace_lookalikes,
    is_gsm7,
    segment_info,
)

REPO = Path(__file__).resolve().parent.parent
JS_FILE = REPO / "static" / "js" / "segments.js"

EMOJI = "\U0001f600"  # 😀, outside the BMP: 2 UTF-16 code units
NON_GSM_BMP = "\u00e1"  # á: in Latin-1 but not in GSM 03.38


# --------------------------------------------------------------------------------------------
# Slow, obviously-correct reference implementation (written independently of the module).
# --------------------------------------------------------------------------------------------

REF_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
REF_EXTENSION = {"\f", "^", "{", "}", "\\", "[", "~", "]", "|", "€"}


def reference_info(text: str) -> tuple[str, int, int, int, int, tuple[str, ...]]:
    """Per-character loop: (encoding, units, segments, per_segment, remaining, non_gsm)."""
    non_gsm: list[str] = []
    for ch in text:
        if ch not in REF_BASIC and ch not in REF_EXTENSION and ch not in non_gsm:
            non_gsm.append(ch)
    if not non_gsm:
        encoding, single, multi = "GSM-7", 160, 153
        widths = [2 if ch in REF_EXTENSION else 1 for ch in text]
    else:
        encoding, single, multi = "UCS-2", 70, 67
        widths = [len(ch.encode("utf-16-le")) // 2 for ch in text]
    units = sum(widths)
    if units <= single:  # empty text too: Twilio's calculator says 1
        return encoding, units, 1, single, single - units, tuple(non_gsm)
    # Fill segments one character at a time; a character that does not fit whole starts
    # a new segment (this is the "never split an escape / surrogate pair" rule).
    segments, used = 1, 0
    for w in widths:
        if used + w > multi:
            segments += 1
            used = 0
        used += w
    return encoding, units, segments, multi, multi - used, tuple(non_gsm)


def as_tuple(info: SegmentInfo) -> tuple[str, int, int, int, int, tuple[str, ...]]:
    return (
        info.encoding,
        info.units,
        info.segments,
        info.per_segment,
        info.remaining_in_segment,
        info.non_gsm_chars,
    )


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


class TestTables:
    def test_basic_set_is_the_127_printable_gsm_characters(self):
        assert len(GSM_BASIC_CHARS) == 127  # 128 code points minus ESC (0x1B)
        assert len(set(GSM_BASIC_CHARS)) == 127
        assert "\x1b" not in GSM_BASIC_CHARS
        assert set(GSM_BASIC_CHARS) == REF_BASIC

    def test_extension_table(self):
        assert len(GSM_EXTENSION_CHARS) == 10
        assert set(GSM_EXTENSION_CHARS) == REF_EXTENSION
        assert not set(GSM_EXTENSION_CHARS) & set(GSM_BASIC_CHARS)

    def test_ascii_coverage(self):
        # Printable ASCII is GSM except the backtick; 9 of them cost 2 septets.
        printable = {chr(c) for c in range(0x20, 0x7F)}
        assert printable - set(GSM_BASIC_CHARS) - set(GSM_EXTENSION_CHARS) == {"`"}
        assert printable - set(GSM_BASIC_CHARS) == set("`^{}\\[~]|")

    def test_control_characters(self):
        assert "\n" in GSM_BASIC_CHARS and "\r" in GSM_BASIC_CHARS
        assert "\f" in GSM_EXTENSION_CHARS
        for c in ("\t", "\x00", "\x1b", "\x7f"):
            assert not is_gsm7(c)

    def test_lookalike_keys_are_not_gsm_and_values_are(self):
        for key, value in GSM_LOOKALIKES.items():
            assert len(key) == 1, repr(key)
            assert not is_gsm7(key), f"{key!r} is already GSM-7, no need to replace it"
            assert is_gsm7(value), f"{key!r} -> {value!r} is not GSM-7"
            assert not set(value) & set(GSM_EXTENSION_CHARS), f"{key!r} should not cost 2 septets"

    def test_lookalikes_are_punctuation_or_space_never_letters(self):
        for key in GSM_LOOKALIKES:
            category = unicodedata.category(key)
            # Lm: modifier letters used as apostrophes (ʼ ʻ ...); Ll only for ﬁ-style ligatures.
            if category == "Ll":
                assert unicodedata.name(key).startswith("LATIN SMALL LIGATURE"), key
            else:
                assert category[0] in "PZSC" or category == "Lm", (key, category)


# --------------------------------------------------------------------------------------------
# Known cases
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments", "per_segment", "remaining"),
    [
        ("", GSM7, 0, 1, 160, 160),
        ("a", GSM7, 1, 1, 160, 159),
        ("a" * 160, GSM7, 160, 1, 160, 0),
        ("a" * 161, GSM7, 161, 2, 153, 145),
        ("a" * 306, GSM7, 306, 2, 153, 0),
        ("a" * 307, GSM7, 307, 3, 153, 152),
        ("a" * 459, GSM7, 459, 3, 153, 0),
        ("a" * 460, GSM7, 460, 4, 153, 152),
        # extension characters count double
        ("€", GSM7, 2, 1, 160, 158),
        ("€" * 80, GSM7, 160, 1, 160, 0),
        ("€" * 81, GSM7, 162, 2, 153, 143),  # 76 € (152 septets + 1 padding) + 5 €
        ("a" * 159 + "{", GSM7, 161, 2, 153, 145),
        ("a" * 158 + "|", GSM7, 160, 1, 160, 0),
        # UCS-2
        (NON_GSM_BMP * 70, UCS2, 70, 1, 70, 0),
        (NON_GSM_BMP * 71, UCS2, 71, 2, 67, 63),
        (NON_GSM_BMP * 134, UCS2, 134, 2, 67, 0),
        (NON_GSM_BMP * 135, UCS2, 135, 3, 67, 66),
        (EMOJI, UCS2, 2, 1, 70, 68),
        (EMOJI * 35, UCS2, 70, 1, 70, 0),
        (EMOJI * 36, UCS2, 72, 2, 67, 61),  # 33 emoji (66 units + 1 padding) + 3 emoji
        ("a" * 69 + EMOJI, UCS2, 71, 2, 67, 63),
        # an extension character in a UCS-2 message is a single unit
        ("€" * 69 + NON_GSM_BMP, UCS2, 70, 1, 70, 0),
    ],
)
def test_known_cases(text, encoding, units, segments, per_segment, remaining):
    info = segment_info(text)
    assert info.encoding == encoding
    assert info.units == units
    assert info.segments == segments
    assert info.per_segment == per_segment
    assert info.remaining_in_segment == remaining
    assert count_segments(text) == segments
    assert as_tuple(info) == reference_info(text)


def test_empty_text_is_one_segment_as_twilio_counts_it():
    assert count_segments("") == 1
    assert segment_info("") == SegmentInfo(GSM7, 0, 1, 160, 160, ())


class TestBoundaries:
    def test_escape_sequence_not_split_across_segments(self):
        # 152 septets, then '€' would occupy septets 153 (end of segment 1) and 154.
        text = "a" * 152 + "€" + "a" * 152
        info = segment_info(text)
        assert info.units == 306  # naive ceil(306 / 153) would say 2 segments
        assert info.segments == 3  # the escape moves to segment 2, pushing 1 septet into 3
        assert info.remaining_in_segment == 152
        assert count_segments(text) == 3

    def test_escape_that_fits_exactly_is_not_moved(self):
        text = "a" * 151 + "€" + "a" * 153  # '€' occupies septets 152-153 of segment 1
        info = segment_info(text)
        assert (info.units, info.segments, info.remaining_in_segment) == (306, 2, 0)

    def test_escape_at_start_of_segment(self):
        text = "a" * 153 + "€" + "a" * 151
        info = segment_info(text)
        assert (info.units, info.segments, info.remaining_in_segment) == (306, 2, 0)

    def test_escape_boundary_in_third_segment(self):
        text = "a" * 305 + "[" + "a"  # '[' would straddle the 306/307 boundary
        info = segment_info(text)
        assert info.units == 308
        assert info.segments == 3
        assert info.remaining_in_segment == 153 - 3

    def test_single_segment_never_pads(self):
        # A 2-septet character ending exactly at septet 160 is fine in a single SMS.
        assert segment_info("a" * 158 + "€").segments == 1

    def test_surrogate_pair_not_split_across_segments(self):
        text = "\u3042" * 66 + EMOJI + "\u3042" * 66  # あ... 😀 あ...
        info = segment_info(text)
        assert info.units == 134  # naive ceil(134 / 67) would say 2
        assert info.segments == 3
        assert count_segments(text) == 3

    def test_surrogate_pair_that_fits_is_not_moved(self):
        text = "\u3042" * 65 + EMOJI + "\u3042" * 67
        info = segment_info(text)
        assert (info.units, info.segments, info.remaining_in_segment) == (134, 2, 0)


class TestEncodingSwitch:
    def test_one_emoji_switches_to_ucs2_and_counts_two_units(self):
        gsm = "Thanks for your feedback"
        assert segment_info(gsm).encoding == GSM7
        info = segment_info(gsm + " " + EMOJI)
        assert info.encoding == UCS2
        assert info.units == len(gsm) + 1 + 2
        assert info.non_gsm_chars == (EMOJI,)

    def test_one_non_gsm_char_turns_a_one_segment_message_into_three(self):
        body = "a" * 150
        assert count_segments(body) == 1
        assert count_segments(body + NON_GSM_BMP) == 3  # 151 UCS-2 units

    def test_greek_capitals_in_gsm_lowercase_not(self):
        # Δ Φ Γ Λ Ω Π Ψ Σ Θ Ξ are in GSM 03.38; Greek lowercase is not, and neither is
        # capital alpha (it looks like 'A' but is U+0391).
        assert segment_info("ΔΦΓΛΩΠΨΣΘΞ").encoding == GSM7
        assert segment_info("ΔΦΓΛΩΠΨΣΘΞ").units == 10
        info = segment_info("Δέλτα ΦΓ")
        assert info.encoding == UCS2
        assert info.non_gsm_chars == ("έ", "λ", "τ", "α")
        assert segment_info("\u0391").encoding == UCS2

    def test_mixed_scripts_non_gsm_chars_in_order_of_first_appearance(self):
        info = segment_info("Hola ñ á, Привет, こんにちは " + EMOJI + " á")
        assert info.encoding == UCS2
        assert info.non_gsm_chars == (
            "á",
            "П",
            "р",
            "и",
            "в",
            "е",
            "т",
            "こ",
            "ん",
            "に",
            "ち",
            "は",
            EMOJI,
        )
        assert "ñ" not in info.non_gsm_chars  # ñ is GSM

    def test_latin_accents_in_and_out_of_gsm(self):
        assert is_gsm7("èéùìòÇØøÅåÆæßÉÄÖÑÜäöñüà¿¡£¥§¤")
        for ch in "áíóúâêîôûçãõœ":
            assert not is_gsm7(ch), ch

    def test_decomposed_accents_are_not_gsm(self):
        # "é" precomposed is GSM; "e" + COMBINING ACUTE is two code points and is not.
        assert is_gsm7("\u00e9")
        assert segment_info("e\u0301").encoding == UCS2
        assert segment_info(unicodedata.normalize("NFC", "e\u0301")).encoding == GSM7


class TestLookalikes:
    def test_replacement_makes_message_gsm_again(self):
        text = "\u201cHello\u201d \u2014 it\u2019s your survey\u2026 \u2022 Reply\u00a0STOP"
        assert segment_info(text).encoding == UCS2
        fixed = gsm_replace_lookalikes(text)
        assert fixed == '"Hello" - it\'s your survey... - Reply STOP'
        info = segment_info(fixed)
        assert info.encoding == GSM7
        assert info.segments == 1

    def test_replacement_can_save_segments(self):
        text = "It\u2019s " + "a" * 100
        assert count_segments(text) == 2  # 106 UCS-2 units
        assert count_segments(gsm_replace_lookalikes(text)) == 1

    @pytest.mark.parametrize(
        ("src", "dst"),
        [
            ("\u2018x\u2019", "'x'"),
            ("\u201cx\u201d", '"x"'),
            ("\u00abx\u00bb", '"x"'),
            ("a\u2013b", "a-b"),
            ("a\u2014b", "a-b"),
            ("wait\u2026", "wait..."),
            ("a\u00a0b", "a b"),
            ("a\u202fb", "a b"),
            ("\u2022 item", "- item"),
            ("a\tb", "a b"),
            ("zero\u200bwidth", "zerowidth"),
            ("soft\u00adhyphen", "softhyphen"),
            ("\ufeffbom", "bom"),
            ("`code`", "'code'"),
            ("\ufb01ne", "fine"),
        ],
    )
    def test_individual_replacements(self, src, dst):
        assert gsm_replace_lookalikes(src) == dst
        assert is_gsm7(dst)

    def test_letters_are_left_alone(self):
        assert gsm_replace_lookalikes("José María ção αβγ") == "José María ção αβγ"

    def test_emoji_survives_replacement(self):
        assert gsm_replace_lookalikes("It\u2019s " + EMOJI) == "It's " + EMOJI


def test_rejects_non_str():
    with pytest.raises(TypeError):
        segment_info(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        count_segments(b"bytes")  # type: ignore[arg-type]


def test_segment_info_is_frozen():
    info = segment_info("x")
    with pytest.raises(AttributeError):
        info.segments = 5  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

# An alphabet that hits every interesting case often: basic, extension, non-GSM BMP, astral.
INTERESTING = st.sampled_from(
    list("aZ9 @\n.Δ") + list(GSM_EXTENSION_CHARS) + ["á", "α", "\u3042", EMOJI, "\U0010fffd"]
)
GSM_ONLY = st.sampled_from(list(GSM_BASIC_CHARS) + list(GSM_EXTENSION_CHARS))
TEXTS = st.one_of(
    st.text(),
    st.text(INTERESTING, max_size=400),
    st.text(GSM_ONLY, max_size=500),
    st.text(st.sampled_from(["a", "€"]), min_size=140, max_size=400),
    st.text(st.sampled_from(["\u3042", EMOJI]), min_size=60, max_size=200),
)


@given(TEXTS)
@settings(max_examples=500, deadline=None)
def test_agrees_with_reference(text):
    info = segment_info(text)
    assert as_tuple(info) == reference_info(text)
    assert count_segments(text) == info.segments


@given(st.text(GSM_ONLY, max_size=800))
@settings(max_examples=300, deadline=None)
def test_gsm_path_agrees_with_reference(text):
    info = segment_info(text)
    assert info.encoding == GSM7
    assert as_tuple(info) == reference_info(text)


@given(TEXTS)
@settings(max_examples=500, deadline=None)
def test_ceil_formula_and_capacity(text):
    info = segment_info(text)
    all_single_width = not any(
        ch in GSM_EXTENSION_CHARS if info.encoding == GSM7 else ord(ch) > 0xFFFF for ch in text
    )
    if all_single_width or info.segments <= 1:
        # no boundary adjustment can matter: plain arithmetic
        assert info.segments == max(1, math.ceil(info.units / info.per_segment))
    else:
        # padding can only add segments, never remove them
        assert info.segments >= math.ceil(info.units / info.per_segment)
    # the billed capacity always holds the units plus whatever is still free
    assert info.segments >= 1
    assert info.segments * info.per_segment - info.remaining_in_segment >= info.units
    assert 0 <= info.remaining_in_segment <= info.per_segment
    if info.segments > 1:
        assert info.remaining_in_segment < info.per_segment


@given(TEXTS, st.text(min_size=1, max_size=5))
@settings(max_examples=500, deadline=None)
def test_monotone_when_appending(text, extra):
    before = count_segments(text)
    for ch in extra:
        text += ch
        after = count_segments(text)
        assert after >= before
        before = after


@given(TEXTS)
@settings(max_examples=300, deadline=None)
def test_lookalike_replacement_idempotent_and_complete(text):
    once = gsm_replace_lookalikes(text)
    assert gsm_replace_lookalikes(once) == once
    assert not set(once) & set(GSM_LOOKALIKES)
    # every other character survives untouched, in order
    assert once == "".join(GSM_LOOKALIKES.get(c, c) for c in text)


# --------------------------------------------------------------------------------------------
# The JavaScript twin
# --------------------------------------------------------------------------------------------


def _js_source() -> str:
    return JS_FILE.read_text(encoding="utf-8")


def _js_literal(name: str, pattern: str) -> object:
    match = re.search(rf"\bconst {name} = ({pattern});", _js_source(), re.DOTALL)
    assert match, f"could not find `const {name} = ...;` in {JS_FILE}"
    return json.loads(match.group(1))


class TestJsTablesMatchPython:
    def test_basic(self):
        assert _js_literal("GSM_BASIC", r'"(?:[^"\\]|\\.)*"') == GSM_BASIC_CHARS

    def test_extension(self):
        assert _js_literal("GSM_EXTENSION", r'"(?:[^"\\]|\\.)*"') == GSM_EXTENSION_CHARS

    def test_lookalikes(self):
        assert _js_literal("GSM_LOOKALIKES", r"\{.*?\n  \}") == GSM_LOOKALIKES

    def test_each_table_defined_once(self):
        src = _js_source()
        for name in ("GSM_BASIC", "GSM_EXTENSION", "GSM_LOOKALIKES"):
            assert len(re.findall(rf"\bconst {name} =", src)) == 1


def _node_cases() -> list[str]:
    rng = random.Random(20240601)
    alphabet = list("aZ9 @\n.Δ") + list(GSM_EXTENSION_CHARS) + ["á", "α", "\u3042", EMOJI]
    cases = [
        "",
        "a" * 160,
        "a" * 161,
        "a" * 306,
        "a" * 307,
        "€" * 80,
        "€" * 81,
        "a" * 152 + "€" + "a" * 152,
        "a" * 151 + "€" + "a" * 153,
        NON_GSM_BMP * 70,
        NON_GSM_BMP * 71,
        NON_GSM_BMP * 134,
        NON_GSM_BMP * 135,
        EMOJI,
        EMOJI * 36,
        "\u3042" * 66 + EMOJI + "\u3042" * 66,
        "Δέλτα ΦΓ",
        "Hola ñ á, Привет, こんにちは " + EMOJI + " á",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467 family",  # ZWJ sequence
        "\U0001f1eb\U0001f1f7",  # flag: two regional indicators
        "\u201cHello\u201d \u2014 it\u2019s\u2026",
        "e\u0301",
    ]
    for _ in range(300):
        size = rng.choice([5, 60, 75, 140, 165, 320, 480])
        cases.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, size))))
    for _ in range(100):
        cases.append("".join(rng.choice(["a", "€"]) for _ in range(rng.randint(150, 470))))
        cases.append("".join(rng.choice(["\u3042", EMOJI]) for _ in range(rng.randint(60, 210))))
    return cases


NODE_HARNESS = """
const s = require(process.argv[1]);
let data = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (c) => (data += c));
process.stdin.on("end", () => {
  const req = JSON.parse(data);
  const out = {
    info: req.info.map((t) => s.info(t)),
    replaced: req.replace.map((t) => s.replaceLookalikes(t)),
    hasWindowStyleGlobal: typeof globalThis.RelaySegments === "object",
  };
  process.stdout.write(JSON.stringify(out));
});
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_js_agrees_with_python():
    cases = _node_cases()
    replace_cases = [
        "".join(GSM_LOOKALIKES),
        "\u201cHi\u201d \u2014 it\u2019s\u2026 \u2022\u00a0ok " + EMOJI,
        "plain",
        "",
    ]
    proc = subprocess.run(
        ["node", "-e", NODE_HARNESS, str(JS_FILE)],
        input=json.dumps({"info": cases, "replace": replace_cases}),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=True,
    )
    out = json.loads(proc.stdout)
    assert out["hasWindowStyleGlobal"]
    for text, js in zip(cases, out["info"], strict=True):
        py = segment_info(text)
        expected = {
            "encoding": py.encoding,
            "units": py.units,
            "segments": py.segments,
            "perSegment": py.per_segment,
            "remainingInSegment": py.remaining_in_segment,
            "nonGsmChars": list(py.non_gsm_chars),
        }
        assert js == expected, f"JS and Python disagree on {text!r}"
    for text, js in zip(replace_cases, out["replaced"], strict=True):
        assert js == gsm_replace_lookalikes(text)


# --------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------

TEMPLATE = (
    "Hi {name}, thanks for visiting Riverside Clinic today. How likely are you to "
    "recommend us (0-10)? Reply with a score. Reply STOP to opt out."
)
NAMES = ["Jordan", "Maria", "Li", "Oluwaseun", "Anne-Sophie", "Zoë", "Élodie", "Björn", "Kai"]


def _rate(func, bodies, min_seconds=0.3) -> float:
    calls = 0
    start = time.perf_counter()
    while True:
        for body in bodies:
            func(body)
        calls += len(bodies)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls / elapsed


def test_count_segments_speed(capsys):
    bodies = [TEMPLATE.format(name=NAMES[i % len(NAMES)]) for i in range(1000)]
    jordan = TEMPLATE.format(name="Jordan")
    assert len(jordan) == 140
    assert count_segments(jordan) == 1
    fast = _rate(count_segments, bodies)
    full = _rate(segment_info, bodies)
    slow = _rate(reference_info, bodies, min_seconds=0.15)
    ext_bodies = [b.replace("(0-10)", "[0-10]") for b in bodies]
    with_ext = _rate(count_segments, ext_bodies)
    with capsys.disabled():
        print(
            f"\n[segments] 140-char GSM body with name substituted: "
            f"count_segments {fast:,.0f} calls/s, segment_info {full:,.0f} calls/s, "
            f"with extension chars {with_ext:,.0f} calls/s, "
            f"per-char reference {slow:,.0f} calls/s"
        )
    # Relative, not absolute, so a loaded CI machine does not make this flaky: the fast path
    # must be clearly faster than a per-character Python loop.
    assert fast > 3 * slow


def test_docstring_examples():
    import credits.segments as module

    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.django_db
def test_an_empty_message_is_still_refused_when_scheduling(tenancy, api_a):
    """One segment when empty is how it would be billed, not a message anyone may schedule."""
    from django.core.exceptions import ValidationError

    from distributions.services import distribution_create

    with pytest.raises(ValidationError) as excinfo:
        distribution_create(project=tenancy.project_a, message=" \r\n ")
    assert excinfo.value.message_dict["message"] == ["The message is empty."]
    refused = api_a.post(
        "/api/v1/distributions/", {"project": tenancy.project_a.pk, "message": ""}, format="json"
    )
    assert refused.status_code == 400 and "message" in refused.json()["error"]["fields"]
