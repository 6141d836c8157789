"""The objects a ModelRollout owns, on the real control plane: server-side apply removes what the manifests
stop setting, a colour is available only when no pod of an older version is left, and deleting a
ModelRollout keeps the stable model serving (deletionPolicy keepStable) or removes everything (deleteAll).

The deletion logic runs against the real API server and garbage collector; the builtin router is stood in
for by a thread that reports ``status.weights`` back as the router does once it serves them. The last test
deletes with ``kubectl delete`` while the operator runs as its own process.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelrollout import controller
from modelrollout.api import constants
from modelrollout.api.spec import ModelRolloutSpec, serving_revision
from modelrollout.api.status import StableStatus
from modelrollout.devcluster import kubectl, process
from modelrollout.devcluster.prometheus import PrometheusServer
from modelrollout.k8s import api, deletion, manifests, resources
from modelrollout.rollout import steps
from modelrollout.routing.base import RolloutRef
from modelrollout.routing.report import report_name

pytestmark = pytest.mark.e2e

NAMESPACE = "owned-objects"
TEST_FINALIZER = f"{constants.GROUP}/test"
"""Holds a ModelRollout while a test runs the operator's finalizer logic itself."""


@pytest.fixture(scope="module")
def cluster(kubeconfig: Path) -> Iterator[Path]:
    kubectl.install_crd(kubeconfig)
    api.configure(str(kubeconfig))
    if kubectl.run("get", "namespace", NAMESPACE, kubeconfig=kubeconfig, check=False).returncode != 0:
        kubectl.run("create", "namespace", NAMESPACE, kubeconfig=kubeconfig)
    garbage_collector_follows_modelrollouts(kubeconfig)
    yield kubeconfig
    # no operator is left to finalize what the tests leave: drop the finalizers, then the namespace
    for item in api.custom().list_namespaced_custom_object(
        constants.GROUP, constants.VERSION, NAMESPACE, constants.PLURAL
    )["items"]:
        release(item["metadata"]["name"])
    kubectl.run("delete", "namespace", NAMESPACE, "--wait=false", kubeconfig=kubeconfig)


def garbage_collector_follows_modelrollouts(kubeconfig: Path) -> None:
    """The garbage collector learns of a new CRD at its next discovery sync (every 30 s); an object owned by
    a ModelRollout that it saw before then may outlive its owner for long. Wait until a probe is collected
    at once."""
    for attempt in range(10):
        name = f"gc-probe-{attempt}"
        probe = create_rollout(name, spec_body(), finalizers=())
        api.core().create_namespaced_config_map(
            NAMESPACE, {"metadata": {"name": f"{name}-sentinel", "ownerReferences": [api.owner_reference(probe)]}}
        )
        kubectl.run("delete", "mro", name, "-n", NAMESPACE, kubeconfig=kubeconfig)
        try:
            process.wait_until(lambda probe=probe: collected(probe), timeout=60, what="garbage collection")  # type: ignore[misc]
            return
        except TimeoutError:
            continue
    raise TimeoutError("the garbage collector does not collect objects owned by ModelRollouts")


def spec_body(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "blue": {"model": {"uri": "file:///models/digits-fp32.onnx", "version": "v1"}},
        "green": {"model": {"uri": "file:///models/digits-int8.onnx", "version": "v2"}},
        "traffic": {"steps": [{"weight": 50}, {"weight": 100}]},
    }
    spec.update(overrides)
    return spec


def create_rollout(name: str, spec: dict[str, Any], *, finalizers: tuple[str, ...] = (TEST_FINALIZER,)) -> RolloutRef:
    metadata: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "finalizers": list(finalizers)}
    api.create_custom(
        constants.GROUP,
        constants.VERSION,
        constants.PLURAL,
        NAMESPACE,
        {"apiVersion": constants.API_VERSION, "kind": constants.KIND, "metadata": metadata, "spec": spec},
    )
    return deletion.rollout_ref(get_rollout(name))


def get_rollout(name: str) -> dict[str, Any]:
    found = api.get_custom(constants.GROUP, constants.VERSION, constants.PLURAL, NAMESPACE, name)
    assert found is not None, f"ModelRollout {name} is gone"
    return found


def ensure(rollout: RolloutRef, spec: dict[str, Any] | None = None, *, green_replicas: int = 1) -> ModelRolloutSpec:
    parsed = ModelRolloutSpec.model_validate(spec or rollout.body["spec"])
    stable = StableStatus(model=parsed.blue.model, server=parsed.server, revision="")
    resources.ensure(rollout, parsed, stable=stable, green_replicas=green_replicas)
    return parsed


