"""A kubelet stand-in: real model-server processes for one rollout's fake Pods on the local control plane.

kwok fakes the Pods of the local cluster, and starts model-server Pods without making them Ready
(``cluster.kwok_stages``). For the Pods of one rollout's Deployments ``<rollout>-blue`` and ``<rollout>-green``
this stand-in does what a kubelet would:

- every scheduled Pod gets a real model-server process, run with the Pod's container env (the Deployment's:
  model path, version, golden set, sha256, every MODELSERVER_* setting) except host, port and log format;
  a Pod that goes away has its process stopped (SIGTERM, SIGKILL after a grace period). So replicas 0 means
  no process, and a changed model means a new Pod, hence a new process, which the Deployment's rolling update
  waits for (ready) before it deletes the old Pod;
- a process that dies is started again after a back-off that doubles up to a ceiling (kubelet's
  CrashLoopBackOff, shortened for drills), and the Pod's ``restartCount`` counts it;
- init containers (the fetch of an http(s) model) run first, each to completion, as processes: ``python`` is
  this interpreter and the Pod's emptyDir volumes (``/tmp`` aside, which the processes of this machine share)
  are directories of the Pod's own, put in place of their mount paths in the init containers' arguments and the
  server's env. One that fails is run again after the back-off, and its termination message (the file a
  kubelet would read, ``MODELSERVER_TERMINATION_LOG`` here) goes on the Pod's ``initContainerStatuses``;
- a PersistentVolumeClaim volume (a ``pvc://`` model) is the directory of the hostPath or local
  PersistentVolume the claim is bound to, put in place of its mount path likewise (read-only is the server's
  own doing: it only reads its model);
- the readiness probe (``/v2/health/ready`` on the Pod's own address) decides the Pod's ``Ready`` and
  ``ContainersReady`` conditions and ``containerStatuses[].ready``; with ``restartCount``, ``state`` and
  ``lastState`` (exit code 137 after a SIGKILL) they are written on the Pod's status, as a kubelet does.

Addresses. Each colour has ONE loopback address for its whole life, as a Service has one ClusterIP: the
router's upstream. Its port is reserved (``process.reserve_port``); the colour's live processes share one
listening socket there, and each accepts from it only while it is ready (``modelservers.start_on_sockets``).
In a rolling update the old and the new process accept from the same queue until the old one gets SIGTERM,
so the handover drops no connection. When no process of the colour is alive the socket is closed: a client is
refused, as by a Service without endpoints. Each Pod also has its own address, like a Pod IP, kept across its
restarts: the probe and Prometheus use that one, so that a scrape never mixes two processes' counters.

Prometheus scrapes each Pod with the target labels ``namespace``, ``pod`` and ``service``, which the model
server's own series never carry (they carry ``rollout``, ``colour``, ``model``, ``version`` and per-metric
labels): ``honor_labels`` stays false and no scraped label is renamed to ``exported_*``.

Drills: ``kill(colour)`` (SIGKILL; the stand-in restarts it), ``hold_dead(colour)`` (SIGKILL, and no restart
until ``release(colour)``), ``chaos(colour, every=...)`` (SIGKILL every few seconds while it restarts them).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelrollout.api import constants
from modelrollout.devcluster import cluster, modelservers, process
from modelrollout.devcluster.prometheus import PrometheusServer

log = structlog.get_logger(__name__)

CONTAINER = "model-server"
"""The model-server container's name in the Pods the operator renders (k8s.manifests)."""
MERGE_PATCH = "application/merge-patch+json"
_targets_lock = threading.Lock()


def add_target(prometheus: PrometheusServer, address: str, labels: dict[str, str]) -> None:
    """``prometheus.add_target`` from any thread (stand-ins and the stage share one Prometheus)."""
    with _targets_lock:
        prometheus.add_target(address, labels)


def remove_target(prometheus: PrometheusServer, address: str) -> None:
    with _targets_lock:
        prometheus.remove_target(address)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _exit_code(returncode: int) -> int:
    """As a container runtime reports it: 128 + the signal for a process killed by one."""
    return 128 - returncode if returncode < 0 else returncode


