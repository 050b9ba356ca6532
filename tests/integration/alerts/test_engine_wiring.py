"""add_alerts on a real Infrastructure: managed components, infra.alerts, real metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from corestone import Infrastructure, Settings
from corestone.errors import ConfigurationError
from corestone.observability.alerts import AlertState, Evaluation, Rule, add_alerts


class _Collect:
    def __init__(self) -> None:
        self.evaluations: list[Evaluation] = []

    async def accept(self, evaluation: Evaluation) -> None:
        self.evaluations.append(evaluation)


async def test_add_alerts_wires_history_and_engine(tmp_path: Path) -> None:
    """The engine evaluates the process's own metrics through the history it was given."""
    infra = Infrastructure(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    with pytest.raises(ConfigurationError, match="add_alerts"):
        _ = infra.alerts
    sink = _Collect()
    rule = Rule(name="Busy", expr="corestone_test_jobs > 2", labels={"severity": "info"})
    alerts = add_alerts(infra, sink, rules=[rule])
    assert infra.alerts is alerts
    assert alerts.engine.rules == (rule,)
    with pytest.raises(ValueError, match="already"):
        add_alerts(infra, sink, rules=[rule])
    infra.metrics.gauge("test_jobs", "Jobs.").set(5)
    async with infra:
        alerts.history.sample()
        evaluation = await alerts.engine.evaluate()
        await alerts.engine.flush()
    assert [a.state for a in evaluation.alerts] == [AlertState.FIRING]
    assert sink.evaluations == [evaluation]


async def test_default_rules_are_watched(tmp_path: Path) -> None:
    """Without rules given, the defaults (and their metrics) are the engine's."""
    infra = Infrastructure(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    alerts = add_alerts(infra, _Collect())
    assert len(alerts.engine.rules) == 13
    async with infra:
        alerts.history.sample()
        assert alerts.history.query('corestone_http_requests_total{status="500"}') == []
        await alerts.engine.evaluate()
        assert alerts.engine.active() == []
