"""Delayed feedback: how long a prediction waits for its label, and which predictions make room for new ones."""

from __future__ import annotations

from model_server.feedback import Joined, JoinError, PredictionStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_prediction_exactly_ttl_old_still_takes_its_label_and_a_moment_later_is_gone() -> None:
    clock = Clock()
    store = PredictionStore(capacity=10, ttl=30, clock=clock)
    store.remember("on-time", [1])
    store.remember("late", [2])
    clock.now += 30
    assert store.expire() == 0  # expire and join agree on the boundary
    assert store.join("on-time", [1]) == Joined(correct=1, incorrect=0)
    clock.now += 0.001
    assert store.join("late", [2]) is JoinError.EXPIRED
    assert store.join("late", [2]) is JoinError.UNKNOWN_ID  # answered Gone once, then forgotten


def test_expire_drops_only_what_is_older_than_the_ttl_and_counts_it() -> None:
    clock = Clock()
    store = PredictionStore(capacity=10, ttl=30, clock=clock)
    store.remember("old-1", [0])
    store.remember("old-2", [0])
    clock.now += 20
    store.remember("fresh", [0])
    clock.now += 15  # the first two are 35 s old, "fresh" 15 s
    assert store.expire() == 2
    assert len(store) == 1
    assert store.join("fresh", [0]) == Joined(correct=1, incorrect=0)
    assert store.expire() == 0


def test_nothing_expires_before_the_ttl() -> None:
    clock = Clock()
    store = PredictionStore(capacity=10, ttl=30, clock=clock)
    store.remember("a", [0])
    clock.now += 29
    assert store.expire() == 0 and len(store) == 1


def test_remembering_an_id_again_makes_it_the_newest() -> None:
    """A retried request (same id) is kept over older ones when the store is full, with its new classes."""
    clock = Clock()
    store = PredictionStore(capacity=2, ttl=30, clock=clock)
    store.remember("retried", [1])
    store.remember("other", [2])
    clock.now += 20
    store.remember("retried", [3])
    store.remember("newest", [4])
    assert store.join("other", [2]) is JoinError.UNKNOWN_ID  # the oldest made room
    clock.now += 15  # 35 s after the first try, 15 s after the retry
    assert store.expire() == 0
    assert store.join("retried", [3]) == Joined(correct=1, incorrect=0)


def test_a_label_count_mismatch_keeps_the_prediction_for_a_corrected_call() -> None:
    store = PredictionStore(capacity=10, ttl=30, clock=Clock())
    store.remember("a", [1, 2])
    assert store.join("a", [1, 2, 3]) is JoinError.LABEL_COUNT
    assert store.join("a", [1, 0]) == Joined(correct=1, incorrect=1)
