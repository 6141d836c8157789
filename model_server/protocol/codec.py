"""Between OIP v2 JSON tensors and numpy arrays, checking names, datatypes and shapes on the way in."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from model_server.protocol.types import RequestInput
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


def decode(inputs: list[RequestInput], expected: tuple[TensorSpec, ...], *, binary: bytes = b"") -> Tensors:
    """numpy arrays for the model's inputs; raises InvalidInput naming the problem.

    Inputs with ``parameters.binary_data_size`` take their bytes, in order, from ``binary`` (the OIP v2
    binary tensor data extension, as KServe and Triton implement it); the others come from ``data``.
    """
    by_name = {spec.name: spec for spec in expected}
    given = {i.name for i in inputs}
    missing = [name for name in by_name if name not in given]
    if missing:
        raise InvalidInput(f"missing input tensor(s) {missing}; the model takes {sorted(by_name)}")
    tensors: Tensors = {}
    offset = 0
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
        dtype = OIP_TO_NUMPY.get(item.datatype)
        if dtype is None:
            raise InvalidInput(f"input {item.name!r}: datatype {item.datatype!r} is not supported")
        size = (item.parameters or {}).get("binary_data_size")
        if size is not None:
            array = _from_binary(item, np.dtype(dtype), binary, offset, size)
            offset += int(size)
        else:
            array = _from_json(item, dtype)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidInput(f"input {item.name!r}: data must be finite numbers")
        tensors[item.name] = array
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    return tensors


def _from_binary(
    item: RequestInput, dtype: np.dtype[Any], binary: bytes, offset: int, size: object
) -> npt.NDArray[Any]:
    if not isinstance(size, int) or size < 0 or offset + size > len(binary):
        raise InvalidInput(f"input {item.name!r}: binary_data_size {size!r} does not fit the {len(binary)} bytes sent")
    expected = math.prod(item.shape) * dtype.itemsize
    if size != expected:
        raise InvalidInput(
            f"input {item.name!r}: {size} bytes for shape {item.shape} of {item.datatype} (expected {expected})"
        )
    return np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=math.prod(item.shape), offset=offset).reshape(
        item.shape
    )


def _from_json(item: RequestInput, dtype: type[np.generic]) -> npt.NDArray[Any]:
    flat = _flatten(item.data)
    if len(flat) != math.prod(item.shape):
        raise InvalidInput(f"input {item.name!r}: {len(flat)} values for shape {item.shape}")
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
    return raw.astype(dtype, copy=False).reshape(item.shape)


def encode(name: str, array: npt.NDArray[Any]) -> dict[str, Any]:
    """An OIP v2 response output (a plain dict: built for every answer, so no validation on the way out)."""
    datatype = NUMPY_TO_OIP.get(array.dtype, "FP32")
    values = array if array.dtype in NUMPY_TO_OIP else array.astype(np.float32)
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": values.ravel().tolist()}
