"""The Helm chart: it lints, the real API server accepts everything it renders, and its RBAC is all the
operator needs: a rollout is promoted by an operator that authenticates as the chart's ServiceAccount,
and the router's role (bound per rollout by the operator) lets the router do its job and no more. Every
Pod, the chart's and the operator's, meets the "restricted" Pod Security Standard."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from modelrollout.api import constants
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.devcluster import binaries, kubectl
from modelrollout.devcluster.stage import Load, Stage
from modelrollout.k8s import manifests
from modelrollout.routing.report import report_name

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


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "prometheus.enabled=true"],
        ["--set", "prometheus.enabled=true", "--set", "networkPolicy.enabled=true"],
    ],
    ids=["default", "with-prometheus", "with-network-policy"],
)
def test_chart_lints(helm: str, values: list[str]) -> None:
    result = subprocess.run([helm, "lint", "--strict", str(CHART), *values], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_api_server_accepts_everything_the_chart_renders(helm: str, kubeconfig: Path, namespace: str) -> None:
    rendered = render(helm, "--include-crds", "--set", "prometheus.enabled=true", "--set", "networkPolicy.enabled=true")
    kinds = {doc["kind"] for doc in documents(rendered)}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"} <= kinds
    assert "NetworkPolicy" in kinds
    applied = kubectl.run("apply", "--dry-run=server", "-f", "-", "-o", "name", kubeconfig=kubeconfig, stdin=rendered)
    assert len(applied.stdout.split()) == len(documents(rendered))


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the chart uses matchLabels only
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def test_the_network_policy_lets_only_routers_and_prometheus_reach_the_model_servers(helm: str) -> None:
    assert "NetworkPolicy" not in {doc["kind"] for doc in documents(render(helm))}  # off by default
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    rendered = documents(
        render(
            helm,
            "--set", "prometheus.enabled=true",
            "--set", "networkPolicy.enabled=true",
            "--set", "networkPolicy.namespaces={ml,shop}",
            "--set-json", f"networkPolicy.extraFrom=[{json.dumps(monitoring)}]",
        )
    )  # fmt: skip
    policies = [doc for doc in rendered if doc["kind"] == "NetworkPolicy"]
    assert sorted(policy["metadata"]["namespace"] for policy in policies) == ["ml", "shop"]
    spec = policies[0]["spec"]
    model_server, router = manifests.labels("digits", "green"), manifests.labels("digits", manifests.ROUTER)
    prometheus = next(
        doc for doc in rendered if doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("prometheus")
    )["spec"]["template"]["metadata"]["labels"]
    assert selects(spec["podSelector"], model_server) and selects(spec["podSelector"], manifests.labels("d", "blue"))
    assert not selects(spec["podSelector"], router)  # clients reach the routers as before
    assert spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    assert rule["ports"] == [{"port": manifests.SERVER_PORT, "protocol": "TCP"}]
    peers = rule["from"]
    # the routers of the same namespace, the bundled Prometheus in the release's namespace, and extraFrom
    assert [peer for peer in peers if "namespaceSelector" not in peer and selects(peer["podSelector"], router)]
    assert [
        peer
        for peer in peers
        if selects(
            peer.get("namespaceSelector", {"matchLabels": {"x": "y"}}), {"kubernetes.io/metadata.name": NAMESPACE}
        )
        and selects(peer.get("podSelector", {}), prometheus)
    ]
    assert monitoring in peers and len(peers) == 3
    assert not [peer for peer in peers if not peer]  # no empty peer: that would admit everyone


def test_the_sample_rollout_is_valid(kubeconfig: Path) -> None:
    kubectl.install_crd(kubeconfig)
    sample = CHART.parents[1] / "crds" / "samples" / "digits.yaml"
    applied = kubectl.run("apply", "--dry-run=server", "-f", str(sample), "-n", "default", kubeconfig=kubeconfig)
    assert "modelrollout.modelrollout.dev/digits" in applied.stdout


def can_i(
    kubeconfig: Path, account: str, verb: str, resource: str, namespace: str = "default", subresource: str = ""
) -> bool:
    extra = [f"--subresource={subresource}"] if subresource else []
    answer = kubectl.run(
        "auth", "can-i", verb, resource, *extra, "-n", namespace, f"--as={account}", kubeconfig=kubeconfig, check=False
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
    operator_config = kubectl.token_kubeconfig(kubeconfig, token, tmp_path / "operator.kubeconfig")
    # the token is the operator's, not the admin's
    who = json.loads(kubectl.run("auth", "whoami", "-o", "json", kubeconfig=operator_config).stdout)
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:{OPERATOR_ACCOUNT}"

    stream = dict(np.load(demo_models / "digits-stream.npz"))
    name = "charted"
    # as the chart runs it: leader election on the Lease <release>-operator in the release's namespace
    kubectl.run("delete", "lease", f"{RELEASE}-operator", "-n", namespace, "--ignore-not-found", kubeconfig=kubeconfig)
    election = {
        "MODELROLLOUT_LEADER_ELECTION": "true",
        "MODELROLLOUT_LEASE_NAME": f"{RELEASE}-operator",
        "MODELROLLOUT_LEASE_NAMESPACE": namespace,
    }
    with Stage(
        kubeconfig=kubeconfig, models=demo_models, operator_kubeconfig=operator_config, operator_env=election
    ) as stage:
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
        router_config = stage.log_dir / f"router-{name}.kubeconfig"  # what the stage's router ran with
    assert body["status"]["phase"] == "Promoted", body["status"]["message"]
    assert "Forbidden" not in log and " 403" not in log, log[-3000:]
    assert "leader election: holding the lease" in log  # with only the chart's Role for its Lease
    # the router ran as its own account: it followed the rollout and reported through its Role alone
    who = json.loads(kubectl.run("auth", "whoami", "-o", "json", kubeconfig=router_config).stdout)
    router = f"system:serviceaccount:default:{name}-router"
    assert who["status"]["userInfo"]["username"] == router
    assert can_i(kubeconfig, router, "get", f"modelrollouts.modelrollout.dev/{name}")
    assert can_i(kubeconfig, router, "watch", f"modelrollouts.modelrollout.dev/{name}")
    assert can_i(kubeconfig, router, "patch", f"configmaps/{name}-router-report")
    # what it may not do: change any rollout (its spec, status or annotations), read another, write elsewhere
    assert not can_i(kubeconfig, router, "patch", f"modelrollouts.modelrollout.dev/{name}")
    assert not can_i(kubeconfig, router, "patch", f"modelrollouts.modelrollout.dev/{name}", subresource="status")
    assert not can_i(kubeconfig, router, "get", "modelrollouts.modelrollout.dev/another")
    assert not can_i(kubeconfig, router, "list", "modelrollouts.modelrollout.dev")
    assert not can_i(kubeconfig, router, "patch", "configmaps/another")
    assert not can_i(kubeconfig, router, "create", "configmaps")
    assert not can_i(kubeconfig, router, "patch", "deployments.apps")
    assert not can_i(kubeconfig, router, "get", "secrets")  # its feedback token comes from the kubelet
    assert not can_i(kubeconfig, router, "get", "modelrollouts.modelrollout.dev", namespace=namespace)
    # the hole closed: a spec patch that the router's token could make before is refused now
    pause = json.dumps({"spec": {"traffic": {"steps": [{"weight": 100}]}}})
    refused = kubectl.run("patch", "mro", name, "--type=merge", "-p", pause, kubeconfig=router_config, check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr


def test_only_a_rollouts_own_router_may_write_its_report(helm: str, kubeconfig: Path, tmp_path: Path) -> None:
    """The chart's ValidatingAdmissionPolicy on the real API server: the cluster admin, who may patch any
    ConfigMap, cannot forge a router report; the rollout's router can; metadata-only changes pass."""
    policy = render(helm, "--show-only", "templates/reportpolicy.yaml")
    assert {doc["kind"] for doc in documents(policy)} == {
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    owner = {"apiVersion": constants.API_VERSION, "kind": constants.KIND, "name": "forged", "uid": "u-forged"}
    made = [
        manifests.router_role(rollout="forged", namespace="default", owner=owner),
        manifests.router_role_binding(rollout="forged", namespace="default", owner=owner),
        manifests.router_report(rollout="forged", namespace="default", owner=owner),
    ]
    for doc in made:
        doc["metadata"].pop("ownerReferences")  # no such rollout: nothing may collect them
    report = report_name("forged")
    forged = json.dumps({"data": {constants.REPORT_APPLIED: "9/100", constants.REPORT_ROLLOUT_UID: "u-forged"}})
    kubectl.run(
        "apply", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps({"kind": "List", "apiVersion": "v1", "items": made})
    )
    router = kubectl.account_kubeconfig(kubeconfig, "forged-router", "default", tmp_path / "router.kubeconfig")
    kubectl.run("apply", "-f", "-", kubeconfig=kubeconfig, stdin=policy)
    try:
        deadline = time.monotonic() + 60
        for attempt in itertools.count(1):  # the API server loads a new policy a moment after it is created
            # a different value each time: a patch that changes nothing is (rightly) let through, so a probe
            # that repeated the last one would pass once the policy is loaded
            probe = json.dumps({"data": {constants.REPORT_APPLIED: f"{attempt}/100"}})
            refused = kubectl.run(
                "patch", "configmap", report, "--type=merge", "-p", probe, kubeconfig=kubeconfig, check=False
            )
            if refused.returncode != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert refused.returncode != 0, "the admin wrote a router report"
        assert "only the rollout's own router may write the data of its report" in refused.stderr, refused.stderr
        written = kubectl.run(
            "patch", "configmap", report, "--type=merge", "-p", forged, kubeconfig=router, check=False
        )
        assert written.returncode == 0, written.stderr  # its own router may
        labelled = kubectl.run("label", "configmap", report, "team=ml", kubeconfig=kubeconfig, check=False)
        assert labelled.returncode == 0, labelled.stderr  # the data unchanged: anyone with the right may
        fake = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "other-router-report", "labels": manifests.labels("other", manifests.ROUTER)},
            "data": {constants.REPORT_APPLIED: "1/100"},
        }
        created = kubectl.run("create", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps(fake), check=False)
        assert created.returncode != 0 and "only the rollout's own router" in created.stderr, created.stderr
        # nor created unlabelled with data and labelled afterwards (as the operator's apply would label it)
        unlabelled = {**fake, "metadata": {"name": "other-router-report"}}
        kubectl.run("create", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps(unlabelled))
        relabelled = kubectl.run(
            "label",
            "configmap",
            "other-router-report",
            f"{constants.LABEL_COLOUR}={manifests.ROUTER}",
            kubeconfig=kubeconfig,
            check=False,
        )
        assert relabelled.returncode != 0 and "only the rollout's own router" in relabelled.stderr
        # nor deleted by hand (a trip in it would go): garbage collection removes it with its rollout
        deleted = kubectl.run("delete", "configmap", report, kubeconfig=kubeconfig, check=False)
        assert deleted.returncode != 0 and "garbage collection" in deleted.stderr, deleted.stderr
    finally:
        kubectl.run("delete", "-f", "-", "--ignore-not-found", kubeconfig=kubeconfig, stdin=policy, check=False)
        for kind, name in (
            ("configmap", report),
            ("configmap", "other-router-report"),
            ("role", "forged-router"),
            ("rolebinding", "forged-router"),
        ):
            kubectl.run("delete", kind, name, "--ignore-not-found", kubeconfig=kubeconfig, check=False)


