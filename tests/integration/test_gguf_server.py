"""The GGUF runtime on llama.cpp, in the real server: completions, next-token prediction through OIP v2,
golden-set accuracy per model, and bad generation requests answered 4xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_server.demo_gguf import byte_token
from modelrollout.devcluster.modelservers import ModelServer
from modelrollout.devcluster.prometheus import PrometheusServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def counter(gguf_models: Path) -> Iterator[ModelServer]:
    with ModelServer(
        gguf_models / "counter.gguf",
        name="counter",
        golden_set=gguf_models / "counter.golden.npz",
        env={"MODELSERVER_GOLDEN_WAIT_FOR_SCRAPE_SECONDS": "0"},
    ) as server:
        yield server


def test_completion_counts_up(counter: ModelServer) -> None:
    answer = httpx.post(
        f"{counter.url}/v1/completions",
        json={"model": "counter", "prompt": "abc", "max_tokens": 5, "temperature": 0},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "defgh"
    assert body["usage"]["completion_tokens"] == 5
    metrics = httpx.get(f"{counter.url}/metrics").text
    tokens = [line for line in metrics.splitlines() if line.startswith("modelserver_generated_tokens_total{")]
    assert tokens and float(tokens[0].split()[-1]) >= 5
    assert "modelserver_time_to_first_token_seconds_count{" in metrics


def test_next_token_through_oip_v2(counter: ModelServer) -> None:
    rows = [[byte_token(ord(c)) for c in "hello"], [byte_token(ord(c)) for c in "abcde"]]
    answer = httpx.post(
        f"{counter.url}/v2/models/counter/infer",
        json={"inputs": [{"name": "input_ids", "shape": [2, 5], "datatype": "INT64", "data": rows}]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [byte_token(ord("p")), byte_token(ord("f"))]


def complete(server: ModelServer, prompt: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": "counter", "prompt": prompt, "max_tokens": 3, "temperature": 0},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def cached_tokens_metric(server: ModelServer) -> float:
    metrics = httpx.get(f"{server.url}/metrics").text
    lines = [line for line in metrics.splitlines() if line.startswith("modelserver_prompt_cached_tokens_total{")]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_a_prompt_seen_before_is_not_processed_again(counter: ModelServer) -> None:
    prompt = "prompt cache: a prompt long enough to be worth keeping"
    first = complete(counter, prompt)
    complete(counter, "something else entirely")  # the context now holds another prompt
    before = cached_tokens_metric(counter)
    again = complete(counter, prompt)
    assert again["choices"][0]["text"] == first["choices"][0]["text"]
    # restored from the saved state: everything but the last prompt token, whose logits are computed again
    reused = again["usage"]["prompt_tokens"] - 1
    assert reused > 10 and again["usage"]["prompt_tokens_details"]["cached_tokens"] == reused
    assert cached_tokens_metric(counter) - before == reused


def test_without_a_prompt_cache_the_prompt_is_processed_again(gguf_models: Path) -> None:
    with ModelServer(gguf_models / "counter.gguf", name="counter", env={"MODELSERVER_PROMPT_CACHE_MIB": "0"}) as server:
        prompt = "prompt cache off: the whole prompt is processed"
        complete(server, prompt)
        complete(server, "something else entirely")
        assert complete(server, prompt)["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/v1/completions", {"prompt": ""}, "prompt"),
        ("/v1/completions", {"prompt": "a", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"prompt": "a", "model": "other"}, "not served"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "no chat template"),
        (
            "/v2/models/counter/infer",
            {"inputs": [{"name": "input_ids", "shape": [1, 1], "datatype": "INT64", "data": [99999]}]},
            "token ids",
        ),
    ],
)
def test_bad_generation_requests_get_4xx(counter: ModelServer, path: str, body: dict[str, object], words: str) -> None:
    answer = httpx.post(f"{counter.url}{path}", content=json.dumps(body), timeout=30)
    assert 400 <= answer.status_code < 500, answer.text
    error = answer.json()["error"]
    if path.startswith("/v1/"):  # OpenAI's error shape
        assert words in error["message"] and error["type"] == "invalid_request_error", answer.text
    else:  # OIP v2's
        assert words in error, answer.text


def test_degraded_model_is_measurably_less_accurate(gguf_models: Path, prometheus_server: PrometheusServer) -> None:
    servers = [
        ModelServer(
            gguf_models / f"{name}.gguf",
            name="counter",
            version=name,
            rollout="gguf",
            colour=colour,
            golden_set=gguf_models / f"{name}.golden.npz",
        )
        for name, colour in (("counter", "blue"), ("counter-degraded", "green"))
    ]
    for server in servers:
        server.start()
        prometheus_server.add_target(server.address)
    try:
        for server in servers:
            prometheus_server.wait_for_target(server.address)

        def accuracy(colour: str) -> float | None:
            result = prometheus_server.query(f'modelserver_golden_accuracy_ratio{{rollout="gguf", colour="{colour}"}}')
            return float(result[0]["value"][1]) if result else None

        import time

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (accuracy("blue") in (None, 0.0) or accuracy("green") in (None, 0.0)):
            time.sleep(1)
        blue, green = accuracy("blue"), accuracy("green")
        assert blue == 1.0
        assert green is not None and 0.5 < green < 0.95
    finally:
        for server in servers:
            prometheus_server.remove_target(server.address)
            server.stop()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
            max_leaves=20,
        ),
        st.fixed_dictionaries(
            {},
            optional={
                "prompt": st.text(max_size=40),
                "max_tokens": st.integers(-5, 40),
                "temperature": st.floats(allow_nan=False, allow_infinity=False),
                "stop": st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3))),
                "model": st.sampled_from(["counter", "x"]),
                "stream": st.one_of(st.booleans(), st.text(max_size=3)),
                "stream_options": st.one_of(st.none(), st.fixed_dictionaries({"include_usage": st.booleans()})),
            },
        ),
    )
)
def test_completions_never_answer_5xx(counter: ModelServer, body: object) -> None:
    answer = httpx.post(f"{counter.url}/v1/completions", content=json.dumps(body), timeout=30)
    assert answer.status_code < 500, answer.text
