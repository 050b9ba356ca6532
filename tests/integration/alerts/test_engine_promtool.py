"""The default rules under real Prometheus (promtool), and our engine agreeing with it."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from corestone.observability.alerts import AlertEngine, Evaluation, default_rules, dump_rules
from corestone.observability.metrics import Metrics
from corestone.observability.promql import Matcher, evaluate, parse, parse_duration
from corestone.observability.promql._ast import VectorSelector
from corestone.observability.series import InstantSample, RangeSeries
from corestone.testing import ManualClock

_DEPLOY = Path(__file__).parents[3] / "deploy" / "prometheus"
_PROMTOOL = shutil.which("promtool")
_TESTS = yaml.safe_load((_DEPLOY / "tests" / "defaults.yml").read_text())
needs_promtool = pytest.mark.skipif(_PROMTOOL is None, reason="promtool is not installed")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert _PROMTOOL is not None
    return subprocess.run([_PROMTOOL, *args], capture_output=True, text=True, check=False)


def test_the_committed_rule_file_is_what_export_writes() -> None:
    """deploy/prometheus/rules.yml is the defaults' export (regenerate with the CLI)."""
    assert (_DEPLOY / "rules.yml").read_text() == dump_rules(default_rules())


@needs_promtool
def test_exported_rules_pass_promtool_check(tmp_path: Path) -> None:
    """Prometheus itself loads the exported file."""
    target = tmp_path / "rules.yml"
    target.write_text(dump_rules(default_rules()))
    result = _promtool("check", "rules", str(target))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_default_rule_passes_its_promtool_unit_test() -> None:
    """Each default rule fires under Prometheus as deploy/prometheus/tests says."""
    tested = {test["name"] for test in _TESTS["tests"]}
    assert tested == {rule.name for rule in default_rules()}
    result = _promtool("test", "rules", str(_DEPLOY / "tests" / "defaults.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def _expand(notation: str) -> list[float]:
    """promtool's input notation: ``a+bxn`` (n+1 values stepping by b), ``axn``, plain values."""
    values: list[float] = []
    for item in notation.split():
        found = re.fullmatch(r"(-?[0-9.e+]+?)(?:([+-][0-9.e]+))?x([0-9]+)", item)
        if found is None:
            values.append(float(item))
            continue
        start, step, times = float(found[1]), float(found[2] or 0), int(found[3])
        values += [start + step * i for i in range(times + 1)]
    return values


class _Series:
    """The input series of one promtool test, answering the engine like the history does."""

    def __init__(self, test: Mapping[str, Any]) -> None:
        step = parse_duration(test["interval"])
        self._series: list[tuple[dict[str, str], list[tuple[float, float]]]] = []
        for entry in test["input_series"]:
            selector = parse(entry["series"])
            assert isinstance(selector, VectorSelector)
            assert selector.name is not None
            labels = {"__name__": selector.name, **{m.label: m.value for m in selector.matchers}}
            points = [(i * step, v) for i, v in enumerate(_expand(entry["values"]))]
            self._series.append((labels, points))

    def select(
        self, name: str, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[tuple[Mapping[str, str], Sequence[float], Sequence[float]]]:
        return [
            (
                labels,
                [t for t, _ in points if start < t <= end],
                [v for t, v in points if start < t <= end],
            )
            for labels, points in self._series
            if labels["__name__"] == name
            and all(m.matches(labels.get(m.label, "")) for m in matchers)
        ]

    def query(self, expr: str, *, at: float | None = None) -> list[InstantSample]:
        assert at is not None
        result = evaluate(parse(expr), self, at)
        assert not isinstance(result, float)
        return [InstantSample(labels, value) for labels, value in result]

    def query_range(self, expr: str, *, start: float, end: float, step: float) -> list[RangeSeries]:
        raise AssertionError("not used")


class _Collect:
    def __init__(self) -> None:
        self.last: Evaluation | None = None

    async def accept(self, evaluation: Evaluation) -> None:
        self.last = evaluation


@pytest.mark.parametrize("test", _TESTS["tests"], ids=lambda test: test["name"])
async def test_our_engine_agrees_with_promtool(test: Mapping[str, Any]) -> None:
    """Evaluated every minute over the same series, the same alerts fire, with the same text."""
    rules = [rule for rule in default_rules() if rule.name == test["name"]]
    step = parse_duration(_TESTS["evaluation_interval"])
    for check in test["alert_rule_test"]:
        wall, mono = ManualClock(0.0), ManualClock(0.0)
        engine = AlertEngine(
            _Series(test), _Collect(), rules, metrics=Metrics(), wall=wall, monotonic=mono
        )
        end = parse_duration(check["eval_time"])
        while True:
            evaluation = await engine.evaluate()
            if wall() >= end:
                break
            wall.advance(step)
            mono.advance(step)
        firing = [
            {"labels": {k: v for k, v in a.labels.items() if k != "alertname"},
             "annotations": dict(a.annotations)}
            for a in evaluation.firing()
        ]  # fmt: skip
        expected = [
            {"labels": alert.get("exp_labels", {}), "annotations": alert["exp_annotations"]}
            for alert in check["exp_alerts"]
        ]
        assert firing == expected, check["eval_time"]
