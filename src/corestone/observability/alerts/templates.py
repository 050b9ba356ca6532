"""Annotation templates: the few Prometheus template forms alert rules use, safely.

A rule's annotations may say ``{{ $value }}``, ``{{ $labels.route }}`` and pipe the
value through ``humanize``, ``humanizePercentage`` or ``humanizeDuration``, with the
output Prometheus gives. That is all: this is a substitution, never code execution, and
anything else inside ``{{ }}`` is refused when the rules are loaded
(:func:`check_template`), not when an alert would need it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal

__all__ = ["check_template", "humanize", "humanize_duration", "humanize_percentage", "render"]

_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_FORM = re.compile(
    r"\s*(?:(?P<value>\$value)|\$labels\.(?P<label>[A-Za-z_][A-Za-z0-9_]*))"
    r"(?:\s*\|\s*(?P<pipe>[A-Za-z]+))?\s*"
)


def _go_g(value: float) -> str:
    """Go's ``%.4g`` (Python's drops the same trailing zeros; only infinities differ)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return f"{value:.4g}"


def humanize(value: float) -> str:
    """``1234`` → ``1.234k``, ``0.0012`` → ``1.2m`` (Prometheus's ``humanize``)."""
    if value == 0 or math.isnan(value) or math.isinf(value):
        return _go_g(value)
    prefix = ""
    if abs(value) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(value) < 1000:
                break
            prefix, value = p, value / 1000
    else:
        for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
            if abs(value) >= 1:
                break
            prefix, value = p, value * 1000
    return f"{_go_g(value)}{prefix}"


def humanize_percentage(value: float) -> str:
    """``0.1234`` → ``12.34%``."""
    return f"{_go_g(value * 100)}%"


def humanize_duration(value: float) -> str:
    """``3725`` → ``1h 2m 5s``, ``0.25`` → ``250ms`` (Prometheus's ``humanizeDuration``)."""
    if math.isnan(value) or math.isinf(value):
        return _go_g(value)
    if value == 0:
        return "0s"
    if abs(value) >= 1:
        sign = "-" if value < 0 else ""
        whole = int(abs(value))
        seconds, minutes = whole % 60, whole // 60 % 60
        hours, days = whole // 3600 % 24, whole // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_go_g(abs(value))}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(value) >= 1:
            break
        prefix, value = p, value * 1000
    return f"{_go_g(value)}{prefix}s"


_PIPES: dict[str, Callable[[float], str]] = {
    "humanize": humanize,
    "humanizePercentage": humanize_percentage,
    "humanizeDuration": humanize_duration,
}


def check_template(template: str) -> None:
    """Raise ``ValueError`` naming the first action this module cannot render."""
    for action in _ACTION.finditer(template):
        _parsed(action.group(1))
    stripped = _ACTION.sub("", template)
    if "{{" in stripped or "}}" in stripped:
        raise ValueError("unbalanced '{{' or '}}'")


def _parsed(action: str) -> re.Match[str]:
    form = _FORM.fullmatch(action)
    if form is None:
        raise ValueError(f"unsupported template {{{{{action}}}}}: use $value or $labels.name")
    pipe = form.group("pipe")
    if pipe is not None and (pipe not in _PIPES or form.group("label")):
        raise ValueError(
            f"unsupported template {{{{{action}}}}}: $value may pipe to {', '.join(_PIPES)}"
        )
    return form


def render(template: str, labels: Mapping[str, str], value: float) -> str:
    """``template`` with its actions replaced (a missing label renders empty, as there)."""

    def substitute(action: re.Match[str]) -> str:
        form = _parsed(action.group(1))
        if form.group("label"):
            return labels.get(form.group("label"), "")
        pipe = form.group("pipe")
        return _PIPES[pipe](value) if pipe else _go_value(value)

    return _ACTION.sub(substitute, template)


def _go_value(value: float) -> str:
    """``$value`` as Go prints a float64 (``%v``): shortest digits, exponent past 1e+06."""
    if math.isinf(value) or math.isnan(value):
        return _go_g(value)
    if value == 0:
        return "0"
    shortest = Decimal(repr(value)).normalize()
    sign, digits, exponent = shortest.as_tuple()
    assert isinstance(exponent, int)
    power = len(digits) - 1 + exponent
    if -4 <= power < 6:
        return format(shortest, "f")
    mantissa = "".join(map(str, digits))
    if len(mantissa) > 1:
        mantissa = f"{mantissa[0]}.{mantissa[1:]}"
    return f"{'-' if sign else ''}{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"
