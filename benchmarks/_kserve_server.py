"""KServe's Python model server serving an ONNX model through onnxruntime, for the side-by-side benchmark.

Run with the interpreter of a virtual environment that has ``kserve`` (benchmarks/model_server_onnx.py
makes one): python _kserve_server.py MODEL_PATH NAME PORT [WORKERS]

It answers with every model output, named as the model names them, as our server does: both servers send
the same response for the same request.
"""

import logging
import sys

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.numpy_codec import from_np_dtype
from kserve.utils.utils import generate_uuid


class OnnxModel(Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.session: ort.InferenceSession | None = None
        self.output_names: list[str] = []
        self.load()

    def load(self) -> bool:
        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        assert self.session is not None
        inputs = {i.name: np.asarray(i.as_numpy(), dtype=np.float32) for i in payload.inputs}
        outputs = []
        for name, value in zip(self.output_names, self.session.run(self.output_names, inputs), strict=True):
            output = InferOutput(name=name, shape=list(value.shape), datatype=from_np_dtype(value.dtype))
            output.set_data_from_numpy(value, binary_data=False)
            outputs.append(output)
        return InferResponse(
            model_name=self.name, infer_outputs=outputs, response_id=payload.id if payload.id else generate_uuid()
        )


if __name__ == "__main__":
    path, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    # Production-like and like ours: no per-request access or latency log lines, no gRPC server.
    server = ModelServer(
        http_port=port, workers=workers, enable_grpc=False, enable_docs_url=False, enable_latency_logging=False
    )
    for noisy in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(noisy).disabled = True
    server.start([OnnxModel(name, path)])
