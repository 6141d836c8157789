"""Calls to the Kubernetes API server: the only module of the operator that makes them.

A module-level client, configured once (``configure``), from a kubeconfig or in-cluster settings.
Owned objects are written with server-side apply under one field manager (``FIELD_MANAGER``): a field
that our manifests stop setting is removed from the live object, which a strategic-merge patch could not
do (an env var such as an old model checksum or a fault injection setting would survive it).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelrollout.api import constants
from modelrollout.metrics import THROTTLED_SECONDS

_api_client: Any = None

FIELD_MANAGER = "modelrollout-operator"
"""The server-side apply field manager of every owned object."""
LEGACY_FIELD_MANAGERS = frozenset({"OpenAPI-Generator"})
"""Update managers whose fields are ours: earlier operator versions created and strategic-merge patched
owned objects with the Python client's default field manager (named after its User-Agent)."""
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


API_QPS = float(os.environ.get("MODELROLLOUT_API_QPS", "200"))
API_BURST = int(os.environ.get("MODELROLLOUT_API_BURST", "400"))
"""The operator's own requests (not kopf's watches and its few patches): at most API_QPS a second on average,
in bursts of at most API_BURST; a request over the limit waits for its turn (client-go's QPS and burst)."""


REQUEST_TIMEOUT_SECONDS = float(os.environ.get("MODELROLLOUT_API_TIMEOUT_SECONDS", "30"))
"""How long one of the operator's own requests may take to connect and then to answer (kopf's watches are
not bounded by it): a request lost on the way (a connection dropped without a reset, an API server that
stopped answering) fails after this and is counted by the next reconcile, instead of holding a worker
thread, and the rollout's loop waiting on it, for good."""


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``acquire`` takes one, waiting until there is one
    (thread-safe). Returns the seconds it waited."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a rate limit needs a rate above 0 and a burst of at least 1 (got {rate}, {burst})")
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        with self._lock:  # tokens are handed out in order; a waiter's wait is reserved before it sleeps
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= 1
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait > 0:
            self._sleep(wait)
        return wait


def limit(api_client: Any, bucket: TokenBucket) -> Any:
    """Every request ``api_client`` sends takes a token from ``bucket`` first."""
    send = api_client.rest_client.request

    def limited(*args: Any, **kwargs: Any) -> Any:
        waited = bucket.acquire()
        if waited:
            THROTTLED_SECONDS.inc(waited)
        return send(*args, **kwargs)

    api_client.rest_client.request = limited
    return api_client


