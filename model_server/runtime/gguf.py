"""GGUF models on llama.cpp (through llama-cpp-python): text completion, and next-token prediction as
an OIP v2 tensor call so that golden sets and feedback measure a language model's accuracy too.

OIP v2 view: input ``input_ids`` (INT64, [N, T]) -> output ``next_token`` (INT64, [N]), the most likely
next token after each row.

Generation always streams inside (llama-cpp-python's ``stream=True``): each piece of text goes to an
optional ``on_text`` sink as soon as it is sampled, which is how the server streams to its clients.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

from model_server.fetch import sha256_of
from model_server.runtime.base import (
    Completion,
    InputRejected,
    ModelLoadError,
    ModelMetadata,
    Tensors,
    TensorSpec,
    TextSink,
)
from model_server.runtime.prompt_cache import PromptCache

P = ParamSpec("P")
T = TypeVar("T")


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
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{name}")
        """Every call into llama.cpp runs on this one thread, one at a time in arrival order: a context is not
        thread-safe, and llama.cpp's OpenMP workers serve one calling thread best (a new caller thread
        makes a new team: measured 6% slower generation when each call came from another thread)."""

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
        return {"next_token": self._serially(self._next_tokens, ids.tolist(), vocab)}

    def complete(
        self, prompt: str, *, max_tokens: int, temperature: float, stop: list[str], on_text: TextSink | None = None
    ) -> Completion:
        """Generate (the time to the first token counts the wait for earlier calls)."""
        return self._serially(self._complete, prompt, time.perf_counter(), max_tokens, temperature, stop, on_text)

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        stop: list[str],
        on_text: TextSink | None = None,
    ) -> Completion:
        """A chat turn with the model's own chat template (only for models that ship one)."""
        return self._serially(self._chat, messages, time.perf_counter(), max_tokens, temperature, stop, on_text)

    def unload(self) -> None:
        self._llm = None

    def _serially(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return self._worker.submit(call, *args, **kwargs).result()

    def _next_tokens(self, rows: list[list[int]], vocab: int) -> npt.NDArray[np.int64]:
        import llama_cpp

        result = np.empty(len(rows), dtype=np.int64)
        for row, tokens in enumerate(rows):
            self._llm.reset()
            self._llm.eval(tokens)
            # the last position's logits, straight from llama.cpp (Llama.scores is filled only with
            # logits_all, which would keep n_ctx x n_vocab floats)
            logits = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, -1)
            result[row] = int(np.argmax(np.ctypeslib.as_array(logits, shape=(vocab,))))
        return result

    def _complete(
        self, prompt: str, begun: float, max_tokens: int, temperature: float, stop: list[str], on_text: TextSink | None
    ) -> Completion:
        chunks = self._llm.create_completion(
            prompt, max_tokens=max_tokens, temperature=temperature, stop=stop or None, stream=True
        )
        return self._collect(chunks, begun, on_text, text_of=lambda choice: str(choice["text"]))

    def _chat(
        self,
        messages: list[dict[str, str]],
        begun: float,
        max_tokens: int,
        temperature: float,
        stop: list[str],
        on_text: TextSink | None,
    ) -> Completion:
        chunks = self._llm.create_chat_completion(
            messages=messages, max_tokens=max_tokens, temperature=temperature, stop=stop or None, stream=True
        )
        return self._collect(chunks, begun, on_text, text_of=lambda choice: str(choice["delta"].get("content") or ""))

    def _collect(
        self,
        chunks: Generator[dict[str, Any], None, None],
        begun: float,
        on_text: TextSink | None,
        *,
        text_of: Callable[[dict[str, Any]], str],
    ) -> Completion:
        """Read a streamed generation, one chunk per sampled token, handing each piece of text on."""
        first: float | None = None
        pieces: list[str] = []
        finish = "length"
        with contextlib.closing(chunks):  # closing stops llama.cpp when the sink stops reading
            for chunk in chunks:
                if first is None:
                    first = time.perf_counter() - begun
                choice = chunk["choices"][0]
                finish = choice.get("finish_reason") or finish
                piece = text_of(choice)
                if not piece:
                    continue
                pieces.append(piece)
                if on_text is not None and not on_text(piece):
                    break
        self._llm.remember()
        prompt_tokens = self._llm.last_prompt_tokens
        cached = min(self._llm.reused_prompt_tokens, prompt_tokens)
        return Completion(
            "".join(pieces), prompt_tokens, self._llm.last_completion_tokens, finish, first, cached_tokens=cached
        )
