"""Tokens of the PromQL subset, and Prometheus durations (``30s``, ``5m``, ``1h30m``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Token", "format_duration", "parse_duration", "tokenize"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
          "y": 31536000.0}  # fmt: skip
_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+")
_MAX_SECONDS = (2**63 - 1) / 1000
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<duration>(?:[0-9]+(?:ms|s|m|h|d|w|y))+(?![A-Za-z0-9_.]))
    |(?P<number>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(?![A-Za-z_]))
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){}\[\],])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # duration, number, ident, string, op, end
    text: str
    position: int


def tokenize(source: str) -> list[Token]:
    """Split ``source``; an unknown character is a ``ValueError`` naming its position."""
    tokens: list[Token] = []
    position = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            raise ValueError(f"unexpected character {source[position]!r} at {position}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(Token(kind, match.group(), position))
        position = match.end()
    tokens.append(Token("end", "", len(source)))
    return tokens


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration (``1h30m``); anything else is a ``ValueError``."""
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h30m")
    parts = _DURATION_PART.findall(text)
    # Prometheus's bound (milliseconds in an int64). Checked before any arithmetic: four
    # hundred digits times a float unit is an OverflowError, not the ValueError promised.
    if any(len(n.lstrip("0")) > 19 for n, _ in parts):
        raise ValueError(f"the duration {text[:40]!r} is out of range")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in parts)
    if seconds > _MAX_SECONDS:
        raise ValueError(f"the duration {text[:40]!r} is out of range")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for ``seconds`` (``90`` → ``1m30s``; ``0`` → ``0s``)."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    if millis:
        parts.append(f"{millis}ms")
    return "".join(parts)
