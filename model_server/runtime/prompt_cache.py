"""Saved llama.cpp sequence states, so that a prompt which starts like an earlier one skips the part
already processed (a shared system prompt, a chat that goes on, a retried request).

Pure bookkeeping: the states are opaque bytes from ``llama_state_seq_get_data``; what they mean is the
GGUF runtime's business. Token runs are compared as numpy arrays, about 20 microseconds a snapshot for
a 1,000-token prompt; at most ``max_entries`` snapshots keep a lookup near a millisecond.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Tokens = npt.NDArray[np.int32]


@dataclass(frozen=True)
class Snapshot:
    tokens: tuple[int, ...]
    """The tokens whose keys and values the state holds, in order."""
    state: bytes
    array: Tokens = field(repr=False, compare=False)


def as_tokens(tokens: Sequence[int] | Tokens) -> Tokens:
    return np.asarray(tokens, dtype=np.int32)


def common_prefix(a: Sequence[int] | Tokens, b: Sequence[int] | Tokens) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    x, y = as_tokens(a), as_tokens(b)
    n = min(len(x), len(y))
    differ = np.flatnonzero(x[:n] != y[:n])
    return int(differ[0]) if differ.size else n


class PromptCache:
    """Snapshots bounded by their total size in bytes and their number; the least recently used go first."""

    def __init__(self, capacity_bytes: int, max_entries: int = 64) -> None:
        self.capacity_bytes = capacity_bytes
        self.max_entries = max_entries
        self._snapshots: OrderedDict[tuple[int, ...], Snapshot] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return len(self._snapshots)

    @property
    def size_bytes(self) -> int:
        return self._size

    def best(self, tokens: Sequence[int]) -> tuple[Snapshot, int] | None:
        """The snapshot sharing the longest prefix with ``tokens``, and that prefix's length."""
        wanted = as_tokens(tokens)
        found: tuple[Snapshot, int] | None = None
        for snapshot in self._snapshots.values():
            shared = common_prefix(snapshot.array, wanted)
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
        array = as_tokens(key)
        extended = []
        for existing, snapshot in self._snapshots.items():
            shared = common_prefix(snapshot.array, array)
            if shared == len(array):  # an existing snapshot already serves every prompt this one would
                self._snapshots.move_to_end(existing)
                return
            if shared == len(existing):
                extended.append(existing)
        for older in extended:
            self._drop(older)
        self._snapshots[key] = Snapshot(key, state, array)
        self._size += len(state)
        while self._size > self.capacity_bytes or len(self._snapshots) > self.max_entries:
            self._drop(next(iter(self._snapshots)))

    def _drop(self, key: tuple[int, ...]) -> None:
        self._size -= len(self._snapshots.pop(key).state)
