"""The wire protocols: Open Inference Protocol v2 types and codecs, the shared data plane, REST."""
