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


@pytest.fixture(scope="module")
def servers(demo_models: Path) -> Iterator[tuple[ModelServer, ModelServer]]:
    with (
        ModelServer(demo_models / "digits-fp32.onnx", colour="blue") as blue,
        ModelServer(demo_models / "digits-int8.onnx", version="v2", colour="green") as green,
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
            "--log-format",
            "json",
        ],
        log_dir=Path(blue.log_dir),
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


def test_a_body_over_16_mib_is_answered_413(router: str) -> None:
    """Both data planes bound what they read of a request (nginx: client_max_body_size; python: MAX_BODY_BYTES)."""
    oversized = b"0" * (16 * 1024 * 1024 + 1)
    answer = httpx.post(f"http://{router}/v2/models/digits/infer", content=oversized, timeout=60)
    assert answer.status_code == 413
    assert "over the limit" not in answer.text, "the model server refused it: the router read it all and sent it on"
    assert httpx.get(f"http://{router}/readyz", timeout=5).status_code == 200
