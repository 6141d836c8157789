"""Follow one ModelRollout through the Kubernetes API and apply its weights to the router.

The operator publishes the weights it wants in ``status.weights``; the router applies them as soon as the
watch event arrives and writes back what it applied (an annotation on the ModelRollout, read by the
operator's verification). When the API server is unreachable the router keeps the last weights it knew.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from kubernetes import client, config, watch

from modelrollout.api import constants

log = structlog.get_logger(__name__)


def desired(obj: dict[str, Any]) -> tuple[int | None, int]:
    """(green weight wanted by the operator or None, mirror percent) from a ModelRollout."""
    weights = (obj.get("status") or {}).get("weights") or {}
    green = weights.get("green")
    mirror = (((obj.get("spec") or {}).get("traffic") or {}).get("mirror") or {}).get("percent", 0)
    return (int(green) if isinstance(green, int) else None), int(mirror or 0)


class RolloutWatcher:
    def __init__(
        self,
        *,
        namespace: str,
        name: str,
        kubeconfig: str | None,
        on_weights: Callable[[int, int], None],
        report: bool = True,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.on_weights = on_weights
        self.report = report
        self._api_client = config.new_client_from_config(kubeconfig) if kubeconfig else _in_cluster_client()
        self._api = client.CustomObjectsApi(self._api_client)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-watch", daemon=True)
        self.last_reported: int | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._follow()
                backoff = 0.5
            except Exception as error:  # noqa: BLE001 - any API failure: keep the last weights, retry
                log.warning("watch interrupted; keeping the last weights", error=f"{type(error).__name__}: {error}")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _follow(self) -> None:
        current = self._api.get_namespaced_custom_object(
            constants.GROUP, constants.VERSION, self.namespace, constants.PLURAL, self.name
        )
        self._deliver(current)
        stream = watch.Watch()
        for event in stream.stream(
            self._api.list_namespaced_custom_object,
            constants.GROUP,
            constants.VERSION,
            self.namespace,
            constants.PLURAL,
            field_selector=f"metadata.name={self.name}",
            resource_version=current["metadata"]["resourceVersion"],
            timeout_seconds=60,
            _request_timeout=70,
        ):
            if self._stop.is_set():
                stream.stop()
                return
            if event["type"] in ("ADDED", "MODIFIED"):
                self._deliver(event["object"])

    def _deliver(self, obj: dict[str, Any]) -> None:
        green, mirror = desired(obj)
        if green is None:
            return
        self.on_weights(green, mirror)
        applied = (obj.get("metadata", {}).get("annotations") or {}).get(constants.ANNOTATION_APPLIED_WEIGHT)
        if self.report and applied != str(green):
            self._report(green)

    def _report(self, green: int) -> None:
        begun = time.monotonic()
        patch = {"metadata": {"annotations": {constants.ANNOTATION_APPLIED_WEIGHT: str(green)}}}
        self._api.patch_namespaced_custom_object(
            constants.GROUP, constants.VERSION, self.namespace, constants.PLURAL, self.name, patch
        )
        self.last_reported = green
        log.info("applied weight reported", green=green, seconds=round(time.monotonic() - begun, 3))


def _in_cluster_client() -> client.ApiClient:
    config.load_incluster_config()
    return client.ApiClient()
