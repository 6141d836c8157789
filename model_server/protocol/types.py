"""Open Inference Protocol v2 request and response bodies (the KServe / Triton REST shapes)."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RequestInput(_Body):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(default_factory=list)
    """Row-major values; empty when ``parameters.binary_data_size`` says they follow the JSON as bytes."""


class RequestOutput(_Body):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(_Body):
    id: str | None = Field(default=None, max_length=128)
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(_Body):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferenceResponse(_Body):
    model_name: str
    model_version: str | None = None
    id: str
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class Feedback(_Body):
    """The true label(s) of an earlier inference, joined by its ``id``."""

    id: str = Field(min_length=1, max_length=128)
    label: int | None = None
    labels: list[int] | None = None
    """One label per row of a batched inference."""


class TensorMetadata(_Body):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(_Body):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class StreamOptions(_Body):
    include_usage: bool = False
    """One more chunk before ``[DONE]`` carries the usage, as OpenAI sends it."""


class _GenerationRequest(_Body):
    model: str | None = None
    max_tokens: int = Field(default=16, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0, le=2)
    stop: str | list[str] | None = None
    stream: bool = False
    """Answer with server-sent events, one chunk per piece of text as it is generated."""
    stream_options: StreamOptions | None = None

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> Self:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else (self.stop or [])

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_GenerationRequest):
    """OpenAI-style /v1/completions (the subset a canary needs)."""

    prompt: str = Field(min_length=1, max_length=100_000)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: str = Field(pattern="^(system|user|assistant)$")
    content: str | list[TextPart]
    """Text, or a list of text parts (OpenAI's content parts; only text is understood)."""

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatRequest(_GenerationRequest):
    """OpenAI-style /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    """OpenAI's newer name for ``max_tokens``; wins when both are given."""

    @property
    def token_limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens
