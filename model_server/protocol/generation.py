"""A text generation running on the runtime's thread, its pieces of text handed to the event loop as they
are sampled: what lets the server stream tokens as they come instead of buffering the answer.

Whoever stops reading (a client gone, a timeout) calls ``stop``; the runtime then ends the generation at its
next token instead of finishing an answer nobody reads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import structlog

from model_server.protocol.problem import Problem
from model_server.runtime.base import Completion, TextSink

log = structlog.get_logger(__name__)

Generate = Callable[[TextSink], Completion]
"""Runs one generation to its end, handing each piece of text to the sink it is given."""


class LiveGeneration:
    def __init__(self, generate: Generate, *, timeout: float) -> None:
        """Start ``generate`` on a worker thread; it has ``timeout`` seconds in all."""
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._deadline = self._loop.time() + timeout
        self._pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self._reading = threading.Event()
        self._reading.set()
        self._done = asyncio.ensure_future(asyncio.to_thread(self._run, generate))
        self._done.add_done_callback(_retrieve)  # a generation nobody waits for any more may still fail

    def _run(self, generate: Generate) -> Completion:
        try:
            return generate(self._hand_over)
        finally:
            self._loop.call_soon_threadsafe(self._pieces.put_nowait, None)

    def _hand_over(self, piece: str) -> bool:
        """The runtime's sink, called on its thread."""
        if not self._reading.is_set():
            return False
        self._loop.call_soon_threadsafe(self._pieces.put_nowait, piece)
        return True

    async def next_piece(self) -> str | None:
        """The next piece of text; None once the generation is over (then ``result``)."""
        try:
            return await asyncio.wait_for(self._pieces.get(), max(0.0, self._deadline - self._loop.time()))
        except TimeoutError:
            self.stop()
            raise Problem(
                504, f"generation took longer than {self._timeout}s", timed_out=True, code="timeout"
            ) from None

    async def result(self) -> Completion:
        """The finished generation (after ``next_piece`` gave None); its errors as Problems."""
        try:
            return await self._done
        except ValueError as error:  # llama-cpp-python's word for a request the model cannot take
            code = "context_length_exceeded" if "context window" in str(error) else None
            raise Problem(400, str(error), code=code) from None
        except Exception as error:
            log.exception("generation failed")
            raise Problem(500, f"generation failed: {type(error).__name__}: {error}") from None

    async def first_piece(self) -> str | None:
        """The first piece of text, or None for an empty answer; a generation that fails before its first
        token raises here, while an HTTP status can still say so."""
        piece = await self.next_piece()
        if piece is None:
            await self.result()
        return piece

    async def finish(self) -> Completion:
        """Read to the end without looking at the text."""
        while await self.next_piece() is not None:
            pass
        return await self.result()

    def stop(self) -> None:
        """Nobody reads any more: the runtime ends the generation at its next piece of text."""
        self._reading.clear()


def _retrieve(done: asyncio.Future[Completion]) -> None:
    if not done.cancelled():
        done.exception()
