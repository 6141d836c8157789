"""HTTP requests made by hypothesis against the router, on both data planes, in front of real model servers.

Each request is well-formed HTTP/1.1 with anything inside: any method, a path the router serves or not,
odd headers (the sticky header included), bodies of random bytes, broken JSON or inference requests of the
wrong shape. The router never answers 5xx to them (a bad request is the client's: 4xx), and all of them
travel on one keep-alive connection, which the router never drops.
"""

from __future__ import annotations

import http.client
import json
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from modelrollout.devcluster import process
from modelrollout.devcluster.modelservers import ModelServer

pytestmark = pytest.mark.integration

EXAMPLES = 150
"""Requests per data plane: bounded, and the same every run."""
STICKY = "x-user"
FAULTS_TOKEN = "drill-token-4f1c"
FAULTS = {"MODELSERVER_FAULTS_ENABLED": "true", "MODELSERVER_FAULTS_TOKEN": FAULTS_TOKEN}
"""Both colours take faults, from a caller holding the token: the router must still refuse that path."""
FEEDBACK_TOKEN = "feedback-token-7d30"
"""The rollout's feedback token, as the operator gives it to the router and both colours."""
ENV = {**FAULTS, "MODELSERVER_FEEDBACK_TOKEN": FEEDBACK_TOKEN}


@pytest.fixture(scope="module")
def servers(demo_models: Path) -> Iterator[tuple[ModelServer, ModelServer]]:
    with (
        ModelServer(demo_models / "digits-fp32.onnx", colour="blue", env=ENV) as blue,
        ModelServer(demo_models / "digits-int8.onnx", version="v2", colour="green", env=ENV) as green,
    ):
        yield blue, green


@pytest.fixture(scope="module", params=["python", "nginx"])
def router(request: pytest.FixtureRequest, servers: tuple[ModelServer, ModelServer]) -> Iterator[str]:
    """A router at 50% green with a sticky header; yields its host:port."""
    blue, green = servers
    port = process.free_port()
    running = process.start(
        f"router-fuzz-{request.param}",
        [
            sys.executable,
            "-m",
            "model_server.router",
            "--blue-url",
            blue.url,
            "--green-url",
            green.url,
            "--port",
            str(port),
            "--weight",
            "50",
            "--sticky-header",
            STICKY,
            "--data-plane",
            request.param,
            "--feedback-per-second",
            "1",  # bursts of 2: a flood of feedback meets the limit on any machine
            "--log-format",
            "json",
        ],
        log_dir=Path(blue.log_dir),
        env={"MODELROUTER_FEEDBACK_TOKEN": FEEDBACK_TOKEN},
    )
    address = f"{process.LOOPBACK}:{port}"
    try:
        process.wait_until(
            lambda: httpx.get(f"http://{address}/readyz", timeout=1).status_code == 200,
            timeout=30,
            what="router",
            alive=lambda: running.poll() is None,
        )
        yield address
    finally:
        process.stop(running.pid)
        running.poll()


def tensor(shape: list[int], datatype: str, data: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(
        tensor,
        st.lists(st.integers(-2, 70), max_size=3),
        st.sampled_from(["FP32", "INT64", "BYTES", "fp32", "", "FP16"]),
        st.lists(st.floats(allow_nan=False, width=32) | st.text(max_size=3), max_size=70),
    ).map(lambda v: json.dumps(v).encode()),
    st.builds(lambda id_, labels: {"id": id_, "labels": labels}, json_values, json_values).map(
        lambda v: json.dumps(v).encode()
    ),
)
paths = st.one_of(
    st.sampled_from(
        [
            "/v2/models/digits/infer",
            "/v2/models/digits/versions/v1/infer",
            "/v2/models/digits/feedback",
            "/v2/models/nope/infer",
            "/v2/models/digits",
            "/v2/health/ready",
            "/v1/completions",
            "/v1/chat/completions",
            "/v1/models",
            "/metrics",
            "/router/state",
            "/v2/faults",
            "/",
        ]
    ),
    # any path, percent-encoded as a well-formed request target is
    st.text(max_size=30).map(lambda p: "/" + urllib.parse.quote(p, safe="/-_.~")),
)
header_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
        "path": paths,
        "body": bodies,
        "content_type": st.sampled_from(
            ["application/json", "application/octet-stream", "text/plain", "application/json; charset=utf-8", ""]
        ),
        "sticky": st.none() | header_value,
        "binary_header": st.none() | st.integers(-5, 400).map(str) | header_value,
    }
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # a failure is reported as found: shrinking over HTTP takes minutes
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests)
def test_bad_requests_get_4xx_on_a_connection_that_stays_open(router: str, request: dict[str, Any]) -> None:
    connection = _connections.setdefault(router, http.client.HTTPConnection(router, timeout=30))
    headers = {"Content-Length": str(len(request["body"]))}
    if request["content_type"]:
        headers["Content-Type"] = request["content_type"]
    if request["sticky"] is not None:
        headers[STICKY] = request["sticky"]
    if request["binary_header"] is not None:
        headers["Inference-Header-Content-Length"] = request["binary_header"]
    connection.request(request["method"], request["path"], body=request["body"], headers=headers)
    response = connection.getresponse()
    answer = response.read()
    assert response.status < 500, f"{request['method']} {request['path']}: {response.status} {answer[:300]!r}"
    assert (response.getheader("Connection") or "").lower() != "close", "the router closed the connection"
    assert connection.sock is not None, "the connection was dropped"


