"""JSON parsed with the line each object and array starts on, so that an importer can say
where in the file a problem is. Scalars are read by the json module's own scanner."""

from __future__ import annotations

import json
from typing import Any

_SCALAR = json.JSONDecoder()
_WS = " \t\n\r"


class LocatedJSONError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line, self.reason = line, reason


def loads(text: str) -> tuple[Any, dict[int, int]]:
    """``(value, lines)``: ``lines[id(container)]`` is the 1-based line it opens on (valid
    while the value is alive)."""
    lines: dict[int, int] = {}
    newlines = _newline_index(text)
    value, end = _value(text, _skip(text, 0), lines, newlines)
    end = _skip(text, end)
    if end != len(text):
        raise LocatedJSONError(_line(newlines, end), "extra data after the JSON value")
    return value, lines


def _newline_index(text: str) -> list[int]:
    return [i for i, ch in enumerate(text) if ch == "\n"]


def _line(newlines: list[int], pos: int) -> int:
    import bisect

    return bisect.bisect_left(newlines, pos) + 1


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _value(text: str, i: int, lines: dict[int, int], nl: list[int]) -> tuple[Any, int]:
    if i >= len(text):
        raise LocatedJSONError(_line(nl, i), "the file ends where a value was expected")
    ch = text[i]
    if ch == "{":
        obj: dict[str, Any] = {}
        lines[id(obj)] = _line(nl, i)
        i = _skip(text, i + 1)
        if text[i : i + 1] == "}":
            return obj, i + 1
        while True:
            if text[i : i + 1] != '"':
                raise LocatedJSONError(_line(nl, i), "expected a quoted key")
            key, i = _scalar(text, i, nl)
            i = _skip(text, i)
            if text[i : i + 1] != ":":
                raise LocatedJSONError(_line(nl, i), "expected ':' after a key")
            obj[key], i = _value(text, _skip(text, i + 1), lines, nl)
            i = _skip(text, i)
            if text[i : i + 1] == ",":
                i = _skip(text, i + 1)
                continue
            if text[i : i + 1] == "}":
                return obj, i + 1
            raise LocatedJSONError(_line(nl, i), "expected ',' or '}' in an object")
    if ch == "[":
        arr: list[Any] = []
        lines[id(arr)] = _line(nl, i)
        i = _skip(text, i + 1)
        if text[i : i + 1] == "]":
            return arr, i + 1
        while True:
            item, i = _value(text, i, lines, nl)
            arr.append(item)
            i = _skip(text, i)
            if text[i : i + 1] == ",":
                i = _skip(text, i + 1)
                continue
            if text[i : i + 1] == "]":
                return arr, i + 1
            raise LocatedJSONError(_line(nl, i), "expected ',' or ']' in an array")
    return _scalar(text, i, nl)


def _scalar(text: str, i: int, nl: list[int]) -> tuple[Any, int]:
    try:
        return _SCALAR.raw_decode(text, i)
    except json.JSONDecodeError as exc:
        raise LocatedJSONError(_line(nl, exc.pos), exc.msg) from None
