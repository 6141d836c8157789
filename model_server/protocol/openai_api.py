"""The OpenAI API's shapes, built by pure functions: completions and chat completions, their stream chunks,
the model list, and errors. Real OpenAI clients read these (the ``openai`` package's types name the fields).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from model_server.runtime.base import Completion

OWNER = "modelrollout"
"""``owned_by`` of the model served."""

_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    410: "gone",
    413: "request_too_large",
    422: "invalid_request",
    500: "internal_error",
    503: "model_not_ready",
    504: "timeout",
}


def error(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body: a client error is an ``invalid_request_error``, any other a ``server_error``."""
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error" if 400 <= status < 500 else "server_error",
            "param": param,
            "code": code or _CODES.get(status, f"http_{status}"),
        }
    }


def usage(done: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


def completion(*, model: str, done: Completion) -> dict[str, Any]:
    """The answer of /v1/completions."""
    choice = {"text": done.text, "index": 0, "logprobs": None, "finish_reason": done.finish_reason}
    return _envelope(f"cmpl-{uuid.uuid4().hex}", "text_completion", model, [choice]) | {"usage": usage(done)}


def chat_completion(*, model: str, done: Completion) -> dict[str, Any]:
    """The answer of /v1/chat/completions."""
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": done.text},
        "logprobs": None,
        "finish_reason": done.finish_reason,
    }
    return _envelope(f"chatcmpl-{uuid.uuid4().hex}", "chat.completion", model, [choice]) | {"usage": usage(done)}


def _envelope(
    answer_id: str, kind: str, model: str, choices: list[dict[str, Any]], *, created: int | None = None
) -> dict[str, Any]:
    return {
        "id": answer_id,
        "object": kind,
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": choices,
    }


@dataclass(frozen=True)
class Chunks:
    """The chunks of one streamed answer, all with the same id and creation time, as OpenAI sends them.

    Completions stream ``text_completion`` objects with ``text``; chat streams ``chat.completion.chunk``
    objects with a ``delta``, the first naming the assistant's role. With ``include_usage``, every chunk
    has ``usage: null`` and one more chunk, with no choices, carries the usage.
    """

    chat: bool
    model: str
    include_usage: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    answer_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def opening(self) -> list[dict[str, Any]]:
        if not self.chat:
            return []
        return [self._chunk(self._choice(delta={"role": "assistant", "content": ""}, text="", finish_reason=None))]

    def text(self, piece: str) -> dict[str, Any]:
        return self._chunk(self._choice(delta={"content": piece}, text=piece, finish_reason=None))

    def closing(self, done: Completion) -> list[dict[str, Any]]:
        """The chunk with the finish reason, then the usage when asked for."""
        last = [self._chunk(self._choice(delta={}, text="", finish_reason=done.finish_reason))]
        if self.include_usage:
            last.append(self._envelope([]) | {"usage": usage(done)})
        return last

    def _choice(self, *, delta: dict[str, str], text: str, finish_reason: str | None) -> dict[str, Any]:
        if self.chat:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}

    def _chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        return self._envelope([choice]) | ({"usage": None} if self.include_usage else {})

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        if self.chat:
            kind, answer_id = "chat.completion.chunk", f"chatcmpl-{self.answer_id}"
        else:
            kind, answer_id = "text_completion", f"cmpl-{self.answer_id}"
        return _envelope(answer_id, kind, self.model, choices, created=self.created)


def model_card(*, name: str, created: int) -> dict[str, Any]:
    """One entry of /v1/models, and the answer of /v1/models/{name}."""
    return {"id": name, "object": "model", "created": created, "owned_by": OWNER}


def model_list(cards: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": cards}
