"""The Helm chart: it lints, the real API server accepts everything it renders, and its RBAC is all the
operator needs: a rollout is promoted by an operator that authenticates as the chart's ServiceAccount,
and the router's role (bound per rollout by the operator) lets the router do its job and no more."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from modelrollout.devcluster import binaries, kubectl
from modelrollout.devcluster.stage import Load, Stage

pytestmark = pytest.mark.e2e

CHART = Path(__file__).parents[2] / "charts" / "modelrollout"
RELEASE = "mro"
NAMESPACE = "modelrollout-system"
OPERATOR_ACCOUNT = f"{RELEASE}-operator"


@pytest.fixture(scope="module")
def helm() -> str:
    return str(binaries.helm())


@pytest.fixture(scope="module")
def namespace(kubeconfig: Path) -> Iterator[str]:
    kubectl.run("create", "namespace", NAMESPACE, kubeconfig=kubeconfig, check=False)
    yield NAMESPACE


def render(helm: str, *args: str) -> str:
    result = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


@pytest.mark.parametrize("values", [[], ["--set", "prometheus.enabled=true"]], ids=["default", "with-prometheus"])
def test_chart_lints(helm: str, values: list[str]) -> None:
    result = subprocess.run([helm, "lint", "--strict", str(CHART), *values], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_api_server_accepts_everything_the_chart_renders(helm: str, kubeconfig: Path, namespace: str) -> None:
    rendered = render(helm, "--include-crds", "--set", "prometheus.enabled=true")
    kinds = {doc["kind"] for doc in documents(rendered)}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"} <= kinds
    applied = kubectl.run("apply", "--dry-run=server", "-f", "-", "-o", "name", kubeconfig=kubeconfig, stdin=rendered)
    assert len(applied.stdout.split()) == len(documents(rendered))


def test_the_sample_rollout_is_valid(kubeconfig: Path) -> None:
    kubectl.install_crd(kubeconfig)
    sample = CHART.parents[1] / "crds" / "samples" / "digits.yaml"
    applied = kubectl.run("apply", "--dry-run=server", "-f", str(sample), "-n", "default", kubeconfig=kubeconfig)
    assert "modelrollout.modelrollout.dev/digits" in applied.stdout


def token_kubeconfig(admin: Path, token: str, destination: Path) -> Path:
    """The admin kubeconfig's cluster, with a bearer token instead of the admin's certificate."""
    config = yaml.safe_load(admin.read_text())
    config["users"] = [{"name": config["users"][0]["name"], "user": {"token": token}}]
    destination.write_text(yaml.safe_dump(config))
    return destination


def can_i(kubeconfig: Path, account: str, verb: str, resource: str, namespace: str = "default") -> bool:
    answer = kubectl.run(
        "auth", "can-i", verb, resource, "-n", namespace, f"--as={account}", kubeconfig=kubeconfig, check=False
    )
    return answer.stdout.strip() == "yes"


def test_operator_promotes_a_rollout_with_only_the_charts_rbac(
    helm: str, kubeconfig: Path, namespace: str, demo_models: Path, tmp_path: Path
) -> None:
    rbac = render(helm, "--show-only", "templates/rbac.yaml")
    kubectl.run("apply", "-n", namespace, "-f", "-", kubeconfig=kubeconfig, stdin=rbac)
    token = kubectl.run(
        "create", "token", OPERATOR_ACCOUNT, "-n", namespace, "--duration=1h", kubeconfig=kubeconfig
    ).stdout.strip()
    operator_config = token_kubeconfig(kubeconfig, token, tmp_path / "operator.kubeconfig")
    # the token is the operator's, not the admin's
    who = json.loads(kubectl.run("auth", "whoami", "-o", "json", kubeconfig=operator_config).stdout)
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:{OPERATOR_ACCOUNT}"

    stream = dict(np.load(demo_models / "digits-stream.npz"))
    name = "charted"
    with Stage(kubeconfig=kubeconfig, models=demo_models, operator_kubeconfig=operator_config) as stage:
        served = stage.canary(
            name,
            steps=[{"weight": 50, "pause": "2s"}, {"weight": 100}],
            checks={"accuracy": {"tolerance": 0.02, "minSamples": 300}, "latency": {"minRequests": 10}},
            analysis={"interval": "2s", "window": "20s", "progressDeadline": "150s"},
        )
        load = Load(served.router_url, stream).start()
        try:
            body = stage.wait_for_phase(name, {"Promoted", "RolledBack", "Failed"}, timeout=180)
        finally:
            load.stop()
        log = stage.operator_log()
    assert body["status"]["phase"] == "Promoted", body["status"]["message"]
    assert "Forbidden" not in log and " 403" not in log, log[-3000:]
    # what the operator made for the router: its account, bound to the chart's router role
    router = f"system:serviceaccount:default:{name}-router"
    assert can_i(kubeconfig, router, "watch", "modelrollouts.modelrollout.dev")
    assert can_i(kubeconfig, router, "patch", f"modelrollouts.modelrollout.dev/{name}")
    assert not can_i(kubeconfig, router, "patch", "deployments.apps")
    assert not can_i(kubeconfig, router, "get", "modelrollouts.modelrollout.dev", namespace=namespace)
