"""The inputs an ONNX model is warmed up with before it counts as loaded (model_server.runtime.onnx)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from model_server.runtime.onnx import warmup_inputs


def node(name: str, kind: str, shape: list[Any]) -> Any:
    return SimpleNamespace(name=name, type=kind, shape=shape)


def test_dynamic_dimensions_get_one_row_and_fixed_ones_are_kept() -> None:
    warm = warmup_inputs([node("input", "tensor(float)", ["batch", 64]), node("mask", "tensor(int64)", [None, 3, -1])])
    assert warm is not None
    assert warm["input"].shape == (1, 64) and warm["input"].dtype == np.float32
    assert warm["mask"].shape == (1, 3, 1) and warm["mask"].dtype == np.int64
    assert not warm["input"].any() and not warm["mask"].any()


def test_a_model_with_an_input_without_a_zero_is_not_warmed_up() -> None:
    assert warmup_inputs([node("input", "tensor(float)", [1, 4]), node("text", "tensor(string)", [1])]) is None