class MissingSecret(LookupError):
    """A Pod's env names a Secret (or a key) that does not exist: its container cannot start yet."""


class MissingVolume(LookupError):
    """A Pod's PersistentVolumeClaim is not bound to a volume with a path on this machine: it cannot start yet."""


@dataclass
class Container:
    """One Pod's model-server container: its process (if one runs), its restarts, its readiness."""

    pod: str
    uid: str
    colour: str
    image: str
    settings: dict[str, str]
    reserved: socket.socket
    """The Pod's own port (its "Pod IP"), reserved for the Pod's whole life."""
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    started_monotonic: float = 0.0
    restart_count: int = 0
    crashes: int = 0
    """Deaths in a row without a stable run in between: they set the back-off."""
    restart_at: float = 0.0
    last_termination: dict[str, Any] | None = None
    ready: bool = False
    init: list[InitContainer] = field(default_factory=list)
    """The Pod's init containers not yet run to completion, in order."""
    done_init: list[InitContainer] = field(default_factory=list)

    @property
    def port(self) -> int:
        port: int = self.reserved.getsockname()[1]
        return port

    @property
    def address(self) -> str:
        return f"{process.LOOPBACK}:{self.port}"

    @property
    def version(self) -> str:
        return self.settings.get("MODELSERVER_MODEL_VERSION", "")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class InitContainer:
    """One init container of a followed Pod, run as a process before the server's."""

    name: str
    args: list[str]
    termination_log: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restart_count: int = 0
    crashes: int = 0
    restart_at: float = 0.0
    last_termination: dict[str, Any] | None = None
    completed: dict[str, Any] | None = None


@dataclass(frozen=True)
class PodView:
    """What the stand-in knows about one Pod, for tests and drills."""

    name: str
    colour: str
    version: str
    model: str
    address: str
    pid: int | None
    ready: bool
    restart_count: int