RESTRICTED = "modelrollout-restricted"


@pytest.fixture(scope="module")
def restricted(kubeconfig: Path) -> str:
    """A namespace that enforces the "restricted" Pod Security Standard (the API server's PodSecurity admission)."""
    kubectl.run("create", "namespace", RESTRICTED, kubeconfig=kubeconfig, check=False)
    kubectl.run(
        "label",
        "namespace",
        RESTRICTED,
        "pod-security.kubernetes.io/enforce=restricted",
        "--overwrite",
        kubeconfig=kubeconfig,
    )
    return RESTRICTED


def pod_templates(helm: str) -> dict[str, dict[str, Any]]:
    """Every Pod template there is: the chart's (operator, bundled Prometheus) and those the operator creates
    for a rollout (a model server per colour, the router)."""
    rendered = documents(render(helm, "--set", "prometheus.enabled=true"))
    templates = {doc["metadata"]["name"]: doc["spec"]["template"] for doc in rendered if doc["kind"] == "Deployment"}
    spec = ModelRolloutSpec.model_validate(
        {
            "blue": {"model": {"uri": "file:///models/digits-fp32.onnx", "version": "v1"}},
            "green": {"model": {"uri": "file:///models/digits-int8.onnx", "version": "v2"}},
        }
    )
    owner = {"apiVersion": "modelrollout.dev/v1alpha1", "kind": "ModelRollout", "name": "digits", "uid": "u"}
    for colour, model in (("blue", spec.blue.model), ("green", spec.green.model)):
        deployment = manifests.model_deployment(
            rollout="digits",
            namespace=RESTRICTED,
            colour=colour,
            model=model,
            server=spec.server,
            owner=owner,
            replicas=1,
        )
        templates[f"digits-{colour}"] = deployment["spec"]["template"]
    router = manifests.router_deployment(rollout="digits", namespace=RESTRICTED, spec=spec, owner=owner, image="r:1")
    templates["digits-router"] = router["spec"]["template"]
    return templates


