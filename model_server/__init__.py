"""The bundled model server: one process serves one model version (ONNX or GGUF) for one colour."""

__version__ = "0.1.0"
