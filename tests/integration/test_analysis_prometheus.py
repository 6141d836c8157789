"""The analysis queries run on the real Prometheus, over series shaped like the model server's contract."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from modelrollout.analysis import run
from modelrollout.analysis.evaluate import Verdict
from modelrollout.analysis.prometheus import PrometheusProvider
from modelrollout.analysis.provider import QueryResult, SharedQueries
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.devcluster import process
from modelrollout.devcluster.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

SPEC = ModelRolloutSpec.model_validate(
    {
        "blue": {"model": {"uri": "file:///b.onnx", "version": "v1"}},
        "green": {"model": {"uri": "file:///g.onnx", "version": "v2"}},
        "analysis": {"window": "30s", "checks": {"accuracy": {"minSamples": 500}}},
    }
)
LABELS = ["rollout", "colour", "model", "version"]


class ContractExporter:
    """Series named and labelled as the model server exports them, for one rollout's two colours."""

    def __init__(self, rollout: str) -> None:
        self.rollout = rollout
        self.address = ""
        """Where Prometheus scrapes it (set by the fixture)."""
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modelserver_requests_total", "requests", [*LABELS, "endpoint", "code_class"], registry=self.registry
        )
        self.latency = Histogram(
            "modelserver_request_duration_seconds",
            "latency",
            [*LABELS, "endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.outcomes = Counter(
            "modelserver_labelled_outcomes_total", "outcomes", [*LABELS, "source", "outcome"], registry=self.registry
        )
        self.start_time = Gauge("modelserver_start_time_seconds", "start", LABELS, registry=self.registry)
        self.upstream_errors = Counter(
            "modelrouter_upstream_errors_total", "upstream errors", ["rollout", "colour"], registry=self.registry
        )
        for colour in ("blue", "green"):
            self.start_time.labels(**self.base(colour)).set(1000.0)
            self.upstream_errors.labels(rollout=rollout, colour=colour)

    def base(self, colour: str) -> dict[str, str]:
        version = "v1" if colour == "blue" else "v2"
        return {"rollout": self.rollout, "colour": colour, "model": "digits", "version": version}

    def traffic(
        self,
        colour: str,
        *,
        requests: int,
        errors: int,
        seconds: float,
        correct: int,
        wrong: int,
        source: str = "feedback",
    ) -> None:
        base = self.base(colour)
        self.requests.labels(**base, endpoint="infer", code_class="2xx").inc(requests - errors)
        self.requests.labels(**base, endpoint="infer", code_class="5xx").inc(errors)
        histogram = self.latency.labels(**base, endpoint="infer")  # exported from the start, like the server
        for _ in range(requests):
            histogram.observe(seconds)
        self.outcomes.labels(**base, source=source, outcome="correct").inc(correct)
        self.outcomes.labels(**base, source=source, outcome="incorrect").inc(wrong)


@pytest.fixture
def exporter(prometheus_server: PrometheusServer, request: pytest.FixtureRequest) -> Iterator[ContractExporter]:
    exporter = ContractExporter(rollout=request.node.name.replace("_", "-")[:50])
    for colour in ("blue", "green"):  # series exist at zero before the first scrape, as the server does
        exporter.traffic(colour, requests=0, errors=0, seconds=0, correct=0, wrong=0)
    port = process.free_port()
    server, thread = start_http_server(port, addr=process.LOOPBACK, registry=exporter.registry)
    address = exporter.address = f"{process.LOOPBACK}:{port}"
    prometheus_server.add_target(address)
    prometheus_server.wait_for_target(address)
    yield exporter
    prometheus_server.remove_target(address)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


async def analyse(url: str, rollout: str = "digits") -> dict[str, tuple[Verdict, float | None]]:
    provider = PrometheusProvider(url, timeout=2)
    try:
        outcome = await run.analyse(
            provider,
            SPEC,
            namespace="default",
            rollout=rollout,
            now=datetime.datetime.now(datetime.UTC),
            canary_age_seconds=60,
        )
    finally:
        await provider.close()
    return {r.name: (r.verdict, r.value) for r in outcome.results}


async def test_a_bad_green_fails_errors_latency_and_accuracy(
    exporter: ContractExporter, prometheus_server: PrometheusServer
) -> None:
    exporter.traffic("blue", requests=400, errors=0, seconds=0.02, correct=1940, wrong=60)
    exporter.traffic("green", requests=400, errors=40, seconds=0.4, correct=1700, wrong=300)
    prometheus_server.wait_for_scrapes(exporter.address)  # two scrapes see the increase
    result = await analyse(prometheus_server.url, exporter.rollout)
    assert result["errors"][0] is Verdict.FAILED
    assert result["errors"][1] == pytest.approx(0.10, rel=0.05)
    assert result["latency"][0] is Verdict.FAILED
    assert result["latency"][1] is not None and 0.25 <= result["latency"][1] <= 0.5
    assert result["latency-vs-blue"][0] is Verdict.FAILED
    assert result["accuracy"][0] is Verdict.FAILED
    assert result["accuracy"][1] == pytest.approx(0.85 - 0.97, abs=0.01)


async def test_a_good_green_passes(exporter: ContractExporter, prometheus_server: PrometheusServer) -> None:
    exporter.traffic("blue", requests=400, errors=0, seconds=0.02, correct=9700, wrong=300)
    exporter.traffic("green", requests=400, errors=0, seconds=0.02, correct=9720, wrong=280)
    prometheus_server.wait_for_scrapes(exporter.address)
    result = await analyse(prometheus_server.url, exporter.rollout)
    assert {name: verdict for name, (verdict, _) in result.items()} == {
        "errors": Verdict.PASSED,
        "latency": Verdict.PASSED,
        "latency-vs-blue": Verdict.PASSED,
        "accuracy": Verdict.PASSED,
        "health": Verdict.PASSED,
    }


async def test_a_crashing_green_fails_health_and_its_lost_requests_fail_errors(
    exporter: ContractExporter, prometheus_server: PrometheusServer
) -> None:
    """Restarts (a new start time) and the router's upstream errors reach the verdicts through Prometheus."""
    exporter.traffic("blue", requests=400, errors=0, seconds=0.02, correct=9700, wrong=300)
    exporter.traffic("green", requests=100, errors=0, seconds=0.02, correct=9720, wrong=280)
    prometheus_server.wait_for_scrapes(exporter.address, count=1)
    exporter.start_time.labels(**exporter.base("green")).set(2000.0)  # the process started again
    exporter.upstream_errors.labels(rollout=exporter.rollout, colour="green").inc(60)
    prometheus_server.wait_for_scrapes(exporter.address)
    result = await analyse(prometheus_server.url, exporter.rollout)
    assert result["health"] == (Verdict.FAILED, 1.0)
    assert result["errors"][0] is Verdict.FAILED
    assert result["errors"][1] == pytest.approx(60 / 160, rel=0.1)


async def test_golden_set_outcomes_are_not_counted_as_accuracy_evidence(
    exporter: ContractExporter, prometheus_server: PrometheusServer
) -> None:
    """Re-scoring the same golden items is not new evidence: only feedback feeds the sequential test."""
    exporter.traffic("blue", requests=400, errors=0, seconds=0.02, correct=9700, wrong=300, source="golden")
    exporter.traffic("green", requests=400, errors=0, seconds=0.02, correct=8000, wrong=2000, source="golden")
    prometheus_server.wait_for_scrapes(exporter.address)
    result = await analyse(prometheus_server.url, exporter.rollout)
    assert result["accuracy"] == (Verdict.INCONCLUSIVE, None)


async def test_unknown_rollout_is_inconclusive(prometheus_server: PrometheusServer) -> None:
    provider = PrometheusProvider(prometheus_server.url)
    try:
        outcome = await run.analyse(
            provider,
            SPEC,
            namespace="default",
            rollout="nobody",
            now=datetime.datetime.now(datetime.UTC),
            canary_age_seconds=10,
        )
    finally:
        await provider.close()
    assert {r.name: r.verdict for r in outcome.results if r.verdict is not Verdict.INCONCLUSIVE} == {
        "health": Verdict.PASSED  # no restarts seen
    }


async def test_unreachable_prometheus_is_an_error_not_a_verdict() -> None:
    url = f"http://{process.LOOPBACK}:{process.free_port()}"
    result = await analyse(url)
    assert {verdict for verdict, _ in result.values()} == {Verdict.ERROR}


class CountingPrometheus(PrometheusProvider):
    """The real provider, counting the queries that reach Prometheus."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.sent = 0

    async def query(self, promql: str) -> QueryResult:
        self.sent += 1
        return await super().query(promql)


async def test_queries_per_interval_do_not_grow_with_rollouts(prometheus_server: PrometheusServer) -> None:
    counting = CountingPrometheus(prometheus_server.url)
    shared = SharedQueries(counting, ttl=30)
    now = datetime.datetime.now(datetime.UTC)
    try:
        outcomes = await asyncio.gather(
            *(
                run.analyse(shared, SPEC, namespace="default", rollout=f"rollout-{i}", now=now, canary_age_seconds=120)
                for i in range(200)
            )
        )
    finally:
        await counting.close()
    assert len(outcomes) == 200
    # requests, errors, p95 latency, upstream errors, labelled outcomes, restarts, golden: one query each
    assert counting.sent == 7


async def test_custom_checks_run_their_query_over_the_evidence_window_against_their_bounds(
    exporter: ContractExporter, prometheus_server: PrometheusServer
) -> None:
    query = 'sum(increase(modelrouter_upstream_errors_total{rollout="$rollout", colour="green"}[$window]))'
    spec = ModelRolloutSpec.model_validate(
        {
            **SPEC.to_api(),
            "analysis": {
                "window": "30s",
                "checks": {
                    "custom": [
                        {"name": "few-upstream-errors", "query": query, "max": 5},
                        {"name": "bounded-upstream-errors", "query": query, "min": 1, "max": 1000},
                        {"name": "many-upstream-errors", "query": query, "min": 1000},
                    ]
                },
            },
        }
    )
    exporter.upstream_errors.labels(rollout=exporter.rollout, colour="green").inc(0)
    prometheus_server.wait_for_scrapes(exporter.address, count=1)  # a scrape sees the counter at 0
    exporter.upstream_errors.labels(rollout=exporter.rollout, colour="green").inc(60)
    provider = PrometheusProvider(prometheus_server.url, timeout=2)

    async def custom_verdicts() -> dict[str, tuple[Verdict, float | None]]:
        outcome = await run.analyse(
            provider,
            spec,
            namespace="default",
            rollout=exporter.rollout,
            now=datetime.datetime.now(datetime.UTC),
            canary_age_seconds=60,
            window_seconds=20,
        )
        return {r.name: (r.verdict, r.value) for r in outcome.results if r.name.endswith("upstream-errors")}

    try:
        deadline = time.monotonic() + 20
        verdicts = await custom_verdicts()
        while verdicts["few-upstream-errors"][0] is not Verdict.FAILED and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            verdicts = await custom_verdicts()
    finally:
        await provider.close()
    assert verdicts["few-upstream-errors"][0] is Verdict.FAILED
    assert verdicts["few-upstream-errors"][1] is not None and verdicts["few-upstream-errors"][1] >= 50
    assert verdicts["bounded-upstream-errors"][0] is Verdict.PASSED
    assert verdicts["many-upstream-errors"][0] is Verdict.FAILED
