"""SMS segment counting that matches what carriers (and Twilio) bill.

Pure Python, no Django: safe to import anywhere, including hot loops in workers.

Rules implemented
-----------------
* **GSM-7** (3GPP TS 23.038 / GSM 03.38) is used when every character is in the basic
  character set (:data:`GSM_BASIC_CHARS`) or the extension table
  (:data:`GSM_EXTENSION_CHARS`). A basic character costs 1 septet; an extension character
  (``^ { } \\ [ ~ ] | €`` and form feed) costs 2 septets (ESC + code).
  A message of up to 160 septets is one segment. A longer message is concatenated and each
  segment carries 153 septets (7 go to the user-data header). A 2-septet escape sequence is
  never split across two segments: when it would start on the last septet of a segment, that
  septet is left unused and the sequence moves to the next segment (as Twilio and carriers do).
* **UCS-2** (really UTF-16) is used for the whole message as soon as one character is not
  GSM-7. Units are UTF-16 code units: characters outside the BMP (most emoji) cost 2.
  Up to 70 units is one segment; concatenated segments carry 67 units. A surrogate pair is
  never split across segments (same padding rule as the GSM escape).
* **Empty text is 1 segment**, as Twilio's segment calculator counts it (an SMS with no
  characters is still one SMS). Scheduling refuses an empty message on its own
  (``distributions.services``); a piped message that renders empty is priced as one segment.

Units are counted on the Python ``str`` as given (code points). Text is not normalised:
``"e\\u0301"`` (e + combining acute) is two code points and forces UCS-2, while ``"é"`` is
GSM-7. Normalise to NFC before counting if the text comes from an untrusted editor.

The character tables live in this module only; ``static/js/segments.js`` carries a copy for
the live counter in the browser and ``tests/test_segments.py`` asserts the two are identical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "GSM_BASIC_CHARS",
    "GSM_EXTENSION_CHARS",
    "GSM_LOOKALIKES",
    "GSM7",
    "UCS2",
    "GSM_SINGLE_SEGMENT",
    "GSM_MULTI_SEGMENT",
    "UCS2_SINGLE_SEGMENT",
    "UCS2_MULTI_SEGMENT",
    "SegmentInfo",
    "count_segments",
    "gsm_replace_lookalikes",
    "is_gsm7",
    "normalize_line_breaks",
    "segment_info",
]

GSM7: Final = "GSM-7"
UCS2: Final = "UCS-2"

GSM_SINGLE_SEGMENT: Final = 160
GSM_MULTI_SEGMENT: Final = 153
UCS2_SINGLE_SEGMENT: Final = 70
UCS2_MULTI_SEGMENT: Final = 67

#: GSM 03.38 basic character set, in code-table order (0x00-0x7F), without 0x1B (ESC),
#: which is the escape to the extension table and not a character a message can contain.
GSM_BASIC_CHARS: Final[str] = (
    "@£$¥èéùìòÇ\nØø\rÅå"  # 0x00-0x0F
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"  # 0x10-0x1F (0x1B ESC omitted)
    " !\"#¤%&'()*+,-./"  # 0x20-0x2F
    "0123456789:;<=>?"  # 0x30-0x3F
    "¡ABCDEFGHIJKLMNO"  # 0x40-0x4F
    "PQRSTUVWXYZÄÖÑÜ§"  # 0x50-0x5F
    "¿abcdefghijklmno"  # 0x60-0x6F
    "pqrstuvwxyzäöñüà"  # 0x70-0x7F
)

#: GSM 03.38 extension table (each costs 2 septets: ESC + code), in code-table order:
#: form feed (0x0A), ^ (0x14), { } (0x28 0x29), \\ (0x2F), [ ~ ] (0x3C-0x3E), | (0x40),
#: € (0x65).
GSM_EXTENSION_CHARS: Final[str] = "\f^{}\\[~]|€"

#: Common look-alikes and their GSM-7 replacements (typographic quotes, dashes, exotic
#: spaces, bullets, ...). Only punctuation/space-like characters are mapped: letters are
#: never transliterated (``"á"`` stays ``"á"``), because that would change what people read.
#: Invisible characters that carry no meaning in an SMS (zero-width space, soft hyphen,
#: BOM, word joiner) map to the empty string.
GSM_LOOKALIKES: Final[dict[str, str]] = {
    # double quotes
    "\u00ab": '"',  # « left-pointing double angle quotation mark
    "\u00bb": '"',  # » right-pointing double angle quotation mark
    "\u201c": '"',  # left double quotation mark
    "\u201d": '"',  # right double quotation mark
    "\u201e": '"',  # „ double low-9 quotation mark
    "\u201f": '"',  # ‟ double high-reversed-9 quotation mark
    "\u2033": '"',  # ″ double prime
    "\u02ba": '"',  # ʺ modifier letter double prime
    "\u02ee": '"',  # ˮ modifier letter double apostrophe
    "\u275d": '"',  # ❝ heavy double turned comma quotation mark ornament
    "\u275e": '"',  # ❞ heavy double comma quotation mark ornament
    "\u301d": '"',  # 〝 reversed double prime quotation mark
    "\u301e": '"',  # 〞 double prime quotation mark
    "\uff02": '"',  # ＂ fullwidth quotation mark
    # single quotes and apostrophes
    "\u2018": "'",  # left single quotation mark
    "\u2019": "'",  # right single quotation mark (the usual "smart apostrophe")
    "\u201a": "'",  # ‚ single low-9 quotation mark
    "\u201b": "'",  # ‛ single high-reversed-9 quotation mark
    "\u2032": "'",  # ′ prime
    "\u2039": "'",  # ‹ single left-pointing angle quotation mark
    "\u203a": "'",  # › single right-pointing angle quotation mark
    "\u0060": "'",  # ` grave accent (not in GSM 03.38)
    "\u00b4": "'",  # ´ acute accent
    "\u02b9": "'",  # ʹ modifier letter prime
    "\u02bb": "'",  # ʻ modifier letter turned comma
    "\u02bc": "'",  # ʼ modifier letter apostrophe
    "\u02bd": "'",  # ʽ modifier letter reversed comma
    "\u02c8": "'",  # ˈ modifier letter vertical line
    "\u02ca": "'",  # ˊ modifier letter acute accent
    "\u02cb": "'",  # ˋ modifier letter grave accent
    "\u275b": "'",  # ❛ heavy single turned comma quotation mark ornament
    "\u275c": "'",  # ❜ heavy single comma quotation mark ornament
    "\uff07": "'",  # ＇ fullwidth apostrophe
    # dashes and hyphens
    "\u2010": "-",  # ‐ hyphen
    "\u2011": "-",  # ‑ non-breaking hyphen
    "\u2012": "-",  # ‒ figure dash
    "\u2013": "-",  # – en dash
    "\u2014": "-",  # — em dash
    "\u2015": "-",  # ― horizontal bar
    "\u2043": "-",  # ⁃ hyphen bullet
    "\u2212": "-",  # − minus sign
    "\ufe58": "-",  # ﹘ small em dash
    "\ufe63": "-",  # ﹣ small hyphen-minus
    "\uff0d": "-",  # － fullwidth hyphen-minus
    # bullets
    "\u2022": "-",  # • bullet
    "\u2023": "-",  # ‣ triangular bullet
    "\u2219": "-",  # ∙ bullet operator
    "\u25e6": "-",  # ◦ white bullet
    # ellipsis and doubled punctuation
    "\u2026": "...",  # … horizontal ellipsis
    "\u203c": "!!",  # ‼ double exclamation mark
    "\u2047": "??",  # ⁇ double question mark
    "\u2048": "?!",  # ⁈ question exclamation mark
    "\u2049": "!?",  # ⁉ exclamation question mark
    # spaces
    "\t": " ",  # tab (not in GSM 03.38)
    "\u00a0": " ",  # no-break space
    "\u2000": " ",  # en quad
    "\u2001": " ",  # em quad
    "\u2002": " ",  # en space
    "\u2003": " ",  # em space
    "\u2004": " ",  # three-per-em space
    "\u2005": " ",  # four-per-em space
    "\u2006": " ",  # six-per-em space
    "\u2007": " ",  # figure space
    "\u2008": " ",  # punctuation space
    "\u2009": " ",  # thin space
    "\u200a": " ",  # hair space
    "\u202f": " ",  # narrow no-break space
    "\u205f": " ",  # medium mathematical space
    "\u3000": " ",  # ideographic space
    # line breaks
    "\u0085": "\n",  # next line
    "\u2028": "\n",  # line separator
    "\u2029": "\n",  # paragraph separator
    # invisible characters with no meaning in an SMS
    "\u00ad": "",  # soft hyphen
    "\u200b": "",  # zero-width space
    "\u2060": "",  # word joiner
    "\ufeff": "",  # zero-width no-break space / byte order mark
    # fullwidth and small punctuation, slashes
    "\uff01": "!",  # ！
    "\uff03": "#",  # ＃
    "\uff05": "%",  # ％
    "\uff06": "&",  # ＆
    "\uff08": "(",  # （
    "\uff09": ")",  # ）
    "\uff0a": "*",  # ＊
    "\uff0b": "+",  # ＋
    "\uff0c": ",",  # ，
    "\uff0e": ".",  # ．
    "\uff0f": "/",  # ／
    "\uff1a": ":",  # ：
    "\uff1b": ";",  # ；
    "\uff1c": "<",  # ＜
    "\uff1d": "=",  # ＝
    "\uff1e": ">",  # ＞
    "\uff1f": "?",  # ？
    "\uff20": "@",  # ＠
    "\u2044": "/",  # ⁄ fraction slash
    "\u2215": "/",  # ∕ division slash
    # typographic ligatures (presentation forms only)
    "\ufb00": "ff",  # ﬀ
    "\ufb01": "fi",  # ﬁ
    "\ufb02": "fl",  # ﬂ
    "\ufb03": "ffi",  # ﬃ
    "\ufb04": "ffl",  # ﬄ
}

# --- derived tables (built once at import) -------------------------------------------------

_GSM_BASIC_SET: Final = frozenset(GSM_BASIC_CHARS)
_GSM_EXTENSION_SET: Final = frozenset(GSM_EXTENSION_CHARS)
_GSM_ALL: Final = GSM_BASIC_CHARS + GSM_EXTENSION_CHARS

# ``fullmatch`` on a character class run is the fastest pure-stdlib "is every char in set"
# test we measured (docs/benchmarks.md, "Measurements behind code choices").
_BASIC_RUN_RE: Final = re.compile("[" + re.escape(GSM_BASIC_CHARS) + "]*")
_GSM_RUN_RE: Final = re.compile("[" + re.escape(_GSM_ALL) + "]*")
_EXTENSION_RE: Final = re.compile("[" + re.escape(GSM_EXTENSION_CHARS) + "]")
_NON_GSM_RE: Final = re.compile("[^" + re.escape(_GSM_ALL) + "]")
_ASTRAL_RE: Final = re.compile("[\U00010000-\U0010ffff]")

_LOOKALIKE_TABLE: Final = str.maketrans(GSM_LOOKALIKES)


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """How a message body will be encoded and billed.

    Attributes:
        encoding: ``"GSM-7"`` or ``"UCS-2"``.
        units: septets (GSM-7, extension characters count 2) or UTF-16 code units (UCS-2,
            characters outside the BMP count 2). Padding septets/units left unused at a
            segment boundary are *not* included.
        segments: number of billed segments (1 for empty text).
        per_segment: capacity of one segment for this message: 160 or 153 (GSM-7),
            70 or 67 (UCS-2). For 0 or 1 segment it is the single-message capacity.
        remaining_in_segment: units still free in the last segment before another
            segment is needed (for empty text: the whole single-segment capacity).
            A 2-unit character needs 2 free units, so it may not fit when this is 1.
        non_gsm_chars: distinct characters that forced UCS-2, in order of first
            appearance (empty for GSM-7).
    """

    encoding: str
    units: int
    segments: int
    per_segment: int
    remaining_in_segment: int
    non_gsm_chars: tuple[str, ...] = ()


def _layout(
    text_len: int, wide_positions: list[int], units: int, single: int, multi: int
) -> tuple[int, int, int]:
    """Return ``(segments, remaining, per_segment)``.

    ``wide_positions`` are the indices (in ``str`` characters) of the 2-unit characters;
    every other character is 1 unit. A 2-unit character that would start on the last unit of
    a concatenated segment is pushed to the next segment (1 unit of padding).
    """
    if units <= single:  # empty text included: one segment, as Twilio counts it
        return 1, single - units, single
    offset = 0  # position in the padded unit stream where the next character starts
    prev = 0  # index of the first character not yet accounted for
    last = multi - 1
    for idx in wide_positions:
        offset += idx - prev  # the 1-unit characters before this wide one
        if offset % multi == last:
            offset += 1  # would straddle the boundary: pad and start a new segment
        offset += 2
        prev = idx + 1
    offset += text_len - prev
    segments = -(-offset // multi)
    return segments, segments * multi - offset, multi


def segment_info(text: str) -> SegmentInfo:
    """Describe how ``text`` is encoded and how many segments it is billed as.

    >>> segment_info("Hello")
    SegmentInfo(encoding='GSM-7', units=5, segments=1, per_segment=160, remaining_in_segment=155, non_gsm_chars=())
    >>> segment_info("Hi 😀").encoding, segment_info("Hi 😀").units
    ('UCS-2', 5)
    """  # noqa: E501
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    n = len(text)
    non_gsm = _NON_GSM_RE.findall(text)
    if not non_gsm:
        wide = [m.start() for m in _EXTENSION_RE.finditer(text)]
        units = n + len(wide)
        segments, remaining, per = _layout(n, wide, units, GSM_SINGLE_SEGMENT, GSM_MULTI_SEGMENT)
        return SegmentInfo(GSM7, units, segments, per, remaining, ())
    wide = [m.start() for m in _ASTRAL_RE.finditer(text)]
    units = n + len(wide)
    segments, remaining, per = _layout(n, wide, units, UCS2_SINGLE_SEGMENT, UCS2_MULTI_SEGMENT)
    return SegmentInfo(UCS2, units, segments, per, remaining, tuple(dict.fromkeys(non_gsm)))


def count_segments(text: str) -> int:
    """Number of billed segments for ``text`` (1 for empty text).

    Built to be called once per recipient on personalised bodies. Text made only of GSM basic
    characters (the common case) is decided by one C-level regex match and arithmetic, with no
    per-character Python loop; other text costs one or two more C-level regex scans, and a
    Python loop runs only over the 2-unit characters (extension characters or emoji) of
    messages longer than one segment. Always equal to ``segment_info(text).segments``.
    """
    n = len(text)
    if _BASIC_RUN_RE.fullmatch(text) is not None:
        if n <= GSM_SINGLE_SEGMENT:
            return 1
        return -(-n // GSM_MULTI_SEGMENT)
    if _GSM_RUN_RE.fullmatch(text) is not None:
        wide_re, single, multi = _EXTENSION_RE, GSM_SINGLE_SEGMENT, GSM_MULTI_SEGMENT
    else:
        wide_re, single, multi = _ASTRAL_RE, UCS2_SINGLE_SEGMENT, UCS2_MULTI_SEGMENT
    wide = wide_re.findall(text)
    units = n + len(wide)
    if units <= single:
        return 1
    if not wide:
        return -(-units // multi)
    positions = [m.start() for m in wide_re.finditer(text)]
    return _layout(n, positions, units, single, multi)[0]


def normalize_line_breaks(text: str) -> str:
    """Message text with every line break as LF: CR LF and a lone CR become LF.

    Browsers submit a textarea's line breaks as CR LF but count them (and show them in the
    live counter) as LF; carriers bill every character sent, so a four-line 160-character
    message stored with CR LF would go out as 163 characters in two segments. Every path that
    takes message text (page forms, the API, edits, recurring messages, email text parts, the
    estimate) calls this one function before it counts, prices or stores the text; what is
    stored is what is sent. ``static/js/segments.js`` has its twin for the live counter.
    """
    return text.replace("\r\n", "\n").replace("\r", "\n")


def is_gsm7(text: str) -> bool:
    """True when ``text`` can be sent as GSM-7 (basic set plus extension table only)."""
    return _NON_GSM_RE.search(text) is None


def gsm_replace_lookalikes(text: str) -> str:
    """Replace the characters in :data:`GSM_LOOKALIKES` with their GSM-7 equivalents.

    Replacement is unconditional (it does not check whether the result is GSM-7: a message
    with an emoji stays UCS-2 but still gets straight quotes). Letters are never changed.
    """
    return text.translate(_LOOKALIKE_TABLE)
