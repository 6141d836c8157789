"""The Runtime interface: load a model, describe its tensors, predict, unload.

A runtime knows nothing of HTTP, metrics or batching; those wrap it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

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
