"""The prediction store's byte bound: clients choose request ids and batch sizes, so memory is bounded in
bytes as well as in predictions."""

from __future__ import annotations

from model_server.feedback import ENTRY_OVERHEAD_BYTES, Joined, JoinError, PredictionStore, entry_bytes


def test_an_entry_counts_its_id_its_classes_and_the_overhead() -> None:
    assert entry_bytes("ab", (1, 2, 3)) == 2 + 24 + ENTRY_OVERHEAD_BYTES
    assert entry_bytes("é", ()) == 2 + ENTRY_OVERHEAD_BYTES  # UTF-8 bytes, not characters


def test_long_ids_evict_the_least_recent_predictions_to_stay_within_the_bytes() -> None:
    one = entry_bytes("x" * 1000, (7,))
    store = PredictionStore(capacity=1000, ttl=60, max_bytes=3 * one)
    for index in range(5):
        store.remember(f"{index}" + "x" * 999, [7])
    assert len(store) == 3 and store.bytes == 3 * one <= store.max_bytes
    assert store.join("0" + "x" * 999, [7]) is JoinError.UNKNOWN_ID  # the oldest went first
    assert store.join("4" + "x" * 999, [7]) == Joined(correct=1, incorrect=0)
    assert store.bytes == 2 * one


def test_the_count_follows_every_way_out() -> None:
    now = [0.0]
    store = PredictionStore(capacity=10, ttl=30, clock=lambda: now[0])
    store.remember("a", [1, 2])
    store.remember("a", [1, 2, 3])  # stored again: counted once, with its new classes
    store.remember("b", [1])
    assert store.bytes == entry_bytes("a", (1, 2, 3)) + entry_bytes("b", (1,))
    assert store.join("a", [1]) is JoinError.LABEL_COUNT and len(store) == 2  # kept for a right answer
    assert isinstance(store.join("a", [1, 2, 3]), Joined)
    now[0] = 31
    assert store.join("b", [1]) is JoinError.EXPIRED
    assert store.bytes == 0 and len(store) == 0
    store.remember("c", [1])
    now[0] = 62
    assert store.expire() == 1 and store.bytes == 0


def test_a_prediction_larger_than_the_bound_is_not_kept_and_drops_nothing_else() -> None:
    store = PredictionStore(capacity=10, ttl=60, max_bytes=entry_bytes("small", (1,)) + 10)
    store.remember("small", [1])
    store.remember("huge", list(range(1000)))
    assert store.join("huge", list(range(1000))) is JoinError.UNKNOWN_ID
    assert store.join("small", [1]) == Joined(correct=1, incorrect=0)


def test_a_prediction_exactly_as_large_as_the_bound_is_kept() -> None:
    """Only a prediction larger than the whole bound is dropped; one that fills it exactly is joined later."""
    classes = list(range(50))
    store = PredictionStore(capacity=10, ttl=60, max_bytes=entry_bytes("exact", tuple(classes)))
    store.remember("exact", classes)
    assert store.bytes == store.max_bytes
    assert store.join("exact", classes) == Joined(correct=50, incorrect=0)
