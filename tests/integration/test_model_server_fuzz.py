"""Property-based fuzzing of the real server's infer and feedback endpoints: no input makes it answer 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrollout.devcluster.modelservers import ModelServer

pytestmark = pytest.mark.integration

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True))
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["input", "x", ""]),
        "shape": st.lists(st.integers(min_value=-2, max_value=70), max_size=3),
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "INT8", "BYTES", "BOOL", "fp32", "X"]),
        "data": st.lists(
            st.one_of(numbers, st.text(max_size=3), st.none(), st.lists(numbers, max_size=3)), max_size=130
        ),
    },
    optional={"parameters": json_values},
)
infer_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"inputs": st.lists(tensors, max_size=3)},
        optional={"id": st.one_of(st.text(max_size=200), st.integers()), "outputs": json_values},
    ),
)
feedback_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(st.text(max_size=200), st.integers(), st.none()),
            "label": json_values,
            "labels": st.lists(numbers, max_size=5),
        },
    ),
)


@pytest.fixture(scope="module")
def server(demo_models: Path) -> Iterator[ModelServer]:
    with ModelServer(demo_models / "digits-fp32.onnx") as running:
        yield running


def post(server: ModelServer, path: str, body: Any) -> httpx.Response:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}{path}", content=payload, timeout=10)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=infer_bodies)
def test_infer_never_answers_5xx(server: ModelServer, body: Any) -> None:
    response = post(server, "/v2/models/digits/infer", body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=feedback_bodies)
def test_feedback_never_answers_5xx(server: ModelServer, body: Any) -> None:
    response = post(server, "/v2/models/digits/feedback", body)
    assert response.status_code < 500, response.text


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_never_answer_5xx(server: ModelServer, raw: bytes) -> None:
    assert post(server, "/v2/models/digits/infer", raw).status_code < 500
    assert server.log().count('"level": "error"') == 0
