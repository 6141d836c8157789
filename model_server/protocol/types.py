"""Open Inference Protocol v2 request and response bodies (the KServe / Triton REST shapes)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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


class CompletionRequest(_Body):
    """OpenAI-style /v1/completions (the subset a canary needs)."""

    model: str | None = None
    prompt: str = Field(min_length=1, max_length=100_000)
    max_tokens: int = Field(default=16, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0, le=2)
    stop: str | list[str] | None = None


class ChatMessage(_Body):
    role: str = Field(pattern="^(system|user|assistant)$")
    content: str


class ChatRequest(_Body):
    """OpenAI-style /v1/chat/completions."""

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(default=16, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0, le=2)
    stop: str | list[str] | None = None
