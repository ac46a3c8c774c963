"""Opt-out / opt-in / help keywords for inbound SMS replies, and the matcher.

Pure Python, no Django: importable and testable anywhere.

The keywords are data, kept in this module (not in a JSON file) so they are typed, need no
file I/O or package-data configuration, and are checked once at import: :data:`KEYWORDS` maps
each :class:`Keyword` kind to ``{language code: frozenset of keywords}``. To add a word, add it
to the right set below; nothing else changes. Spellings with and without accents may both be
listed for readability, but matching ignores accents anyway.

Matching rules (:func:`match_reply` / :func:`classify_reply`)
-------------------------------------------------------------
Like Twilio and carriers, the *whole* reply must be a keyword: ``"STOP"`` opts out,
``"Please stop texting me"`` does not. Before comparing, both the reply and the keywords go
through :func:`normalize_reply`:

1. surrounding whitespace is stripped; a reply still longer than
   :data:`MAX_REPLY_LENGTH` characters is never a keyword (cheap guard for huge bodies);
2. Unicode NFKC (fullwidth ``ＳＴＯＰ`` → ``STOP``, ligatures, compatibility forms);
3. ``str.casefold()`` (``ß`` → ``ss``, case-insensitive in every script);
4. accents removed (NFKD, combining marks dropped): ``ARRÊT``, ``Arrêt`` and ``arret`` are
   the same word; German umlauts may also be typed as ``ue``/``oe`` where the data lists
   that spelling (``KUENDIGEN``);
5. every character that is not a letter or a digit is dropped, wherever it is: surrounding
   punctuation and emoji (``"Stop!"``, ``"STOP."``, ``"'stop'"``, ``"STOP 🛑"``), separators
   inside (``"OPT OUT"``, ``"opt-out"``, ``"S.T.O.P"``, ``"stop all"``), zero-width
   characters.
6. U+FFFD replacement characters (left by a bad decode, e.g. ``"ARR\ufffdT"`` for ``ARRÊT``
   read with the wrong charset) are tried last: if the exact match fails and the reply still
   has at least :data:`MIN_LITERAL_LETTERS_FOR_REPAIR` readable letters, each run of *n*
   replacement characters may stand for 1..2n letters; the reply matches only if every
   keyword that fits has the same kind. Such matches have ``approximate=True``.

Being generous here is deliberate: a missed opt-out is a compliance failure (TCPA/CTIA),
while a message that merely *consists of* a stop word plus punctuation is an opt-out by any
reasonable reading. Anything with another word in it (``"stop please"``) is ``OTHER``.

Ambiguity notes for callers: opt-in words include ``YES`` (Twilio's default) and its
translations (``SI``, ``OUI``, ``JA``, ``SIM``), and Spanish ``ALTO``/``BAJA`` also mean
"high"/"low". A survey that expects such answers must decide what a START from a participant
who is *not* opted out means (Twilio forwards those as ordinary replies); a STOP must always
be honoured.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Final

__all__ = [
    "HELP_KEYWORDS",
    "KEYWORDS",
    "LANGUAGES",
    "MAX_REPLY_LENGTH",
    "MIN_LITERAL_LETTERS_FOR_REPAIR",
    "START_KEYWORDS",
    "STOP_KEYWORDS",
    "Keyword",
    "KeywordMatch",
    "classify_reply",
    "match_reply",
    "normalize_reply",
]


class Keyword(StrEnum):
    """What an inbound reply asks for."""

    STOP = "STOP"  # opt out
    START = "START"  # re-subscribe at the provider; never a Relay opt-in (brand admins only)
    HELP = "HELP"  # send the help message
    OTHER = "OTHER"  # not a keyword: an ordinary reply


#: Language codes (ISO 639-1) in priority order: when a keyword exists in several languages
#: (``STOP``, ``PARAR``, ``INFO``), the match reports the first of them as ``language``.
LANGUAGES: Final[tuple[str, ...]] = ("en", "es", "fr", "de", "pt", "it", "nl")

#: Opt-out keywords. English follows Twilio's defaults (STOP, STOPALL, UNSUBSCRIBE, CANCEL,
#: END, QUIT) plus the FCC 2024 TCPA list (stop, quit, end, revoke, opt out, cancel,
#: unsubscribe). "STOP" is listed in every language: it is used internationally.
STOP_KEYWORDS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "en": frozenset(
            {
                "STOP",
                "STOPALL",
                "UNSUBSCRIBE",
                "CANCEL",
                "END",
                "QUIT",
                "OPTOUT",
                "OPT OUT",
                "REVOKE",
            }
        ),
        "es": frozenset(
            {
                "STOP",
                "PARAR",
                "PARE",
                "DETENER",
                "CANCELAR",
                "BAJA",
                "ALTO",
                "FIN",
                "TERMINAR",
                "SALIR",
                "DESUSCRIBIR",
                "DESUSCRIBIRME",
            }
        ),
        "fr": frozenset(
            {
                "STOP",
                "ARRET",
                "ARRÊT",
                "ARRETE",
                "ARRÊTE",
                "ARRETER",
                "ARRÊTER",
                "DESABONNER",
                "DÉSABONNER",
                "DESINSCRIRE",
                "DÉSINSCRIRE",
                "DÉSINSCRIPTION",
                "ANNULER",
                "FIN",
            }
        ),
        "de": frozenset(
            {
                "STOP",
                "STOPP",
                "ENDE",
                "ABMELDEN",
                "ABBESTELLEN",
                "BEENDEN",
                "KÜNDIGEN",
                "KUENDIGEN",
                "AUFHÖREN",
                "AUFHOEREN",
            }
        ),
        "pt": frozenset(
            {
                "STOP",
                "PARAR",
                "PARE",
                "CANCELAR",
                "SAIR",
                "FIM",
                "DESCADASTRAR",
                "DESINSCREVER",
            }
        ),
        "it": frozenset(
            {
                "STOP",
                "ALT",
                "BASTA",
                "FERMA",
                "FERMATI",
                "CANCELLA",
                "CANCELLAMI",
                "ANNULLA",
                "DISISCRIVI",
                "DISISCRIVIMI",
            }
        ),
        "nl": frozenset(
            {
                "STOP",
                "STOPPEN",
                "AFMELDEN",
                "UITSCHRIJVEN",
                "OPZEGGEN",
                "BEËINDIGEN",
            }
        ),
    }
)

#: Opt-in keywords. English follows Twilio's defaults (START, YES, UNSTOP).
START_KEYWORDS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "en": frozenset({"START", "UNSTOP", "YES", "SUBSCRIBE", "OPTIN", "OPT IN"}),
        "es": frozenset({"START", "SI", "SÍ", "COMENZAR", "INICIAR"}),
        "fr": frozenset({"START", "OUI", "COMMENCER", "DEMARRER", "DÉMARRER"}),
        "de": frozenset({"START", "JA", "STARTEN", "ANMELDEN"}),
        "pt": frozenset({"START", "SIM", "INICIAR", "COMECAR", "COMEÇAR"}),
        "it": frozenset({"START", "SI", "SÌ", "INIZIA", "ISCRIVIMI"}),
        "nl": frozenset({"START", "JA", "AANMELDEN"}),
    }
)

#: Help keywords. English follows Twilio's defaults (HELP, INFO).
HELP_KEYWORDS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "en": frozenset({"HELP", "INFO"}),
        "es": frozenset({"AYUDA", "INFO"}),
        "fr": frozenset({"AIDE", "INFO"}),
        "de": frozenset({"HILFE", "INFO"}),
        "pt": frozenset({"AJUDA", "INFO"}),
        "it": frozenset({"AIUTO", "INFO"}),
        "nl": frozenset({"HULP", "INFO"}),
    }
)

#: Every keyword set, by kind then language.
KEYWORDS: Final[Mapping[Keyword, Mapping[str, frozenset[str]]]] = MappingProxyType(
    {Keyword.STOP: STOP_KEYWORDS, Keyword.START: START_KEYWORDS, Keyword.HELP: HELP_KEYWORDS}
)

#: A reply longer than this (after stripping surrounding whitespace) is never a keyword.
MAX_REPLY_LENGTH: Final = 160

#: Readable letters/digits a reply with U+FFFD replacement characters needs before it is
#: matched approximately (so ``"\ufffd\ufffd"`` alone never matches anything).
MIN_LITERAL_LETTERS_FOR_REPAIR: Final = 3


@dataclass(frozen=True, slots=True)
class KeywordMatch:
    """Result of :func:`match_reply`.

    Attributes:
        kind: STOP / START / HELP, or OTHER when the reply is not a keyword.
        keyword: the keyword as spelled in the data (``"ARRÊT"``), or None for OTHER. When
            the data lists several spellings of the same normalised word, the one the reply
            used is preferred (``"arret"`` → ``"ARRET"``, ``"arrêt"`` → ``"ARRÊT"``).
        language: language code of that keyword (first in :data:`LANGUAGES` order when the
            word exists in several languages), or None for OTHER.
        languages: every language whose data contains the normalised word, in
            :data:`LANGUAGES` order (``("es", "pt")`` for ``PARAR``).
        approximate: True when the match needed guessing letters hidden behind U+FFFD
            replacement characters (rule 6 of the module docstring).
    """

    kind: Keyword
    keyword: str | None = None
    language: str | None = None
    languages: tuple[str, ...] = ()
    approximate: bool = False


_NO_MATCH: Final = KeywordMatch(Keyword.OTHER)


def _spellings(text: str) -> tuple[str, str]:
    """Two accent-preserving forms used only to pick among spellings of one keyword.

    First: NFKC + casefold with separators collapsed to one space (``"opt-out"`` →
    ``"opt out"``); second: the same with separators removed (``"optout"``).
    """
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFKC", text).casefold())
    spaced = "".join(c if c.isalnum() or unicodedata.combining(c) else " " for c in folded)
    words = spaced.split()
    return " ".join(words), "".join(words)


def _as_str(text: str | bytes | None) -> str:
    if text is None:
        return ""
    if isinstance(text, str):
        return text
    if isinstance(text, bytes | bytearray):
        return bytes(text).decode("utf-8", errors="replace")
    raise TypeError(f"reply must be str, bytes or None, not {type(text).__name__}")


def _key(text: str, keep: str = "") -> str:
    """Rules 2-5 on already-stripped text; characters in ``keep`` survive rule 5."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFKD", folded)
    return "".join(
        c for c in decomposed if (c.isalnum() and not unicodedata.combining(c)) or c in keep
    )


