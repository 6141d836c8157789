"""Traffic routing on the real control plane: the builtin router follows the ModelRollout's weights and reports
"<revision>/<green>" only once its data plane serves them (also while nginx fails to reload), keeps them when the
API server is gone, keeps sticky keys, mirrors; gateway-api writes HTTPRoute weights with their revision,
confirms them only once the Gateway accepted the route, and gives an adopted route back on finalize."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelrollout.api import constants
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.devcluster import binaries, cluster, kubectl, process
from modelrollout.devcluster.modelservers import ModelServer
from modelrollout.k8s import api, manifests
from modelrollout.routing import gateway_api
from modelrollout.routing.base import RolloutRef
from modelrollout.routing.gateway_api import GatewayApiRouter
from modelrollout.routing.report import report_name

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def rollout_body(name: str, **traffic: Any) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "blue": {"model": {"uri": "file:///b.onnx", "version": "v1"}},
            "green": {"model": {"uri": "file:///g.onnx", "version": "v2"}},
            "traffic": {"steps": [{"weight": 10}, {"weight": 25}, {"weight": 50}, {"weight": 100}], **traffic},
        },
    }


def publish_weight(kubeconfig: Path, name: str, green: int, revision: int | None = None) -> None:
    """What the operator does: status.weights through the status subresource (an older operator wrote no
    revision)."""
    weights: dict[str, int] = {"blue": 100 - green, "green": green}
    if revision is not None:
        weights["revision"] = revision
    patch = json.dumps({"status": {"weights": weights}})
    kubectl.run("patch", "mro", name, "--subresource=status", "--type=merge", "-p", patch, kubeconfig=kubeconfig)


def router_report(kubeconfig: Path, name: str) -> str | None:
    """The builtin router's "<revision>/<green>" in its report (the ConfigMap <name>-router-report)."""
    stored = json.loads(kubectl.run("get", "configmap", report_name(name), "-o", "json", kubeconfig=kubeconfig).stdout)
    report: str | None = (stored.get("data") or {}).get(constants.REPORT_APPLIED)
    return report


def builtin_rollout(kubeconfig: Path, name: str) -> Path:
    """Apply the ModelRollout ``name`` and what the operator makes for its router (its account, Role and
    binding, its empty report); returns a kubeconfig with only the router's rights."""
    kubectl.run("apply", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps(rollout_body(name)))
    stored = json.loads(kubectl.run("get", "mro", name, "-o", "json", kubeconfig=kubeconfig).stdout)
    owner = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "name": name,
        "uid": stored["metadata"]["uid"],
    }
    made = [
        build(rollout=name, namespace="default", owner=owner)
        for build in (
            manifests.router_service_account,
            manifests.router_report,
            manifests.router_role,
            manifests.router_role_binding,
        )
    ]
    kubectl.run(
        "apply", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": made})
    )
    destination = Path(tempfile.mkdtemp(prefix="router-")) / "kubeconfig"
    return kubectl.account_kubeconfig(kubeconfig, f"{name}-router", "default", destination)


def reported(kubeconfig: Path, name: str, report: str) -> Callable[[], bool]:
    return lambda: router_report(kubeconfig, name) == report


DATA_PLANES = pytest.mark.parametrize("data_plane", ["python", "nginx"])


