"""Between OIP v2 JSON tensors and numpy arrays, checking names, datatypes and shapes on the way in."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from model_server.protocol.types import RequestInput, ResponseOutput
from model_server.runtime.base import Tensors, TensorSpec

OIP_TO_NUMPY: dict[str, type[np.generic]] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
NUMPY_TO_OIP = {np.dtype(v): k for k, v in OIP_TO_NUMPY.items()}


class InvalidInput(ValueError):
    """The request does not fit the model; the message names the tensor and what is expected."""


def _flatten(data: list[Any]) -> list[Any]:
    """OIP v2 allows nested (row-major) or flat data; numbers come out flat."""
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def decode(inputs: list[RequestInput], expected: tuple[TensorSpec, ...]) -> Tensors:
    """numpy arrays for the model's inputs; raises InvalidInput naming the problem."""
    by_name = {spec.name: spec for spec in expected}
    given = {i.name for i in inputs}
    missing = [name for name in by_name if name not in given]
    if missing:
        raise InvalidInput(f"missing input tensor(s) {missing}; the model takes {sorted(by_name)}")
    tensors: Tensors = {}
    for item in inputs:
        spec = by_name.get(item.name)
        if spec is None:
            raise InvalidInput(f"unknown input tensor {item.name!r}; the model takes {sorted(by_name)}")
        if item.datatype != spec.datatype:
            raise InvalidInput(f"input {item.name!r}: datatype {item.datatype!r}, expected {spec.datatype!r}")
        if len(item.shape) != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, item.shape, strict=True)
        ):
            raise InvalidInput(f"input {item.name!r}: shape {item.shape}, expected {list(spec.shape)} (-1: any)")
        if any(d < 0 for d in item.shape):
            raise InvalidInput(f"input {item.name!r}: shape {item.shape} has a negative dimension")
        flat = _flatten(item.data)
        if len(flat) != math.prod(item.shape):
            raise InvalidInput(f"input {item.name!r}: {len(flat)} values for shape {item.shape}")
        dtype = OIP_TO_NUMPY.get(item.datatype)
        if dtype is None:
            raise InvalidInput(f"input {item.name!r}: datatype {item.datatype!r} is not supported")
        try:
            raw = np.asarray(flat)
        except (ValueError, TypeError) as error:
            raise InvalidInput(f"input {item.name!r}: data is not a flat list of numbers: {error}") from None
        if raw.size and raw.dtype.kind not in "biuf":
            raise InvalidInput(f"input {item.name!r}: data must be numbers, got {raw.dtype.kind!r} values")
        if raw.size and np.dtype(dtype).kind in "iu" and raw.dtype.kind in "iu":
            limits = np.iinfo(np.dtype(dtype))
            if raw.min() < limits.min or raw.max() > limits.max:
                raise InvalidInput(f"input {item.name!r}: values outside the range of {item.datatype}")
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            raise InvalidInput(f"input {item.name!r}: data must be finite numbers")
        array = raw.astype(dtype, copy=False).reshape(item.shape)
        tensors[item.name] = array
    return tensors


def encode(name: str, array: np.ndarray) -> ResponseOutput:
    datatype = NUMPY_TO_OIP.get(array.dtype, "FP32")
    values = array if array.dtype in NUMPY_TO_OIP else array.astype(np.float32)
    return ResponseOutput(name=name, shape=list(array.shape), datatype=datatype, data=values.ravel().tolist())
