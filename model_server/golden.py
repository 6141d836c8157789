"""The golden set: a labelled evaluation file shipped beside the model, scored when the server starts.

Its outcomes are counted once per process (source="golden"): scoring the same items again adds no new
evidence about accuracy, so later re-scoring (every ``golden_interval_seconds``) only updates the
``modelserver_golden_accuracy_ratio`` gauge, which shows drift or a corrupted model.
File format: .npz with ``inputs`` (the model's first input, batched) and ``labels`` (int).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt


class GoldenSetError(ValueError):
    """The golden set file is missing or malformed."""


@dataclass(frozen=True)
class GoldenSet:
    inputs: npt.NDArray[np.generic]
    labels: npt.NDArray[np.int64]

    @classmethod
    def load(cls, path: Path) -> GoldenSet:
        try:
            with np.load(path) as data:
                inputs, labels = data["inputs"], data["labels"].astype(np.int64)
        except (OSError, KeyError, ValueError) as error:
            raise GoldenSetError(f"golden set {path}: needs an .npz with 'inputs' and 'labels': {error}") from error
        if len(inputs) != len(labels):
            raise GoldenSetError(f"golden set {path}: {len(inputs)} inputs but {len(labels)} labels")
        return cls(inputs, labels)

    def batches(self, size: int = 256) -> list[tuple[npt.NDArray[np.generic], npt.NDArray[np.int64]]]:
        return [(self.inputs[i : i + size], self.labels[i : i + size]) for i in range(0, len(self.labels), size)]
