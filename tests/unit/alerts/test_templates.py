"""Annotation templates: Prometheus's output for the supported forms, refusal for the rest."""

from __future__ import annotations

import pytest

from corestone.observability.alerts.templates import (
    check_template,
    humanize,
    humanize_duration,
    humanize_percentage,
    render,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (1234, "1.234k"), (3e9, "3G"), (0.0012, "1.2m"), (-2500, "-2.5k"), (1, "1")],
)
def test_humanize(value: float, text: str) -> None:
    """Metric prefixes with four significant digits."""
    assert humanize(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0s"), (0.25, "250ms"), (2.485, "2.485s"), (600, "10m 0s"), (93784, "1d 2h 3m 4s")],
)
def test_humanize_duration(value: float, text: str) -> None:
    """Seconds as Prometheus's humanizeDuration writes them."""
    assert humanize_duration(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1234567, "1.234567e+06"),
        (123456, "123456"),
        (1e8, "1e+08"),
        (1e-5, "1e-05"),
        (0.0001, "0.0001"),
        (2.5, "2.5"),
        (-1e21, "-1e+21"),
        (0, "0"),
    ],
)
def test_value_prints_as_go_does(value: float, text: str) -> None:
    """{{ $value }} matches what promtool renders for the same value."""
    assert render("{{ $value }}", {}, value) == text


def test_render_substitutes_value_labels_and_pipes() -> None:
    """$value, $labels.x (missing renders empty) and the three pipes."""
    text = render(
        "{{ $labels.route }}{{ $labels.nope }}: {{ $value }} {{$value|humanizePercentage}}",
        {"route": "/x"},
        0.125,
    )
    assert text == "/x: 0.125 12.5%"
    assert humanize_percentage(0.05) == "5%"
    assert render("{{ $value }}", {}, 3.0) == "3"


@pytest.mark.parametrize(
    "template",
    [
        "{{ .Labels.x }}",
        "{{ $value | printf }}",
        "{{ $labels.x | humanize }}",
        "{{ range $x }}",
        "{{ $value ",
        'x {{ "a" | js }}',
    ],
)
def test_anything_else_is_refused_when_checked(template: str) -> None:
    """An unsupported form is a ValueError at load time, never evaluated."""
    with pytest.raises(ValueError, match=r"template|unbalanced"):
        check_template(template)
