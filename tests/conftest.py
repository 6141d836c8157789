"""Shared fixtures: the real local control plane and a real Prometheus, started once per session; and, with
MODELROLLOUT_TEST_CPU_HOGS=N, N busy processes competing for the CPU during the whole session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrollout.devcluster import cluster, process, prometheus

REPO = Path(__file__).resolve().parent.parent
CPU_HOGS = "MODELROLLOUT_TEST_CPU_HOGS"


def cpu_hogs() -> int:
    value = os.environ.get(CPU_HOGS, "0") or "0"
    if not value.isdigit():
        raise pytest.UsageError(f"{CPU_HOGS}={value!r}: give a number of busy processes (0 or more)")
    return int(value)


def pytest_configure(config: pytest.Config) -> None:
    cpu_hogs()  # a wrong value stops the run before any test, once


@pytest.fixture(scope="session", autouse=True)
def cpu_load() -> Iterator[list[subprocess.Popen[bytes]]]:
    """N busy loops at normal priority (``make test-loaded``): timing assumptions must survive a busy machine."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL, start_new_session=True)
        for _ in range(cpu_hogs())
    ]
    try:
        yield hogs
    finally:
        for hog in hogs:
            process.stop(hog.pid, grace_seconds=2)
            hog.poll()


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
