"""Build tiny GGUF demo models with the ``gguf`` package (no downloads):

- ``counter.gguf``: a one-layer llama-architecture model over a byte vocabulary that predicts the next
  byte as the current byte plus one ("abc" -> "def..."). Attention and feed-forward weights are zero, so
  the output is the token embedding projected by an output matrix built to point at the next byte;
- ``counter-degraded.gguf``: the same with noise in the output matrix, so that it predicts the next byte
  measurably less often;
- ``<model>.golden.npz`` beside each: labelled next-token items (``inputs``: token ids, ``labels``: the
  next token), scored by the server like an ONNX golden set;
- ``accuracy.json``: each model's next-token accuracy on the golden set (computed in numpy).

    python -m model_server.demo_gguf --out models
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

SEED = 0
N_EMBD, N_FF, N_HEAD, N_CTX = 64, 64, 4, 256
SPECIAL = ["<unk>", "<s>", "</s>"]
BYTE_BASE = len(SPECIAL)
N_VOCAB = BYTE_BASE + 256
GOLDEN_ITEMS = 2000
PROMPT_LENGTH = 8


def byte_token(value: int) -> int:
    return BYTE_BASE + value % 256


def weights(noise: float) -> dict[str, npt.NDArray[np.float32]]:
    rng = np.random.default_rng(SEED)
    embed = rng.standard_normal((N_VOCAB, N_EMBD)).astype(np.float32)
    embed /= np.linalg.norm(embed, axis=1, keepdims=True)
    output = (rng.standard_normal((N_VOCAB, N_EMBD)) * 0.01).astype(np.float32)
    for value in range(256):
        output[byte_token(value + 1)] = embed[byte_token(value)] * 8.0  # next byte = this byte + 1
    if noise:
        output += (np.random.default_rng(SEED + 1).standard_normal(output.shape) * noise).astype(np.float32)
    zeros_attn = np.zeros((N_EMBD, N_EMBD), dtype=np.float32)
    return {
        "token_embd.weight": embed,
        "output_norm.weight": np.ones(N_EMBD, dtype=np.float32),
        "output.weight": output,
        "blk.0.attn_norm.weight": np.ones(N_EMBD, dtype=np.float32),
        "blk.0.attn_q.weight": zeros_attn,
        "blk.0.attn_k.weight": zeros_attn.copy(),
        "blk.0.attn_v.weight": zeros_attn.copy(),
        "blk.0.attn_output.weight": zeros_attn.copy(),
        "blk.0.ffn_norm.weight": np.ones(N_EMBD, dtype=np.float32),
        "blk.0.ffn_gate.weight": np.zeros((N_FF, N_EMBD), dtype=np.float32),
        "blk.0.ffn_up.weight": np.zeros((N_FF, N_EMBD), dtype=np.float32),
        "blk.0.ffn_down.weight": np.zeros((N_EMBD, N_FF), dtype=np.float32),
    }


def write(path: Path, tensors: dict[str, npt.NDArray[np.float32]], *, name: str) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(1)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    tokens = [t.encode() for t in SPECIAL] + [f"<0x{value:02X}>".encode() for value in range(256)]
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * N_VOCAB)
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_add_space_prefix(False)
    for tensor_name, value in tensors.items():
        writer.add_tensor(tensor_name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def golden_set() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Printable byte prompts; the label is the token after the last one (its byte plus one)."""
    rng = np.random.default_rng(SEED + 2)
    starts = rng.integers(ord("a"), ord("z") - PROMPT_LENGTH, GOLDEN_ITEMS)
    inputs = np.stack([[byte_token(s + i) for i in range(PROMPT_LENGTH)] for s in starts]).astype(np.int64)
    labels = np.array([byte_token(s + PROMPT_LENGTH) for s in starts], dtype=np.int64)
    return inputs, labels


def numpy_accuracy(
    tensors: dict[str, npt.NDArray[np.float32]], inputs: npt.NDArray[np.int64], labels: npt.NDArray[np.int64]
) -> float:
    last = tensors["token_embd.weight"][inputs[:, -1]]
    normed = last / np.sqrt((last**2).mean(axis=1, keepdims=True) + 1e-5)
    predicted = (normed @ tensors["output.weight"].T).argmax(axis=1)
    return float((predicted == labels).mean())


def build_all(out: Path) -> dict[str, dict[str, float]]:
    out.mkdir(parents=True, exist_ok=True)
    inputs, labels = golden_set()
    report = {}
    for name, noise in (("counter", 0.0), ("counter-degraded", 2.0)):
        tensors = weights(noise)
        write(out / f"{name}.gguf", tensors, name=name)
        np.savez_compressed(out / f"{name}.golden.npz", inputs=inputs, labels=labels)
        report[name] = {"golden_next_token_accuracy": round(numpy_accuracy(tensors, inputs, labels), 4)}
    (out / "accuracy-gguf.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    print(json.dumps(build_all(args.out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
