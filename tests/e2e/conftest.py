"""Fixtures of the drills: a stage (operator, Prometheus, stand-in Pods, a router) per test, once for each of
the router's data planes, and the demo's labelled request stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelrollout.devcluster import kubectl
from modelrollout.devcluster.stage import Stage


@pytest.fixture(params=["python", "nginx"])
def stage(request: pytest.FixtureRequest, kubeconfig: Path, demo_models: Path) -> Iterator[Stage]:
    """Every drill runs on both of the router's data planes: nginx (the in-cluster default) and python. Each
    starts from a cluster without rollouts: the same drill on the other plane used the same names."""
    try:
        with Stage(kubeconfig=kubeconfig, models=demo_models, data_plane=request.param) as running:
            yield running
    finally:
        clear_rollouts(kubeconfig)


def clear_rollouts(kubeconfig: Path) -> None:
    """Delete every ModelRollout (their finalizers dropped: the operator is gone) and every object the operator
    created, kept ones included, and wait until they are gone."""
    listed = kubectl.run("get", "mro", "-A", "-o", "json", kubeconfig=kubeconfig)
    for item in json.loads(listed.stdout)["items"]:
        kubectl.run(
            "patch",
            "mro",
            item["metadata"]["name"],
            "-n",
            item["metadata"]["namespace"],
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            kubeconfig=kubeconfig,
            check=False,
        )
    kubectl.run("delete", "mro", "--all", "-A", "--wait=true", "--timeout=120s", kubeconfig=kubeconfig)
    kubectl.run(
        "delete",
        "deployments,services,serviceaccounts,roles,rolebindings,configmaps,poddisruptionbudgets",
        "-A",
        "-l",
        "app.kubernetes.io/managed-by=modelrollout",
        "--cascade=foreground",
        "--wait=true",
        "--timeout=120s",
        kubeconfig=kubeconfig,
    )
    kubectl.run("delete", "httproutes", "--all", "-A", "--wait=true", kubeconfig=kubeconfig, check=False)


@pytest.fixture(scope="session")
def stream(demo_models: Path) -> dict[str, np.ndarray]:
    return dict(np.load(demo_models / "digits-stream.npz"))
