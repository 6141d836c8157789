"""Fixtures of the drills: a stage (operator, Prometheus, stand-in Pods) per test and the demo's labelled
request stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelrollout.devcluster.stage import Stage


@pytest.fixture
def stage(kubeconfig: Path, demo_models: Path) -> Iterator[Stage]:
    with Stage(kubeconfig=kubeconfig, models=demo_models) as running:
        yield running


@pytest.fixture(scope="session")
def stream(demo_models: Path) -> dict[str, np.ndarray]:
    return dict(np.load(demo_models / "digits-stream.npz"))
