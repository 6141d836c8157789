"""ONNX models on onnxruntime: CPU, or CUDA when onnxruntime-gpu and a GPU are present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_server.fetch import sha256_of
from model_server.runtime.base import ModelLoadError, ModelMetadata, Tensors, TensorSpec

# onnxruntime's tensor type names -> OIP v2 datatypes
ONNX_TO_OIP = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def _shape(dims: list[int | str | None]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)


WARMUP_RUNS = 3
"""Inferences on zeros before the model counts as loaded: onnxruntime allocates its memory arenas and picks
kernels on the first runs, so without them a just-started green's first requests are several times slower
than a warm blue's, and a p95 over a step's first requests compares cold with warm."""
NUMPY_OF_ONNX = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def warmup_inputs(inputs: list[ort.NodeArg]) -> Tensors | None:
    """Zeros for every input, one row where a dimension is dynamic (a pure function); None when an input's
    type has no zero here (strings): such a model is not warmed up."""
    warm: Tensors = {}
    for node in inputs:
        dtype = NUMPY_OF_ONNX.get(node.type)
        if dtype is None:
            return None
        warm[node.name] = np.zeros(tuple(d if d > 0 else 1 for d in _shape(node.shape)), dtype=dtype)
    return warm


class OnnxRuntime:
    def __init__(self, path: Path, *, name: str, sha256: str | None = None, threads: int = 0) -> None:
        self.path = path
        self.name = name
        self.sha256 = sha256
        self.threads = threads
        self._session: ort.InferenceSession | None = None
        self._output_names: list[str] = []

    @property
    def ready(self) -> bool:
        return self._session is not None

    def load(self) -> ModelMetadata:
        if not self.path.is_file():
            raise ModelLoadError(f"model file {self.path} does not exist")
        if self.sha256:
            actual = sha256_of(self.path)
            if actual != self.sha256:
                raise ModelLoadError(f"model file {self.path} has sha256 {actual}, expected {self.sha256}")
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for corrupt files
            raise ModelLoadError(f"model file {self.path} is not a loadable ONNX model: {error}") from error
        output_names = [o.name for o in session.get_outputs()]
        warm = warmup_inputs(session.get_inputs())
        if warm is not None:
            for _ in range(WARMUP_RUNS):
                try:
                    session.run(output_names, warm)
                except Exception:  # noqa: BLE001 - a model that refuses zeros is served cold, not refused
                    break
        self._session = session
        self._output_names = output_names
        return ModelMetadata(
            name=self.name,
            platform="onnxruntime_onnx",
            inputs=tuple(
                TensorSpec(i.name, ONNX_TO_OIP.get(i.type, i.type), _shape(i.shape)) for i in session.get_inputs()
            ),
            outputs=tuple(
                TensorSpec(o.name, ONNX_TO_OIP.get(o.type, o.type), _shape(o.shape)) for o in session.get_outputs()
            ),
            extra={"providers": ",".join(session.get_providers())},
        )

    def predict(self, inputs: Tensors) -> Tensors:
        session = self._session
        if session is None:
            raise ModelLoadError("model is not loaded")
        results = session.run(self._output_names, inputs)
        return {name: np.asarray(value) for name, value in zip(self._output_names, results, strict=True)}

    def unload(self) -> None:
        self._session = None