@dataclass
class Kubelet:
    """Runs the model servers of one rollout's Pods; ``with Kubelet(kubeconfig=..., rollout=...) as k:``."""

    kubeconfig: Path
    rollout: str
    namespace: str = "default"
    prometheus: PrometheusServer | None = None
    env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Per colour, settings put over the Pods' env (fault injection for drills, say)."""
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kubelet-")))
    backoff: float = 1.0
    """Seconds before the first restart of a process that died; doubled for each death in a row."""
    max_backoff: float = 8.0
    stable_after: float = 10.0
    """A process that ran this long before it died starts the back-off from the beginning again."""
    period: float = 0.25
    """How often Pods are listed, processes checked and readiness probed (seconds)."""

    _services: dict[str, socket.socket] = field(default_factory=dict)
    _listeners: dict[str, socket.socket] = field(default_factory=dict)
    _containers: dict[str, Container] = field(default_factory=dict)
    _stopping: list[Container] = field(default_factory=list)
    _held: set[str] = field(default_factory=set)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _core: Any = None
    _probe: httpx.Client | None = None
    kills: int = 0
    """SIGKILLs sent by drills."""

    def __post_init__(self) -> None:
        for colour in constants.COLOURS:
            self._services[colour] = process.reserve_port()

    # -- addresses -----------------------------------------------------------------------------------------

    def address(self, colour: str) -> str:
        """``host:port`` of the colour, the same for the stand-in's whole life (a Service's ClusterIP)."""
        return f"{process.LOOPBACK}:{self._services[colour].getsockname()[1]}"

    def url(self, colour: str) -> str:
        return f"http://{self.address(colour)}"

    # -- life ----------------------------------------------------------------------------------------------

    def __enter__(self) -> Kubelet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._core = client.CoreV1Api(config.new_client_from_config(str(self.kubeconfig)))
        self._probe = httpx.Client(timeout=1.0)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"kubelet-{self.rollout}")
        self._thread.start()

    def stop(self) -> None:
        """Stop following the Pods and stop every process (the Pods' status stays as last written)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with self._lock:
            going = [*self._containers.values(), *self._stopping]
            self._containers.clear()
            self._stopping.clear()
        for container in going:
            _stop_init(container)
            if container.process is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(container.process.pid, signal.SIGTERM)
        for container in going:
            if container.process is not None:
                process.stop(container.process.pid, grace_seconds=10)
                container.process.poll()
            self._forget(container)
        for sock in [*self._listeners.values(), *self._services.values()]:
            sock.close()
        self._listeners.clear()
        if self._probe is not None:
            self._probe.close()

    # -- drills --------------------------------------------------------------------------------------------

    def kill(self, colour: str) -> int:
        """SIGKILL the colour's running processes (they are restarted after the back-off); how many."""
        killed = 0
        with self._lock:
            for container in self._containers.values():
                if container.colour == colour and container.alive():
                    assert container.process is not None
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(container.process.pid, signal.SIGKILL)
                        killed += 1
            self.kills += killed
        self._wake.set()
        return killed

    def hold_dead(self, colour: str) -> int:
        """SIGKILL the colour's processes and start none until ``release(colour)``; how many were killed."""
        with self._lock:
            self._held.add(colour)
        return self.kill(colour)

    def release(self, colour: str) -> None:
        """Let the colour's processes start again, at once (the back-off is over)."""
        with self._lock:
            self._held.discard(colour)
            for container in self._containers.values():
                if container.colour == colour:
                    container.restart_at = 0.0
        self._wake.set()

    @contextlib.contextmanager
    def chaos(self, colour: str, *, every: float) -> Iterator[None]:
        """SIGKILL the colour's processes every ``every`` seconds while the block runs; they are restarted."""
        done = threading.Event()

        def run() -> None:
            while not done.wait(every):
                self.kill(colour)

        thread = threading.Thread(target=run, daemon=True, name=f"chaos-{self.rollout}-{colour}")
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    # -- what tests read -----------------------------------------------------------------------------------

    def pods(self, colour: str | None = None) -> list[PodView]:
        with self._lock:
            return [
                PodView(
                    name=c.pod,
                    colour=c.colour,
                    version=c.version,
                    model=c.settings.get("MODELSERVER_MODEL_PATH", ""),
                    address=c.address,
                    pid=c.process.pid if c.alive() and c.process is not None else None,
                    ready=c.ready,
                    restart_count=c.restart_count,
                )
                for c in self._containers.values()
                if colour is None or c.colour == colour
            ]

    def restarts(self, colour: str) -> int:
        """Restarts of the colour's current Pods' containers (the sum of their restartCount)."""
        return sum(pod.restart_count for pod in self.pods(colour))

    def wait_ready(self, colour: str, *, version: str | None = None, timeout: float = 90.0) -> PodView:
        """Wait until a Pod of the colour (serving ``version``, if given) is ready; returns it."""
        found: list[PodView] = []

        def ready() -> bool:
            found[:] = [p for p in self.pods(colour) if p.ready and version in (None, p.version)]
            return bool(found)

        process.wait_until(
            ready, timeout=timeout, what=f"{self.rollout}-{colour} ready{f' with {version}' if version else ''}"
        )
        return found[0]

    def wait_no_pods(self, colour: str, *, timeout: float = 60.0) -> None:
        """Wait until the colour has no Pod and no process (scaled to 0)."""

        def gone() -> bool:
            with self._lock:
                return not self.pods(colour) and not any(c.colour == colour for c in self._stopping)

        process.wait_until(gone, timeout=timeout, what=f"{self.rollout}-{colour} without pods")

    def log(self, colour: str | None = None) -> str:
        """The model servers' output, every process of the colour (or all), oldest Pods first."""
        prefix = f"{self.rollout}-{colour}-" if colour else f"{self.rollout}-"
        files = sorted(self.log_dir.glob(f"{prefix}*.log"), key=lambda path: path.stat().st_mtime)
        return "".join(path.read_text() for path in files)

    # -- the loop ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception:  # a kubelet keeps going: the next round retries
                log.exception("kubelet stand-in round failed", rollout=self.rollout)
            self._wake.wait(self.period)
            self._wake.clear()

    def _sync(self) -> None:
        pods = self._list_pods()
        if pods is not None:
            self._follow(pods)
        self._reap_stopping()
        for container in list(self._containers.values()):
            self._check(container)
        for pod in pods or []:
            followed = self._containers.get(pod["metadata"]["uid"])
            if followed is not None:
                self._report(pod, followed)

    def _list_pods(self) -> list[dict[str, Any]] | None:
        """This rollout's model-server Pods, or None while the API server cannot say (processes keep running)."""
        key, value = cluster.MODEL_SERVER_POD_LABEL
        try:
            response = self._core.list_namespaced_pod(
                self.namespace,
                label_selector=f"{constants.LABEL_ROLLOUT}={self.rollout},{key}={value}",
                _preload_content=False,
                _request_timeout=5,
            )
        except Exception as error:  # noqa: BLE001 - the API server is down or slow: keep what runs
            log.warning("cannot list pods", rollout=self.rollout, error=str(error))
            return None
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    def _follow(self, pods: list[dict[str, Any]]) -> None:
        """Start containers for new Pods, stop those whose Pod is gone or going."""
        wanted: dict[str, dict[str, Any]] = {}
        for pod in pods:
            colour = pod["metadata"].get("labels", {}).get(constants.LABEL_COLOUR)
            started = pod["spec"].get("nodeName") and (pod.get("status") or {}).get("podIP")
            if colour in constants.COLOURS and started and not pod["metadata"].get("deletionTimestamp"):
                wanted[pod["metadata"]["uid"]] = pod
        with self._lock:
            for uid in [uid for uid in self._containers if uid not in wanted]:
                self._retire(self._containers.pop(uid))
            for uid, pod in wanted.items():
                if uid not in self._containers:
                    try:
                        self._containers[uid] = self._container(pod)
                    except (MissingSecret, MissingVolume) as error:  # as a kubelet: CreateContainerConfigError,
                        # or a volume that does not mount, tried again
                        log.warning("pod cannot start yet", pod=pod["metadata"]["name"], error=str(error))

    def _container(self, pod: dict[str, Any]) -> Container:
        colour = pod["metadata"]["labels"][constants.LABEL_COLOUR]
        spec = next(c for c in pod["spec"]["containers"] if c["name"] == CONTAINER)
        volumes = self._volumes(pod)
        settings = {key: _on_volumes(value, spec, volumes) for key, value in self._settings(colour, spec).items()}
        name = pod["metadata"]["name"]
        init = [
            InitContainer(
                name=item["name"],
                args=[sys.executable if arg == "python" else _on_volumes(arg, item, volumes) for arg in item["args"]],
                termination_log=self.log_dir / f"{name}-{item['name']}.termination-log",
            )
            for item in pod["spec"].get("initContainers") or []
        ]
        container = Container(
            pod=name,
            uid=pod["metadata"]["uid"],
            colour=colour,
            image=spec.get("image", ""),
            settings=settings,
            reserved=process.reserve_port(),
            init=init,
        )
        if self.prometheus is not None:
            labels = {"namespace": self.namespace, "pod": container.pod, "service": f"{self.rollout}-{colour}"}
            add_target(self.prometheus, container.address, labels)
        log.info("pod followed", pod=container.pod, version=container.version, address=container.address)
        return container

    def _volumes(self, pod: dict[str, Any]) -> dict[str, Path]:
        """The Pod's emptyDir volumes, as directories of its own (``/tmp`` aside, see the module), and its
        PersistentVolumeClaims, as the directory of the volume each is bound to (a hostPath or local volume)."""
        base = self.log_dir / f"{pod['metadata']['name']}-volumes"
        volumes = {}
        for item in pod["spec"].get("volumes") or []:
            if "emptyDir" in item:
                volumes[item["name"]] = base / item["name"]
            elif "persistentVolumeClaim" in item:
                volumes[item["name"]] = self._claim_directory(item["persistentVolumeClaim"]["claimName"])
        return volumes

    def _claim_directory(self, claim: str) -> Path:
        try:
            bound = self._core.read_namespaced_persistent_volume_claim(claim, self.namespace, _request_timeout=5)
            volume = self._core.read_persistent_volume(bound.spec.volume_name or "", _request_timeout=5)
        except ApiException as error:
            if error.status == 404:
                raise MissingVolume(f"claim {claim!r} or its volume not found") from error
            raise
        source = volume.spec.host_path or volume.spec.local
        if source is None or not Path(source.path).is_dir():
            raise MissingVolume(f"the volume of claim {claim!r} has no directory on this machine")
        return Path(source.path)

    def _settings(self, colour: str, spec: dict[str, Any]) -> dict[str, str]:
        """The Pod's env (values, and keys of Secrets as a kubelet reads them), the drill's settings for the
        colour, and this machine's address."""
        env = {item["name"]: item["value"] for item in spec.get("env") or [] if "value" in item}
        for item in spec.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                try:
                    env[item["name"]] = self._secret_key(ref["name"], ref["key"])
                except MissingSecret:
                    if not ref.get("optional"):
                        raise
                    # an optional key that is missing leaves the variable unset
        return {
            **env,
            **self.env.get(colour, {}),
            "MODELSERVER_HOST": process.LOOPBACK,
            "MODELSERVER_PORT": str(self._services[colour].getsockname()[1]),
            "MODELSERVER_LOG_FORMAT": "json",
        }

    def _secret_key(self, name: str, key: str) -> str:
        try:
            secret = self._core.read_namespaced_secret(name, self.namespace, _request_timeout=5)
        except ApiException as error:
            if error.status == 404:
                raise MissingSecret(f"secret {name!r} not found") from error
            raise
        data = secret.data or {}
        if key not in data:
            raise MissingSecret(f"secret {name!r} has no key {key!r}")
        return base64.b64decode(data[key]).decode()

    def _retire(self, container: Container) -> None:
        """The Pod is gone: SIGTERM its process (SIGKILL after the grace period), forget it once it exited."""
        log.info("pod gone", pod=container.pod)
        _stop_init(container)
        if container.alive():
            assert container.process is not None
            pid = container.process.pid
            threading.Thread(target=process.stop, args=(pid,), daemon=True, name=f"stop-{pid}").start()
            self._stopping.append(container)
        else:
            self._forget(container)

    def _reap_stopping(self) -> None:
        with self._lock:
            for container in [c for c in self._stopping if not c.alive()]:
                self._stopping.remove(container)
                self._forget(container)

    def _forget(self, container: Container) -> None:
        if self.prometheus is not None:
            remove_target(self.prometheus, container.address)
        container.reserved.close()
        self._close_idle_listener(container.colour)

    def _close_idle_listener(self, colour: str) -> None:
        """With no live process left, the colour's address refuses connections (none waits in a backlog)."""
        with self._lock:
            live = [c for c in [*self._containers.values(), *self._stopping] if c.colour == colour and c.alive()]
            if not live and colour in self._listeners:
                self._listeners.pop(colour).close()

    def _check_init(self, container: Container, now: float) -> bool:
        """Run the Pod's init containers one after the other; whether they have all completed."""
        while container.init:
            step = container.init[0]
            proc = step.process
            if proc is not None and proc.poll() is None:
                return False
            if proc is not None:
                step.process = None
                termination = _termination(proc, step.started_at)
                if proc.returncode == 0:
                    step.completed = termination
                    container.done_init.append(container.init.pop(0))
                    continue
                message = step.termination_log.read_text() if step.termination_log.exists() else ""
                step.last_termination = {**termination, "message": message} if message else termination
                step.crashes += 1
                step.restart_at = self._backoff_until(now, step.crashes)
                log.info("init container failed", pod=container.pod, container=step.name, message=message)
            if now < step.restart_at:
                return False
            if step.started_at:
                step.restart_count += 1
            step.termination_log.unlink(missing_ok=True)
            step.termination_log.touch()
            step.started_at = _now()
            step.process = process.start(
                f"{container.pod}-{step.name}",
                step.args,
                log_dir=self.log_dir,
                env={"MODELSERVER_TERMINATION_LOG": str(step.termination_log)},
            )
            self._wake_on_exit(step.process)
            return False
        return True

    def _backoff_until(self, now: float, crashes: int) -> float:
        """When a container that died ``crashes`` times in a row is started again."""
        return now + min(self.backoff * 2.0 ** (crashes - 1), self.max_backoff)

    def _check(self, container: Container) -> None:
        """Notice a death, restart after the back-off, probe readiness."""
        now = time.monotonic()
        if not self._check_init(container, now):
            return
        proc = container.process
        if proc is not None and proc.poll() is not None:
            ran = now - container.started_monotonic
            container.crashes = 1 if ran >= self.stable_after else container.crashes + 1
            container.restart_at = self._backoff_until(now, container.crashes)
            container.last_termination = _termination(proc, container.started_at)
            container.process = None
            container.ready = False
            log.info("container died", pod=container.pod, exit_code=_exit_code(proc.returncode))
            self._close_idle_listener(container.colour)
        if container.process is None:
            with self._lock:
                held = container.colour in self._held
            if not held and now >= container.restart_at:
                self._launch(container)
            return
        container.ready = self._answers(container)

    def _launch(self, container: Container) -> None:
        with self._lock:
            if container.colour not in self._listeners:
                self._listeners[container.colour] = process.listener_on(
                    self._services[container.colour].getsockname()[1]
                )
            service = self._listeners[container.colour]
        own = process.listener_on(container.port)
        try:
            container.process = modelservers.start_on_sockets(
                container.pod, settings=container.settings, pod=own, service=service, log_dir=self.log_dir
            )
        finally:
            own.close()  # the process holds it now: it dies with the process, so a dead one is refused
        if container.started_at:
            container.restart_count += 1
        container.started_at = _now()
        container.started_monotonic = time.monotonic()
        self._wake_on_exit(container.process)
        log.info("container started", pod=container.pod, pid=container.process.pid, restarts=container.restart_count)

    def _wake_on_exit(self, proc: subprocess.Popen[bytes]) -> None:
        """A round as soon as ``proc`` exits, not at the next period."""

        def wait() -> None:
            proc.wait()
            self._wake.set()

        threading.Thread(target=wait, daemon=True, name=f"wait-{proc.pid}").start()

    def _answers(self, container: Container) -> bool:
        assert self._probe is not None
        try:
            return self._probe.get(f"http://{container.address}/v2/health/ready").status_code == 200
        except httpx.HTTPError:
            return False

    # -- Pod status ----------------------------------------------------------------------------------------

    def _init_statuses(self, container: Container) -> list[dict[str, Any]]:
        statuses = []
        for step in container.done_init:
            statuses.append(_init_status(container, step, {"terminated": step.completed}, ready=True))
        for index, step in enumerate(container.init):
            state: dict[str, Any]
            if step.process is not None:
                state = {"running": {"startedAt": step.started_at}}
            elif index > 0 or step.last_termination is None:
                state = {"waiting": {"reason": "PodInitializing"}}
            else:
                state = _crash_loop(step.restart_at, step.name, container.pod)
            statuses.append(_init_status(container, step, state, ready=False))
        return statuses

    def _container_status(self, container: Container) -> dict[str, Any]:
        state: dict[str, Any]
        if container.process is not None:
            state = {"running": {"startedAt": container.started_at}}
        elif container.init:
            state = {"waiting": {"reason": "PodInitializing"}}
        elif container.last_termination is None:
            state = {"waiting": {"reason": "ContainerCreating"}}
        else:
            state = _crash_loop(container.restart_at, CONTAINER, container.pod)
        status: dict[str, Any] = {
            "name": CONTAINER,
            "image": container.image,
            "imageID": "",
            "ready": container.ready,
            "started": container.process is not None,
            "restartCount": container.restart_count,
            "state": state,
            "lastState": {"terminated": container.last_termination} if container.last_termination else {},
        }
        if container.process is not None:
            status["containerID"] = f"process://{container.process.pid}"
        return status

    def _report(self, pod: dict[str, Any], container: Container) -> None:
        """Write the container's truth on the Pod's status, when what the API server has differs."""
        observed = pod.get("status") or {}
        wanted = self._container_status(container)
        current: dict[str, Any] = next(
            (s for s in observed.get("containerStatuses") or [] if s.get("name") == CONTAINER), {}
        )
        conditions = observed.get("conditions") or []
        ready_now = {c["type"]: c.get("status") for c in conditions}
        truth = "True" if container.ready else "False"
        init_wanted = self._init_statuses(container)
        init_now = [_essence(s) for s in observed.get("initContainerStatuses") or []]
        if (
            _essence(current) == _essence(wanted)
            and init_now == [_essence(s) for s in init_wanted]
            and all(ready_now.get(t) == truth for t in _READY_CONDITIONS)
        ):
            return
        updated = [c for c in conditions if c["type"] not in _READY_CONDITIONS]
        for kind in _READY_CONDITIONS:
            before = next((c for c in conditions if c["type"] == kind), None)
            if before is not None and before.get("status") == truth:
                updated.append(before)
                continue
            condition = {"type": kind, "status": truth, "lastTransitionTime": _now()}
            if not container.ready:
                condition |= {
                    "reason": "ContainersNotReady",
                    "message": f"containers with unready status: [{CONTAINER}]",
                }
            updated.append(condition)
        others = [s for s in observed.get("containerStatuses") or [] if s.get("name") != CONTAINER]
        patch: dict[str, Any] = {"status": {"conditions": updated, "containerStatuses": [*others, wanted]}}
        if init_wanted:
            patch["status"]["initContainerStatuses"] = init_wanted
        try:
            self._core.patch_namespaced_pod_status(
                pod["metadata"]["name"], self.namespace, patch, _content_type=MERGE_PATCH, _request_timeout=5
            )
        except ApiException as error:
            if error.status != 404:  # a Pod deleted meanwhile needs no status
                log.warning("cannot write pod status", pod=container.pod, status=error.status, reason=error.reason)


