"""deploy/: the Grafana dashboard reads real /metrics names; Prometheus accepts the configs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Board

DEPLOY = Path(__file__).parents[3] / "deploy"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
_NAME = re.compile(r"\bcorestone_[a-z0-9_]+")
_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}

needs_promtool = pytest.mark.skipif(
    not Path(PROMTOOL).exists(), reason="promtool is not installed (Debian: prometheus)"
)


def dashboard_expressions() -> list[str]:
    document = json.loads((DEPLOY / "grafana" / "corestone.json").read_text())
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return found


def exposed_names(exposition: str) -> set[str]:
    """Every series name the exposition declares, with each histogram's three suffixes."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.update(name + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return names


async def test_every_metric_the_dashboard_reads_is_exposed(board: Board) -> None:
    """Each corestone_* name in the Grafana dashboard is on a running taskboard's /metrics."""
    response = await board.client.get("/metrics")
    assert response.status_code == 200
    exposed = exposed_names(response.text)
    expressions = dashboard_expressions()
    assert len(expressions) >= 30
    referenced = {name for expr in expressions for name in _NAME.findall(expr)}
    assert referenced - exposed == set()
    for family in ("corestone_event_loop_lag_seconds", "corestone_system_disk_free_ratio"):
        assert family in referenced


@needs_promtool
def test_the_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (Grafana's variables given sample values)."""
    rules = [
        {"record": f"corestone:dashboard_{i}", "expr": _with_values(expr)}
        for i, expr in enumerate(dashboard_expressions())
    ]
    file = tmp_path / "dashboard.yml"
    # JSON is YAML: no YAML library needed to write a rule file.
    file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    run = subprocess.run(
        [PROMTOOL, "check", "rules", str(file)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr


@needs_promtool
def test_the_scrape_config_passes_promtool(tmp_path: Path) -> None:
    """deploy/prometheus/prometheus.yml passes `promtool check config`, its rule file included."""
    shutil.copy(DEPLOY / "prometheus" / "prometheus.yml", tmp_path)
    assert re.search(
        r"^rule_files:\n  - rules\.yml$", (tmp_path / "prometheus.yml").read_text(), re.M
    )
    rules = DEPLOY / "prometheus" / "rules.yml"
    if rules.exists():  # the exported default rules; until then an empty group list
        shutil.copy(rules, tmp_path)
    else:
        (tmp_path / "rules.yml").write_text("groups: []\n")
    run = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _with_values(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
