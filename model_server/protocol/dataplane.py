"""The data plane shared by every endpoint: validate, infer, generate, remember predictions, join feedback.

Handlers pass bytes in and get (status, body) out; every failure is a ``Problem`` with the HTTP status
and a message naming what is wrong, never an unhandled exception.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import orjson
import structlog
from pydantic import BaseModel, ValidationError

from model_server import faults as faults_module
from model_server.batching import Predictor
from model_server.feedback import Joined, JoinError, PredictionStore
from model_server.golden import GoldenSet
from model_server.metrics import ServerMetrics
from model_server.protocol import codec, openai_api
from model_server.protocol.generation import Generate, LiveGeneration
from model_server.protocol.problem import Problem
from model_server.protocol.types import (
    ChatRequest,
    CompletionRequest,
    Feedback,
    InferenceRequest,
    ModelMetadataResponse,
    TensorMetadata,
)
from model_server.runtime.base import (
    Completion,
    InputRejected,
    ModelLoadError,
    ModelMetadata,
    Runtime,
    Tensors,
    TextGenerator,
    TextSink,
)

log = structlog.get_logger(__name__)

__all__ = ["Answer", "DataPlane", "Problem", "Stream", "parse_body"]


@dataclass(frozen=True)
class Stream:
    """A streamed answer: its chunks, made as the text is generated, and how to stop the generation when
    nobody reads any more (whoever serves the chunks calls ``stop`` once done, in every case)."""

    chunks: AsyncIterator[dict[str, Any]]
    stop: Callable[[], None]


Answer = dict[str, Any] | Stream
"""A JSON body, or a stream of them."""


_JOIN_STATUS = {
    JoinError.UNKNOWN_ID: (404, "no prediction with this id is kept (never made, already labelled, or evicted)"),
    JoinError.EXPIRED: (410, "the prediction with this id is older than the feedback TTL"),
    JoinError.LABEL_COUNT: (400, "the number of labels differs from the number of predicted rows"),
}


Body = TypeVar("Body", bound=BaseModel)


def parse_body(model: type[Body], body: bytes) -> Body:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise Problem(400, f"malformed JSON: {error}") from None
    if not isinstance(raw, dict):
        raise Problem(400, f"the body must be a JSON object, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        errors = error.errors()
        details = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in errors[:5])
        raise Problem(400, f"invalid {model.__name__}: {details}", param=_field(errors[0]["loc"])) from None


def _field(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "body"


def _num_classes(outputs: Tensors, classes: npt.NDArray[np.int64]) -> int:
    """Classes the model can predict: the width of a score output, else one more than the largest seen."""
    for value in outputs.values():
        if value.dtype.kind == "f" and value.ndim >= 2:
            return int(value.shape[-1])
    return max(2, int(classes.max(initial=0)) + 2)


class DataPlane:
    def __init__(
        self,
        *,
        runtime: Runtime,
        predictor: Predictor,
        metrics: ServerMetrics,
        store: PredictionStore,
        faults: faults_module.Faults,
        model_name: str,
        model_version: str,
        request_timeout: float,
        prediction_output: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.predictor = predictor
        self.metrics = metrics
        self.store = store
        self.faults = faults
        self.model_name = model_name
        self.model_version = model_version
        self.request_timeout = request_timeout
        self.prediction_output = prediction_output
        self.metadata: ModelMetadata | None = None
        self.load_error: str | None = None
        self.created = int(time.time())
        """When this server took up its model (OpenAI's ``created`` of a model)."""

    @property
    def ready(self) -> bool:
        return self.metadata is not None and self.runtime.ready

    def load(self) -> None:
        try:
            self.metadata = self.runtime.load()
        except ModelLoadError as error:
            self.load_error = str(error)
            log.error("model not loaded", error=self.load_error)
        self.metrics.set_ready(self.ready)

    def _check_model(self, name: str, version: str | None = None) -> ModelMetadata:
        if name != self.model_name:
            raise Problem(404, f"model {name!r} is not served here; this server serves {self.model_name!r}")
        if version is not None and version != self.model_version:
            raise Problem(404, f"model {name!r} version {version!r} is not served; this is {self.model_version!r}")
        if self.metadata is None or not self.runtime.ready:
            raise Problem(503, f"model {name!r} is not ready: {self.load_error or 'loading'}")
        return self.metadata

    def model_metadata(self, name: str) -> dict[str, Any]:
        metadata = self._check_model(name)
        return ModelMetadataResponse(
            name=metadata.name,
            versions=[self.model_version],
            platform=metadata.platform,
            inputs=[TensorMetadata(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in metadata.inputs],
            outputs=[TensorMetadata(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in metadata.outputs],
        ).model_dump()

    def _class_output(self, outputs: Tensors) -> str:
        if self.prediction_output:
            return self.prediction_output
        for name, value in outputs.items():
            if value.dtype.kind in "iu":
                return name
        return next(iter(outputs))

    def _classes(self, outputs: Tensors) -> tuple[str, npt.NDArray[np.int64]]:
        name = self._class_output(outputs)
        value = outputs[name]
        if value.dtype.kind in "iu":
            return name, value.reshape(len(value), -1)[:, 0].astype(np.int64)
        return name, np.asarray(value.reshape(len(value), -1).argmax(axis=1), dtype=np.int64)

    async def _run(self, inputs: Tensors) -> Tensors:
        try:
            return await asyncio.wait_for(self.predictor.predict(inputs), self.request_timeout)
        except TimeoutError:
            raise Problem(504, f"inference took longer than {self.request_timeout}s", timed_out=True) from None
        except Problem:
            raise
        except InputRejected as error:
            raise Problem(400, str(error)) from None
        except Exception as error:
            log.exception("inference failed")
            raise Problem(500, f"inference failed: {type(error).__name__}: {error}") from None

    async def infer(
        self, name: str, body: bytes, *, version: str | None = None, header_length: int | None = None
    ) -> dict[str, Any]:
        """``header_length``: the JSON part's length when binary tensor data follows it."""
        metadata = self._check_model(name, version)
        if header_length is not None and not 0 < header_length <= len(body):
            raise Problem(400, f"Inference-Header-Content-Length {header_length} does not fit a {len(body)}-byte body")
        json_part, binary = (body, b"") if header_length is None else (body[:header_length], body[header_length:])
        request = parse_body(InferenceRequest, json_part)
        try:
            inputs = codec.decode(request.inputs, metadata.inputs, binary=binary)
        except codec.InvalidInput as error:
            raise Problem(400, str(error)) from None
        if self.faults.enabled and self.faults.latency_seconds > 0:
            await asyncio.sleep(self.faults.latency_seconds)
        if self.faults.should_fail():
            raise Problem(500, "injected fault (fault injection is enabled on this server)")
        outputs = await self._run(inputs)
        class_name, classes = self._classes(outputs)
        if self.faults.enabled and self.faults.wrong_rate > 0:
            classes = self.faults.corrupt(classes, _num_classes(outputs, classes))
            if outputs[class_name].dtype.kind in "iu":
                outputs[class_name] = classes.reshape(outputs[class_name].shape).astype(outputs[class_name].dtype)
        request_id = request.id or uuid.uuid4().hex
        class_list = classes.tolist()
        self.store.remember(request_id, class_list)
        self.metrics.predicted(class_list)
        wanted = [o.name for o in request.outputs] if request.outputs else list(outputs)
        unknown = [n for n in wanted if n not in outputs]
        if unknown:
            raise Problem(400, f"unknown output(s) {unknown}; the model produces {sorted(outputs)}")
        # the InferenceResponse shape, built directly: validating our own answer on every request costs time
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "id": request_id,
            "outputs": [codec.encode(n, outputs[n]) for n in wanted],
        }

    def feedback(self, name: str, body: bytes) -> dict[str, Any]:
        self._check_model(name)
        feedback = parse_body(Feedback, body)
        labels = (
            feedback.labels
            if feedback.labels is not None
            else ([feedback.label] if feedback.label is not None else None)
        )
        if not labels:
            self.metrics.rejected("no_label")
            raise Problem(400, "feedback needs 'label' (one row) or 'labels' (one per row)")
        joined = self.store.join(feedback.id, labels)
        if not isinstance(joined, Joined):
            self.metrics.rejected(joined.value)
            status, message = _JOIN_STATUS[joined]
            raise Problem(status, f"feedback for id {feedback.id!r}: {message}")
        self.metrics.labelled(source="feedback", correct=joined.correct, incorrect=joined.incorrect)
        return {"id": feedback.id, "correct": joined.correct, "incorrect": joined.incorrect}

    def _generator(self, name: str | None) -> TextGenerator:
        if name is not None and name != self.model_name:
            raise self._not_served(name)
        self._check_model(self.model_name)
        if not isinstance(self.runtime, TextGenerator):
            raise self._not_a_generator()
        return self.runtime

    def _not_served(self, name: str) -> Problem:
        message = f"model {name!r} is not served here; this server serves {self.model_name!r}"
        return Problem(404, message, code="model_not_found", param="model")

    def _not_a_generator(self) -> Problem:
        message = f"model {self.model_name!r} does not generate text (it is not a GGUF model)"
        return Problem(404, message, code="model_not_found", param="model")

    def models(self) -> dict[str, Any]:
        """OpenAI's model list: the model served here, if it generates text."""
        cards = [self.model(self.model_name)] if isinstance(self.runtime, TextGenerator) else []
        return openai_api.model_list(cards)

    def model(self, name: str) -> dict[str, Any]:
        """OpenAI's model card, for the model served here when it generates text."""
        if name != self.model_name:
            raise self._not_served(name)
        if not isinstance(self.runtime, TextGenerator):
            raise self._not_a_generator()
        return openai_api.model_card(name=name, created=self.created)

    async def complete(self, body: bytes) -> Answer:
        """OpenAI-style text completion; streamed chunks when the request asks for a stream."""
        request = parse_body(CompletionRequest, body)
        runtime = self._generator(request.model)

        def generate(on_text: TextSink) -> Completion:
            return runtime.complete(
                request.prompt,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                stop=request.stops,
                on_text=on_text,
            )

        if request.stream:
            chunks = openai_api.Chunks(chat=False, model=self.model_name, include_usage=request.include_usage)
            return await self._stream(generate, chunks)
        return openai_api.completion(model=self.model_name, done=await self._generate(generate))

    async def chat(self, body: bytes) -> Answer:
        """OpenAI-style chat completion, for models that ship a chat template."""
        request = parse_body(ChatRequest, body)
        runtime = self._generator(request.model)
        if runtime.chat_template is None:
            raise Problem(400, f"model {self.model_name!r} has no chat template: use /v1/completions")
        messages = [{"role": m.role, "content": m.text} for m in request.messages]

        def generate(on_text: TextSink) -> Completion:
            return runtime.chat(
                messages,
                max_tokens=request.token_limit,
                temperature=request.temperature,
                stop=request.stops,
                on_text=on_text,
            )

        if request.stream:
            chunks = openai_api.Chunks(chat=True, model=self.model_name, include_usage=request.include_usage)
            return await self._stream(generate, chunks)
        return openai_api.chat_completion(model=self.model_name, done=await self._generate(generate))

    async def _generate(self, generate: Generate) -> Completion:
        done = await LiveGeneration(generate, timeout=self.request_timeout).finish()
        self._count_generation(done)
        return done

    async def _stream(self, generate: Generate, chunks: openai_api.Chunks) -> Stream:
        """Chunks as the text is generated. The first piece is awaited here, so that a request that fails
        before any text (a prompt too long, a timeout) is still answered with an HTTP error."""
        live = LiveGeneration(generate, timeout=self.request_timeout)
        try:
            first = await live.first_piece()
        except BaseException:
            live.stop()
            raise
        return Stream(self._chunks(live, first, chunks), live.stop)

    async def _chunks(
        self, live: LiveGeneration, first: str | None, chunks: openai_api.Chunks
    ) -> AsyncIterator[dict[str, Any]]:
        for chunk in chunks.opening():
            yield chunk
        piece = first
        while piece is not None:
            yield chunks.text(piece)
            piece = await live.next_piece()
        done = await live.result()
        self._count_generation(done)
        for chunk in chunks.closing(done):
            yield chunk

    def _count_generation(self, done: Completion) -> None:
        if done.time_to_first_token is not None:
            self.metrics.ttft.labels(**self.metrics_base).observe(done.time_to_first_token)
        self.metrics.tokens.labels(**self.metrics_base).inc(done.completion_tokens)
        self.metrics.cached_prompt_tokens.labels(**self.metrics_base).inc(done.cached_tokens)

    @property
    def metrics_base(self) -> dict[str, str]:
        m = self.metrics
        return {"rollout": m.rollout, "colour": m.colour, "model": m.model, "version": m.version}

    async def score_golden(self, golden: GoldenSet, *, count: bool) -> float:
        """Accuracy on the golden set; counted as labelled outcomes when ``count``."""
        metadata = self._check_model(self.model_name)
        input_name = metadata.inputs[0].name
        correct = total = 0
        for batch, labels in golden.batches():
            outputs = await self.predictor.predict({input_name: batch})
            _, classes = self._classes(outputs)
            if self.faults.enabled and self.faults.wrong_rate > 0:
                classes = self.faults.corrupt(classes, _num_classes(outputs, classes))
            correct += int((classes == labels).sum())
            total += len(labels)
        if count:
            self.metrics.labelled(source="golden", correct=correct, incorrect=total - correct)
        accuracy = correct / total if total else float("nan")
        self.metrics.set_golden_accuracy(accuracy)
        return accuracy
