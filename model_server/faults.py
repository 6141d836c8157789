"""Fault injection for rollback drills: added latency, a share of 5xx answers, a share of wrong predictions.

Off unless MODELSERVER_FAULTS_ENABLED=true; an SRE turns a healthy green bad without a new image. Changed at
run time (``/v2/faults``) only by a caller presenting MODELSERVER_FAULTS_TOKEN, which comes from a Secret; the
router never forwards that path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from model_server.auth import bearer_matches


@dataclass
class Faults:
    enabled: bool = False
    latency_seconds: float = 0.0
    error_rate: float = 0.0
    wrong_rate: float = 0.0
    token: str | None = field(default=None, repr=False)
    """What ``/v2/faults`` callers must present as ``Authorization: Bearer``; None: the endpoint is closed."""
    rng: random.Random = field(default_factory=random.Random)

    def admits(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries the token (compared in constant time)."""
        return bearer_matches(self.token, authorization)

    def update(self, *, latency_seconds: float | None, error_rate: float | None, wrong_rate: float | None) -> None:
        for name, value, upper in (
            ("latency_seconds", latency_seconds, 60.0),
            ("error_rate", error_rate, 1.0),
            ("wrong_rate", wrong_rate, 1.0),
        ):
            if value is None:
                continue
            if not 0 <= value <= upper:
                raise ValueError(f"{name} must be between 0 and {upper}, got {value}")
            setattr(self, name, value)

    def should_fail(self) -> bool:
        return self.enabled and self.error_rate > 0 and self.rng.random() < self.error_rate

    def corrupt(self, classes: npt.NDArray[np.int64], num_classes: int) -> npt.NDArray[np.int64]:
        """Replace a ``wrong_rate`` share of predicted classes with a different class."""
        if not self.enabled or self.wrong_rate <= 0 or num_classes < 2:
            return classes
        result = classes.copy()
        for index in range(len(result)):
            if self.rng.random() < self.wrong_rate:
                result[index] = (int(result[index]) + self.rng.randrange(1, num_classes)) % num_classes
        return result

    def as_dict(self) -> dict[str, float | bool]:
        return {
            "enabled": self.enabled,
            "latency_seconds": self.latency_seconds,
            "error_rate": self.error_rate,
            "wrong_rate": self.wrong_rate,
        }
