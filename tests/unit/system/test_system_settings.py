"""The system settings: paths split on commas, thresholds in order, errors naming variables."""

from __future__ import annotations

import pytest

from corestone.config import load_settings
from corestone.errors import ConfigurationError
from corestone.observability.system import SystemThresholds


def test_disk_paths_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    """CORESTONE_SYSTEM_DISK_PATHS is a comma-separated list; blanks are dropped."""
    monkeypatch.setenv("CORESTONE_SYSTEM_DISK_PATHS", "/srv/a, /srv/b,,")
    assert load_settings().system_disk_paths == ["/srv/a", "/srv/b"]


def test_checks_are_chosen_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """CORESTONE_SYSTEM_CHECKS picks checks by name; an unknown name is refused, named."""
    monkeypatch.setenv("CORESTONE_SYSTEM_CHECKS", "disk, event-loop")
    assert load_settings().system_checks == ["disk", "event-loop"]
    monkeypatch.setenv("CORESTONE_SYSTEM_CHECKS", "disk,swap")
    with pytest.raises(ConfigurationError, match="CORESTONE_SYSTEM_CHECKS"):
        load_settings()


def test_thresholds_come_from_settings() -> None:
    """SystemThresholds reads every threshold from the settings."""
    settings = load_settings(system_memory_warn_ratio=0.5, loop_lag_fail_seconds=3)
    thresholds = SystemThresholds.from_settings(settings)
    assert thresholds.memory_warn == 0.5
    assert thresholds.loop_lag_fail == 3


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"system_memory_warn_ratio": 0.99, "system_memory_fail_ratio": 0.9}, "MEMORY_WARN"),
        ({"system_disk_warn_free_ratio": 0.01}, "DISK_WARN_FREE"),
        ({"loop_lag_warn_seconds": 5}, "LOOP_LAG_WARN"),
        ({"system_cpu_warn_ratio": 1.5}, "SYSTEM_CPU_WARN_RATIO=1.5"),
    ],
)
def test_thresholds_out_of_order_are_refused(overrides: dict[str, object], named: str) -> None:
    """A warn threshold past its fail threshold, or a ratio above 1, stops start-up by name."""
    with pytest.raises(ConfigurationError, match=named):
        load_settings(**overrides)
