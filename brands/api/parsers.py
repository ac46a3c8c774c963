"""The API's JSON bodies: what any of them may hold, checked once for every endpoint.

A JSON body is refused with 400 in the error shape, naming the path of the offending value
(``metadata.Team``, ``records[3].metadata``), when it nests deeper than ``MAX_DEPTH`` levels or
holds text that no database column or JSON document can store: NUL (PostgreSQL refuses it in
text and jsonb) or half of a surrogate pair (it cannot be encoded as UTF-8). Its size is capped
before it is read (``config.middleware.ApiBodyLimitMiddleware``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers

# Deeper than anything the API takes (a bulk record's metadata is 4 levels down).
MAX_DEPTH = 32
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_MESSAGE = "Contains a NUL or an unpaired surrogate character, which cannot be stored."
NAME_MESSAGE = "A name cannot contain a NUL or an unpaired surrogate character."
SHOWN_CHARS = 80


def shown(text: str) -> str:
    """``text`` fit to be shown in an answer: shortened, unstorable characters as ``\\uXXXX``."""
    if len(text) > SHOWN_CHARS:
        text = text[: SHOWN_CHARS - 1] + "…"
    return UNSTORABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def json_refusal(data: Any, *, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """``(path, reason)`` of the first value of ``data`` the API cannot take, else None.

    Walks with a stack, not recursion: its input may be as deep as the parser allowed.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if UNSTORABLE.search(value):
                return path or "non_field_errors", UNSTORABLE_MESSAGE
            continue
        if isinstance(value, dict):
            children = []
            for key, item in value.items():
                item_path = f"{path}.{shown(key)}" if path else shown(key)
                if UNSTORABLE.search(key):
                    return item_path, NAME_MESSAGE
                children.append((item, item_path))
        elif isinstance(value, list):
            children = ((item, f"{path}[{index}]") for index, item in enumerate(value))
        else:
            continue
        if depth >= max_depth:
            return path or "non_field_errors", f"Nested deeper than {max_depth} levels."
        stack.extend((item, item_path, depth + 1) for item, item_path in children)
    return None


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, plus the checks above (a refusal names the value's path)."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding) if stream is not None else ""
        except UnicodeDecodeError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from exc
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError as exc:
            raise exceptions.ParseError(
                f"JSON parse error - nested deeper than {MAX_DEPTH} levels."
            ) from exc
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from exc
        # Only an escape can put NUL or a surrogate in a string (raw ones are not valid JSON or
        # UTF-8), and only that many brackets can nest that deep: the exact walk, which names
        # the path, runs only when a cheap look says it may find something.
        suspicious = _ESCAPED_UNSTORABLE.search(text) is not None
        if not suspicious and text.count("[") + text.count("{") > MAX_DEPTH:
            suspicious = _deeper_than(data, MAX_DEPTH)
        if suspicious:
            refusal = json_refusal(data)
            if refusal is not None:
                path, reason = refusal
                raise exceptions.ValidationError({path: reason})
        return data


# \u0000 and \uD800-\uDFFF escapes (a preceding escaped backslash makes a false alarm,
# which the exact walk then clears).
_ESCAPED_UNSTORABLE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_CONTAINERS = (dict, list)


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether containers nest more than ``limit`` levels: level by level, containers only
    (a 1,000-item bulk body takes about a millisecond)."""
    level = [data] if isinstance(data, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below = []
        keep = below.append
        for value in level:
            for item in value.values() if type(value) is dict else value:
                kind = type(item)
                if kind is dict or kind is list:
                    keep(item)
        level = below
    return False


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")
