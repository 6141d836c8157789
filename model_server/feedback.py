"""Delayed feedback: keep each prediction for a while, and join a later true label to it by request id.

Memory is bounded three ways: at most ``capacity`` predictions and at most ``max_bytes`` of them (least
recently stored dropped first: request ids come from clients and may be long, batches may be large), and a
prediction older than ``ttl`` seconds is expired (its feedback answered 410 Gone, then forgotten).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class JoinError(StrEnum):
    UNKNOWN_ID = "unknown_id"
    EXPIRED = "expired"
    LABEL_COUNT = "label_count"


@dataclass(frozen=True)
class Joined:
    correct: int
    incorrect: int


ENTRY_OVERHEAD_BYTES = 200
"""What one stored prediction costs besides its id and classes (dict slot, tuples, floats), about."""


def entry_bytes(request_id: str, classes: tuple[int, ...]) -> int:
    """The bytes a stored prediction is counted as: its id's UTF-8, 8 per class, and the overhead."""
    return len(request_id.encode()) + 8 * len(classes) + ENTRY_OVERHEAD_BYTES


class PredictionStore:
    def __init__(
        self,
        *,
        capacity: int,
        ttl: float,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, tuple[int, ...]]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """What the stored predictions are counted as (see ``entry_bytes``)."""
        return self._bytes

    def remember(self, request_id: str, classes: list[int]) -> None:
        self._forget(request_id)
        entry = (self._clock(), tuple(classes))
        size = entry_bytes(request_id, entry[1])
        if size > self.max_bytes:  # larger than the whole bound: not kept (its feedback will be unknown)
            return
        self._entries[request_id] = entry
        self._bytes += size
        while len(self._entries) > self.capacity or self._bytes > self.max_bytes:
            self._forget(next(iter(self._entries)))

    def _forget(self, request_id: str) -> None:
        entry = self._entries.pop(request_id, None)
        if entry is not None:
            self._bytes -= entry_bytes(request_id, entry[1])

    def join(self, request_id: str, labels: list[int]) -> Joined | JoinError:
        """Count the labels against the stored predictions, once; the id is then forgotten."""
        entry = self._entries.get(request_id)
        if entry is None:
            return JoinError.UNKNOWN_ID
        stored_at, classes = entry
        if self._clock() - stored_at > self.ttl:
            self._forget(request_id)
            return JoinError.EXPIRED
        if len(labels) != len(classes):
            return JoinError.LABEL_COUNT
        self._forget(request_id)
        correct = sum(1 for label, predicted in zip(labels, classes, strict=True) if label == predicted)
        return Joined(correct=correct, incorrect=len(labels) - correct)

    def expire(self) -> int:
        """Drop expired predictions (oldest first); returns how many."""
        limit = self._clock() - self.ttl
        dropped = 0
        while self._entries:
            key, (stored_at, _) = next(iter(self._entries.items()))
            if stored_at >= limit:
                break
            self._forget(key)
            dropped += 1
        return dropped