def admitted(kubeconfig: Path, name: str, template: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    metadata = {**template.get("metadata", {}), "name": name, "namespace": RESTRICTED}
    # the namespace's default account (the Pod Security Standard does not look at which account)
    spec = {key: value for key, value in template["spec"].items() if key != "serviceAccountName"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    return kubectl.run(
        "create", "--dry-run=server", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps(pod), check=False
    )


def test_every_pod_meets_the_restricted_pod_security_standard(helm: str, kubeconfig: Path, restricted: str) -> None:
    templates = pod_templates(helm)
    assert set(templates) == {"mro-operator", "mro-prometheus", "digits-blue", "digits-green", "digits-router"}
    for name, template in templates.items():
        result = admitted(kubeconfig, name, template)
        assert result.returncode == 0, f"{name}: {result.stderr}"
    # the namespace does enforce it: the same model server without its security context is refused
    bare = json.loads(json.dumps(templates["digits-green"]))
    del bare["spec"]["securityContext"]
    for container in bare["spec"]["containers"]:
        del container["securityContext"]
    refused = admitted(kubeconfig, "bare", bare)
    assert refused.returncode != 0 and 'violates PodSecurity "restricted' in refused.stderr, refused.stderr


def test_only_the_pods_that_call_the_api_mount_a_token(helm: str) -> None:
    templates = pod_templates(helm)
    mounted = {name for name, t in templates.items() if t["spec"].get("automountServiceAccountToken", True)}
    assert mounted == {"mro-operator", "mro-prometheus", "digits-router"}
