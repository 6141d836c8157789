"""Shared fixtures: the real local control plane and a real Prometheus, started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrollout.devcluster import cluster, prometheus

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[Path]:
    """A kubeconfig for a real cluster: MODELROLLOUT_KUBECONFIG (kind, say) if set, else a local one."""
    existing = os.environ.get("MODELROLLOUT_KUBECONFIG")
    if existing:
        yield Path(existing)
        return
    with cluster.LocalCluster(nodes=2) as local:
        yield local.kubeconfig_path


@pytest.fixture(scope="session")
def prometheus_server() -> Iterator[prometheus.PrometheusServer]:
    with prometheus.PrometheusServer() as server:
        yield server


@pytest.fixture(scope="session")
def demo_models() -> Path:
    """The demo models (digits fp32 / int8 / 2-bit, golden sets, labelled stream), built once and cached."""
    from modelrollout.devcluster.modelservers import demo_models_dir

    return demo_models_dir()


@pytest.fixture(scope="session")
def gguf_models() -> Path:
    """The tiny GGUF models (a next-byte counter and a degraded one), built once and cached."""
    from modelrollout.devcluster.modelservers import demo_gguf_dir

    return demo_gguf_dir()
