"""Delayed feedback: keep each prediction for a while, and join a later true label to it by request id.

Memory is bounded twice: at most ``capacity`` predictions (least recently stored dropped first), and a
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


class PredictionStore:
    def __init__(self, *, capacity: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, tuple[int, ...]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, request_id: str, classes: list[int]) -> None:
        self._entries[request_id] = (self._clock(), tuple(classes))
        self._entries.move_to_end(request_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def join(self, request_id: str, labels: list[int]) -> Joined | JoinError:
        """Count the labels against the stored predictions, once; the id is then forgotten."""
        entry = self._entries.get(request_id)
        if entry is None:
            return JoinError.UNKNOWN_ID
        stored_at, classes = entry
        if self._clock() - stored_at > self.ttl:
            del self._entries[request_id]
            return JoinError.EXPIRED
        if len(labels) != len(classes):
            return JoinError.LABEL_COUNT
        del self._entries[request_id]
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
            del self._entries[key]
            dropped += 1
        return dropped
