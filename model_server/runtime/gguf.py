"""GGUF models on llama.cpp (through llama-cpp-python): text completion, and next-token prediction as
an OIP v2 tensor call so that golden sets and feedback measure a language model's accuracy too.

OIP v2 view: input ``input_ids`` (INT64, [N, T]) -> output ``next_token`` (INT64, [N]), the most likely
next token after each row.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_server.runtime.base import InputRejected, ModelLoadError, ModelMetadata, Tensors, TensorSpec
from model_server.runtime.onnx import sha256_of
from model_server.runtime.prompt_cache import PromptCache


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    time_to_first_token: float | None
    cached_tokens: int = 0
    """Prompt tokens not processed again, thanks to a held or saved prompt state."""


class GgufRuntime:
    def __init__(
        self,
        path: Path,
        *,
        name: str,
        sha256: str | None = None,
        n_ctx: int = 2048,
        threads: int = 0,
        prompt_cache_bytes: int = 256 * 2**20,
    ) -> None:
        self.path = path
        self.name = name
        self.sha256 = sha256
        self.n_ctx = n_ctx
        self.threads = threads
        self.prompt_cache_bytes = prompt_cache_bytes
        self._llm: Any = None
        self._lock = threading.Lock()
        """llama.cpp contexts are not thread-safe: one call at a time."""

    @property
    def ready(self) -> bool:
        return self._llm is not None

    @property
    def chat_template(self) -> str | None:
        metadata: dict[str, str] = getattr(self._llm, "metadata", {}) or {}
        return metadata.get("tokenizer.chat_template")

    def load(self) -> ModelMetadata:
        if not self.path.is_file():
            raise ModelLoadError(f"model file {self.path} does not exist")
        if self.sha256 and (actual := sha256_of(self.path)) != self.sha256:
            raise ModelLoadError(f"model file {self.path} has sha256 {actual}, expected {self.sha256}")
        try:
            from model_server.runtime.gguf_llama import CachingLlama
        except ImportError as error:
            raise ModelLoadError("the GGUF runtime needs llama-cpp-python: pip install 'modelrollout[gguf]'") from error
        try:
            # flash attention, as llama-server has it: about 7% less time per generated token on CPU
            # (Gemma 3 270M, 2 threads)
            self._llm = CachingLlama(
                model_path=str(self.path),
                n_ctx=self.n_ctx,
                n_threads=self.threads or None,
                flash_attn=True,
                prompt_cache=PromptCache(self.prompt_cache_bytes),
                verbose=False,
            )
        except (ValueError, RuntimeError) as error:
            raise ModelLoadError(f"model file {self.path} is not a loadable GGUF model: {error}") from error
        return ModelMetadata(
            name=self.name,
            platform="llama_cpp_gguf",
            inputs=(TensorSpec("input_ids", "INT64", (-1, -1)),),
            outputs=(TensorSpec("next_token", "INT64", (-1,)),),
            extra={"n_ctx": str(self.n_ctx), "chat_template": str(self.chat_template is not None).lower()},
        )

    def predict(self, inputs: Tensors) -> Tensors:
        ids = inputs["input_ids"]
        if ids.shape[1] == 0 or ids.shape[1] > self.n_ctx:
            raise InputRejected(f"input_ids: each row needs 1..{self.n_ctx} tokens, got {ids.shape[1]}")
        vocab = self._llm.n_vocab()
        if ids.min() < 0 or ids.max() >= vocab:
            raise InputRejected(f"input_ids: token ids must be in 0..{vocab - 1}")
        import llama_cpp

        result = np.empty(len(ids), dtype=np.int64)
        with self._lock:
            for row, tokens in enumerate(ids.tolist()):
                self._llm.reset()
                self._llm.eval(tokens)
                # the last position's logits, straight from llama.cpp (Llama.scores is filled only with
                # logits_all, which would keep n_ctx x n_vocab floats)
                logits = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, -1)
                result[row] = int(np.argmax(np.ctypeslib.as_array(logits, shape=(vocab,))))
        return {"next_token": result}

    def complete(self, prompt: str, *, max_tokens: int, temperature: float, stop: list[str]) -> Completion:
        """Generate, streaming inside so that the first token's time is known; one chunk per token."""
        begun = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        finish = "length"
        with self._lock:
            prompt_tokens = len(self._llm.tokenize(prompt.encode(), add_bos=False, special=False))
            for chunk in self._llm.create_completion(
                prompt, max_tokens=max_tokens, temperature=temperature, stop=stop or None, stream=True
            ):
                if first is None:
                    first = time.perf_counter() - begun
                choice = chunk["choices"][0]
                pieces.append(choice["text"])
                finish = choice.get("finish_reason") or finish
            self._llm.remember()
            cached = min(self._llm.reused_prompt_tokens, prompt_tokens)  # the BOS token is not counted
        return Completion("".join(pieces), prompt_tokens, sum(1 for p in pieces if p), finish, first, cached)

    def chat(
        self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float, stop: list[str]
    ) -> Completion:
        """A chat turn with the model's own chat template (only for models that ship one)."""
        begun = time.perf_counter()
        with self._lock:
            answer = self._llm.create_chat_completion(
                messages=messages, max_tokens=max_tokens, temperature=temperature, stop=stop or None
            )
            self._llm.remember()
            cached = self._llm.reused_prompt_tokens
        usage = answer.get("usage", {})
        choice = answer["choices"][0]
        return Completion(
            choice["message"].get("content") or "",
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0),
            choice.get("finish_reason") or "stop",
            time.perf_counter() - begun,
            cached,
        )

    def unload(self) -> None:
        self._llm = None