def container_env(name: str) -> dict[str, str]:
    live = api.read("Deployment", NAMESPACE, name)
    assert live is not None
    container = live["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def pods(rollout: str, colour: str) -> list[dict[str, Any]]:
    return api.list_pods(NAMESPACE, resources.selector(rollout, colour))


def make_ready(rollout: str, colour: str, replicas: int) -> None:
    """Mark the colour's started pods Ready, as the kubelet would once the model server answers (the fake
    nodes run no process; without a kubelet stand-in nothing else reports their readiness)."""

    def started() -> bool:
        live = [pod for pod in pods(rollout, colour) if not pod["metadata"].get("deletionTimestamp")]
        return len(live) >= replicas and all(pod.get("status", {}).get("podIP") for pod in live)

    process.wait_until(started, timeout=60, what=f"{rollout}-{colour} pods started")
    ready = [{"type": kind, "status": "True"} for kind in ("Ready", "ContainersReady")]
    for pod in pods(rollout, colour):
        api.core().patch_namespaced_pod_status(pod["metadata"]["name"], NAMESPACE, {"status": {"conditions": ready}})


def revision_of(rollout: RolloutRef, colour: str) -> str:
    """The serving revision label of a colour's pods (the model and server settings it runs)."""
    spec = ModelRolloutSpec.model_validate(rollout.body["spec"])
    model = spec.blue.model if colour == constants.BLUE else spec.green.model
    return serving_revision(model, spec.server)


def available(rollout: RolloutRef, colour: str, version: str) -> bool:
    return resources.available(rollout, colour, version=version, revision=revision_of(rollout, colour))


def mark_started_pods_ready(rollout: str, colour: str) -> None:
    """What make_ready does, for pods that started since (a ReplicaSet may replace one meanwhile)."""
    ready = [{"type": kind, "status": "True"} for kind in ("Ready", "ContainersReady")]
    for pod in pods(rollout, colour):
        started = pod.get("status", {}).get("podIP") and not pod["metadata"].get("deletionTimestamp")
        conditions = {c.get("type"): c.get("status") for c in pod.get("status", {}).get("conditions") or []}
        if started and conditions.get("Ready") != "True":
            api.core().patch_namespaced_pod_status(
                pod["metadata"]["name"], NAMESPACE, {"status": {"conditions": ready}}
            )


def serving(rollout: RolloutRef, colour: str, version: str, replicas: int = 1) -> None:
    make_ready(rollout.name, colour, replicas)

    def up() -> bool:
        mark_started_pods_ready(rollout.name, colour)
        return available(rollout, colour, version)

    process.wait_until(up, timeout=60, what=f"{colour} available")


def gone(kind: str, name: str) -> bool:
    return api.read(kind, NAMESPACE, name) is None


# --- server-side apply ----------------------------------------------------------------------------------------


def test_an_env_var_the_next_manifest_lacks_is_removed(cluster: Path) -> None:
    model = {"uri": "file:///models/digits-int8.onnx", "version": "v2", "sha256": "a" * 64}
    faulty = spec_body(green={"model": model}, server={"settings": {"MODELSERVER_FAULT_ERROR_RATE": "0.2"}})
    rollout = create_rollout("ssa", faulty)
    ensure(rollout, faulty)
    before = container_env("ssa-green")
    assert before["MODELSERVER_MODEL_SHA256"] == "a" * 64 and before["MODELSERVER_FAULT_ERROR_RATE"] == "0.2"

    ensure(rollout, spec_body())
    after = container_env("ssa-green")
    assert "MODELSERVER_MODEL_SHA256" not in after and "MODELSERVER_FAULT_ERROR_RATE" not in after
    assert after["MODELSERVER_MODEL_VERSION"] == "v2"
    assert "MODELSERVER_FAULT_ERROR_RATE" not in container_env("ssa-blue")
    live = api.read("Deployment", NAMESPACE, "ssa-green")
    assert live is not None
    managers = {(entry["manager"], entry["operation"]) for entry in live["metadata"]["managedFields"]}
    assert (api.FIELD_MANAGER, "Apply") in managers


def secret_token(name: str) -> str | None:
    live = api.read("Secret", NAMESPACE, name)
    return None if live is None else base64.b64decode(live["data"]["token"]).decode()


def test_each_rollout_gets_a_random_feedback_token_once_and_a_users_own_is_kept(cluster: Path) -> None:
    first, second = create_rollout("fed-a", spec_body()), create_rollout("fed-b", spec_body())
    ensure(first)
    ensure(second)
    token = secret_token("fed-a-feedback")
    assert token is not None and len(token) >= 40 and token != secret_token("fed-b-feedback")
    live = api.read("Secret", NAMESPACE, "fed-a-feedback")
    assert live is not None and [o["uid"] for o in live["metadata"]["ownerReferences"]] == [first.uid]
    ensure(first)
    assert secret_token("fed-a-feedback") == token  # never rewritten: running Pods keep a valid token
    # a user's own Secret, made before the rollout, is used as it is
    kubectl.run(
        "create", "secret", "generic", "fed-c-feedback", "--from-literal=token=users-own", "-n", NAMESPACE,
        kubeconfig=cluster,
    )  # fmt: skip
    ensure(create_rollout("fed-c", spec_body()))
    assert secret_token("fed-c-feedback") == "users-own"
    for deployment in ("fed-a-blue", "fed-a-green", "fed-a-router"):
        live = api.read("Deployment", NAMESPACE, deployment)
        assert live is not None
        env = live["spec"]["template"]["spec"]["containers"][0]["env"]
        refs = [item["valueFrom"]["secretKeyRef"] for item in env if "secretKeyRef" in item.get("valueFrom", {})]
        assert refs == [{"name": "fed-a-feedback", "key": "token", "optional": True}], deployment


def test_a_deployment_written_by_the_earlier_operator_loses_stale_fields_too(cluster: Path) -> None:
    """Earlier versions created owned objects and strategic-merge patched them with the client's default
    field manager: their fields are handed over to the apply manager, so the next apply can drop them."""
    rollout = create_rollout("legacy", spec_body())
    parsed = ModelRolloutSpec.model_validate(spec_body())
    old = manifests.model_deployment(
        rollout="legacy",
        namespace=NAMESPACE,
        colour=constants.GREEN,
        model=parsed.green.model.model_copy(update={"sha256": "b" * 64}),
        server=parsed.server,
        owner=api.owner_reference(rollout),
        replicas=1,
    )
    api.apps().create_namespaced_deployment(NAMESPACE, old)  # as the earlier operator did
    assert container_env("legacy-green")["MODELSERVER_MODEL_SHA256"] == "b" * 64

    ensure(rollout)
    assert "MODELSERVER_MODEL_SHA256" not in container_env("legacy-green")
    live = api.read("Deployment", NAMESPACE, "legacy-green")
    assert live is not None
    assert not [e for e in live["metadata"]["managedFields"] if e["manager"] in api.LEGACY_FIELD_MANAGERS]


def test_the_startup_probe_reaches_the_api_server(cluster: Path) -> None:
    rollout = create_rollout("probe", spec_body())
    ensure(rollout)
    live = api.read("Deployment", NAMESPACE, "probe-blue")
    assert live is not None
    probe = live["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert probe["periodSeconds"] == manifests.STARTUP_PERIOD_SECONDS
    assert probe["failureThreshold"] == manifests.STARTUP_FAILURE_THRESHOLD


def test_the_router_never_runs_the_candidates_image(cluster: Path) -> None:
    rollout = create_rollout("imaged", spec_body(server={"image": "registry.invalid/candidate:2"}))
    parsed = ModelRolloutSpec.model_validate(rollout.body["spec"])
    stable_server = parsed.server.model_copy(update={"image": "registry.invalid/stable:1"})
    stable = StableStatus(model=parsed.blue.model, server=stable_server, revision="")

    def router_container() -> dict[str, Any]:
        live = api.read("Deployment", NAMESPACE, "imaged-router")
        assert live is not None
        container: dict[str, Any] = live["spec"]["template"]["spec"]["containers"][0]
        return container

    resources.ensure(rollout, parsed, stable=stable, green_replicas=1)
    assert router_container()["image"] == "registry.invalid/stable:1"  # the candidate's is not vetted yet
    assert router_container()["livenessProbe"]["httpGet"]["path"] == "/healthz"
    resources.ensure(rollout, parsed, stable=stable, green_replicas=1, router_image="registry.invalid/release:3")
    assert router_container()["image"] == "registry.invalid/release:3"


def test_a_router_bound_by_an_earlier_operator_loses_its_rights_to_patch_rollouts(cluster: Path) -> None:
    """An earlier operator bound each router to a ClusterRole that let it patch any ModelRollout. roleRef is
    immutable, so the binding is made again, to the router's own Role; the router's report exists, empty."""
    rollout = create_rollout("upgraded", spec_body())
    old_binding = manifests.router_role_binding(rollout="upgraded", namespace=NAMESPACE, owner={})
    old_binding["metadata"].pop("ownerReferences")
    old_binding["roleRef"] = {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "modelrollout-router",
    }
    api.rbac().create_namespaced_role_binding(NAMESPACE, old_binding)

    ensure(rollout)
    binding = api.read("RoleBinding", NAMESPACE, "upgraded-router")
    assert (
        binding is not None and binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == "upgraded-router"
    )
    role = api.read("Role", NAMESPACE, "upgraded-router")
    assert role is not None and {verb for rule in role["rules"] for verb in rule["verbs"]} == {
        "get",
        "list",
        "watch",
        "patch",
    }
    report = api.read("ConfigMap", NAMESPACE, report_name("upgraded"))
    assert report is not None and not report.get("data")
    # applied again (as every minute): the router's report is left as the router wrote it
    api.core().patch_namespaced_config_map(
        report_name("upgraded"),
        NAMESPACE,
        {"data": {constants.REPORT_APPLIED: "3/25"}},
        field_manager=constants.ROUTER_FIELD_MANAGER,  # as the router writes it
    )
    ensure(rollout)
    again = api.read("ConfigMap", NAMESPACE, report_name("upgraded"))
    assert again is not None and again["data"] == {constants.REPORT_APPLIED: "3/25"}


# --- availability and pod health -----------------------------------------------------------------------------


def test_a_colour_with_a_pod_of_an_older_version_is_not_available(cluster: Path) -> None:
    rollout = create_rollout("avail", spec_body())
    ensure(rollout)
    serving(rollout, constants.BLUE, "v1")
    assert resources.pod_health(
        rollout, constants.BLUE, revision=revision_of(rollout, constants.BLUE)
    ) == resources.PodHealth(pods=1, ready=1, restarts=0)

    old_labels = manifests.labels("avail", constants.BLUE) | {
        constants.LABEL_VERSION: "v0",
        constants.LABEL_REVISION: "r0",
    }
    old_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "avail-blue-old", "namespace": NAMESPACE, "labels": old_labels},
        "spec": {"containers": [{"name": "model-server", "image": "registry.invalid/model-server:old"}]},
    }
    api.core().create_namespaced_pod(NAMESPACE, old_pod)
    make_ready("avail", constants.BLUE, 2)
    assert not available(rollout, constants.BLUE, "v1")
    # the old pod is not counted as v1's
    assert resources.pod_health(rollout, constants.BLUE, revision=revision_of(rollout, constants.BLUE)).pods == 1
    assert resources.pod_health(rollout, constants.BLUE, revision="r0") == resources.PodHealth(
        pods=1, ready=1, restarts=0
    )

    api.core().delete_namespaced_pod("avail-blue-old", NAMESPACE, grace_period_seconds=0)
    process.wait_until(lambda: available(rollout, constants.BLUE, "v1"), timeout=60, what="old pod gone")


