"""On which line of a configuration file each value was written.

``tomllib`` and ``json`` return values without positions, yet ``explain`` is
only useful if it can say ``payments.toml:3``. This module re-reads the text
of a file that already parsed and maps key paths to line numbers: a small
TOML scanner (table headers, dotted keys, strings of every kind, multi-line
arrays, comments), a tiny JSON scanner (object nesting and ``"key":``
tokens, string escapes handled), and for YAML the line marks PyYAML's
composer keeps. A scanner that meets anything it does not understand gives up
and answers "unknown" for the whole file: the caller then names the file
without a line -- never a wrong line.
"""

from __future__ import annotations

import bisect
import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Locations", "locate_json", "locate_toml", "locate_yaml_node"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SPACE = " \t"
_SCALAR_END = ",]} \t\r\n"


@dataclass(slots=True)
class Locations:
    """Key path (a tuple of keys) -> 1-based line where it was written.

    ``whole`` holds the paths whose whole value starts on their line (``key =
    {inline table}``): a path below one of them that has no line of its own
    was written on that line.
    """

    exact: dict[tuple[str, ...], int] = field(default_factory=dict)
    whole: dict[tuple[str, ...], int] = field(default_factory=dict)

    def line(self, path: tuple[str, ...]) -> int | None:
        """The line ``path`` was written on, or None when not known for sure."""
        found = self.exact.get(path)
        if found is not None:
            return found
        for end in range(len(path) - 1, 0, -1):
            found = self.whole.get(path[:end])
            if found is not None:
                return found
        return None


class _Unsure(Exception):
    """Internal: the scanner met text it does not understand; no line is better than a wrong one."""


class _Text:
    """A text, a position in it, and the line of any position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.newlines = [index for index, char in enumerate(text) if char == "\n"]

    def line(self, pos: int) -> int:
        return bisect.bisect_left(self.newlines, pos) + 1

    def peek(self, ahead: int = 0) -> str:
        index = self.pos + ahead
        return self.text[index] if index < len(self.text) else ""

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.pos += 1

    def expect(self, token: str) -> None:
        if not self.text.startswith(token, self.pos):
            raise _Unsure
        self.pos += len(token)


class _Toml(_Text):
    def blank(self) -> None:
        """Skip whitespace, newlines and comments."""
        while True:
            self.skip(_SPACE + "\r\n")
            if self.peek() != "#":
                return
            self.comment()

    def comment(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def string(self) -> str:
        """Skip the string at ``pos`` (any of the four kinds); return its source text."""
        start, text = self.pos, self.text
        for quote, escapes in (('"""', True), ("'''", False)):
            if text.startswith(quote, start):
                index = start + 3
                while True:
                    if index >= len(text):
                        raise _Unsure
                    if escapes and text[index] == "\\":
                        index += 2
                    elif text.startswith(quote, index):
                        index += 3
                        extra = 0  # up to two quotes may end the content itself
                        while extra < 2 and text.startswith(quote[0], index):
                            index, extra = index + 1, extra + 1
                        self.pos = index
                        return text[start:index]
                    else:
                        index += 1
        quote = text[start]
        index = start + 1
        while index < len(text) and text[index] != quote and text[index] != "\n":
            index += 2 if quote == '"' and text[index] == "\\" else 1
        if index >= len(text) or text[index] != quote:
            raise _Unsure
        self.pos = index + 1
        return text[start : self.pos]

    def key(self) -> tuple[str, ...]:
        """A (dotted) key at ``pos``, spaces around the dots allowed."""
        parts = []
        while True:
            self.skip(_SPACE)
            char = self.peek()
            if char in ("'", '"'):
                source = self.string()
                if source.startswith(('"""', "'''")):
                    raise _Unsure
                try:
                    parts.append(str(tomllib.loads(f"k = {source}")["k"]))
                except tomllib.TOMLDecodeError:
                    raise _Unsure from None
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                if match is None:
                    raise _Unsure
                parts.append(match.group())
                self.pos = match.end()
            self.skip(_SPACE)
            if self.peek() != ".":
                return tuple(parts)
            self.pos += 1

    def value(self) -> None:
        """Skip a value: to the end of its line, or of its last bracket."""
        depth = 0
        while True:
            char = self.peek()
            if not char:
                if depth:
                    raise _Unsure
                return
            if char in ("'", '"'):
                self.string()
                continue
            if char == "#":
                self.comment()
                continue
            if char == "\n" and depth == 0:
                return
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
                if depth < 0:
                    raise _Unsure
            self.pos += 1

    def end_of_line(self) -> None:
        self.skip(_SPACE + "\r")
        if self.peek() == "#":
            self.comment()
        if self.peek() not in ("", "\n"):
            raise _Unsure


