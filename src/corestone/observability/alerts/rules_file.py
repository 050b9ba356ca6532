"""Alert rules in Prometheus's rule-file format, read and written.

The same file serves this process's engine and a Prometheus server: ``groups`` of
``name``, ``interval`` and ``rules`` (``alert``, ``expr``, ``for``, ``keep_firing_for``,
``labels``, ``annotations``). Loading validates everything up front, the expression
against the supported PromQL subset and the annotations against the supported templates,
and an error names the group, the rule and the field. Recording rules are refused: the
engine only alerts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from corestone.observability.alerts.model import Rule
from corestone.observability.alerts.templates import check_template
from corestone.observability.promql import format_duration, parse, parse_duration

__all__ = ["RuleFileError", "dump_rules", "load_rules", "load_rules_file"]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_GROUP_KEYS = frozenset({"name", "interval", "rules", "limit"})
_RULE_KEYS = frozenset({"alert", "expr", "for", "keep_firing_for", "labels", "annotations"})


class RuleFileError(ValueError):
    """A rule file that cannot be used; the message names the group, rule and field."""


def load_rules_file(path: str | Path) -> list[Rule]:
    """The rules of the file at ``path`` (see :func:`load_rules`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise RuleFileError(f"{path}: {error.strerror or error}") from error
    return load_rules(text, source=str(path))


def load_rules(text: str, *, source: str = "rules") -> list[Rule]:
    """Parse and validate a Prometheus rule file's text; ``RuleFileError`` says what is wrong."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RuleFileError(f"{source}: not YAML: {error}") from error
    if document is None:
        return []
    if not isinstance(document, dict) or set(document) - {"groups"}:
        raise RuleFileError(f"{source}: expected a mapping with one key, 'groups'")
    groups = document.get("groups", [])
    if not isinstance(groups, list):
        raise RuleFileError(f"{source}: 'groups' must be a list")
    rules: list[Rule] = []
    seen_groups: set[str] = set()
    for index, group in enumerate(groups):
        where = f"{source}: group {index + 1}"
        if not isinstance(group, dict):
            raise RuleFileError(f"{where}: must be a mapping")
        name = group.get("name")
        if not isinstance(name, str) or not name:
            raise RuleFileError(f"{where}: field 'name': a non-empty string is required")
        where = f"{source}: group {name!r}"
        if name in seen_groups:
            raise RuleFileError(f"{where}: field 'name': the group is defined twice")
        seen_groups.add(name)
        if unknown := set(group) - _GROUP_KEYS:
            raise RuleFileError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        if "interval" in group:
            _duration(group["interval"], f"{where}: field 'interval'")
        entries = group.get("rules", [])
        if not isinstance(entries, list):
            raise RuleFileError(f"{where}: field 'rules': must be a list")
        for position, entry in enumerate(entries):
            rules.append(_rule(entry, name, f"{where}, rule {position + 1}"))
    return rules


def _rule(entry: Any, group: str, where: str) -> Rule:
    if not isinstance(entry, dict):
        raise RuleFileError(f"{where}: must be a mapping")
    if "record" in entry:
        raise RuleFileError(f"{where}: recording rules are not supported, only 'alert'")
    alert = entry.get("alert")
    if not isinstance(alert, str) or not _NAME.fullmatch(alert):
        raise RuleFileError(f"{where}: field 'alert': a metric-like name is required")
    where = f"{where.rsplit(', rule', 1)[0]}, rule {alert!r}"
    if unknown := set(entry) - _RULE_KEYS:
        raise RuleFileError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    expr = entry.get("expr")
    if not isinstance(expr, str) or not expr.strip():
        raise RuleFileError(f"{where}: field 'expr': an expression is required")
    try:
        parse(expr)
    except ValueError as error:
        raise RuleFileError(f"{where}: field 'expr': {error}") from None
    labels = _strings(entry.get("labels"), f"{where}: field 'labels'")
    for key, value in labels.items():
        if "{{" in value:
            raise RuleFileError(f"{where}: field 'labels': templated label {key!r} not supported")
    annotations = _strings(entry.get("annotations"), f"{where}: field 'annotations'")
    for key, value in annotations.items():
        try:
            check_template(value)
        except ValueError as error:
            raise RuleFileError(f"{where}: field 'annotations.{key}': {error}") from None
    return Rule(
        name=alert,
        expr=expr.strip(),
        for_seconds=_duration(entry.get("for", "0s"), f"{where}: field 'for'"),
        keep_firing_for_seconds=_duration(
            entry.get("keep_firing_for", "0s"), f"{where}: field 'keep_firing_for'"
        ),
        labels=labels,
        annotations=annotations,
        group=group,
    )


def _duration(value: Any, where: str) -> float:
    if not isinstance(value, str):
        raise RuleFileError(f"{where}: a duration like 30s, 5m or 1h is required")
    try:
        return parse_duration(value)
    except ValueError as error:
        raise RuleFileError(f"{where}: {error}") from None


def _strings(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RuleFileError(f"{where}: must be a mapping of names to strings")
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _LABEL.fullmatch(key):
            raise RuleFileError(f"{where}: {key!r} is not a valid name")
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            raise RuleFileError(f"{where}: the value of {key!r} must be a string")
        result[key] = str(item)
    return result


def dump_rules(rules: Iterable[Rule], *, interval_seconds: float = 15.0) -> str:
    """``rules`` as a Prometheus rule file, grouped by ``Rule.group`` in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rule in rules:
        entry: dict[str, Any] = {"alert": rule.name, "expr": rule.expr}
        if rule.for_seconds:
            entry["for"] = format_duration(rule.for_seconds)
        if rule.keep_firing_for_seconds:
            entry["keep_firing_for"] = format_duration(rule.keep_firing_for_seconds)
        if rule.labels:
            entry["labels"] = dict(rule.labels)
        if rule.annotations:
            entry["annotations"] = dict(rule.annotations)
        groups.setdefault(rule.group, []).append(entry)
    document = {
        "groups": [
            {"name": name, "interval": format_duration(interval_seconds), "rules": entries}
            for name, entries in groups.items()
        ]
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
