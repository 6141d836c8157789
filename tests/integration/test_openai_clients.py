"""Real clients judge the model server's protocols: the official ``openai`` package on the OpenAI-style
endpoints of a GGUF server (completions and chat, plain and streamed, the model list, errors), and NVIDIA's
``tritonclient`` on the OIP v2 endpoints of an ONNX server.

Streaming is also checked on an in-process server whose model hands out one piece of text and then waits
for the test: the first chunk must reach the client while the model is still generating, and a client
that leaves, or a model that fails, mid-stream must be counted as such."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import openai
import pytest
import tritonclient.http as triton
import uvicorn
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from model_server.batching import DirectPredictor
from model_server.faults import Faults
from model_server.feedback import PredictionStore
from model_server.metrics import ServerMetrics
from model_server.protocol import rest
from model_server.protocol.dataplane import DataPlane
from model_server.runtime.base import Completion, ModelMetadata, Tensors, TensorSpec, TextSink
from modelrollout.devcluster import process
from modelrollout.devcluster.modelservers import ModelServer

pytestmark = pytest.mark.integration

CHAT_TEMPLATE = "{% for message in messages %}{{ message.content }}{% endfor %}"
"""The counter model goes on from the conversation's text: "abc" -> "defgh"."""


@pytest.fixture(scope="module")
def counter_with_chat(gguf_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The counter demo model with a chat template (it ships none), written by the gguf package's own tool."""
    target = tmp_path_factory.mktemp("gguf") / "counter-chat.gguf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            str(gguf_models / "counter.gguf"),
            str(target),
            "--chat-template",
            CHAT_TEMPLATE,
            "--force",
        ],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture(scope="module")
def counter(counter_with_chat: Path) -> Iterator[ModelServer]:
    with ModelServer(counter_with_chat, name="counter", rollout="openai") as server:
        yield server


@pytest.fixture
def client(counter: ModelServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{counter.url}/v1", api_key="not-checked", max_retries=0, timeout=30) as client:
        yield client


# ---- OpenAI: answers in one piece


def test_completion(client: openai.OpenAI) -> None:
    answer = client.completions.create(model="counter", prompt="abc", max_tokens=5, temperature=0)
    assert answer.object == "text_completion" and answer.model == "counter"
    assert answer.choices[0].text == "defgh"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (3, 5, 8)


def test_chat(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="counter", messages=[{"role": "user", "content": "abc"}], max_tokens=5, temperature=0
    )
    assert answer.object == "chat.completion"
    message = answer.choices[0].message
    assert (message.role, message.content) == ("assistant", "defgh")
    assert answer.usage is not None and answer.usage.completion_tokens == 5
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 5


# ---- OpenAI: streamed answers


def test_streamed_completion_with_usage(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="counter", prompt="lmn", max_tokens=6, temperature=0)
    stream = client.completions.create(
        model="counter",
        prompt="lmn",
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    with_text = [c for c in chunks if c.choices and c.choices[0].text]
    assert len(with_text) > 1, "one chunk per token, not the whole answer at once"
    assert "".join(c.choices[0].text for c in with_text) == whole.choices[0].text == "opqrst"
    assert {c.id for c in chunks} == {chunks[0].id} and all(c.object == "text_completion" for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    *_, last = chunks
    assert last.choices == [] and last.usage is not None
    assert whole.usage is not None
    assert (
        (last.usage.prompt_tokens, last.usage.completion_tokens)
        == (3, 6)
        == (
            whole.usage.prompt_tokens,
            whole.usage.completion_tokens,
        )
    )
    assert last.usage.total_tokens == 9
    assert all(c.usage is None for c in chunks[:-1])


def test_streamed_chat_with_usage(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "ab"},
        {"role": "user", "content": "cd"},
    ]
    whole = client.chat.completions.create(model="counter", messages=messages, max_tokens=4, temperature=0)
    stream = client.chat.completions.create(
        model="counter",
        messages=messages,
        max_tokens=4,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) > 1
    assert "".join(contents) == whole.choices[0].message.content == "efgh"
    *_, finish, usage_chunk = chunks
    assert finish.choices[0].finish_reason == "length"
    assert usage_chunk.choices == [] and usage_chunk.usage is not None and whole.usage is not None
    assert usage_chunk.usage.completion_tokens == 4 == whole.usage.completion_tokens
    assert usage_chunk.usage.prompt_tokens == whole.usage.prompt_tokens > 0
    assert usage_chunk.usage.total_tokens == usage_chunk.usage.prompt_tokens + 4


def test_a_stream_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="counter", prompt="abc", max_tokens=3, temperature=0, stream=True))
    assert all(c.choices for c in chunks) and "".join(c.choices[0].text for c in chunks) == "def"


