"""Rule files: Prometheus's format read and written, with errors naming group, rule, field."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from corestone.cli import app
from corestone.observability.alerts import (
    Rule,
    RuleFileError,
    default_rules,
    dump_rules,
    load_rules,
)

_GOOD = """
groups:
  - name: web
    interval: 30s
    rules:
      - alert: Slow
        expr: histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m]))) > 1
        for: 5m
        keep_firing_for: 1m
        labels: {severity: critical}
        annotations:
          summary: "p99 is {{ $value | humanizeDuration }}"
"""


def test_a_valid_file_loads() -> None:
    """Every field arrives in the Rule, durations in seconds."""
    (rule,) = load_rules(_GOOD)
    assert rule == Rule(
        name="Slow",
        expr="histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m]))) > 1",
        for_seconds=300,
        keep_firing_for_seconds=60,
        labels={"severity": "critical"},
        annotations={"summary": "p99 is {{ $value | humanizeDuration }}"},
        group="web",
    )


def test_the_defaults_survive_a_round_trip() -> None:
    """dump_rules then load_rules gives the very same rules back."""
    assert load_rules(dump_rules(default_rules())) == default_rules()


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        ("for: 5m", "for: five", "group 'web', rule 'Slow': field 'for'"),
        ("expr: histogram", "expr: topk(1, x) or histogram", "field 'expr': the aggregation"),
        ("humanizeDuration", "title", "field 'annotations.summary'"),
        ("alert: Slow", "record: slow", "recording rules"),
        ("interval: 30s", "interval: often", "group 'web': field 'interval'"),
        ("labels: {severity: critical}", "labels: {severity: '{{ $value }}'}", "templated"),
        ("labels: {severity: critical}", "lables: {}", "unknown field 'lables'"),
        ("alert: Slow", "alert: 'not a name'", "field 'alert'"),
    ],
)
def test_errors_name_group_rule_and_field(replace: str, by: str, message: str) -> None:
    """Each broken file is refused with a message that says where."""
    with pytest.raises(RuleFileError) as caught:
        load_rules(_GOOD.replace(replace, by), source="rules.yml")
    assert message in str(caught.value)


def test_not_a_rule_file_is_refused() -> None:
    """YAML errors, a wrong top level and a duplicate group are refused."""
    for text in ("groups: [", "- a", "groups: {}", _GOOD + _GOOD.replace("groups:", "")):
        with pytest.raises(RuleFileError):
            load_rules(text)
    assert load_rules("") == []


def test_cli_export_then_check(tmp_path: Path) -> None:
    """`corestone alerts export -o` writes a file `corestone alerts check` accepts."""
    target = tmp_path / "rules.yml"
    runner = CliRunner()
    exported = runner.invoke(app, ["alerts", "export", "-o", str(target)])
    assert exported.exit_code == 0, exported.output
    checked = runner.invoke(app, ["alerts", "check", str(target)])
    assert checked.exit_code == 0
    assert "13 rules, valid" in checked.output
    target.write_text(_GOOD.replace("5m", "5 minutes"))
    refused = runner.invoke(app, ["alerts", "check", str(target)])
    assert refused.exit_code == 1


def test_export_includes_the_configured_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CORESTONE_ALERTS_RULES_FILE's rules follow the defaults; thresholds come from settings."""
    extra = tmp_path / "extra.yml"
    extra.write_text(_GOOD)
    monkeypatch.setenv("CORESTONE_ALERTS_RULES_FILE", str(extra))
    monkeypatch.setenv("CORESTONE_ALERTS_HTTP_P99_SECONDS", "0.25")
    result = CliRunner().invoke(app, ["alerts", "export"])
    assert result.exit_code == 0, result.output
    rules = load_rules(result.output)
    assert rules[-1].name == "Slow"
    assert any(r.expr.endswith("> 0.25") for r in rules)