def normalize_reply(text: str | bytes | None) -> str:
    """The comparison key of a reply or keyword: see the module docstring for the rules.

    ``None`` and text over :data:`MAX_REPLY_LENGTH` (after stripping) give ``""``; bytes are
    decoded as UTF-8 with replacement characters.
    """
    text = _as_str(text).strip()
    if not text or len(text) > MAX_REPLY_LENGTH:
        return ""
    return _key(text)


def _build_index() -> dict[str, tuple[tuple[Keyword, str, str], ...]]:
    """normalised key -> ((kind, language, spelling), ...) sorted by language priority."""
    index: dict[str, list[tuple[Keyword, str, str]]] = {}
    order = {lang: i for i, lang in enumerate(LANGUAGES)}
    for kind, by_language in KEYWORDS.items():
        unknown = set(by_language) - set(LANGUAGES)
        if unknown:
            raise ValueError(f"{kind} keywords for unknown languages {sorted(unknown)}")
        for language, words in by_language.items():
            for word in words:
                key = normalize_reply(word)
                if not key:
                    raise ValueError(f"{kind}/{language} keyword {word!r} normalises to ''")
                index.setdefault(key, []).append((kind, language, word))
    for key, entries in index.items():
        kinds = {kind for kind, _, _ in entries}
        if len(kinds) > 1:
            raise ValueError(f"keyword {key!r} is listed as {sorted(kinds)}")
        entries.sort(key=lambda e: (order[e[1]], e[2]))
    return {key: tuple(entries) for key, entries in index.items()}


