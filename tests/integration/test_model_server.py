"""The real model server, scraped by the real Prometheus: per-colour latency, errors and accuracy come out
of PromQL as the operator's analysis reads them, and fault injection moves them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from model_server.protocol.types import InferenceResponse
from modelrollout.analysis import run
from modelrollout.analysis.prometheus import PrometheusProvider
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.devcluster.modelservers import ModelServer
from modelrollout.devcluster.prometheus import PrometheusServer

pytestmark = pytest.mark.integration
FAULTS_TOKEN = "drill-token-9b2e"
"""Green's fault-injection token (in a cluster it comes from a Secret)."""


def labelled_traffic(
    server: ModelServer, stream: dict[str, np.ndarray], *, requests: int, rows: int = 8, offset: int = 0
) -> dict[int, int]:
    """Send inference with the true labels fed back; returns responses by status code."""
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for index in range(requests):
            start = offset + index * rows
            x, y = stream["inputs"][start : start + rows], stream["labels"][start : start + rows]
            body = {
                "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
            }
            response = client.post("/v2/models/digits/infer", json=body)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                answer = InferenceResponse.model_validate(response.json()).model_dump()
                feedback = client.post("/v2/models/digits/feedback", json={"id": answer["id"], "labels": y.tolist()})
                assert feedback.status_code == 200, feedback.text
    return statuses


@pytest.fixture
def colours(
    demo_models: Path, prometheus_server: PrometheusServer, request: pytest.FixtureRequest
) -> Iterator[tuple[ModelServer, ModelServer, str]]:
    rollout = request.node.name.replace("_", "-")[:40]
    blue = ModelServer(
        demo_models / "digits-fp32.onnx",
        version="v1",
        rollout=rollout,
        colour="blue",
        golden_set=demo_models / "digits-fp32.golden.npz",
    )
    green = ModelServer(
        demo_models / "digits-2bit.onnx",
        version="v2",
        rollout=rollout,
        colour="green",
        golden_set=demo_models / "digits-2bit.golden.npz",
        env={"MODELSERVER_FAULTS_ENABLED": "true", "MODELSERVER_FAULTS_TOKEN": FAULTS_TOKEN},
    )
    with blue, green:
        for server in (blue, green):
            prometheus_server.add_target(server.address)
        for server in (blue, green):
            prometheus_server.wait_for_target(server.address)
        yield blue, green, rollout
        for server in (blue, green):
            prometheus_server.remove_target(server.address)


async def measure(prometheus_server: PrometheusServer, rollout: str) -> dict[str, run.checks.ColourMetrics]:
    spec = ModelRolloutSpec.model_validate(
        {
            "blue": {"model": {"uri": "file:///b", "version": "v1"}},
            "green": {"model": {"uri": "file:///g", "version": "v2"}},
            "analysis": {"window": "30s"},
        }
    )
    provider = PrometheusProvider(prometheus_server.url)
    try:
        return await run.measure(provider, spec, namespace="default", rollout=rollout, canary_age_seconds=60)
    finally:
        await provider.close()


async def test_per_colour_metrics_reach_the_analysis(
    colours: tuple[ModelServer, ModelServer, str], prometheus_server: PrometheusServer, demo_models: Path
) -> None:
    blue, green, rollout = colours
    stream = dict(np.load(demo_models / "digits-stream.npz"))
    assert labelled_traffic(blue, stream, requests=150) == {200: 150}
    assert labelled_traffic(green, stream, requests=150, offset=5000) == {200: 150}
    # increase() extrapolates the last scrape to the query's time at the series' rate: with k scrapes after the
    # traffic that adds up to 1/k of it, so four scrapes keep it within a quarter (ratios are what checks use)
    prometheus_server.wait_for_scrapes(blue.address, green.address, count=4)
    metrics = await measure(prometheus_server, rollout)
    blue_m, green_m = metrics["blue"], metrics["green"]
    assert 140 <= blue_m.requests <= 210 and 140 <= green_m.requests <= 210
    assert blue_m.server_errors == 0 and green_m.server_errors == 0
    assert blue_m.p95_seconds is not None and blue_m.p95_seconds > 0
    # 1200 fed-back rows per colour (golden-set outcomes are not evidence for the sequential accuracy test);
    # the 2-bit model is several points worse
    assert 0.9 * 1200 <= blue_m.labelled <= 1.4 * 1200
    assert blue_m.golden_accuracy is not None and green_m.golden_accuracy is not None
    assert blue_m.golden_accuracy > green_m.golden_accuracy
    assert blue_m.correct / blue_m.labelled == pytest.approx(0.975, abs=0.015)
    assert green_m.correct / green_m.labelled == pytest.approx(0.925, abs=0.02)