class RouterProcess:
    def __init__(
        self,
        *,
        blue: ModelServer,
        green: ModelServer,
        args: list[str],
        data_plane: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = process.free_port()
        self.url = f"http://{process.LOOPBACK}:{self.port}"
        self.logs = Path(blue.log_dir)
        self._process = process.start(
            f"router-{self.port}",
            [
                sys.executable,
                "-m",
                "model_server.router",
                "--blue-url",
                blue.url,
                "--green-url",
                green.url,
                "--port",
                str(self.port),
                "--log-format",
                "json",
                "--data-plane",
                data_plane,
                *args,
            ],
            log_dir=self.logs,
            env=env,
        )
        self.log_file = self.logs / f"router-{self.port}.log"
        self.pid = self._process.pid
        process.wait_until(
            lambda: httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200,
            timeout=30,
            what="router",
            alive=lambda: self._process.poll() is None,
        )

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/router/state", timeout=2).json()
        return result

    def nginx_config_version(self) -> int:
        """The config version nginx itself answers (nginx data plane only)."""
        return int(httpx.get(f"{self.url}/router/config-version", timeout=2).text)

    def stop(self) -> None:
        process.stop(self._process.pid)
        self._process.poll()


def serving(router: RouterProcess, *, green: int, revision: int) -> Callable[[], bool]:
    """The router's state shows these weights for this revision."""

    def check() -> bool:
        state = router.state()
        return bool(state["greenWeight"] == green and state["revision"] == revision)

    return check


@pytest.fixture(scope="module")
def servers(demo_models: Path) -> Iterator[tuple[ModelServer, ModelServer]]:
    with (
        ModelServer(demo_models / "digits-fp32.onnx", colour="blue") as blue,
        ModelServer(demo_models / "digits-2bit.onnx", version="v2", colour="green") as green,
    ):
        yield blue, green


def send(
    router: RouterProcess,
    stream: dict[str, np.ndarray],
    count: int,
    *,
    headers: dict[str, str] | None = None,
    feedback: bool = False,
) -> dict[str, int]:
    """Inference through the router; returns how many each model version answered."""
    answered: dict[str, int] = {}
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for index in range(count):
            x = stream["inputs"][index % 10_000]
            body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": x.tolist()}]}
            response = client.post("/v2/models/digits/infer", json=body, headers=headers)
            assert response.status_code == 200, response.text
            answer = response.json()
            answered[answer["model_version"]] = answered.get(answer["model_version"], 0) + 1
            if feedback:
                fed = client.post(
                    "/v2/models/digits/feedback",
                    json={"id": answer["id"], "label": int(stream["labels"][index % 10_000])},
                )
                assert fed.status_code == 200, fed.text
    return answered


@pytest.fixture(scope="module")
def crd(kubeconfig: Path) -> None:
    kubectl.install_crd(kubeconfig)


@DATA_PLANES
def test_router_follows_the_rollout_weights(
    kubeconfig: Path,
    crd: None,
    servers: tuple[ModelServer, ModelServer],
    stream: dict[str, np.ndarray],
    data_plane: str,
) -> None:
    name = f"split-{data_plane}"
    blue, green = servers
    router_config = builtin_rollout(kubeconfig, name)
    router = RouterProcess(
        data_plane=data_plane, blue=blue, green=green, args=["--rollout", name, "--kubeconfig", str(router_config)]
    )
    try:
        assert router.state()["greenWeight"] == 0  # no weights published yet: all blue
        assert router_report(kubeconfig, name) is None  # and nothing reported
        # not Ready (a Deployment sends it no traffic) until it serves what its rollout asks for
        assert httpx.get(f"{router.url}/readyz", timeout=2).status_code == 503
        assert send(router, stream, 50) == {"v1": 50}
        requests = 1500
        for revision, weight in enumerate((10, 25, 50), start=1):
            publish_weight(kubeconfig, name, weight, revision)
            process.wait_until(
                serving(router, green=weight, revision=revision),
                timeout=60,
                interval=0.02,
                what=f"router applying {weight}%",
            )
            assert httpx.get(f"{router.url}/readyz", timeout=2).status_code == 200
            process.wait_until(
                reported(kubeconfig, name, f"{revision}/{weight}"), timeout=60, what=f"report {revision}/{weight}"
            )
            answered = send(router, stream, requests, feedback=weight == 25)
            share = answered.get("v2", 0) / requests
            # binomial standard error; 4 sigma keeps this test from flaking while still catching a wrong split
            tolerance = 4 * math.sqrt(weight / 100 * (1 - weight / 100) / requests)
            assert abs(share - weight / 100) < tolerance, (weight, share)
        if data_plane == "nginx":
            version = router.nginx_config_version()
        # a new revision asking for the same weight is reported again, without a reload
        publish_weight(kubeconfig, name, 50, 4)
        process.wait_until(reported(kubeconfig, name, "4/50"), timeout=60, what="report 4/50")
        if data_plane == "nginx":
            assert router.nginx_config_version() == version
    finally:
        router.stop()


def test_an_older_status_without_revision_is_revision_0(
    kubeconfig: Path, crd: None, servers: tuple[ModelServer, ModelServer]
) -> None:
    blue, green = servers
    router_config = builtin_rollout(kubeconfig, "older")
    publish_weight(kubeconfig, "older", 25)
    router = RouterProcess(
        data_plane="python", blue=blue, green=green, args=["--rollout", "older", "--kubeconfig", str(router_config)]
    )
    try:
        process.wait_until(reported(kubeconfig, "older", "0/25"), timeout=60, what="report 0/25")
        assert router.state()["greenWeight"] == 25
    finally:
        router.stop()


FAILING_NGINX = """#!/bin/sh
# nginx, except that checking a config (-t) fails while the marker file exists: a reload that cannot happen.
if [ "$1" = "-t" ] && [ -e {marker} ]; then
  echo "injected failure: config test refused" >&2
  exit 1
fi
exec {nginx} "$@"
"""


def test_a_failing_nginx_reload_is_not_reported_and_is_retried(
    kubeconfig: Path,
    crd: None,
    servers: tuple[ModelServer, ModelServer],
    stream: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    from model_server.router.nginx import nginx_binary

    real = nginx_binary()
    assert real is not None, "the nginx data plane needs Debian's nginx"
    marker = tmp_path / "fail-reloads"
    wrapper = tmp_path / "nginx"
    wrapper.write_text(FAILING_NGINX.format(marker=marker, nginx=real))
    wrapper.chmod(0o755)
    name = "reload-fault"
    blue, green = servers
    router_config = builtin_rollout(kubeconfig, name)
    publish_weight(kubeconfig, name, 10, 1)
    router = RouterProcess(
        data_plane="nginx",
        blue=blue,
        green=green,
        args=["--rollout", name, "--kubeconfig", str(router_config)],
        env={"MODELROUTER_NGINX_BINARY": str(wrapper)},
    )
    try:
        process.wait_until(reported(kubeconfig, name, "1/10"), timeout=60, what="report 1/10")
        marker.touch()
        publish_weight(kubeconfig, name, 0, 2)  # a rollback the data plane cannot apply
        # retried on its own (no new status arrives meanwhile), never reported while refused
        process.wait_until(
            lambda: router.log_file.read_text().count("injected failure") >= 3,
            timeout=60,
            what="three refused reloads",
        )
        assert router_report(kubeconfig, name) == "1/10"
        assert router.state()["greenWeight"] == 10
        assert 0 < send(router, stream, 200).get("v2", 0) < 60  # nginx still serves the old 10%
        marker.unlink()
        process.wait_until(reported(kubeconfig, name, "2/0"), timeout=60, what="report 2/0")
        state = router.state()
        assert (state["greenWeight"], state["revision"]) == (0, 2)
        assert send(router, stream, 100) == {"v1": 100}
    finally:
        router.stop()


@DATA_PLANES
def test_sticky_key_keeps_its_colour(
    kubeconfig: Path,
    crd: None,
    servers: tuple[ModelServer, ModelServer],
    stream: dict[str, np.ndarray],
    data_plane: str,
) -> None:
    """At 50% green with a sticky header: every user lands on the same colour on every request (asked again
    in another order), and the users split between the colours near 50% (binomial, 99.9%), so both get some."""
    blue, green = servers
    router = RouterProcess(
        data_plane=data_plane, blue=blue, green=green, args=["--weight", "50", "--sticky-header", "x-user"]
    )
    users = [f"user-{index}" for index in range(200)]
    answered: dict[str, set[str]] = {user: set() for user in users}
    try:
        process.wait_until(lambda: router.state()["greenWeight"] == 50, timeout=30, what="50% green applied")
        with httpx.Client(base_url=router.url, timeout=10) as client:
            for order in (users, users[::-1], users[::2] + users[1::2]):
                for index, user in enumerate(order):
                    x = stream["inputs"][index % 10_000]
                    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": x.tolist()}]}
                    response = client.post("/v2/models/digits/infer", json=body, headers={"x-user": user})
                    assert response.status_code == 200, response.text
                    answered[user].add(response.json()["model_version"])
    finally:
        router.stop()
    switched = {user: versions for user, versions in answered.items() if len(versions) != 1}
    assert not switched, f"users answered by both colours: {switched}"
    on_green = sum(versions == {green.version} for versions in answered.values())
    on_blue = sum(versions == {blue.version} for versions in answered.values())
    assert on_green + on_blue == len(users)
    allowed = 3.29 * math.sqrt(len(users) * 0.5 * 0.5)  # two-sided 99.9%
    assert abs(on_green - len(users) / 2) <= allowed, f"{on_green} of {len(users)} users on green at 50%"


@DATA_PLANES
def test_mirroring_a_degraded_green_counts_disagreements(
    servers: tuple[ModelServer, ModelServer], stream: dict[str, np.ndarray], data_plane: str
) -> None:
    blue, green = servers
    router = RouterProcess(
        data_plane=data_plane, blue=blue, green=green, args=["--weight", "0", "--mirror-percent", "100"]
    )
    try:
        assert send(router, stream, 400) == {"v1": 400}  # mirrored answers are discarded
        compared = ("modelrouter_mirror_comparisons_total", "")
        process.wait_until(
            lambda: router_samples(router).get(compared, 0) >= 390, timeout=60, what="390 mirrored answers compared"
        )
        values = router_samples(router)
        rate = values[("modelrouter_mirror_disagreements_total", "")] / values[compared]
        assert 0.02 < rate < 0.2  # the 2-bit model disagrees with fp32 on several percent of digits
    finally:
        router.stop()


def router_samples(router: RouterProcess) -> dict[tuple[str, str], float]:
    """The router's counters: (sample name, colour label or "") -> value."""
    text = httpx.get(f"{router.url}/metrics", timeout=5).text
    return {
        (sample.name, sample.labels.get("colour", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@DATA_PLANES
def test_mirrored_copies_a_dead_green_cannot_answer_are_not_counted_as_its_upstream_errors(
    servers: tuple[ModelServer, ModelServer], stream: dict[str, np.ndarray], data_plane: str
) -> None:
    """Green's upstream errors are divided by green's share of user requests: a mirrored copy no user waited
    for must not count there (at 0% weight it would read as an infinite error rate)."""
    blue, _ = servers
    dead = cast(
        ModelServer, SimpleNamespace(url=f"http://{process.LOOPBACK}:{process.free_port()}", log_dir=blue.log_dir)
    )
    router = RouterProcess(
        data_plane=data_plane, blue=blue, green=dead, args=["--weight", "0", "--mirror-percent", "100"]
    )
    try:
        assert send(router, stream, 40) == {"v1": 40}
        process.wait_until(
            lambda: router_samples(router).get(("modelrouter_mirror_errors_total", ""), 0) >= 40,
            timeout=60,
            what="40 mirror errors counted",
        )
        samples = router_samples(router)
        assert samples.get(("modelrouter_upstream_errors_total", "green"), 0) == 0
        assert samples.get(("modelrouter_upstream_errors_total", "blue"), 0) == 0
    finally:
        router.stop()


@DATA_PLANES
def test_router_keeps_last_weights_when_the_api_server_is_gone(
    demo_models: Path,
    servers: tuple[ModelServer, ModelServer],
    stream: dict[str, np.ndarray],
    data_plane: str,
    tmp_path: Path,
) -> None:
    """A router keeps serving what it served when the API server goes, and so does a router restarted while
    the API server is still gone, from its state file; one without the file can only start at 100% blue."""
    blue, green = servers
    state_file = tmp_path / "weights.json"
    with cluster.LocalCluster(nodes=1) as local:
        config_path = local.kubeconfig_path
        kubectl.install_crd(config_path)
        router_config = builtin_rollout(config_path, "outage")
        publish_weight(config_path, "outage", 100)
        follow = ["--rollout", "outage", "--kubeconfig", str(router_config)]
        router = RouterProcess(
            data_plane=data_plane, blue=blue, green=green, args=[*follow, "--state-file", str(state_file)]
        )
        restarted = forgetful = replica = None
        try:
            process.wait_until(lambda: router.state()["greenWeight"] == 100, timeout=60, what="router at 100%")
            process.wait_until(state_file.exists, timeout=10, what="the served weights kept")
            assert local.state is not None
            process.stop(local.state.pids["kube-apiserver"])
            process.wait_until(
                lambda: "watch interrupted; keeping the last weights" in router.log_file.read_text(),
                timeout=60,
                what="the router to lose its watch",
            )
            assert send(router, stream, 100) == {"v2": 100}
            router.stop()  # a container restart: the emptyDir, and the file on it, stay

            restarted = RouterProcess(
                data_plane=data_plane, blue=blue, green=green, args=[*follow, "--state-file", str(state_file)]
            )
            process.wait_until(  # Ready once its read of the rollout failed: it serves what it remembered
                lambda: httpx.get(f"{restarted.url}/readyz", timeout=2).status_code == 200,
                timeout=30,
                what="the restarted router Ready",
            )
            assert restarted.state()["greenWeight"] == 100
            assert send(restarted, stream, 100) == {"v2": 100}
            forgetful = RouterProcess(data_plane=data_plane, blue=blue, green=green, args=follow)
            assert send(forgetful, stream, 100) == {"v1": 100}  # what the file is for
            # one of two replicas: the operator may have confirmed newer weights from the other while it was
            # down, so it stays not Ready until it has read its rollout, whatever its file says
            replica = RouterProcess(
                data_plane=data_plane,
                blue=blue,
                green=green,
                args=[*follow, "--state-file", str(state_file), "--replicas", "2"],  # the same file, its entry
            )
            process.wait_until(
                lambda: "watch interrupted; keeping the last weights" in replica.log_file.read_text(),
                timeout=60,
                what="the replica's read of the rollout to fail",
            )
            assert httpx.get(f"{replica.url}/readyz", timeout=2).status_code == 503
        finally:
            for each in (router, restarted, forgetful, replica):
                if each is not None:
                    each.stop()


def children(pid: int) -> dict[int, str]:
    """Live (not zombie) child processes of ``pid``: pid -> command name."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            command, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = rest.split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(stat.parent.name)] = command.split("(", 1)[1]
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def nginx_master(router: RouterProcess) -> int:
    """The pid of the nginx the router process started (its child)."""
    masters = [pid for pid, command in children(router.pid).items() if command == "nginx"]
    assert len(masters) == 1, masters
    return masters[0]


def test_nginx_killed_is_started_again_serving_the_same_weights(
    servers: tuple[ModelServer, ModelServer], stream: dict[str, np.ndarray]
) -> None:
    """nginx's master killed outright (its worker left holding the port): the router ends what is left,
    starts nginx again with the config it served, counts the restart, and serves the same split."""
    blue, green = servers
    router = RouterProcess(data_plane="nginx", blue=blue, green=green, args=["--weight", "100"])
    try:
        assert send(router, stream, 20) == {"v2": 20}
        version = router.nginx_config_version()
        killed = nginx_master(router)
        workers = set(children(killed))
        assert workers  # the worker that would go on holding the port
        os.kill(killed, signal.SIGKILL)
        process.wait_until(
            lambda: router_samples(router).get(("modelrouter_nginx_restarts_total", ""), 0) >= 1,
            timeout=30,
            what="nginx started again",
        )
        assert nginx_master(router) != killed
        assert not [pid for pid in workers if alive(pid)]  # what was left of the killed nginx is gone
        assert router.nginx_config_version() == version  # the config it served, not a new one
        assert httpx.get(f"{router.url}/readyz", timeout=2).status_code == 200
        assert send(router, stream, 20) == {"v2": 20}
    finally:
        router.stop()


@pytest.fixture(scope="module")
def httproute_crd(kubeconfig: Path, crd: None) -> None:
    kubectl.install_crd(kubeconfig, binaries.gateway_api_crds() / "gateway.networking.k8s.io_httproutes.yaml")


def gateway_rollout(kubeconfig: Path, name: str, **gateway: Any) -> tuple[RolloutRef, ModelRolloutSpec]:
    body = rollout_body(
        name, provider="gateway-api", gatewayApi={"parentRefs": [{"name": "public-gateway"}], "port": 8080, **gateway}
    )
    kubectl.run("apply", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps(body))
    stored = json.loads(kubectl.run("get", "mro", name, "-o", "json", kubeconfig=kubeconfig).stdout)
    api.configure(str(kubeconfig))
    ref = RolloutRef(namespace="default", name=name, uid=stored["metadata"]["uid"], body=stored)
    return ref, ModelRolloutSpec.model_validate(stored["spec"])


def get_route(kubeconfig: Path, name: str) -> dict[str, Any]:
    route: dict[str, Any] = json.loads(
        kubectl.run("get", "httproute", name, "-o", "json", kubeconfig=kubeconfig).stdout
    )
    return route


def report_route_status(kubeconfig: Path, name: str, *, accepted: str, generation: int) -> None:
    """What a Gateway controller does: the route's status.parents, through the status subresource."""
    condition = {"lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": generation}
    status = {
        "parents": [
            {
                "parentRef": {"name": "public-gateway"},
                "controllerName": "example.com/gateway-controller",
                "conditions": [
                    {
                        **condition,
                        "type": "Accepted",
                        "status": accepted,
                        "reason": "Accepted" if accepted == "True" else "NotAllowedByListeners",
                        "message": "",
                    },
                    {**condition, "type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": ""},
                ],
            }
        ]
    }
    kubectl.run(
        "patch",
        "httproute",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        kubeconfig=kubeconfig,
    )


def test_gateway_api_weights_are_written_with_their_revision(kubeconfig: Path, httproute_crd: None) -> None:
    ref, spec = gateway_rollout(kubeconfig, "gw")
    router = GatewayApiRouter()
    router.reconcile(ref, spec)
    assert router.applied(ref, spec).revision is None  # created at 100% blue, but for no revision yet
    for revision, weight in enumerate((10, 50, 100, 0), start=1):
        router.set_weights(ref, spec, green=weight, revision=revision)
        applied = router.applied(ref, spec)
        assert applied.confirms(revision=revision, green=weight)
        assert applied.note == "the Gateway reports no route status"
    router.set_weights(ref, spec, green=0, revision=5)  # only the revision changes
    assert router.applied(ref, spec).confirms(revision=5, green=0)
    route = get_route(kubeconfig, "gw")
    assert route["metadata"]["annotations"][constants.ANNOTATION_WEIGHTS_REVISION] == "5"
    assert route["spec"]["parentRefs"][0]["name"] == "public-gateway"
    assert [ref["name"] for ref in route["spec"]["rules"][0]["backendRefs"]] == ["gw-blue", "gw-green"]
    # the API server took the rule that keeps fault injection from being forwarded (a rule with no backend)
    [refused] = [rule for rule in route["spec"]["rules"] if not rule.get("backendRefs")]
    assert [match["path"]["value"] for match in refused["matches"]] == ["/v2/faults"]
    assert route["metadata"]["ownerReferences"][0]["kind"] == "ModelRollout"


def test_gateway_api_weights_count_only_once_the_gateway_accepts_the_route(
    kubeconfig: Path, httproute_crd: None
) -> None:
    ref, spec = gateway_rollout(kubeconfig, "gw-status")
    router = GatewayApiRouter()
    router.set_weights(ref, spec, green=10, revision=1)
    generation = get_route(kubeconfig, "gw-status")["metadata"]["generation"]
    report_route_status(kubeconfig, "gw-status", accepted="False", generation=generation)
    refused = router.applied(ref, spec)
    assert refused.revision is None and not refused.confirms(revision=1, green=10)
    assert "Accepted=False (NotAllowedByListeners)" in refused.note

    report_route_status(kubeconfig, "gw-status", accepted="True", generation=generation)
    assert router.applied(ref, spec).confirms(revision=1, green=10)

    # new weights: the status the Gateway wrote is for the previous generation of the route
    router.set_weights(ref, spec, green=25, revision=2)
    route = get_route(kubeconfig, "gw-status")
    assert route["metadata"]["generation"] > generation
    stale = router.applied(ref, spec)
    assert stale.revision is None and "generation" in stale.note
    report_route_status(kubeconfig, "gw-status", accepted="True", generation=route["metadata"]["generation"])
    assert router.applied(ref, spec).confirms(revision=2, green=25)

    # a revision alone changes no generation: the accepted weights stand for it
    router.set_weights(ref, spec, green=25, revision=3)
    assert router.applied(ref, spec).confirms(revision=3, green=25)


def test_finalize_gives_an_adopted_route_back_and_leaves_a_created_one_on_blue(
    kubeconfig: Path, httproute_crd: None
) -> None:
    theirs = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "shop",
            "namespace": "default",
            "labels": {"team": "ml", "app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"owner": "ml-platform"},
        },
        "spec": {
            "parentRefs": [{"name": "their-gateway"}],
            "hostnames": ["digits.example.com"],
            "rules": [{"backendRefs": [{"name": "digits-v0", "port": 80}]}],
        },
    }
    kubectl.run("apply", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps(theirs))
    before = get_route(kubeconfig, "shop")
    ref, spec = gateway_rollout(kubeconfig, "adopter", routeName="shop")
    router = GatewayApiRouter()
    router.reconcile(ref, spec)
    assert get_route(kubeconfig, "shop")["spec"] == before["spec"]  # reconcile does not touch it
    router.set_weights(ref, spec, green=30, revision=1)
    adopted = get_route(kubeconfig, "shop")
    assert json.loads(adopted["metadata"]["annotations"][gateway_api.ANNOTATION_ADOPTED_SPEC]) == before["spec"]
    assert adopted["metadata"]["labels"][constants.LABEL_ROLLOUT] == "adopter"
    assert adopted["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert "ownerReferences" not in adopted["metadata"]  # not ours to delete
    assert router.applied(ref, spec).confirms(revision=1, green=30)
    router.set_weights(ref, spec, green=60, revision=2)
    assert (
        json.loads(get_route(kubeconfig, "shop")["metadata"]["annotations"][gateway_api.ANNOTATION_ADOPTED_SPEC])
        == (before["spec"])
    )

    router.finalize(ref, spec)
    restored = get_route(kubeconfig, "shop")
    assert restored["spec"] == before["spec"]
    assert restored["metadata"]["labels"] == before["metadata"]["labels"]
    assert restored["metadata"]["annotations"] == before["metadata"]["annotations"]

    created_ref, created_spec = gateway_rollout(kubeconfig, "creator")
    router.set_weights(created_ref, created_spec, green=40, revision=1)
    router.finalize(created_ref, created_spec)
    left = get_route(kubeconfig, "creator")
    assert gateway_api.green_weight_of(left, created_ref) == 0
    assert gateway_api.ANNOTATION_ADOPTED_SPEC not in (left["metadata"].get("annotations") or {})


def test_keep_stable_finalize_leaves_routes_on_blue_and_out_of_garbage_collection(
    kubeconfig: Path, httproute_crd: None
) -> None:
    theirs = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "kept-shop", "namespace": "default", "labels": {"team": "ml"}},
        "spec": {
            "parentRefs": [{"name": "their-gateway"}],
            "rules": [{"backendRefs": [{"name": "digits-v0", "port": 80}]}],
        },
    }
    kubectl.run("apply", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps(theirs))
    before = get_route(kubeconfig, "kept-shop")
    router = GatewayApiRouter()
    adopter, adopter_spec = gateway_rollout(kubeconfig, "kept-adopter", routeName="kept-shop")
    router.set_weights(adopter, adopter_spec, green=30, revision=1)
    router.finalize(adopter, adopter_spec, keep_stable=True)
    adopted = get_route(kubeconfig, "kept-shop")
    # not restored: its old spec routes to digits-v0, older than the stable model blue serves
    assert gateway_api.green_weight_of(adopted, adopter) == 0
    annotations = adopted["metadata"]["annotations"]
    assert json.loads(annotations[gateway_api.ANNOTATION_PRE_ADOPTION_SPEC]) == before["spec"]
    assert gateway_api.ANNOTATION_ADOPTED_SPEC not in annotations

    creator, creator_spec = gateway_rollout(kubeconfig, "kept-creator")
    router.set_weights(creator, creator_spec, green=40, revision=1)
    assert get_route(kubeconfig, "kept-creator")["metadata"]["ownerReferences"][0]["uid"] == creator.uid
    router.finalize(creator, creator_spec, keep_stable=True)
    created = get_route(kubeconfig, "kept-creator")
    assert gateway_api.green_weight_of(created, creator) == 0
    assert not created["metadata"].get("ownerReferences")  # garbage collection has nothing to follow
    assert created["metadata"]["labels"]["modelrollout.dev/orphaned"] == "true"


def test_a_router_whose_rollout_is_gone_serves_blue_and_is_ready(
    kubeconfig: Path, crd: None, servers: tuple[ModelServer, ModelServer], stream: dict[str, np.ndarray]
) -> None:
    """After a keepStable deletion the router stays with the stable model; one that (re)starts then must be
    Ready and send everything to blue, not wait forever for a ModelRollout that will not come back."""
    blue, green = servers
    router = RouterProcess(
        data_plane="python",
        blue=blue,
        green=green,
        args=["--rollout", "deleted-long-ago", "--kubeconfig", str(kubeconfig)],
    )
    try:
        process.wait_until(
            lambda: httpx.get(f"{router.url}/readyz", timeout=2).status_code == 200, timeout=60, what="ready"
        )
        assert send(router, stream, 30) == {"v1": 30}
    finally:
        router.stop()
