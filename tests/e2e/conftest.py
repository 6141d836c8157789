"""Fixtures of the drills: a stage (operator, Prometheus, stand-in Pods, a router) per test, once for each of
the router's data planes, and the demo's labelled request stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelrollout.devcluster.stage import Stage


@pytest.fixture(params=["python", "nginx"])
def stage(request: pytest.FixtureRequest, kubeconfig: Path, demo_models: Path) -> Iterator[Stage]:
    """Every drill runs on both of the router's data planes: nginx (the in-cluster default) and python."""
    with Stage(kubeconfig=kubeconfig, models=demo_models, data_plane=request.param) as running:
        yield running


@pytest.fixture(scope="session")
def stream(demo_models: Path) -> dict[str, np.ndarray]:
    return dict(np.load(demo_models / "digits-stream.npz"))