def test_a_green_pod_that_loses_readiness_shows_in_its_health(cluster: Path) -> None:
    rollout = create_rollout("health", spec_body())
    ensure(rollout, green_replicas=2)
    serving(rollout, constants.GREEN, "v2", replicas=2)
    first = pods("health", constants.GREEN)[0]["metadata"]["name"]
    unready = [{"type": "Ready", "status": "False"}]
    api.core().patch_namespaced_pod_status(first, NAMESPACE, {"status": {"conditions": unready}})
    assert resources.pod_health(
        rollout, constants.GREEN, revision=revision_of(rollout, constants.GREEN)
    ) == resources.PodHealth(pods=2, ready=1, restarts=0)
    assert not available(rollout, constants.GREEN, "v2")


# --- deletion ---------------------------------------------------------------------------------------------------


class FakeRouter:
    """Reports ``status.weights`` back in the router's report (routing.report), ``lag`` seconds after they change,
    as the builtin router does once its data plane serves them. It notes whether green's Deployment was still
    there (not deleted, not being deleted) when it reported each weight: the finalizer must not delete green
    before the router confirms that green gets nothing."""

    def __init__(self, name: str, *, lag: float = 0.5) -> None:
        self.name, self.lag = name, lag
        self.reports: list[str] = []
        self.green_there_when_reported: dict[str, bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                body = api.get_custom(constants.GROUP, constants.VERSION, constants.PLURAL, NAMESPACE, self.name)
            except ApiException:
                continue
            if body is None:
                return
            weights = (body.get("status") or {}).get("weights")
            if not weights:
                continue
            report = f"{weights.get('revision', 0)}/{weights['green']}"
            try:
                written = api.read("ConfigMap", NAMESPACE, report_name(self.name))
            except ApiException:
                continue
            if written is None:  # not created by the operator yet
                continue
            if (written.get("data") or {}).get(constants.REPORT_APPLIED) != report:
                time.sleep(self.lag)
                try:
                    green = api.read("Deployment", NAMESPACE, f"{self.name}-{constants.GREEN}")
                except ApiException:
                    continue
                there = green is not None and not green["metadata"].get("deletionTimestamp")
                data = {constants.REPORT_APPLIED: report, constants.REPORT_ROLLOUT_UID: body["metadata"]["uid"]}
                try:
                    api.patch("ConfigMap", NAMESPACE, report_name(self.name), {"data": data})
                except ApiException:
                    continue
                self.green_there_when_reported.setdefault(report, there)
                self.reports.append(report)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def router_for() -> Iterator[Any]:
    started: list[FakeRouter] = []

    def start(name: str) -> FakeRouter:
        router = FakeRouter(name)
        started.append(router)
        return router

    yield start
    for router in started:
        router.stop()


def publish_weights(name: str, *, green: int, revision: int) -> None:
    """Where a canary in flight stands: weights the router has confirmed."""
    status = {"weights": {"blue": 100 - green, "green": green, "revision": revision}}
    api.patch_custom_status(constants.GROUP, constants.VERSION, constants.PLURAL, NAMESPACE, name, {"status": status})


def sentinel(rollout: RolloutRef) -> None:
    """A ConfigMap owned by the rollout: its disappearance shows that garbage collection has run."""
    body = {
        "metadata": {"name": f"{rollout.name}-sentinel", "ownerReferences": [api.owner_reference(rollout)]},
        "data": {},
    }
    api.core().create_namespaced_config_map(NAMESPACE, body)


def collected(rollout: RolloutRef) -> bool:
    try:
        api.core().read_namespaced_config_map(f"{rollout.name}-sentinel", NAMESPACE)
    except ApiException as error:
        return bool(error.status == 404)
    return False


def delete_rollout(kubeconfig: Path, name: str) -> None:
    """``kubectl delete`` (background cascading, its default); the test's finalizer holds the object."""
    kubectl.run("delete", "mro", name, "-n", NAMESPACE, "--wait=false", kubeconfig=kubeconfig)


def run_finalizer(name: str, *, timeout: float) -> tuple[list[tuple[str, str, str]], int]:
    """What kopf does with the delete handler: call it on the object as it is now until it returns, after
    each kopf.TemporaryError's delay. Returns the Events it posted and how many times it had to wait."""
    events: list[tuple[str, str, str]] = []
    waits = 0
    deadline = time.monotonic() + timeout
    while True:
        body = get_rollout(name)
        assert body["metadata"].get("deletionTimestamp"), "the finalizer runs only once the object is deleted"
        try:
            deletion.finalize(
                body,
                post=lambda kind, reason, message: events.append((kind, reason, message)),
                router_report=current_report(name),
            )
            return events, waits
        except kopf.TemporaryError as error:
            waits += 1
            assert time.monotonic() < deadline, f"still waiting after {timeout}s: {error}; events {events}"
            time.sleep(error.delay or 1)


def current_report(name: str) -> dict[str, str] | None:
    """The router's report as the operator's watch would hand it to the finalizer."""
    found = api.read("ConfigMap", NAMESPACE, report_name(name))
    return None if found is None else dict(found.get("data") or {})


def release(name: str) -> None:
    """kopf removes its finalizer once the handler has returned."""
    patch = {"metadata": {"finalizers": None}}
    api.patch_custom(constants.GROUP, constants.VERSION, constants.PLURAL, NAMESPACE, name, patch)


def rollout_gone(name: str) -> bool:
    return api.get_custom(constants.GROUP, constants.VERSION, constants.PLURAL, NAMESPACE, name) is None


def reasons(events: list[tuple[str, str, str]]) -> list[str]:
    return [reason for _, reason, _ in events]


def assert_stable_kept(rollout: RolloutRef) -> None:
    for kind, name in deletion.stable_objects(rollout.name):
        live = api.read(kind, NAMESPACE, name)
        assert live is not None, f"{kind} {name} was not kept"
        assert not live["metadata"].get("ownerReferences"), f"{kind} {name} is still owned"
        assert live["metadata"]["labels"][manifests.LABEL_ORPHANED] == "true"
    assert gone("Deployment", f"{rollout.name}-green") and gone("Service", f"{rollout.name}-green")


def test_keep_stable_moves_traffic_to_blue_then_keeps_blue_and_the_router(cluster: Path, router_for: Any) -> None:
    rollout = create_rollout("keep", spec_body())
    ensure(rollout)
    serving(rollout, constants.BLUE, "v1")
    sentinel(rollout)
    publish_weights("keep", green=50, revision=4)
    router = router_for("keep")
    process.wait_until(lambda: "4/50" in router.reports, timeout=60, what="router report 4/50")

    delete_rollout(cluster, "keep")
    events, waits = run_finalizer("keep", timeout=30)

    body = get_rollout("keep")
    assert body["status"]["weights"] == {"blue": 100, "green": 0, "revision": 5}
    assert waits >= 1, events  # it waited for the router
    # green was deleted only after the router confirmed 100% blue
    assert router.green_there_when_reported.get("5/0") is True, router.green_there_when_reported
    assert reasons(events) == ["TrafficToStable", "TrafficConfirmed", "StableKept", "CandidateDeleted"]
    assert all(kind == "Normal" for kind, _, _ in events)

    release("keep")
    process.wait_until(lambda: collected(rollout), timeout=60, what="garbage collection")
    assert_stable_kept(rollout)

    # a rollout of the same name adopts the kept objects again
    again = create_rollout("keep", spec_body(), finalizers=())
    ensure(again)
    blue = api.read("Deployment", NAMESPACE, "keep-blue")
    assert blue is not None
    assert [owner["uid"] for owner in blue["metadata"]["ownerReferences"]] == [again.uid]
    assert manifests.LABEL_ORPHANED not in blue["metadata"]["labels"]


def test_a_deletion_while_a_promotion_hands_back_waits_for_blue_to_serve_the_promoted_model(
    cluster: Path, router_for: Any
) -> None:
    rollout = create_rollout("handback", spec_body())
    spec = ensure(rollout)
    serving(rollout, constants.BLUE, "v1")
    serving(rollout, constants.GREEN, "v2")
    # v2 is promoted and has all traffic; blue is being redeployed with it (Finalizing)
    promoted = StableStatus(
        model=spec.green.model,
        server=spec.server,
        revision=steps.green_revision(spec),
        promoted_at=datetime.datetime.now(datetime.UTC),
    )
    resources.ensure(rollout, spec, stable=promoted, green_replicas=1)
    status = {
        "phase": "Finalizing",
        "stable": promoted.model_dump(by_alias=True, mode="json"),
        "weights": {"blue": 0, "green": 100, "revision": 4},
    }
    api.patch_custom_status(
        constants.GROUP, constants.VERSION, constants.PLURAL, NAMESPACE, "handback", {"status": status}
    )
    router = router_for("handback")
    process.wait_until(lambda: "4/100" in router.reports, timeout=60, what="router report 4/100")

    delete_rollout(cluster, "handback")
    events: list[tuple[str, str, str]] = []
    with pytest.raises(kopf.TemporaryError):
        deletion.finalize(
            get_rollout("handback"),
            post=lambda kind, reason, message: events.append((kind, reason, message)),
            router_report=current_report("handback"),
        )
    assert reasons(events) == ["WaitingForStable"] and "v2" in events[0][2]
    assert get_rollout("handback")["status"]["weights"] == {"blue": 0, "green": 100, "revision": 4}  # users stay on v2
    assert not gone("Deployment", "handback-green")

    make_ready("handback", constants.BLUE, 1)
    blue_v2 = serving_revision(promoted.model, promoted.server)
    process.wait_until(
        lambda: resources.available(rollout, constants.BLUE, version="v2", revision=blue_v2),
        timeout=60,
        what="blue serves v2",
    )
    events, _ = run_finalizer("handback", timeout=30)
    assert reasons(events) == ["TrafficToStable", "TrafficConfirmed", "StableKept", "CandidateDeleted"]
    assert get_rollout("handback")["status"]["weights"] == {"blue": 100, "green": 0, "revision": 5}
    assert router.green_there_when_reported.get("5/0") is True, router.green_there_when_reported
    process.wait_until(lambda: gone("Deployment", "handback-green"), timeout=30, what="green deleted")
    release("handback")
    process.wait_until(lambda: rollout_gone("handback"), timeout=30, what="ModelRollout deleted")


def test_keep_stable_gives_up_waiting_at_the_confirm_deadline_with_a_warning(cluster: Path) -> None:
    spec = spec_body(traffic={"steps": [{"weight": 50}, {"weight": 100}], "confirmDeadline": "3s"})
    rollout = create_rollout("silent", spec)
    ensure(rollout)
    serving(rollout, constants.BLUE, "v1")
    publish_weights("silent", green=50, revision=2)

    delete_rollout(cluster, "silent")
    events, waits = run_finalizer("silent", timeout=30)  # no router reports anything

    assert waits >= 2
    warning = next(event for event in events if event[1] == "TrafficUnconfirmed")
    assert warning[0] == "Warning" and "traffic may still reach green" in warning[2]
    assert get_rollout("silent")["status"]["weights"] == {"blue": 100, "green": 0, "revision": 3}
    release("silent")
    process.wait_until(lambda: rollout_gone("silent"), timeout=30, what="ModelRollout deleted")
    assert_stable_kept(rollout)


def test_keep_stable_does_not_wait_for_a_blue_that_serves_nothing(cluster: Path) -> None:
    rollout = create_rollout("down", spec_body())
    ensure(rollout)  # its pods never become Ready: no model server answers
    delete_rollout(cluster, "down")
    events, waits = run_finalizer("down", timeout=10)
    assert waits == 0
    assert ("Warning", "StableNotServing") in [(kind, reason) for kind, reason, _ in events]
    release("down")
    assert_stable_kept(rollout)


def test_a_spec_that_no_longer_parses_is_deleted_keeping_the_stable_model(cluster: Path) -> None:
    rollout = create_rollout("broken", spec_body())
    ensure(rollout)
    delete_rollout(cluster, "broken")
    # a spec this operator cannot read (the API server refuses such a spec now; an older CRD did not)
    body = get_rollout("broken")
    body["spec"]["traffic"]["steps"] = [{"weight": 50}, {"weight": 40}]
    assert deletion.spec_of(body) is None
    events: list[tuple[str, str, str]] = []
    deletion.finalize(body, post=lambda kind, reason, message: events.append((kind, reason, message)))
    assert reasons(events)[0] == "KeepingStable"
    release("broken")
    assert_stable_kept(rollout)


def test_delete_all_lets_garbage_collection_remove_everything(cluster: Path) -> None:
    spec = spec_body(deletionPolicy="deleteAll")
    rollout = create_rollout("all", spec)
    ensure(rollout)
    delete_rollout(cluster, "all")
    events, waits = run_finalizer("all", timeout=10)
    assert reasons(events) == ["DeletingAll"] and waits == 0
    release("all")
    owned = [*deletion.stable_objects("all"), ("Deployment", "all-green"), ("Service", "all-green")]
    process.wait_until(
        lambda: all(gone(kind, name) for kind, name in owned), timeout=60, what="garbage collection of all"
    )


# --- the operator's own finalizer -------------------------------------------------------------------------------


@contextlib.contextmanager
def running_operator(cluster: Path, **env: str) -> Iterator[Path]:
    log_dir = Path(tempfile.mkdtemp(prefix="owned-objects-"))
    running = process.start(
        "operator",
        [
            str(Path(sys.executable).parent / "kopf"),
            "run",
            "--standalone",
            "-n",
            NAMESPACE,
            "-m",
            "modelrollout.handlers",
        ],
        log_dir=log_dir,
        env={
            "KUBECONFIG": str(cluster),
            "MODELROLLOUT_METRICS_PORT": str(process.free_port()),
            "MODELROLLOUT_METRICS_HOST": process.LOOPBACK,
            "MODELROLLOUT_ROUTER_REPLICAS": "1",
            **env,
        },
    )
    try:
        yield log_dir / "operator.log"
    finally:
        process.stop(running.pid)
        running.poll()


@pytest.fixture
def operator(cluster: Path) -> Iterator[Path]:
    with running_operator(cluster) as log:
        yield log


def test_the_operator_remembers_the_version_of_its_own_status_write(cluster: Path) -> None:
    rollout = create_rollout("fenced", spec_body(), finalizers=())
    controller._write_status(rollout, {"status": {"message": "written by the test"}})
    stored = get_rollout("fenced")
    assert controller._written[controller.state_key(NAMESPACE, "fenced", stored["metadata"]["uid"])] == (
        stored["metadata"]["uid"],
        stored["metadata"]["resourceVersion"],
    )
    kubectl.run("delete", "mro", "fenced", "-n", NAMESPACE, kubeconfig=cluster)


def test_a_write_for_a_deleted_rollout_never_lands_on_one_made_again_under_its_name(cluster: Path) -> None:
    """A reconcile still in flight when its rollout is deleted (with no finalizer) and made again: its status
    write and its removal of a command are refused (the uid is their precondition), so its decision (weights
    the builtin router would follow) never reaches the new object."""
    old = create_rollout("again", spec_body(), finalizers=())
    kubectl.run("delete", "mro", "again", "-n", NAMESPACE, kubeconfig=cluster)
    new = create_rollout("again", spec_body(), finalizers=())
    assert new.uid != old.uid
    kubectl.run(
        "annotate", "mro", "again", "-n", NAMESPACE, f"{constants.ANNOTATION_COMMAND}=abort", kubeconfig=cluster
    )
    old = dataclasses.replace(old, body={"metadata": {"annotations": {constants.ANNOTATION_COMMAND: "abort"}}})
    weights = {"weights": {"blue": 50, "green": 50, "revision": 3}}
    for write in (
        lambda: controller._write_status(old, {"status": weights}),
        lambda: api.replace_custom_status(
            constants.GROUP, constants.VERSION, constants.PLURAL, NAMESPACE, "again", weights, uid=old.uid
        ),
        lambda: controller._consume_command(old),
    ):
        with pytest.raises(ApiException) as refused:
            write()
        assert refused.value.status in (409, 422), refused.value.body
    stored = get_rollout("again")
    assert "weights" not in (stored.get("status") or {})
    assert stored["metadata"]["annotations"][constants.ANNOTATION_COMMAND] == "abort"
    controller._write_status(new, {"status": weights})  # the new object's own write goes through
    assert get_rollout("again")["status"]["weights"]["green"] == 50
    kubectl.run("delete", "mro", "again", "-n", NAMESPACE, kubeconfig=cluster)


def test_a_command_is_acted_on_when_the_watch_shows_it_not_at_the_next_tick(cluster: Path) -> None:
    # a tick of ten minutes: only the watch of the ModelRollout can make the abort be acted on within the test
    with running_operator(cluster, MODELROLLOUT_TICK_SECONDS="600") as log:
        create_rollout("woken", spec_body(), finalizers=())
        process.wait_until(
            lambda: bool((get_rollout("woken").get("status") or {}).get("phase")),
            timeout=60,
            what="the first reconcile (when the loop starts)",
        )

        # quiet first: its objects made and no write for three seconds, so that no event of its Deployments or
        # pods, only the ModelRollout's own, can be what wakes the loop for the command
        def versions() -> tuple[str, ...]:
            owned = kubectl.run(
                "get",
                "deploy,pods,svc,serviceaccount,role,rolebinding,configmap",
                "-n",
                NAMESPACE,
                "-l",
                f"{constants.LABEL_ROLLOUT}=woken",
                "-o",
                "jsonpath={.items[*].metadata.resourceVersion}",
                kubeconfig=cluster,
            ).stdout.split()
            return (get_rollout("woken")["metadata"]["resourceVersion"], *sorted(owned))

        def quiet() -> bool:
            before = versions()
            time.sleep(3)
            return api.read("Deployment", NAMESPACE, "woken-router") is not None and versions() == before

        process.wait_until(quiet, timeout=60, what="the rollout quiet", interval=0)
        kubectl.run(
            "annotate",
            "mro",
            "woken",
            "-n",
            NAMESPACE,
            f"{constants.ANNOTATION_COMMAND}=abort",
            f"{constants.ANNOTATION_COMMAND_ID}=abort-now",
            kubeconfig=cluster,
        )
        try:
            process.wait_until(
                lambda: (get_rollout("woken").get("status") or {}).get("lastCommandId") == "abort-now",
                timeout=30,
                what="the abort acted on",
            )
        except TimeoutError as error:
            raise TimeoutError(f"{error}; operator log: {log.read_text()[-3000:]}") from None
        status = get_rollout("woken")["status"]
        assert status["rollbackReason"] == "Aborted" and status["weights"]["green"] == 0
    forget_without_operator(cluster, "woken")


def ready_pods(rollout: str, colour: str) -> list[str]:
    return sorted(pod for pod, ready in resources.live_pods(pods(rollout, colour)).items() if ready)


def analysis_rounds(port: int) -> float:
    """How many analysis rounds the operator has run (its modelrollout_analysis_duration_seconds histogram)."""
    text = httpx.get(f"http://{process.LOOPBACK}:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("modelrollout_analysis_duration_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def test_a_rollout_held_by_the_same_inconclusive_result_is_not_written_each_round(
    cluster: Path, tmp_path: Path, prometheus_server: PrometheusServer
) -> None:
    name, interval = "held", 3.0
    port = process.free_port()
    # a real Prometheus with no samples of this rollout: every round is Inconclusive, with the same messages
    analysis = {"prometheus": {"url": prometheus_server.url}, "interval": f"{interval:.0f}s", "progressDeadline": "1h"}
    with running_operator(cluster, MODELROLLOUT_METRICS_PORT=str(port)) as log:
        rollout = create_rollout(name, spec_body(analysis=analysis), finalizers=())
        serving(rollout, constants.BLUE, "v1")
        serving(rollout, constants.GREEN, "v2")
        process.wait_until(lambda: bool(ready_pods(name, manifests.ROUTER)), timeout=60, what="the router pod ready")
        router = start_router_replica(cluster, name, ready_pods(name, manifests.ROUTER)[0], tmp_path)
        try:

            def held() -> bool:
                status = get_rollout(name).get("status") or {}
                # the first round after the weights were confirmed, and the decision it led to, are written
                return "Inconclusive: no data" in (status.get("message") or "")

            try:
                process.wait_until(held, timeout=90, what="the rollout held by an Inconclusive analysis")
            except TimeoutError as error:
                raise TimeoutError(f"{error}; operator log: {log.read_text()[-3000:]}") from None
            stored = get_rollout(name)
            rounds, began = analysis_rounds(port), time.monotonic()
            try:
                process.wait_until(
                    lambda: analysis_rounds(port) >= rounds + 4, timeout=60, what="four more analysis rounds"
                )
            except TimeoutError as error:
                status = json.dumps(get_rollout(name).get("status"))
                try:
                    counted = f"{analysis_rounds(port) - rounds:.0f} ran"
                except httpx.HTTPError as unreachable:  # the operator exited?
                    counted = f"its metrics unreachable: {unreachable!r}"
                raise TimeoutError(
                    f"{error} ({counted}); status {status}; operator log: {log.read_text()[-6000:]}"
                ) from None
            elapsed, ran = time.monotonic() - began, analysis_rounds(port) - rounds
            now = get_rollout(name)
            assert now["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"], (
                f"a round was written: {json.dumps(stored['status'])} then {json.dumps(now['status'])}"
            )
            assert now["status"]["analysis"] == stored["status"]["analysis"]
            # each round is due an interval after the last one, remembered though not written (not every tick)
            assert ran <= elapsed / interval + 2, f"{ran} rounds in {elapsed:.1f}s at an interval of {interval}s"
            # a change is still written at once (a round that finds something else: tests/unit/test_controller_resting)
            command = {constants.ANNOTATION_COMMAND: "pause", constants.ANNOTATION_COMMAND_ID: "pause-held"}
            api.patch_custom(
                constants.GROUP,
                constants.VERSION,
                constants.PLURAL,
                NAMESPACE,
                name,
                {"metadata": {"annotations": command}},
            )
            process.wait_until(
                lambda: (get_rollout(name).get("status") or {}).get("phase") == "Paused", timeout=30, what="paused"
            )
        finally:
            process.stop(router.pid)
            router.poll()
    forget_without_operator(cluster, name)


def rollouts_counted(port: int) -> float:
    """How many rollouts the operator counts in its phase gauge (modelrollout_rollouts, all phases)."""
    text = httpx.get(f"http://{process.LOOPBACK}:{port}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("modelrollout_rollouts{"))


def counted_as_listed(port: int) -> bool:
    """The operator counts exactly the rollouts that exist and are not being deleted."""
    listed = api.list_custom(constants.GROUP, constants.VERSION, constants.PLURAL, NAMESPACE, label_selector="")
    live = [item for item in listed if not item["metadata"].get("deletionTimestamp")]
    return rollouts_counted(port) == len(live)


def test_a_rollout_whose_finalizer_is_taken_off_by_hand_is_forgotten(cluster: Path) -> None:
    name = "unhooked"
    port = process.free_port()
    spec = spec_body(traffic={"steps": [{"weight": 50}, {"weight": 100}], "confirmDeadline": "10m"})
    with running_operator(cluster, MODELROLLOUT_METRICS_PORT=str(port)) as log:
        rollout = create_rollout(name, spec, finalizers=())
        serving(rollout, constants.BLUE, "v1")
        process.wait_until(
            lambda: bool(get_rollout(name)["metadata"].get("finalizers")) and counted_as_listed(port),
            timeout=60,
            what="the rollout finalized by the operator and counted in its phase gauge",
        )
        delete_rollout(cluster, name)
        # the finalizer keeps the stable model and waits for a router to confirm 100% blue: none runs
        process.wait_until(
            lambda: "waiting for the router to report" in log.read_text(),
            timeout=60,
            what="the finalizer waiting for the router",
        )
        release(name)  # as an SRE unsticking the deletion would: the finalizer never finishes
        process.wait_until(lambda: rollout_gone(name), timeout=30, what="ModelRollout deleted")
        try:
            process.wait_until(lambda: counted_as_listed(port), timeout=30, what="the deleted rollout forgotten")
        except TimeoutError as error:
            raise TimeoutError(f"{error}: {rollouts_counted(port):.0f} counted") from None


def forget_without_operator(kubeconfig: Path, name: str) -> None:
    """No operator left to finalize it: gone without its finalizer, not left to the next module's operator."""
    patch = '{"metadata":{"finalizers":null}}'
    kubectl.run("patch", "mro", name, "-n", NAMESPACE, "--type=merge", "-p", patch, kubeconfig=kubeconfig)
    kubectl.run("delete", "mro", name, "-n", NAMESPACE, "--wait=true", kubeconfig=kubeconfig)


def start_router_replica(kubeconfig: Path, rollout: str, replica: str, log_dir: Path) -> Any:
    """A real router process reporting as the router Pod ``replica`` (as in a cluster, where its Pod's name
    comes from the downward API), with only the rights of the router's own ServiceAccount."""
    account = kubectl.account_kubeconfig(
        kubeconfig, f"{rollout}-router", NAMESPACE, log_dir / f"router-{rollout}.kubeconfig"
    )
    nowhere = f"http://{process.LOOPBACK}:{process.free_port()}"  # weights are applied without a request
    return process.start(
        f"router-{replica}",
        [
            sys.executable,
            "-m",
            "model_server.router",
            "--rollout",
            rollout,
            "--namespace",
            NAMESPACE,
            "--kubeconfig",
            str(account),
            "--blue-url",
            nowhere,
            "--green-url",
            nowhere,
            "--port",
            str(process.free_port()),
            "--data-plane",
            "python",
            "--replica",
            replica,
        ],
        log_dir=log_dir,
    )


def test_weights_count_as_applied_once_every_ready_router_replica_reports_them(cluster: Path, tmp_path: Path) -> None:
    name = "twin"
    with running_operator(cluster, MODELROLLOUT_ROUTER_REPLICAS="2") as log:
        rollout = create_rollout(name, spec_body(), finalizers=())
        process.wait_until(
            lambda: api.read("PodDisruptionBudget", NAMESPACE, f"{name}-router") is not None,
            timeout=60,
            what="the router's disruption budget",
        )
        budget = api.read("PodDisruptionBudget", NAMESPACE, f"{name}-router")
        assert budget is not None and budget["spec"]["maxUnavailable"] == 1
        router = api.read("Deployment", NAMESPACE, f"{name}-router")
        assert router is not None and router["spec"]["replicas"] == 2
        env = router["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {
            "name": "MODELROUTER_REPLICA",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        } in env
        serving(rollout, constants.BLUE, "v1")
        serving(rollout, constants.GREEN, "v2")

        process.wait_until(
            lambda: len(ready_pods(name, manifests.ROUTER)) == 2, timeout=60, what="two router pods ready"
        )
        first, second = ready_pods(name, manifests.ROUTER)
        started = [start_router_replica(cluster, name, first, tmp_path)]
        try:
            # one replica serves the weights and says so; the other, Ready and sent traffic, has not: unconfirmed
            def waiting_for_the_second() -> bool:
                status = get_rollout(name).get("status") or {}
                return f"router replica {second} has not reported" in (status.get("message") or "")

            try:
                process.wait_until(waiting_for_the_second, timeout=60, what="the rollout waiting for the 2nd router")
            except TimeoutError as error:
                raise TimeoutError(f"{error}; operator log: {log.read_text()[-3000:]}") from None
            status = get_rollout(name)["status"]
            asked = f"{status['weights']['revision']}/{status['weights']['green']}"
            report = current_report(name) or {}
            assert report.get(f"applied.{first}") == asked and f"applied.{second}" not in report
            assert status.get("weightsConfirmedAt") is None and status.get("appliedRevision") is None
            started.append(start_router_replica(cluster, name, second, tmp_path))
            process.wait_until(
                lambda: bool((get_rollout(name).get("status") or {}).get("weightsConfirmedAt")),
                timeout=60,
                what="the weights confirmed by both router replicas",
            )
            assert (current_report(name) or {}).get(f"applied.{second}") is not None
        finally:
            for each in started:
                process.stop(each.pid)
                each.poll()
    forget_without_operator(cluster, name)


def events_of(kubeconfig: Path, name: str) -> list[dict[str, Any]]:
    listed = kubectl.run(
        "get",
        "events",
        "-n",
        NAMESPACE,
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
        kubeconfig=kubeconfig,
    )
    items: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
    return items


def test_kubectl_delete_keeps_the_stable_model_with_the_operator_running(
    cluster: Path, operator: Path, router_for: Any
) -> None:
    rollout = create_rollout("kept", spec_body(), finalizers=())
    process.wait_until(
        lambda: bool(get_rollout("kept")["metadata"].get("finalizers")),
        timeout=60,
        what="the operator's finalizer on the ModelRollout",
    )
    ensure(rollout)
    serving(rollout, constants.BLUE, "v1")
    sentinel(rollout)
    router_for("kept")

    kubectl.run("delete", "mro", "kept", "-n", NAMESPACE, "--timeout=90s", kubeconfig=cluster)

    assert rollout_gone("kept")
    process.wait_until(lambda: collected(rollout), timeout=60, what="garbage collection")
    assert_stable_kept(rollout)
    posted = {event["reason"] for event in events_of(cluster, "kept")}
    assert {"TrafficConfirmed", "StableKept", "CandidateDeleted"} <= posted, operator.read_text()[-3000:]


def loops_running(port: int) -> float:
    """How many reconcile loops the operator runs (modelrollout_reconcile_loops)."""
    text = httpx.get(f"http://{process.LOOPBACK}:{port}/metrics", timeout=5).text
    lines = text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith("modelrollout_reconcile_loops "))


def loops_as_listed(port: int) -> bool:
    """The operator runs a loop for exactly the rollouts that exist and are not being deleted (kopf stops the
    loop of one being deleted; others of the module may still be held by the test's finalizer)."""
    listed = api.list_custom(constants.GROUP, constants.VERSION, constants.PLURAL, NAMESPACE, label_selector="")
    live = [item for item in listed if not item["metadata"].get("deletionTimestamp")]
    return loops_running(port) == len(live)


def delete_without_finalizer(name: str) -> None:
    """The object deleted with no finalizer on it, so that it goes at once and its DELETED event carries no
    deletion timestamp (kopf then never stops its loop): the finalizers taken off, and the object deleted only
    if nobody changed it since (kopf adds its finalizer back as soon as it sees it gone), else again."""
    objects = client.CustomObjectsApi(api.api_client())
    deadline = time.monotonic() + 60
    while True:
        patch = {"metadata": {"finalizers": None}}
        stripped = objects.patch_namespaced_custom_object(
            constants.GROUP, constants.VERSION, NAMESPACE, constants.PLURAL, name, patch
        )
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=stripped["metadata"]["resourceVersion"])
        )
        try:
            objects.delete_namespaced_custom_object(
                constants.GROUP, constants.VERSION, NAMESPACE, constants.PLURAL, name, body=options
            )
            return
        except ApiException as error:
            if error.status != 409 or time.monotonic() > deadline:
                raise


def test_a_rollout_deleted_with_no_finalizer_on_it_leaves_no_loop_behind(cluster: Path) -> None:
    """kopf stops a rollout's loop only when it sees the object with a deletion timestamp; one deleted with no
    finalizer on it never shows one. Its loop must end all the same: one left running reconciles a gone object
    for good (and beside the loop of a rollout made again under the name: two writers)."""
    name = "unfinalized"
    port = process.free_port()
    with running_operator(cluster, MODELROLLOUT_METRICS_PORT=str(port)):
        rollout = create_rollout(name, spec_body(), finalizers=())
        serving(rollout, constants.BLUE, "v1")
        process.wait_until(
            lambda: bool(get_rollout(name)["metadata"].get("finalizers")) and loops_as_listed(port),
            timeout=60,
            what="the rollout finalized by the operator and its loop running",
        )
        delete_without_finalizer(name)
        assert rollout_gone(name)
        try:
            process.wait_until(
                lambda: loops_as_listed(port) and counted_as_listed(port), timeout=30, what="its loop ended"
            )
        except TimeoutError as error:
            loops, counted = loops_running(port), rollouts_counted(port)
            raise TimeoutError(f"{error}: {loops:.0f} loops, {counted:.0f} counted") from None
