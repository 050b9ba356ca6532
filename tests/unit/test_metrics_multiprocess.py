"""Metrics in multiprocess mode: one exposition for several worker processes.

prometheus_client picks its mode when imported, so each "worker" here is a short Python
process started with PROMETHEUS_MULTIPROC_DIR set, as serve_workers starts them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client.metrics_core import Metric

from corestone.observability import Metrics
from corestone.observability.multiprocess import ScrapeTimeAcrossWorkers, forget_process

WORKER = """
import os, sys
from prometheus_client.metrics_core import GaugeMetricFamily
from corestone.observability import Metrics

class Breakers:
    def describe(self):
        return [GaugeMetricFamily("corestone_breaker_open", "open")]
    def collect(self):
        family = GaugeMetricFamily("corestone_breaker_open", "open", labels=["name"])
        family.add_metric(["database"], 1.0)
        yield family

metrics = Metrics()
assert metrics.multiprocess
requests = metrics.counter("http_requests_total", "requests", ["route"])
requests.labels(route="/a").inc(int(sys.argv[1]))
metrics.gauge("db_pool_size", "size").set_function(lambda: 10 + int(sys.argv[1]))
metrics.register_collector(Breakers())
metrics.publish()
if sys.argv[2] == "render":
    sys.stdout.write(metrics.render().decode())
print("pid", os.getpid())
"""


def _worker(directory: Path, requests: int, render: bool = False) -> tuple[str, str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(requests), "render" if render else "-"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    pid = re.search(r"^pid (\d+)$", done.stdout, re.MULTILINE)
    assert pid, done.stdout + done.stderr
    return pid.group(1), done.stdout


def test_a_scrape_counts_every_worker_and_labels_per_process_values(tmp_path: Path) -> None:
    """Counters add up across workers; function gauges and collectors appear once per pid."""
    first, _ = _worker(tmp_path, 3)
    second, exposition = _worker(tmp_path, 4, render=True)

    assert 'corestone_http_requests_total{route="/a"} 7.0' in exposition
    assert f'corestone_db_pool_size{{pid="{first}"}} 13.0' in exposition
    assert f'corestone_db_pool_size{{pid="{second}"}} 14.0' in exposition
    for pid in (first, second):
        assert f'corestone_breaker_open{{name="database",pid="{pid}"}} 1.0' in exposition
    assert exposition.count("# TYPE corestone_breaker_open gauge") == 1


def test_a_finished_worker_leaves_its_counts_but_not_its_per_process_values(
    tmp_path: Path,
) -> None:
    """After forget_process, a worker's requests still count; its gauges and snapshot are gone."""
    first, _ = _worker(tmp_path, 3)
    forget_process(int(first), str(tmp_path))
    second, exposition = _worker(tmp_path, 4, render=True)

    assert 'corestone_http_requests_total{route="/a"} 7.0' in exposition
    assert f'pid="{first}"' not in exposition
    assert f'corestone_db_pool_size{{pid="{second}"}} 14.0' in exposition


class _Collector:
    def __init__(self, value: float) -> None:
        self.value = value

    def collect(self) -> list[Metric]:
        family = Metric("corestone_cache_entries", "entries", "gauge")
        family.add_sample("corestone_cache_entries", {"cache": "l1"}, self.value)
        return [family]


def test_the_answering_worker_shows_its_own_values_live(tmp_path: Path) -> None:
    """A worker's own scrape-time values are read at the scrape; the others' as published."""
    own = _Collector(1.0)
    other = _Collector(5.0)
    ScrapeTimeAcrossWorkers([other], str(tmp_path), pid=111).publish()
    other.value = 6.0  # not yet published
    own.value = 2.0
    (family,) = ScrapeTimeAcrossWorkers([own], str(tmp_path), pid=222).collect()

    assert sorted((s.labels["pid"], s.value) for s in family.samples) == [
        ("111", 5.0),
        ("222", 2.0),
    ]


def test_values_json_cannot_hold_survive_publishing(tmp_path: Path) -> None:
    """NaN and infinities published by one worker reach another worker's scrape as they were."""
    for value in (float("nan"), float("inf"), float("-inf")):
        ScrapeTimeAcrossWorkers([_Collector(value)], str(tmp_path), pid=111).publish()
        (family,) = ScrapeTimeAcrossWorkers([], str(tmp_path), pid=222).collect()
        assert repr(family.samples[0].value) == repr(value)


def test_one_process_is_unchanged() -> None:
    """Without the multiprocess directory, Metrics renders its own registry; publish is a no-op."""
    metrics = Metrics()
    metrics.counter("things_total", "things").inc()
    metrics.publish()

    assert not metrics.multiprocess
    assert "corestone_things_total 1.0" in metrics.render().decode()


CAPPED_WORKER = """
import sys
from corestone.observability import Metrics
from corestone.testing import ManualClock

clock = ManualClock()
metrics = Metrics(max_series=2, clock=clock)
assert metrics.multiprocess
timer = metrics.timer("job_seconds", "jobs", ["queue"])

@timer.labels(queue="mail")
def job():
    clock.advance(0.5)

job()
for queue in sys.argv[1].split(","):
    timer.labels(queue=queue).observe(1.0)
if sys.argv[2] == "render":
    sys.stdout.write(metrics.render().decode())
"""


def test_timers_and_folded_series_add_up_across_workers(tmp_path: Path) -> None:
    """Each worker's timer observations, folds and fold counts are summed by a scrape."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", CAPPED_WORKER, queues, mode],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for queues, mode in (("push,a,b", "-"), ("c,d,e", "render"))
    ]
    exposition = outputs[1]

    assert 'corestone_job_seconds_count{queue="mail"} 2.0' in exposition
    assert 'corestone_job_seconds_sum{queue="mail"} 1.0' in exposition
    assert 'corestone_job_seconds_count{queue="push"} 1.0' in exposition
    assert 'corestone_job_seconds_count{queue="c"} 1.0' in exposition
    assert 'corestone_job_seconds_count{queue="other"} 4.0' in exposition
    assert 'corestone_metrics_series_folded_total{metric="corestone_job_seconds"} 4.0' in exposition
