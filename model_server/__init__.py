"""The bundled model server: one process serves one model version (ONNX or GGUF) for one colour."""