def test_streamed_requests_are_counted_and_timed(counter: ModelServer, client: openai.OpenAI) -> None:
    def samples() -> tuple[float, float]:
        text = process_metrics(counter)
        return (
            sample(text, "modelserver_requests_total", endpoint="chat", code_class="2xx"),
            sample(text, "modelserver_request_duration_seconds_count", endpoint="chat"),
        )

    before = samples()
    for _ in client.chat.completions.create(
        model="counter", messages=[{"role": "user", "content": "abc"}], max_tokens=3, stream=True
    ):
        pass
    # counted when the last event has gone, which may be just after the client read it
    process.wait_until(
        lambda: samples() == (before[0] + 1, before[1] + 1), timeout=30, what="the stream counted once, timed once"
    )


# ---- OpenAI: models and errors


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [(m.id, m.object, m.owned_by) for m in models.data] == [("counter", "model", "modelrollout")]
    assert models.data[0].created > 0
    assert client.models.retrieve("counter").id == "counter"


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as error:
        client.models.retrieve("gpt-4")
    assert "'gpt-4' is not served here" in error.value.message
    assert (error.value.code, error.value.type) == ("model_not_found", "invalid_request_error")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="abc")


def test_bad_request_carries_the_servers_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="counter", prompt="abc", max_tokens=0)
    body = error.value.body
    assert isinstance(body, dict)
    message = body["message"]
    assert "max_tokens" in message and "greater than or equal to 1" in message
    assert message in error.value.message
    assert (error.value.type, error.value.code, error.value.param) == (
        "invalid_request_error",
        "invalid_request",
        "max_tokens",
    )


def test_a_stream_that_cannot_start_is_an_http_error(client: openai.OpenAI) -> None:
    """A prompt beyond the context fails before the first token: an HTTP 400, not a broken stream."""
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="counter", prompt="a" * 3000, stream=True)
    assert error.value.code == "context_length_exceeded" and "context window" in error.value.message


# ---- streaming, in process: chunks leave while the model still generates


class GatedModel:
    """Hands out one piece of text, then waits for the test before the rest (or fails, when told to)."""

    chat_template = None
    ready = True

    def __init__(self) -> None:
        self.go_on = threading.Event()
        self.fail = False
        self.told_to_stop = threading.Event()

    def load(self) -> ModelMetadata:
        return ModelMetadata("gated", "test", (TensorSpec("x", "FP32", (-1,)),), (TensorSpec("y", "FP32", (-1,)),))

    def predict(self, inputs: Tensors) -> Tensors:
        raise NotImplementedError

    def unload(self) -> None:
        pass

    def complete(
        self, prompt: str, *, max_tokens: int, temperature: float, stop: list[str], on_text: TextSink | None = None
    ) -> Completion:
        assert on_text is not None
        on_text("first")
        if not self.go_on.wait(60):
            raise RuntimeError("the test never said to go on")
        if self.fail:
            raise RuntimeError("the model broke")
        if not on_text(" second"):
            self.told_to_stop.set()
        return Completion("first second", 1, 2, "stop", 0.0)

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        stop: list[str],
        on_text: TextSink | None = None,
    ) -> Completion:
        raise NotImplementedError


@pytest.fixture
def gated() -> Iterator[tuple[GatedModel, DataPlane, str]]:
    model = GatedModel()
    plane = DataPlane(
        runtime=model,
        predictor=DirectPredictor(model),
        metrics=ServerMetrics(rollout="gated", colour="blue", model="gated", version="v1"),
        store=PredictionStore(capacity=10, ttl=60),
        faults=Faults(enabled=False, latency_seconds=0, error_rate=0, wrong_rate=0),
        model_name="gated",
        model_version="v1",
        request_timeout=60,
    )
    plane.load()
    app = rest.build_app(plane, max_body_bytes=1 << 20, lifespan=None)
    port = process.free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host=process.LOOPBACK, port=port, log_level="warning", ws="none", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="gated-server", daemon=True)
    thread.start()
    try:
        process.wait_until(lambda: server.started, timeout=30, what="the in-process server")
        yield model, plane, f"http://{process.LOOPBACK}:{port}"
    finally:
        model.go_on.set()
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def gated_client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="not-checked", max_retries=0, timeout=30) as client:
        yield client


def requests_counted(registry: CollectorRegistry, code_class: str) -> float:
    labels = {"rollout": "gated", "colour": "blue", "model": "gated", "version": "v1"}
    value = registry.get_sample_value(
        "modelserver_requests_total", {**labels, "endpoint": "completions", "code_class": code_class}
    )
    return value or 0.0


