"""Saved llama.cpp sequence states, so that a prompt which starts like an earlier one skips the part
already processed (a shared system prompt, a chat that goes on, a retried request).

Pure bookkeeping: the states are opaque bytes from ``llama_state_seq_get_data``; what they mean is the
GGUF runtime's business.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    tokens: tuple[int, ...]
    """The tokens whose keys and values the state holds, in order."""
    state: bytes


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


class PromptCache:
    """Snapshots bounded by their total size in bytes; the least recently used go first."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._snapshots: OrderedDict[tuple[int, ...], Snapshot] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return len(self._snapshots)

    @property
    def size_bytes(self) -> int:
        return self._size

    def best(self, tokens: Sequence[int]) -> tuple[Snapshot, int] | None:
        """The snapshot sharing the longest prefix with ``tokens``, and that prefix's length."""
        found: tuple[Snapshot, int] | None = None
        for snapshot in self._snapshots.values():
            shared = common_prefix(snapshot.tokens, tokens)
            if shared and (found is None or shared > found[1]):
                found = (snapshot, shared)
        if found is not None:
            self._snapshots.move_to_end(found[0].tokens)
        return found

    def put(self, tokens: Sequence[int], state: bytes) -> None:
        """Keep a snapshot. One that extends another replaces it: it serves every prompt the other served."""
        key = tuple(tokens)
        if not key or len(state) > self.capacity_bytes:
            return
        for longer in self._snapshots:
            if longer[: len(key)] == key:  # an existing snapshot already serves every prompt this one would
                self._snapshots.move_to_end(longer)
                return
        for older in [k for k in self._snapshots if k == key[: len(k)]]:
            self._drop(older)
        self._snapshots[key] = Snapshot(key, state)
        self._size += len(state)
        while self._size > self.capacity_bytes:
            self._drop(next(iter(self._snapshots)))

    def _drop(self, key: tuple[int, ...]) -> None:
        self._size -= len(self._snapshots.pop(key).state)