async def test_fault_injection_moves_errors_and_latency(
    colours: tuple[ModelServer, ModelServer, str], prometheus_server: PrometheusServer, demo_models: Path
) -> None:
    blue, green, rollout = colours
    stream = dict(np.load(demo_models / "digits-stream.npz"))
    faults = {"error_rate": 0.5, "latency_seconds": 0.2}
    for refused in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": FAULTS_TOKEN}):
        answer = httpx.post(f"{green.url}/v2/faults", json=faults, headers=refused)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer", refused
    assert httpx.get(f"{green.url}/v2/faults").status_code == 401
    bearer = {"Authorization": f"Bearer {FAULTS_TOKEN}"}
    assert httpx.get(f"{green.url}/v2/faults", headers=bearer).json()["error_rate"] == 0  # refusals changed nothing
    changed = httpx.post(f"{green.url}/v2/faults", json=faults, headers=bearer)
    assert changed.json()["error_rate"] == 0.5
    statuses = labelled_traffic(green, stream, requests=60, rows=1)
    assert set(statuses) == {200, 500} and 15 <= statuses[500] <= 45
    assert httpx.post(f"{blue.url}/v2/faults", json={"error_rate": 1}, headers=bearer).status_code == 403  # off
    prometheus_server.wait_for_scrapes(blue.address, green.address)
    green_m = (await measure(prometheus_server, rollout))["green"]
    assert green_m.server_errors / green_m.requests == pytest.approx(statuses[500] / 60, abs=0.1)
    assert green_m.p95_seconds is not None and green_m.p95_seconds > 0.15


def test_bad_requests_get_4xx_and_the_server_keeps_serving(demo_models: Path) -> None:
    with (
        ModelServer(demo_models / "digits-fp32.onnx", env={"MODELSERVER_MAX_BODY_BYTES": "10000"}) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        assert client.post("/v2/models/other/infer", json={}).status_code == 404
        assert client.post("/v2/models/digits/infer", content=b"x" * 20_000).status_code == 413
        assert client.post("/v2/models/digits/infer", content=b"{").status_code == 400
        wrong = client.post(
            "/v2/models/digits/infer",
            json={"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
        )
        assert wrong.status_code == 400 and "expected [-1, 64]" in wrong.json()["error"]
        unknown = client.post("/v2/models/digits/feedback", json={"id": "nope", "label": 1})
        assert unknown.status_code == 404
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/models/digits").json()["inputs"][0]["shape"] == [-1, 64]
        digit = np.zeros((1, 64), dtype=np.float32)
        header = json.dumps(
            {
                "inputs": [
                    {"name": "input", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}
                ]
            }
        ).encode()
        binary = client.post(
            "/v2/models/digits/infer",
            content=header + digit.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        assert binary.status_code == 200 and binary.json()["outputs"][0]["name"] == "label"
        assert "modelserver_feedback_rejected_total{" in client.get("/metrics").text


def test_checksum_mismatch_keeps_the_server_not_ready(demo_models: Path) -> None:
    server = ModelServer(demo_models / "digits-fp32.onnx", env={"MODELSERVER_MODEL_SHA256": "0" * 64})
    server.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{server.url}/v2/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503
        answer = httpx.post(f"{server.url}/v2/models/digits/infer", json={"inputs": []})
        assert answer.status_code == 503 and "sha256" in answer.json()["error"]
    finally:
        server.stop()