def test_the_first_chunk_arrives_while_the_model_still_generates(gated: tuple[GatedModel, DataPlane, str]) -> None:
    model, plane, url = gated
    with gated_client(url) as client:
        stream = client.completions.create(model="gated", prompt="x", stream=True)
        chunks = iter(stream)
        assert next(chunks).choices[0].text == "first"  # the model is waiting for us: nothing was buffered
        model.go_on.set()
        rest_of_it = list(chunks)
    assert [c.choices[0].text for c in rest_of_it] == [" second", ""]
    assert rest_of_it[-1].choices[0].finish_reason == "stop"
    process.wait_until(lambda: requests_counted(plane.metrics.registry, "2xx") == 1, timeout=30, what="one 2xx")


def test_a_client_that_leaves_stops_the_generation_and_is_no_server_error(
    gated: tuple[GatedModel, DataPlane, str],
) -> None:
    model, plane, url = gated
    with gated_client(url) as client:
        stream = client.completions.create(model="gated", prompt="x", stream=True)
        assert next(iter(stream)).choices[0].text == "first"
        stream.close()
        process.wait_until(
            lambda: requests_counted(plane.metrics.registry, "4xx") == 1, timeout=30, what="the request counted 4xx"
        )
    model.go_on.set()
    assert model.told_to_stop.wait(30), "the model was not told to stop"
    assert requests_counted(plane.metrics.registry, "5xx") == 0


def test_a_model_that_fails_mid_stream_ends_it_with_an_error(gated: tuple[GatedModel, DataPlane, str]) -> None:
    model, plane, url = gated
    model.fail = True
    with gated_client(url) as client:
        chunks = iter(client.completions.create(model="gated", prompt="x", stream=True))
        assert next(chunks).choices[0].text == "first"
        model.go_on.set()
        with pytest.raises(openai.APIError) as error:
            list(chunks)
    assert "generation failed: RuntimeError: the model broke" in error.value.message
    process.wait_until(lambda: requests_counted(plane.metrics.registry, "5xx") == 1, timeout=30, what="one 5xx")


# ---- OIP v2 through tritonclient


@pytest.fixture(scope="module")
def digits(demo_models: Path) -> Iterator[ModelServer]:
    with ModelServer(demo_models / "digits-fp32.onnx", name="digits", rollout="triton") as server:
        yield server


@pytest.fixture
def triton_client(digits: ModelServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=digits.address, network_timeout=30)
    try:
        yield client
    finally:
        client.close()


def test_triton_health_and_metadata(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("digits")
    assert triton_client.get_server_metadata()["name"] == "modelrollout-model-server"
    metadata = triton_client.get_model_metadata("digits")
    assert metadata["name"] == "digits" and metadata["versions"] == ["v1"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert {o["name"]: o["shape"] for o in metadata["outputs"]} == {"label": [-1], "probabilities": [-1, 10]}


@pytest.fixture(scope="module")
def known_digits(demo_models: Path) -> tuple[np.ndarray, np.ndarray]:
    """Stream digits that the model, run by onnxruntime itself, classifies as their true label."""
    with np.load(demo_models / "digits-stream.npz") as data:
        inputs, labels = data["inputs"][:32], data["labels"][:32]
    session = ort.InferenceSession(str(demo_models / "digits-fp32.onnx"), providers=["CPUExecutionProvider"])
    right = session.run(["label"], {"input": inputs})[0] == labels
    assert right.sum() >= 8
    return inputs[right][:8], labels[right][:8]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_triton_inference_gives_the_known_labels(
    triton_client: triton.InferenceServerClient, known_digits: tuple[np.ndarray, np.ndarray], binary: bool
) -> None:
    inputs, labels = known_digits
    tensor = triton.InferInput("input", list(inputs.shape), "FP32")
    tensor.set_data_from_numpy(inputs, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("label", binary_data=binary),
        triton.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = triton_client.infer("digits", [tensor], outputs=outputs)
    assert result.as_numpy("label").tolist() == labels.tolist()
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (len(labels), 10)
    assert probabilities.argmax(axis=1).tolist() == labels.tolist()


def test_triton_malformed_request_is_a_client_error(triton_client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("input", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as error:
        triton_client.infer("digits", [tensor])
    assert error.value.status() == "400"
    assert "shape [1, 3], expected [-1, 64]" in str(error.value.message())
    with pytest.raises(InferenceServerException) as unknown:
        triton_client.get_model_metadata("no-such-model")
    assert unknown.value.status() == "404" and "not served here" in str(unknown.value.message())


def test_triton_extension_we_lack_is_a_readable_404(triton_client: triton.InferenceServerClient) -> None:
    """Triton's model-configuration extension is not served: the client says so instead of failing to
    parse a plain-text page."""
    with pytest.raises(InferenceServerException) as error:
        triton_client.get_model_config("digits")
    assert error.value.status() == "404" and "Not Found" in str(error.value.message())
    assert "decoding the response" not in str(error.value.message())


# ---- helpers


def process_metrics(server: ModelServer) -> str:
    return httpx.get(f"{server.url}/metrics", timeout=10).text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the series ``name`` whose labels include ``labels`` (0 when there is none yet)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
