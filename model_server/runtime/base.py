"""The Runtime interface: load a model, describe its tensors, predict, unload.

A runtime knows nothing of HTTP, metrics or batching; those wrap it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Tensors = dict[str, npt.NDArray[np.generic]]


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, OIP v2 datatype, and shape (-1 for a free dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    extra: dict[str, str] = field(default_factory=dict)


class InputRejected(ValueError):
    """The model cannot take this input (beyond what its metadata says): a 400 for the client."""


class ModelLoadError(RuntimeError):
    """The model file is missing, corrupt, or not what its checksum says: the server stays not-ready."""


class Runtime(Protocol):
    @property
    def ready(self) -> bool: ...

    def load(self) -> ModelMetadata:
        """Load the model; raises ModelLoadError with a message naming the problem."""
        ...

    def predict(self, inputs: Tensors) -> Tensors:
        """Run the model on a batch (the first dimension); thread-safe."""
        ...

    def unload(self) -> None: ...


@dataclass(frozen=True)
class Completion:
    """A finished generation and what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    time_to_first_token: float | None
    cached_tokens: int = 0
    """Prompt tokens not processed again, thanks to a held or saved prompt state."""


TextSink = Callable[[str], bool]
"""Takes each piece of generated text as it comes (on the generation thread); returning False stops the
generation: nobody is reading any more."""


@runtime_checkable
class TextGenerator(Protocol):
    """A runtime that also generates text (GGUF): what the OpenAI-style endpoints need."""

    @property
    def chat_template(self) -> str | None: ...

    def complete(
        self, prompt: str, *, max_tokens: int, temperature: float, stop: list[str], on_text: TextSink | None = None
    ) -> Completion:
        """Continue ``prompt``; raises ValueError for a request the model cannot take (a prompt too long)."""
        ...

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        stop: list[str],
        on_text: TextSink | None = None,
    ) -> Completion:
        """A chat turn with the model's own chat template."""
        ...
