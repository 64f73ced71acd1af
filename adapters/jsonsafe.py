"""JSON from strangers, in linear time and bounded shape.

    loads(text, max_depth)      json.loads that refuses NaN and the infinities and nesting deeper
                                than `max_depth` (ValueError, in words), before the recursive parser
                                sees the text
    too_deep(text, max_depth)   one pass over the text: brackets counted outside strings, escapes
                                inside strings skipped; O(len(text)) whatever the input
    depth(value)                how deeply lists and objects nest in a parsed value (no recursion)
    bounded(value, ...)         None when a parsed value is small and shallow enough to store,
                                otherwise what is wrong, in words

Why not a regular expression: a pattern for JSON strings, searched from every position of an
unterminated run of `\\"` pairs, takes quadratic time (58 KB held the event loop for 32 s). The
scanner below jumps between the few characters that matter with `re.search` on a one-character
class, so each character is looked at a bounded number of times.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_OUTSIDE = re.compile(r'["\[\]{}]')     # what matters outside a string
_INSIDE = re.compile(r'["\\]')          # what matters inside one


def too_deep(text: str, max_depth: int) -> bool:
    """True when lists and objects in `text` nest deeper than `max_depth` (strings and their
    escapes understood; text that is not JSON at all is left for the parser to refuse)."""
    if text.count("[") + text.count("{") <= max_depth:
        return False        # nesting needs an opening bracket per level: not deep (counted in C)
    depth, at = 0, 0
    outside, inside = _OUTSIDE.search, _INSIDE.search
    while True:
        found = outside(text, at)
        if found is None:
            return False
        char, at = found.group(), found.end()
        if char == '"':
            while True:                          # to the closing quote, stepping over escapes
                found = inside(text, at)
                if found is None:
                    return False                 # unterminated: not deep, and not JSON either
                at = found.end()
                if found.group() == '"':
                    break
                at += 1                          # the escaped character, whatever it is
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1


def _no_constants(name: str) -> Any:
    raise NotJsonNumber(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    """1e999 parses as float('inf'): refused like the literal Infinity (checked as each number is
    read, rather than by a walk over the whole parsed value)."""
    value = float(literal)
    if not math.isfinite(value):
        raise NotJsonNumber("a number too large for a double (it would be infinity) is not a JSON number")
    return value


def loads(text: str | bytes, max_depth: int) -> Any:
    """Parse JSON that is at most `max_depth` deep and holds only finite numbers; ValueError
    ("nested deeper than", "NaN is not a JSON number", "not JSON") otherwise."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError("the body is not UTF-8") from None
    if too_deep(text, max_depth):
        raise TooDeep(f"the JSON is nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except NotJsonNumber:
        raise
    except ValueError:
        raise ValueError("the body is not JSON") from None
    except RecursionError:
        raise TooDeep(f"the JSON is nested deeper than {max_depth} levels") from None


class TooDeep(ValueError):
    """The JSON nests lists and objects deeper than allowed."""


class NotJsonNumber(ValueError):
    """NaN, Infinity, -Infinity (Python's json reads them; JSON has no such numbers)."""


def _has_huge_float(value: Any) -> bool:
    """1e999 parses as float('inf'): refused like the literal Infinity."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, float):
            if not math.isfinite(node):
                return True
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (a scalar is 0, `{}` and `[]` are 1)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def bounded(value: Any, *, max_depth: int, max_bytes: int) -> str | None:
    """None when `value` nests at most `max_depth` deep and is at most `max_bytes` as compact
    JSON with finite numbers; otherwise the reason, in words, to put after the field's name."""
    if depth(value) > max_depth:
        return f"is nested deeper than {max_depth} levels"
    if _has_huge_float(value):
        return "holds NaN or an infinity, which JSON has no numbers for"
    try:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError):
        return "is not plain JSON"
    if size > max_bytes:
        return f"is too large ({max_bytes // 1024} KB at most)"
    return None
