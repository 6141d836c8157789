"""KServe's Python model server serving an ONNX model through onnxruntime, for the side-by-side benchmark.

Run with the interpreter of a virtual environment that has ``kserve`` (benchmarks/model_server_onnx.py
makes one): python _kserve_server.py MODEL_PATH NAME PORT
"""

import logging
import sys

import numpy as np
import onnxruntime as ort
from kserve import InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import get_predict_response


class OnnxModel(Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.session: ort.InferenceSession | None = None
        self.load()

    def load(self) -> bool:
        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        assert self.session is not None
        inputs = {i.name: np.asarray(i.as_numpy(), dtype=np.float32) for i in payload.inputs}
        names = [o.name for o in self.session.get_outputs()]
        outputs = self.session.run(names, inputs)
        return get_predict_response(payload, outputs[0], self.name)


if __name__ == "__main__":
    path, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # Production-like and like ours: no per-request access or latency log lines, no gRPC server.
    server = ModelServer(
        http_port=port, workers=1, enable_grpc=False, enable_docs_url=False, enable_latency_logging=False
    )
    for noisy in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(noisy).disabled = True
    server.start([OnnxModel(name, path)])
