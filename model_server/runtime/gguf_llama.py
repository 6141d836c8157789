"""llama-cpp-python's ``Llama`` with a prompt cache: before generating, the sequence state sharing the
longest prefix with the prompt is restored, so llama.cpp only processes what is new.

Imported only when a GGUF model loads (llama-cpp-python is an optional extra).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Generator, Sequence
from typing import Any

import llama_cpp
from llama_cpp import Llama

from model_server.runtime.prompt_cache import PromptCache, common_prefix

TokenStream = Generator[int, Sequence[int] | None, None]
"""What ``Llama.generate`` yields: sampled tokens (a caller may send in tokens to reset to)."""
SEQUENCE = 0
"""The one sequence a context serves."""
MIN_GAIN = 4
"""Restore a snapshot only when it saves at least this many tokens over what the context holds."""


class CachingLlama(Llama):
    def __init__(self, *args: Any, prompt_cache: PromptCache, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prompt_cache = prompt_cache
        self.reused_prompt_tokens = 0
        """Prompt tokens the last generation did not process again (their keys and values were held)."""
        self.last_prompt_tokens = 0
        """Tokens of the last generation's prompt, as llama.cpp processed it (a BOS token included)."""
        self.last_completion_tokens = 0
        """Tokens the last generation sampled, an end-of-generation token aside (as llama-cpp-python's usage
        counts them): known while it streams, where llama-cpp-python reports no usage."""

    def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> TokenStream:
        self._restore_longest_prefix(tokens)
        held = common_prefix(self.input_ids[: self.n_tokens], tokens)
        # llama-cpp-python processes the last prompt token again for its logits, unless the context holds
        # exactly the prompt and those logits are still current
        exact = held == self.n_tokens == len(tokens) and not self._requires_eval
        self.reused_prompt_tokens = held if exact else min(held, len(tokens) - 1)
        self.last_prompt_tokens = len(tokens)
        self.last_completion_tokens = 0
        return self._counted(super().generate(tokens, *args, **kwargs))

    def _counted(self, tokens: TokenStream) -> TokenStream:
        """``tokens``, counted into ``last_completion_tokens``; what a caller sends in is passed through."""
        sent: Sequence[int] | None = None
        with contextlib.closing(tokens):
            while True:
                try:
                    token = tokens.send(sent)
                except StopIteration:
                    return
                if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                    self.last_completion_tokens += 1
                sent = yield token

    def remember(self) -> None:
        """Snapshot the tokens the context holds now (call after a generation)."""
        if self.n_tokens == 0:
            return
        size = llama_cpp.llama_state_seq_get_size(self._ctx.ctx, SEQUENCE)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self._ctx.ctx, buffer, size, SEQUENCE)
        if written:
            self.prompt_cache.put(self.input_ids[: self.n_tokens].tolist(), ctypes.string_at(buffer, written))

    def _restore_longest_prefix(self, tokens: Sequence[int]) -> None:
        found = self.prompt_cache.best(tokens)
        held = common_prefix(self.input_ids[: self.n_tokens], tokens)
        if found is None or found[1] < held + MIN_GAIN:
            return
        snapshot = found[0]
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx.ctx), True)
        self.n_tokens = 0
        state = (ctypes.c_uint8 * len(snapshot.state)).from_buffer_copy(snapshot.state)
        if llama_cpp.llama_state_seq_set_data(self._ctx.ctx, state, len(snapshot.state), SEQUENCE) == 0:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx.ctx), True)
            return
        self.input_ids[: len(snapshot.tokens)] = snapshot.tokens
        self.n_tokens = len(snapshot.tokens)
        self._requires_eval = True  # the state holds keys and values, not the last logits