_READY_CONDITIONS = ("Ready", "ContainersReady")


def _on_volumes(value: str, spec: Mapping[str, Any], volumes: Mapping[str, Path]) -> str:
    """``value`` with the mount path of one of the container's volumes (emptyDir, claim) replaced by its
    directory."""
    for mount in spec.get("volumeMounts") or []:
        path, directory = mount["mountPath"], volumes.get(mount["name"])
        if directory is None or path == "/tmp":  # noqa: S108 - the machine's own /tmp is the processes' scratch
            continue
        if value == path or value.startswith(path + "/"):
            directory.mkdir(parents=True, exist_ok=True)  # an emptyDir's, made on first use; a claim's exists
            return str(directory) + value[len(path) :]
    return value


def _termination(proc: subprocess.Popen[bytes], started_at: str) -> dict[str, Any]:
    """A container's ``terminated`` state, for a process that has exited."""
    return {
        "exitCode": _exit_code(proc.returncode),
        "reason": "Error" if proc.returncode else "Completed",
        "startedAt": started_at,
        "finishedAt": _now(),
    }


def _crash_loop(restart_at: float, name: str, pod: str) -> dict[str, Any]:
    """The ``waiting`` state of a container that died and waits out its back-off."""
    delay = max(0.0, restart_at - time.monotonic())
    message = f"back-off {delay:.0f}s restarting failed container={name} pod={pod}"
    return {"waiting": {"reason": "CrashLoopBackOff", "message": message}}


def _stop_init(container: Container) -> None:
    """Stop an init container still running (a Pod deleted while it fetches its model)."""
    for step in container.init:
        if step.process is not None and step.process.poll() is None:
            process.stop(step.process.pid, grace_seconds=5)
            step.process.poll()


def _init_status(container: Container, step: InitContainer, state: dict[str, Any], *, ready: bool) -> dict[str, Any]:
    return {
        "name": step.name,
        "image": container.image,
        "imageID": "",
        "ready": ready,
        "restartCount": step.restart_count,
        "state": state,
        "lastState": {"terminated": step.last_termination} if step.last_termination else {},
    }


def _essence(status: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a container status says, without what the API server may add or reformat."""
    state = status.get("state") or {}
    kind = next(iter(state), "")
    detail = state.get(kind) or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    return (
        status.get("ready"),
        status.get("started"),
        status.get("restartCount"),
        kind,
        detail.get("startedAt") or detail.get("reason"),
        last.get("finishedAt"),
    )
