"""Model-server parts without a process: codecs, validation, the feedback join, faults, batching."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from model_server.auth import feedback_refusal
from model_server.batching import BatchingPredictor, DirectPredictor
from model_server.faults import Faults
from model_server.feedback import Joined, JoinError, PredictionStore
from model_server.protocol import codec
from model_server.protocol.dataplane import Problem, parse_body
from model_server.protocol.types import InferenceRequest, RequestInput, ResponseOutput
from model_server.router.proxy import not_forwarded
from model_server.runtime.base import ModelLoadError, TensorSpec
from model_server.runtime.onnx import OnnxRuntime

SPEC = (TensorSpec("input", "FP32", (-1, 4)),)


def one(**overrides: object) -> list[RequestInput]:
    fields: dict[str, object] = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
    return [RequestInput.model_validate({**fields, **overrides})]


def test_decode_flat_and_nested_data() -> None:
    flat = codec.decode(one(), SPEC)["input"]
    nested = codec.decode(one(data=[[1, 2, 3, 4]]), SPEC)["input"]
    assert flat.dtype == np.float32 and flat.shape == (1, 4)
    assert np.array_equal(flat, nested)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"name": "x"}, "missing input tensor"),
        ({"datatype": "INT64"}, "datatype 'INT64', expected 'FP32'"),
        ({"shape": [1, 5], "data": [1, 2, 3, 4, 5]}, "shape [1, 5], expected [-1, 4]"),
        ({"shape": [2, 4]}, "4 values for shape [2, 4]"),
        ({"data": ["a", "b", "c", "d"]}, "must be numbers"),
        ({"data": [1, 2, None, 4]}, "must be numbers"),
        ({"data": [1, 2, float("nan"), 4]}, "finite"),
        ({"shape": [1, -4]}, "expected"),
    ],
)
def test_decode_names_the_problem(overrides: dict[str, object], words: str) -> None:
    with pytest.raises(codec.InvalidInput, match=words.replace("[", r"\[").replace("]", r"\]")):
        codec.decode(one(**overrides), SPEC)


def test_integer_values_out_of_range_are_rejected() -> None:
    with pytest.raises(codec.InvalidInput, match="outside the range of INT8"):
        codec.decode(one(datatype="INT8", data=[1, 2, 3, 300]), (TensorSpec("input", "INT8", (-1, 4)),))


def test_encode_round_trip() -> None:
    output = codec.encode("label", np.array([3, 4], dtype=np.int64))
    assert output == {"name": "label", "shape": [2], "datatype": "INT64", "data": [3, 4]}
    assert ResponseOutput.model_validate(output).model_dump(exclude_none=True) == output  # a valid OIP output


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{nope", 400, "malformed JSON"),
        (b"[1]", 400, "JSON object"),
        (b"{}", 400, "inputs"),
    ],
)
def test_parse_body_problems(body: bytes, status: int, words: str) -> None:
    with pytest.raises(Problem) as problem:
        parse_body(InferenceRequest, body)
    assert problem.value.status == status and words in problem.value.message


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_feedback_joins_once_and_counts_rows() -> None:
    store = PredictionStore(capacity=10, ttl=60, clock=Clock())
    store.remember("a", [1, 2, 3])
    assert store.join("a", [1, 2, 0]) == Joined(correct=2, incorrect=1)
    assert store.join("a", [1, 2, 3]) is JoinError.UNKNOWN_ID


def test_feedback_label_count_must_match() -> None:
    store = PredictionStore(capacity=10, ttl=60)
    store.remember("a", [1, 2])
    assert store.join("a", [1]) is JoinError.LABEL_COUNT


def test_feedback_memory_is_bounded_by_capacity_and_ttl() -> None:
    clock = Clock()
    store = PredictionStore(capacity=3, ttl=10, clock=clock)
    for index in range(5):
        store.remember(str(index), [index])
    assert len(store) == 3 and store.join("0", [0]) is JoinError.UNKNOWN_ID
    clock.now = 11
    assert store.join("3", [3]) is JoinError.EXPIRED
    assert store.expire() == 2 and len(store) == 0


def test_faults_are_off_unless_enabled() -> None:
    faults = Faults(enabled=False, error_rate=1.0, wrong_rate=1.0)
    assert not faults.should_fail()
    classes = np.array([1, 2, 3], dtype=np.int64)
    assert np.array_equal(faults.corrupt(classes, 10), classes)


def test_wrong_predictions_are_always_a_different_class() -> None:
    faults = Faults(enabled=True, wrong_rate=1.0)
    classes = np.arange(10, dtype=np.int64)
    assert (faults.corrupt(classes, 10) != classes).all()


def test_the_faults_endpoint_admits_only_its_bearer_token() -> None:
    assert not Faults(enabled=True).admits("Bearer anything")  # no token configured: closed to everyone
    assert not Faults(enabled=True, token="").admits("Bearer ")
    faults = Faults(enabled=True, token="s3cret")
    assert faults.admits("Bearer s3cret") and faults.admits("bearer s3cret")
    for wrong in (None, "", "s3cret", "Bearer", "Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "Bearers3cret"):
        assert not faults.admits(wrong), wrong
    assert "s3cret" not in repr(faults)


@pytest.mark.parametrize(
    ("required", "token", "authorization", "refused"),
    [
        (False, None, None, None),  # a server run by hand, without a token: open
        (False, "", "Bearer x", None),
        (False, "t0k", None, 401),
        (False, "t0k", "Bearer t0k", None),
        (True, "t0k\n", "Bearer t0k", None),  # a Secret made from a file ends in a newline
        (True, "t0k", "Bearer t0k ", None),
        (True, "t0k", "Bearer t0", 401),
        (True, None, "Bearer anything", 503),  # the Secret was missing when the Pod started: closed, not open
        (True, "", "Bearer ", 503),
        (True, " \n", "Bearer  ", 503),
    ],
)
def test_feedback_is_taken_only_with_the_token_once_one_is_required(
    required: bool, token: str | None, authorization: str | None, refused: int | None
) -> None:
    refusal = feedback_refusal(required=required, token=token, authorization=authorization)
    assert (refusal[0] if refusal else None) == refused


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ("/v2/faults", True),
        ("/v2//faults", True),
        ("/v2/./faults/", True),
        ("/v2/x/../faults", True),
        ("//v2/faults", True),
        ("/_mirror/v2/faults", True),  # a mirrored copy is sent on to the model servers as well
        ("/v2/faultsx", False),
        ("/v2/models/faults/infer", False),
        ("/v2/models/digits/feedback", False),
    ],
)
def test_the_router_refuses_fault_injection_however_it_is_spelled(path: str, refused: bool) -> None:
    assert not_forwarded(path) is refused


def test_faults_update_is_validated() -> None:
    with pytest.raises(ValueError, match="error_rate must be between 0 and 1"):
        Faults(enabled=True).update(latency_seconds=None, error_rate=2.0, wrong_rate=None)


def test_onnx_runtime_rejects_a_checksum_mismatch(demo_models: Path) -> None:
    runtime = OnnxRuntime(demo_models / "digits-fp32.onnx", name="digits", sha256="0" * 64)
    with pytest.raises(ModelLoadError, match="expected 0000"):
        runtime.load()
    assert not runtime.ready


def test_onnx_runtime_rejects_a_corrupt_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        OnnxRuntime(corrupt, name="x").load()


def test_onnx_metadata_comes_from_the_model(demo_models: Path) -> None:
    metadata = OnnxRuntime(demo_models / "digits-int8.onnx", name="digits").load()
    assert metadata.inputs == (TensorSpec("input", "FP32", (-1, 64)),)
    assert [o.name for o in metadata.outputs] == ["label", "probabilities"]


async def test_batching_merges_concurrent_requests_and_splits_answers(demo_models: Path) -> None:
    runtime = OnnxRuntime(demo_models / "digits-fp32.onnx", name="digits")
    runtime.load()
    stream = np.load(demo_models / "digits-stream.npz")
    rows = [stream["inputs"][i : i + 1] for i in range(32)]
    batching = BatchingPredictor(runtime, max_batch_size=16, max_wait_seconds=0.05)
    direct = DirectPredictor(runtime)
    try:
        batched = await asyncio.gather(*(batching.predict({"input": row}) for row in rows))
        alone = [await direct.predict({"input": row}) for row in rows]
    finally:
        await batching.close()
        await direct.close()
    assert batching.batches <= 4  # 32 single-row requests in batches of up to 16
    for mine, reference in zip(batched, alone, strict=True):
        assert np.array_equal(mine["label"], reference["label"])
        assert mine["probabilities"].shape == (1, 10)


class ThreadRecorder:
    """A runtime that records which thread each of its calls ran on."""

    def __init__(self, runtime: OnnxRuntime) -> None:
        self.runtime = runtime
        self.threads: list[str] = []

    @property
    def ready(self) -> bool:
        return True

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.current_thread().name)
        return self.runtime.predict(inputs)


async def test_a_fast_model_runs_inline_even_when_measured_under_load(demo_models: Path) -> None:
    runtime = OnnxRuntime(demo_models / "digits-fp32.onnx", name="digits")
    runtime.load()
    model = ThreadRecorder(runtime)
    direct = DirectPredictor(model, workers=1)
    row = {"input": np.load(demo_models / "digits-stream.npz")["inputs"][:1]}
    try:
        # the first calls measure the model's cost: 64 at once, each waiting behind the others for the one
        # worker thread far longer than the 10 us the model takes
        await asyncio.gather(*(direct.predict(row) for _ in range(64)))
        model.threads.clear()
        await direct.predict(row)
    finally:
        await direct.close()
    assert model.threads == [threading.current_thread().name]


def test_binary_tensor_data_extension() -> None:
    values = np.arange(8, dtype=np.float32)
    item = RequestInput.model_validate(
        {"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}
    )
    decoded = codec.decode([item], SPEC, binary=values.tobytes())["input"]
    assert np.array_equal(decoded, values.reshape(2, 4))


@pytest.mark.parametrize(
    ("size", "payload", "words"),
    [
        (16, np.arange(4, dtype=np.float32).tobytes(), "16 bytes for shape"),
        (64, np.arange(8, dtype=np.float32).tobytes(), "does not fit"),
        (32, np.arange(12, dtype=np.float32).tobytes(), "not claimed"),
    ],
)
def test_binary_tensor_data_errors(size: int, payload: bytes, words: str) -> None:
    item = RequestInput.model_validate(
        {"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": size}}
    )
    with pytest.raises(codec.InvalidInput, match=words):
        codec.decode([item], SPEC, binary=payload)