_INDEX: Final = _build_index()


def _repair_candidates(text: str) -> tuple[tuple[Keyword, str, str], ...] | None:
    """Rule 6: entries for the keyword(s) that U+FFFD runs in ``text`` could hide."""
    text = text.strip()
    if "\ufffd" not in text or len(text) > MAX_REPLY_LENGTH:
        return None
    key = _key(text, keep="\ufffd").strip("\ufffd")  # outer garbage is like punctuation
    if "\ufffd" not in key:
        return None
    literal = key.replace("\ufffd", "")
    if len(literal) < MIN_LITERAL_LETTERS_FOR_REPAIR:
        return None
    parts = re.split("(\ufffd+)", key)
    pattern = re.compile(
        "".join(
            rf"\w{{1,{2 * len(part)}}}" if part.startswith("\ufffd") else re.escape(part)
            for part in parts
        )
    )
    matches = [entries for k, entries in _INDEX.items() if pattern.fullmatch(k)]
    kinds = {entries[0][0] for entries in matches}
    if len(kinds) != 1:
        return None
    # Prefer the keyword of the highest-priority language, then the shortest.
    order = {lang: i for i, lang in enumerate(LANGUAGES)}
    return min(matches, key=lambda entries: (order[entries[0][1]], len(entries[0][2])))