_connections: dict[str, http.client.HTTPConnection] = {}
"""One keep-alive connection per router for all its examples (a dropped one fails the next request)."""


def test_a_well_formed_inference_still_works_after_the_fuzzing(router: str, demo_models: Path) -> None:
    """The router and the model servers behind it are unharmed."""
    x = np.load(demo_models / "digits-stream.npz")["inputs"][0]
    answer = httpx.post(f"http://{router}/v2/models/digits/infer", json=tensor([1, 64], "FP32", x.tolist()))
    assert answer.status_code == 200 and answer.json()["model_version"] in {"v1", "v2"}


def test_feedback_needs_the_rollouts_token_through_the_router_and_at_the_model_servers(
    router: str, servers: tuple[ModelServer, ModelServer], demo_models: Path
) -> None:
    """Labels decide the accuracy gate: without the token nobody may send them, on either path."""
    x = np.load(demo_models / "digits-stream.npz")["inputs"][0]
    answer = httpx.post(f"http://{router}/v2/models/digits/infer", json=tensor([1, 64], "FP32", x.tolist()))
    assert answer.status_code == 200
    label = {"id": answer.json()["id"], "labels": [0]}
    for refused in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {FEEDBACK_TOKEN}"}):
        through = httpx.post(f"http://{router}/v2/models/digits/feedback", json=label, headers=refused)
        assert through.status_code == 401 and through.headers["www-authenticate"] == "Bearer", refused
        for server in servers:  # nor straight to a model server (its Service is reachable in the cluster)
            direct = httpx.post(f"{server.url}/v2/models/digits/feedback", json=label, headers=refused)
            assert direct.status_code == 401, (server.colour, refused, direct.text)
    bearer = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
    accepted = httpx.post(f"http://{router}/v2/models/digits/feedback", json=label, headers=bearer)
    assert accepted.status_code == 200, accepted.text  # the router passed the token on to the colour


def test_a_flood_of_feedback_is_answered_429_and_unauthorised_calls_spend_nothing(router: str) -> None:
    bearer = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
    unknown = {"id": "no-such-id", "labels": [0]}
    with httpx.Client(base_url=f"http://{router}") as client:
        statuses = [client.post("/v2/models/digits/feedback", json=unknown, headers=bearer) for _ in range(40)]
        anonymous = client.post("/v2/models/digits/feedback", json=unknown)
    limited = [answer for answer in statuses if answer.status_code == 429]
    assert limited and all(answer.headers["retry-after"] == "1" for answer in limited)
    assert {answer.status_code for answer in statuses} <= {404, 429}  # the rest reached a model server
    assert anonymous.status_code == 401  # refused before the limit: it cannot use up the token holders' share
    refused = [line for line in httpx.get(f"http://{router}/metrics").text.splitlines() if "feedback_refused" in line]
    assert any('reason="rate_limited"' in line and not line.endswith(" 0.0") for line in refused), refused
    assert any('reason="unauthorized"' in line and not line.endswith(" 0.0") for line in refused), refused


def test_a_body_over_16_mib_is_answered_413(router: str) -> None:
    """Both data planes bound what they read of a request (nginx: client_max_body_size; python: MAX_BODY_BYTES)."""
    oversized = b"0" * (16 * 1024 * 1024 + 1)
    answer = httpx.post(f"http://{router}/v2/models/digits/infer", content=oversized, timeout=60)
    assert answer.status_code == 413
    assert "over the limit" not in answer.text, "the model server refused it: the router read it all and sent it on"
    assert httpx.get(f"http://{router}/readyz", timeout=5).status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/v2/faults", "/v2//faults", "/v2/%66aults", "/v2/./faults", "/v2/x/../faults", "/v2/faults/", "//v2/faults"],
)
def test_fault_injection_is_refused_through_the_router_even_with_the_token(
    router: str, servers: tuple[ModelServer, ModelServer], path: str
) -> None:
    """The token opens /v2/faults on a model server's own port; the router answers 403 however the path is
    spelled, and the faults stay as they were."""
    bearer = {"Authorization": f"Bearer {FAULTS_TOKEN}"}
    for server in servers:  # the same call straight to a model server succeeds
        direct = httpx.post(f"{server.url}/v2/faults", json={"error_rate": 0.0}, headers=bearer)
        assert direct.status_code == 200, direct.text
    connection = http.client.HTTPConnection(router, timeout=30)  # sends the path exactly as written
    try:
        for method in ("POST", "GET"):
            connection.request(method, path, body=b'{"error_rate": 1.0}', headers=bearer)
            response = connection.getresponse()
            answer = response.read()
            assert response.status == 403, f"{method} {path}: {response.status} {answer[:200]!r}"
    finally:
        connection.close()
    for server in servers:
        assert httpx.get(f"{server.url}/v2/faults", headers=bearer).json()["error_rate"] == 0.0
