"""Metrics refreshers: awaited before a scrape renders; a failing one does not stop it."""

from __future__ import annotations

from corestone.observability.metrics import Metrics


async def test_refreshers_run_in_order_and_a_failure_is_skipped() -> None:
    """Every refresher is awaited once per refresh, even after one raised."""
    metrics = Metrics()
    gauge = metrics.gauge("refreshed", "Set by a refresher.")
    calls: list[str] = []

    async def broken() -> None:
        calls.append("broken")
        raise RuntimeError("the database is away")

    async def setter() -> None:
        calls.append("setter")
        gauge.set(7)

    metrics.add_refresher(broken)
    metrics.add_refresher(setter)
    await metrics.refresh()
    assert calls == ["broken", "setter"]
    assert "corestone_refreshed 7.0" in metrics.render().decode()