def match_reply(text: str | bytes | None) -> KeywordMatch:
    """Classify a whole inbound reply and say which keyword and language matched.

    >>> m = match_reply("  Arrêt! ")
    >>> m.kind, m.keyword, m.language, m.languages, m.approximate
    (<Keyword.STOP: 'STOP'>, 'ARRÊT', 'fr', ('fr',), False)
    >>> match_reply("please stop").kind
    <Keyword.OTHER: 'OTHER'>
    """
    text = _as_str(text).strip()
    if len(text) > MAX_REPLY_LENGTH:
        return _NO_MATCH  # never a keyword (normalize_reply's guard), and not worth keeping
    return _match_stripped(text)


@lru_cache(maxsize=4096)
def _match_stripped(text: str) -> KeywordMatch:
    """``match_reply`` of a stripped reply, kept for the replies that come again and again
    (a choice's code, a score, YES, STOP: most of a two-way survey's), each read twice by the
    webhook (its kind, then its row)."""
    key = normalize_reply(text)
    entries = _INDEX.get(key) if key else None
    approximate = False
    if not entries:
        entries = _repair_candidates(text)
        if not entries:
            return _NO_MATCH
        approximate = True
    chosen = entries[0]
    if len(entries) > 1:
        # Prefer the spelling the reply used: same separators, else same accents.
        reply_forms = _spellings(text)
        entry_forms = [_spellings(entry[2]) for entry in entries]
        for level in (0, 1):
            same = [
                e
                for e, f in zip(entries, entry_forms, strict=True)
                if f[level] == reply_forms[level]
            ]
            if same:
                chosen = same[0]
                break
    languages = tuple(dict.fromkeys(language for _, language, _ in entries))
    kind, language, word = chosen
    return KeywordMatch(kind, word, language, languages, approximate)


def classify_reply(text: str | bytes | None) -> Keyword:
    """STOP / START / HELP when the whole reply is such a keyword, else OTHER."""
    text = _as_str(text)
    key = normalize_reply(text)
    entries = _INDEX.get(key) if key else None
    if not entries and "\ufffd" in text:
        entries = _repair_candidates(text)
    return entries[0][0] if entries else Keyword.OTHER
