"""The Prometheus harness runs the real server: it scrapes a live exporter and answers PromQL."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from modelrollout.devcluster import process
from modelrollout.devcluster.prometheus import PrometheusServer

pytestmark = pytest.mark.integration


def test_scraped_exporter_value_is_queryable_and_follows_changes(prometheus_server: PrometheusServer) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("harness_probe_value", "A value the test sets", ["colour"], registry=registry)
    gauge.labels(colour="green").set(42)
    port = process.free_port()
    server, thread = start_http_server(port, addr=process.LOOPBACK, registry=registry)
    try:
        address = f"{process.LOOPBACK}:{port}"
        prometheus_server.add_target(address, {"rollout": "probe"})
        prometheus_server.wait_for_target(address)

        result = prometheus_server.query('harness_probe_value{rollout="probe", colour="green"}')
        assert [float(r["value"][1]) for r in result] == [42.0]

        gauge.labels(colour="green").set(7)
        deadline = time.monotonic() + 15
        value = 42.0
        while time.monotonic() < deadline and value != 7.0:
            time.sleep(0.5)
            value = float(prometheus_server.query('harness_probe_value{rollout="probe"}')[0]["value"][1])
        assert value == 7.0
    finally:
        prometheus_server.remove_target(f"{process.LOOPBACK}:{port}")
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_query_of_an_unknown_series_is_empty(prometheus_server: PrometheusServer) -> None:
    assert prometheus_server.query('modelserver_requests_total{rollout="does-not-exist"}') == []
