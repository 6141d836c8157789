"""Build the demo models from scikit-learn's bundled digits data (no downloads):

- ``digits-fp32.onnx``: a small MLP classifier (64 -> 64 -> 10), float32 weights;
- ``digits-int8.onnx``: the same weights quantized to 8 bits per output column (within a point of fp32);
- ``digits-2bit.onnx``: the same weights quantized to 2 bits per output column (several points worse);
- ``<model>.golden.npz`` beside each: the held-out test split, labelled;
- ``digits-stream.npz``: a labelled stream of noisy test digits for load generators;
- ``accuracy.json``: each model's accuracy on the golden set and the stream.

Each model takes ``input`` (FP32, [N, 64], raw pixel values 0..16) and returns ``label`` (INT64, [N])
and ``probabilities`` (FP32, [N, 10]).

    python -m model_server.demo_models --out models
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

Array = npt.NDArray[np.float32]
SEED = 0
STREAM_SIZE = 20_000


def train() -> tuple[MLPClassifier, Array, npt.NDArray[np.int64], Array]:
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)
    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=SEED)
    model.fit(x_train / 16.0, y_train)
    return model, x_test, y_test, x_train


def stream(x_test: Array, y_test: npt.NDArray[np.int64], size: int) -> tuple[Array, npt.NDArray[np.int64]]:
    """Fresh labelled digits: test images with sensor-like noise, so that no two requests are the same."""
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, len(y_test), size)
    noisy = np.clip(x_test[picks] + rng.normal(0, 1.0, (size, 64)), 0, 16).astype(np.float32)
    return noisy, y_test[picks]


def _quantize(weights: Array, *, bits: int) -> tuple[npt.NDArray[np.int8], Array]:
    """Per-column symmetric quantization: int values and their float scale (value * scale ~ weight).

    8 bits scale by the largest weight of a column; 2 bits (levels -2, -1, 0, 1) by its standard
    deviation, the usual choice when so few levels must cover the bulk of the weights.
    """
    low, top = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    spread = weights.std(axis=0) if bits <= 2 else np.abs(weights).max(axis=0) / top
    scale = np.maximum(spread, 1e-8).astype(np.float32)
    return np.clip(np.round(weights / scale), low, top).astype(np.int8), scale


def build_onnx(model: MLPClassifier, *, bits: int | None) -> onnx.ModelProto:
    """The MLP as an ONNX graph; with ``bits``, weights are stored quantized and dequantized at run time."""
    nodes = [helper.make_node("Mul", ["input", "pixel_scale"], ["x0"])]
    initializers = [numpy_helper.from_array(np.array(1 / 16, dtype=np.float32), "pixel_scale")]
    layer_input = "x0"
    for index, (weights, bias) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        w_name = f"w{index}"
        if bits is None:
            initializers.append(numpy_helper.from_array(weights.astype(np.float32), w_name))
        else:
            values, scale = _quantize(weights.astype(np.float32), bits=bits)
            initializers += [
                numpy_helper.from_array(values, f"{w_name}_q"),
                numpy_helper.from_array(scale, f"{w_name}_scale"),
            ]
            nodes.append(helper.make_node("DequantizeLinear", [f"{w_name}_q", f"{w_name}_scale"], [w_name], axis=1))
        initializers.append(numpy_helper.from_array(bias.astype(np.float32), f"b{index}"))
        nodes += [
            helper.make_node("MatMul", [layer_input, w_name], [f"m{index}"]),
            helper.make_node("Add", [f"m{index}", f"b{index}"], [f"a{index}"]),
        ]
        last = index == len(model.coefs_) - 1
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{index}"], [f"h{index}"]))
        layer_input = f"a{index}" if last else f"h{index}"
    nodes += [
        helper.make_node("Softmax", [layer_input], ["probabilities"], axis=1),
        helper.make_node("ArgMax", [layer_input], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10]),
        ],
        initializers,
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelrollout-demo-models"
    )
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    return onnx_model


def accuracy_of(path: Path, x: Array, y: npt.NDArray[np.int64]) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels = session.run(["label"], {"input": x})[0]
    return float((labels == y).mean())


def build_all(out: Path) -> dict[str, dict[str, float]]:
    out.mkdir(parents=True, exist_ok=True)
    model, x_test, y_test, _ = train()
    x_stream, y_stream = stream(x_test, y_test, STREAM_SIZE)
    np.savez_compressed(out / "digits-stream.npz", inputs=x_stream, labels=y_stream)
    variants = {"digits-fp32": None, "digits-int8": 8, "digits-2bit": 2}
    report = {}
    for name, bits in variants.items():
        path = out / f"{name}.onnx"
        onnx.save(build_onnx(model, bits=bits), str(path))
        np.savez_compressed(out / f"{name}.golden.npz", inputs=x_test, labels=y_test)
        report[name] = {
            "golden_accuracy": round(accuracy_of(path, x_test, y_test), 4),
            "stream_accuracy": round(accuracy_of(path, x_stream, y_stream), 4),
        }
    (out / "accuracy.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    print(json.dumps(build_all(args.out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