def bounded(api_client: Any, seconds: float) -> Any:
    """Every request ``api_client`` sends that names no timeout of its own gives up after ``seconds``."""
    send = api_client.rest_client.request

    def timed(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = seconds
        return send(*args, **kwargs)

    api_client.rest_client.request = timed
    return api_client


def configure(kubeconfig: str | None = None) -> None:
    global _api_client
    if kubeconfig:
        _api_client = config.new_client_from_config(kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        _api_client = client.ApiClient()
    limit(bounded(_api_client, REQUEST_TIMEOUT_SECONDS), TokenBucket(API_QPS, API_BURST))


def _client() -> Any:
    if _api_client is None:
        configure()
    return _api_client


def custom() -> Any:
    return client.CustomObjectsApi(_client())


def apps() -> Any:
    return client.AppsV1Api(_client())


def core() -> Any:
    return client.CoreV1Api(_client())


def rbac() -> Any:
    return client.RbacAuthorizationV1Api(_client())


def policy() -> Any:
    return client.PolicyV1Api(_client())


def api_client() -> Any:
    """The configured API client (for a module that needs its own settings on a copy of its configuration)."""
    return _client()


def owner_reference(rollout: Any) -> dict[str, Any]:
    """Makes an object part of a ModelRollout: it is deleted with it."""
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "name": rollout.name,
        "uid": rollout.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def get_custom(group: str, version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = custom().get_namespaced_custom_object(group, version, namespace, plural, name)
        return found
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def create_custom(group: str, version: str, plural: str, namespace: str, body: dict[str, Any]) -> None:
    custom().create_namespaced_custom_object(group, version, namespace, plural, body)


def list_custom(group: str, version: str, plural: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
    """Objects matching ``label_selector``; none when the resource type is not installed."""
    try:
        found = custom().list_namespaced_custom_object(group, version, namespace, plural, label_selector=label_selector)
    except ApiException as error:
        if error.status == 404:
            return []
        raise
    items: list[dict[str, Any]] = found.get("items", [])
    return items


def patch_custom(group: str, version: str, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
    custom().patch_namespaced_custom_object(group, version, namespace, plural, name, patch)


def patch_custom_status(
    group: str, version: str, plural: str, namespace: str, name: str, patch: dict[str, Any]
) -> dict[str, Any]:
    """A JSON merge patch of the status subresource; returns the object as stored. No precondition: a uid in
    the patch is not one (the status is merged into whatever object holds the name; see replace_custom_status)."""
    stored: dict[str, Any] = custom().patch_namespaced_custom_object_status(
        group, version, namespace, plural, name, patch, _content_type=MERGE_PATCH
    )
    return stored


def replace_custom_status(
    group: str, version: str, plural: str, namespace: str, name: str, status: dict[str, Any], *, uid: str
) -> dict[str, Any]:
    """Replace the status subresource of the object ``uid`` whole (a JSON patch): fields ``status`` lacks go
    away. Refused (422) when the name holds another object now (deleted and made again)."""
    operations = [
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "add", "path": "/status", "value": status},  # add: also where the object has no status yet
    ]
    stored: dict[str, Any] = custom().patch_namespaced_custom_object_status(
        group, version, namespace, plural, name, operations, _content_type="application/json-patch+json"
    )
    return stored


_OWNED: dict[str, tuple[Callable[[], Any], str]] = {
    "Deployment": (apps, "deployment"),
    "Service": (core, "service"),
    "ServiceAccount": (core, "service_account"),
    "Role": (rbac, "role"),
    "RoleBinding": (rbac, "role_binding"),
    "Secret": (core, "secret"),
    "ConfigMap": (core, "config_map"),
    "PodDisruptionBudget": (policy, "pod_disruption_budget"),
}
"""Each kind the operator owns: the client API that serves it and the name its calls carry."""
OWNED_KINDS = tuple(_OWNED)


def _calls(kind: str) -> tuple[Any, Any, Any]:
    """(read, patch, delete) of the API for one owned kind."""
    if kind not in _OWNED:
        raise ValueError(f"kind {kind!r} is not one the operator owns; valid: {OWNED_KINDS}")
    group, name = _OWNED[kind]
    served = group()
    read, patch, delete = (getattr(served, f"{verb}_namespaced_{name}") for verb in ("read", "patch", "delete"))
    return read, patch, delete


def _as_dict(found: Any) -> dict[str, Any]:
    """An API model object as the camelCase dict the API server speaks."""
    result: dict[str, Any] = _client().sanitize_for_serialization(found)
    return result


def apply(body: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply of an owned object (created when missing), taking over fields other managers
    set (force): fields we applied before and ``body`` no longer has are removed. Returns the live object."""
    _, patch_call, _ = _calls(body["kind"])
    applied = patch_call(
        body["metadata"]["name"],
        body["metadata"]["namespace"],
        body,
        field_manager=FIELD_MANAGER,
        force=True,
        _content_type=APPLY_PATCH,
    )
    return _as_dict(applied)


def create_secret(body: dict[str, Any]) -> bool:
    """Creates the Secret unless one of its name exists (never rewritten: False then)."""
    try:
        core().create_namespaced_secret(body["metadata"]["namespace"], body, field_manager=FIELD_MANAGER)
    except ApiException as error:
        if error.status == 409:
            return False
        raise
    return True


def read(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The live object, or None when there is none."""
    read_call, _, _ = _calls(kind)
    try:
        return _as_dict(read_call(name, namespace))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def patch(kind: str, namespace: str, name: str, body: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON merge patch (a dict) or a JSON patch (a list of operations) as an update, not an apply."""
    _, patch_call, _ = _calls(kind)
    patched = patch_call(
        name,
        namespace,
        body,
        field_manager=FIELD_MANAGER,
        _content_type=JSON_PATCH if isinstance(body, list) else MERGE_PATCH,
    )
    return _as_dict(patched)


def delete(kind: str, namespace: str, name: str) -> bool:
    """Deletes the object (its dependents in the background); False when there was none."""
    _, _, delete_call = _calls(kind)
    try:
        delete_call(name, namespace, propagation_policy="Background")
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def list_pods(namespace: str, label_selector: str) -> list[dict[str, Any]]:
    found = core().list_namespaced_pod(namespace, label_selector=label_selector)
    pods: list[dict[str, Any]] = _as_dict(found).get("items") or []
    return pods
