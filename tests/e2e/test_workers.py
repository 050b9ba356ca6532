"""`serve --workers 2`: both processes serve one port, /metrics is whole, SIGTERM drains both."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import ROOT, Server, free_port, taskboard_command

pytestmark = pytest.mark.e2e

WORKER_HEADER = "x-worker-pid"
BOUND = 120.0  # seconds: a bound on waiting, never an expected duration


def _demo_token(output: str) -> str:
    match = re.search(r"demo token:\s+(tb_\S+)", output)
    assert match, output
    return match.group(1)


def _requests_total(exposition: str, route: str) -> float:
    pattern = re.compile(r"^corestone_http_requests_total\{([^}]*)\} (\S+)$", re.MULTILINE)
    return sum(
        float(value)
        for labels, value in pattern.findall(exposition)
        if f'route="{route}"' in labels
    )


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {BOUND}s")
        time.sleep(0.05)


def test_two_workers_serve_and_metrics_count_the_requests_of_both(
    start_server, database_url: str
) -> None:
    """Two worker pids answer requests, and a scrape by either one counts every request sent."""
    port = free_port()
    server: Server = start_server(
        [*taskboard_command(port), "--workers", "2"], {"CORESTONE_DATABASE_URL": database_url}, port
    )
    server.wait_ready(timeout=BOUND)
    auth = {"Authorization": f"Bearer {_demo_token(server.output())}"}

    answered_by: set[str] = set()
    sent = 0

    def one_request() -> bool:
        nonlocal sent
        response = httpx.get(f"{server.url}/api/me", headers=auth)  # a new connection each
        sent += 1
        assert response.status_code == 200
        answered_by.add(response.headers[WORKER_HEADER])
        return len(answered_by) == 2

    _until(one_request, "both workers answering")
    for _ in range(20):
        one_request()
    assert str(server.process.pid) not in answered_by  # the supervisor serves nothing

    scraped_by: dict[str, float] = {}
    breaker_pids: set[str] = set()

    def scrape() -> bool:
        response = httpx.get(f"{server.url}/metrics")
        scraped_by[response.headers[WORKER_HEADER]] = _requests_total(response.text, "/api/me")
        breaker_pids.update(
            re.findall(r'^corestone_breaker_state\{[^}]*pid="(\d+)"', response.text, re.MULTILINE)
        )
        return len(scraped_by) == 2 and breaker_pids >= answered_by

    _until(scrape, "a scrape answered by each worker, with both workers' breakers")
    assert scraped_by == dict.fromkeys(answered_by, float(sent))

    assert server.stop(signal.SIGTERM) == 0
    output = server.output()
    assert output.count("readiness now failing") == 2
    assert "Traceback" not in output


def _json_lines(output: str) -> list[dict[str, object]]:
    lines = []
    for line in output.splitlines():
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                lines.append(parsed)
    return lines


def _pids(output: str, event: str) -> list[object]:
    return [line["pid"] for line in _json_lines(output) if line.get("event") == event]


def test_sigterm_drains_a_slow_request_on_each_worker(start_server, tmp_path) -> None:
    """A request in flight on each worker when SIGTERM reaches the supervisor completes with 200."""
    port = free_port()
    env = {"CORESTONE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'slow.db'}"}
    server: Server = start_server(
        [sys.executable, str(ROOT / "tests/e2e/slow_app.py"), str(port), "2"], env, port
    )
    server.wait_ready(timeout=BOUND)
    _until(lambda: server.output().count("worker serving") == 2, "both workers serving")

    responses: list[httpx.Response] = []
    callers: list[threading.Thread] = []

    def call() -> None:
        responses.append(httpx.get(f"{server.url}/slow", params={"seconds": 8}, timeout=BOUND))

    def slow_in_flight_on_both() -> bool:
        callers.append(threading.Thread(target=call))
        callers[-1].start()
        _until(
            lambda: len(_pids(server.output(), "slow request started")) == len(callers),
            "the slow request reaching a worker",
        )
        return len(set(_pids(server.output(), "slow request started"))) == 2

    _until(slow_in_flight_on_both, "a slow request in flight on each worker")
    assert _pids(server.output(), "slow request finished") == []  # all still in flight

    assert server.stop(signal.SIGTERM, timeout=BOUND) == 0
    for thread in callers:
        thread.join(timeout=BOUND)
    assert [r.status_code for r in responses] == [200] * len(callers)
    events = [line.get("event") for line in _json_lines(server.output())]
    assert events.count("shutdown requested; readiness now failing") == 2
    last_failing = len(events) - 1 - events[::-1].index("shutdown requested; readiness now failing")
    assert last_failing < events.index("slow request finished")
    assert sorted(_pids(server.output(), "slow request finished")) == sorted(
        _pids(server.output(), "slow request started")
    )
    assert "Traceback" not in server.output()


def test_a_killed_worker_is_replaced_and_its_requests_stay_counted(start_server, tmp_path) -> None:
    """A killed worker is replaced by a new one, and /metrics still counts its requests."""
    port = free_port()
    env = {"CORESTONE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'board.db'}"}
    server: Server = start_server([*taskboard_command(port), "--workers", "2"], env, port)
    server.wait_ready(timeout=BOUND)
    answered_by: list[str] = []

    def live() -> bool:
        answered_by.append(httpx.get(f"{server.url}/health/live").headers[WORKER_HEADER])
        return len(set(answered_by)) == 2

    def all_counted() -> bool:
        exposition = httpx.get(f"{server.url}/metrics").text
        return _requests_total(exposition, "/health/live") == len(answered_by)

    _until(live, "both workers answering")
    _until(all_counted, "every answered request counted")
    victim = answered_by[0]
    os.kill(int(victim), signal.SIGKILL)

    def replaced() -> bool:
        with contextlib.suppress(httpx.TransportError):
            live()
        return len(set(answered_by) - {victim}) == 2

    _until(replaced, "a new worker answering in place of the killed one")
    _until(
        lambda: (
            _requests_total(httpx.get(f"{server.url}/metrics").text, "/health/live")
            == len(answered_by)
        ),
        "every answered request counted",
    )
    assert server.stop(signal.SIGTERM) == 0
    assert "worker exited; starting a new one" in server.output()


def test_a_worker_that_cannot_start_stops_the_service_instead_of_restarting(
    start_server, tmp_path
) -> None:
    """A worker failing before it serves ends the supervisor with exit 1, with no restart loop."""
    port = free_port()
    env = {"CORESTONE_DATABASE_URL": "mysql://root@localhost/x"}  # only workers read settings
    server: Server = start_server(
        [sys.executable, str(ROOT / "tests/e2e/slow_app.py"), str(port), "2"], env, port
    )
    assert server.process.wait(timeout=BOUND) == 1
    output = server.output()
    assert "worker failed to start; stopping" in output
    assert output.count("worker starting") == 2
