"""Link tokens: short, unguessable, in an alphabet that costs one GSM-7 character each.

One generator for every token (personal links, transactional links, a project's anonymous
link): uniform over the alphabet, from the OS's random source, one ``os.urandom`` call per
batch rather than a ``secrets.choice`` per character.
"""

from __future__ import annotations

import os

TOKEN_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # noqa: S105
TOKEN_LENGTH = 10  # 62^10 ≈ 8e17: unguessable, and short because SMS segments cost money

_TOKEN_BASE = len(TOKEN_ALPHABET)
_TOKEN_LIMIT = 256 // _TOKEN_BASE * _TOKEN_BASE  # bytes from here up would bias the draw
# A random byte under the limit is the character at its value modulo the alphabet's size;
# ``bytes.translate`` drops the others and maps these in C.
_TOKEN_TABLE = bytes(
    ord(TOKEN_ALPHABET[b % _TOKEN_BASE]) if b < _TOKEN_LIMIT else 0 for b in range(256)
)
_TOKEN_DROPPED = bytes(range(_TOKEN_LIMIT, 256))


def new_tokens(count: int, length: int = TOKEN_LENGTH) -> list[str]:
    """``count`` tokens of ``length`` characters."""
    wanted = count * length
    drawn = b""
    while len(drawn) < wanted:
        drawn += os.urandom(wanted - len(drawn) + 16).translate(_TOKEN_TABLE, _TOKEN_DROPPED)
    text = drawn[:wanted].decode("ascii")
    return [text[i : i + length] for i in range(0, wanted, length)]


def new_token(length: int = TOKEN_LENGTH) -> str:
    """One token (a model field's default takes this)."""
    return new_tokens(1, length)[0]
