"""A compute-heavy ONNX model for benchmarks: ResNet-50 (He et al., 2015) with random weights.

Written layer by layer with onnx.helper (no deep-learning framework needed); batch normalisation is
folded into the convolutions, as an exported inference model has it. Input ``input`` FP32 [N, 3, 224, 224],
output ``logits`` FP32 [N, 1000].

    python -m model_server.heavy_model --out models/resnet50.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))
"""ResNet-50: bottleneck width and number of blocks per stage."""


class Builder:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def conv(self, x: str, c_in: int, c_out: int, kernel: int, stride: int = 1, relu: bool = True) -> str:
        name = self._name("conv")
        scale = np.sqrt(2.0 / (c_in * kernel * kernel))
        w = (self.rng.standard_normal((c_out, c_in, kernel, kernel)) * scale).astype(np.float32)
        b = np.zeros(c_out, dtype=np.float32)
        self.weights += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
        pad = kernel // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}_w", f"{name}_b"],
                [name],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
            )
        )
        if not relu:
            return name
        out = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [name], [out]))
        return out

    def bottleneck(self, x: str, c_in: int, width: int, stride: int) -> str:
        c_out = width * 4
        y = self.conv(x, c_in, width, 1)
        y = self.conv(y, width, width, 3, stride)
        y = self.conv(y, width, c_out, 1, relu=False)
        shortcut = x if (stride == 1 and c_in == c_out) else self.conv(x, c_in, c_out, 1, stride, relu=False)
        added, out = self._name("add"), self._name("relu")
        self.nodes += [helper.make_node("Add", [y, shortcut], [added]), helper.make_node("Relu", [added], [out])]
        return out


def build(seed: int = 0) -> onnx.ModelProto:
    b = Builder(seed)
    x = b.conv("input", 3, 64, 7, 2)
    pooled = b._name("pool")
    b.nodes.append(helper.make_node("MaxPool", [x], [pooled], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, c_in = pooled, 64
    for stage, (width, blocks) in enumerate(STAGES):
        for block in range(blocks):
            x = b.bottleneck(x, c_in, width, stride=2 if block == 0 and stage > 0 else 1)
            c_in = width * 4
    gap, flat = b._name("gap"), b._name("flat")
    fc_w = (b.rng.standard_normal((c_in, 1000)) * 0.01).astype(np.float32)
    b.weights += [numpy_helper.from_array(fc_w, "fc_w"), numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b")]
    b.nodes += [
        helper.make_node("GlobalAveragePool", [x], [gap]),
        helper.make_node("Flatten", [gap], [flat], axis=1),
        helper.make_node("Gemm", [flat, "fc_w", "fc_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        b.nodes,
        "resnet50",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        b.weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelrollout-bench")
    model.ir_version = 8
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models/resnet50.onnx"))
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model = build()
    onnx.save(model, str(args.out))
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"wrote {args.out}: {params / 1e6:.1f}M parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