def _scan_toml(scan: _Toml, found: Locations) -> None:
    table: tuple[str, ...] | None = ()
    arrays: set[tuple[str, ...]] = set()
    while True:
        scan.blank()
        if not scan.peek():
            return
        start = scan.pos
        if scan.peek() == "[":
            double = scan.peek(1) == "["
            scan.pos += 2 if double else 1
            path = scan.key()
            scan.expect("]]" if double else "]")
            scan.end_of_line()
            found.exact.setdefault(path, scan.line(start))
            inside_array = any(path[:end] in arrays for end in range(1, len(path) + 1))
            if double:
                arrays.add(path)
            table = None if double or inside_array else path
            continue
        keys = scan.key()
        scan.expect("=")
        scan.skip(_SPACE)
        if table is not None:
            line = scan.line(start)
            found.exact[table + keys] = line
            found.whole[table + keys] = line
        scan.value()


def locate_toml(text: str) -> Locations:
    """Lines of the keys of a TOML document that ``tomllib`` accepted; empty when unsure."""
    found = Locations()
    try:
        _scan_toml(_Toml(text), found)
    except (_Unsure, IndexError):
        return Locations()
    return found


class _Json(_Text):
    def blank(self) -> None:
        self.skip(" \t\r\n")

    def string(self) -> str:
        start, text = self.pos, self.text
        if self.peek() != '"':
            raise _Unsure
        index = start + 1
        while index < len(text) and text[index] != '"':
            index += 2 if text[index] == "\\" else 1
        if index >= len(text):
            raise _Unsure
        self.pos = index + 1
        try:
            return str(json.loads(text[start : self.pos]))
        except ValueError:
            raise _Unsure from None

    def value(self, path: tuple[str, ...] | None, found: Locations) -> None:
        self.blank()
        char = self.peek()
        if char == "{":
            self.pos += 1
            self.members(path, found)
        elif char == "[":
            self.pos += 1
            self.blank()
            if self.peek() == "]":
                self.pos += 1
                return
            while True:
                self.value(None, found)  # list items are inside a leaf: no lines needed
                self.blank()
                if self.peek() == "]":
                    self.pos += 1
                    return
                self.expect(",")
        elif char == '"':
            self.string()
        elif char:
            while self.peek() and self.peek() not in _SCALAR_END:
                self.pos += 1
        else:
            raise _Unsure

    def members(self, path: tuple[str, ...] | None, found: Locations) -> None:
        self.blank()
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            self.blank()
            line = self.line(self.pos)
            key = self.string()
            self.blank()
            self.expect(":")
            inner = None if path is None else (*path, key)
            if inner is not None:
                found.exact[inner] = line  # the last duplicate wins, as in json.loads
                found.whole[inner] = line
            self.value(inner, found)
            self.blank()
            if self.peek() == "}":
                self.pos += 1
                return
            self.expect(",")


def locate_json(text: str) -> Locations:
    """Lines of the object keys of a JSON document ``json`` accepted; empty when unsure.

    The caller bounds the document's nesting first (the scanner recurses).
    """
    found = Locations()
    try:
        _Json(text).value((), found)
    except (_Unsure, IndexError, RecursionError):
        return Locations()
    return found


def locate_yaml_node(node: Any, budget: int) -> Locations:
    """Lines of the mapping keys under a PyYAML node (its composer keeps them).

    Call it after the document was constructed: construction flattens merge
    keys (``<<: *base``) into the node, so their keys carry the anchor's lines.

    Walks at most ``budget`` nodes (aliases may share subtrees, even
    recursively); past that, or for a key that is not a plain scalar, unsure.
    """
    found = Locations()
    stack: list[tuple[Any, tuple[str, ...]]] = [(node, ())]
    while stack:
        budget -= 1
        if budget < 0:
            return Locations()
        current, path = stack.pop()
        items = current.value if current is not None and current.id == "mapping" else None
        if items is None:
            continue
        winners: dict[str, tuple[Any, Any]] = {}
        for key_node, value_node in items:  # merge keys (<<) come first once flattened
            if key_node.id != "scalar":
                return Locations()
            winners[str(key_node.value)] = (key_node, value_node)  # the last one wins
        for key, (key_node, value_node) in winners.items():
            inner = (*path, key)
            line = int(key_node.start_mark.line) + 1
            found.exact[inner] = line
            found.whole[inner] = line
            stack.append((value_node, inner))
    return found
