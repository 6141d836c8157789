"""A local Kubernetes control plane on loopback: etcd, kube-apiserver (TLS, RBAC), kube-controller-manager,
kube-scheduler, and kwok managing fake Nodes, so that Deployments become Available without a kubelet."""

from __future__ import annotations

import json
import shutil
import ssl
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml

from modelrollout.devcluster import binaries, kubectl, pki, process

log = structlog.get_logger(__name__)

FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
STATE_FILE = "cluster.json"


@dataclass
class ClusterState:
    """What a running local cluster is: enough to use it from another process and to stop it."""

    directory: str
    server: str
    kubeconfig: str
    pids: dict[str, int] = field(default_factory=dict)

    def save(self) -> None:
        (Path(self.directory) / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> ClusterState:
        return cls(**json.loads((directory / STATE_FILE).read_text()))


def kubeconfig(*, server: str, ca: Path, client: pki.KeyPair, user: str) -> dict[str, Any]:
    """A kubeconfig with one cluster, one user authenticated by a client certificate, one context."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "modelrollout-local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}],
        "contexts": [{"name": "modelrollout-local", "context": {"cluster": "modelrollout-local", "user": user}}],
        "current-context": "modelrollout-local",
    }


def fake_node(name: str) -> dict[str, Any]:
    """A Node that kwok manages: it reports Ready and runs any Pod scheduled to it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"},
        },
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
        },
    }


MODEL_SERVER_POD_LABEL = ("app.kubernetes.io/name", "model-server")
"""Pods with this label are model servers: kwok starts them but leaves their readiness to the kubelet stand-in
(``devcluster.kubelet``), which runs the real process and reports whether it answers."""

_POD_IP = (
    '{{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) '
    '( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}'
)
_NOT_STARTED = [
    {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
    {"key": ".status.podIP", "operator": "DoesNotExist"},
]


def _pod_stage(name: str, selector: dict[str, Any], next_: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {"resourceRef": {"apiGroup": "v1", "kind": "Pod"}, "selector": selector, "next": next_},
    }


_POD_READY = """{{ $now := Now }}
conditions:
- {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
{{ range .spec.readinessGates }}
- {type: {{ .conditionType | Quote }}, status: "True", lastTransitionTime: {{ $now | Quote }}}
{{ end }}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  state: {running: {startedAt: {{ $now | Quote }}}}
{{ end }}
initContainerStatuses:
{{ range .spec.initContainers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  {{ if eq .restartPolicy "Always" }}
  started: true
  state: {running: {startedAt: {{ $now | Quote }}}}
  {{ else }}
  state: {terminated: {exitCode: 0, finishedAt: {{ $now | Quote }}, reason: Completed, startedAt: {{ $now | Quote }}}}
  {{ end }}
{{ end }}
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: POD_IP
phase: Running
startTime: {{ $now | Quote }}
""".replace("POD_IP", _POD_IP)
"""kwok's own ``pod-ready`` status (kustomize/stage/pod/fast/pod-ready.yaml in kwok v0.7.0)."""

_MODEL_SERVER_POD_STARTED = """{{ $now := Now }}
conditions:
- {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: Ready, status: "False", reason: ContainersNotReady, lastTransitionTime: {{ $now | Quote }}}
- {type: ContainersReady, status: "False", reason: ContainersNotReady, lastTransitionTime: {{ $now | Quote }}}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: false
  restartCount: 0
  state: {waiting: {reason: ContainerCreating}}
{{ end }}
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: POD_IP
phase: Running
startTime: {{ $now | Quote }}
""".replace("POD_IP", _POD_IP)
"""Scheduled and given an IP, containers not ready: what the kubelet stand-in takes over."""

_POD_COMPLETE = """{{ $now := Now }}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  restartCount: 0
  started: false
  state: {terminated: {exitCode: 0, finishedAt: {{ $now | Quote }}, reason: Completed, startedAt: {{ $now | Quote }}}}
{{ end }}
phase: Succeeded
"""


def kwok_stages(*, model_servers_ready: bool = False) -> list[dict[str, Any]]:
    """kwok's default Pod stages (ready, complete, delete), except that model-server Pods are started and
    left not Ready: the kubelet stand-in reports their truth; with ``model_servers_ready`` (no process stands
    behind any Pod: the operator scale benchmark), kwok makes them Ready too. (kwok uses its defaults for a
    kind that the configuration gives no stage for: Nodes keep theirs.)"""
    key, value = MODEL_SERVER_POD_LABEL
    label = f'.metadata.labels["{key}"]'
    if model_servers_ready:
        started = [_pod_stage("pod-ready", {"matchExpressions": _NOT_STARTED}, {"statusTemplate": _POD_READY})]
    else:
        started = [
            _pod_stage(
                "pod-ready",
                {"matchExpressions": [*_NOT_STARTED, {"key": label, "operator": "NotIn", "values": [value]}]},
                {"statusTemplate": _POD_READY},
            ),
            _pod_stage(
                "model-server-pod-started",
                {"matchLabels": {key: value}, "matchExpressions": _NOT_STARTED},
                {"statusTemplate": _MODEL_SERVER_POD_STARTED},
            ),
        ]
    return [
        *started,
        _pod_stage(
            "pod-complete",
            {
                "matchExpressions": [
                    {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                    {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                    {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]},
                ]
            },
            {"statusTemplate": _POD_COMPLETE},
        ),
        _pod_stage(
            "pod-delete",
            {"matchExpressions": [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}]},
            {"finalizers": {"empty": True}, "delete": True},
        ),
    ]


def nodes_schedulable(node: dict[str, Any]) -> bool:
    """Ready, and without the taints a Node carries until it is (pods would not schedule)."""
    conditions = node.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return ready and not node.get("spec", {}).get("taints")


class LocalCluster:
    """Starts and stops one local control plane; usable as a context manager."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        nodes: int = 2,
        model_servers_ready: bool = False,
        controller_qps: int | None = None,
    ) -> None:
        self.directory = directory or Path(tempfile.mkdtemp(prefix="modelrollout-cluster-"))
        self.nodes = nodes
        self.model_servers_ready = model_servers_ready
        """kwok makes model-server Pods Ready itself (no kubelet stand-in runs their processes)."""
        self.controller_qps = controller_qps
        """The controller-manager's API rate (its default, 20 a second, when None): thousands of Deployments
        take minutes to get their Pods at the default."""
        self._processes: dict[str, Any] = {}
        self.state: ClusterState | None = None

    @property
    def kubeconfig_path(self) -> Path:
        return self.directory / "kubeconfig"

    def env(self) -> dict[str, str]:
        """Environment variables for a client of this cluster."""
        return {"KUBECONFIG": str(self.kubeconfig_path)}

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, allow_build: bool = True) -> ClusterState:
        """Start every component and wait until fake nodes are Ready; stop all on failure."""
        begun = time.monotonic()
        bins = binaries.ensure_all(allow_build=allow_build)
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self.state = self._start(bins)
        except BaseException:
            self.stop()
            raise
        log.info("cluster ready", server=self.state.server, seconds=round(time.monotonic() - begun, 1))
        return self.state

    def _start(self, bins: dict[str, Path]) -> ClusterState:
        certs = self.directory / "pki"
        logs = self.directory / "logs"
        ca = pki.CertificateAuthority(certs)
        serving = ca.issue(
            name="apiserver",
            common_name="kube-apiserver",
            server_hosts=(
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "10.96.0.1",
            ),
        )
        admin = ca.issue(name="admin", common_name="modelrollout-admin", organization="system:masters")
        service_accounts = pki.service_account_keys(certs)

        api_port = process.free_port()
        server = f"https://{process.LOOPBACK}:{api_port}"
        self.kubeconfig_path.write_text(
            yaml.safe_dump(kubeconfig(server=server, ca=ca.pair.cert, client=admin, user="admin"))
        )
        state = ClusterState(directory=str(self.directory), server=server, kubeconfig=str(self.kubeconfig_path))
        self.state = state

        etcd_port, peer_port = process.free_port(), process.free_port()
        etcd_url = f"http://{process.LOOPBACK}:{etcd_port}"
        peer_url = f"http://{process.LOOPBACK}:{peer_port}"
        self._launch(
            "etcd",
            [
                str(bins["etcd"]),
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            logs,
        )
        process.wait_until(lambda: _http_ok(f"{etcd_url}/health"), timeout=30, what="etcd", alive=self._alive("etcd"))

        self._launch(
            "kube-apiserver",
            [
                str(bins["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={process.LOOPBACK}",
                f"--advertise-address={process.LOOPBACK}",
                f"--secure-port={api_port}",
                f"--cert-dir={certs}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.pair.cert}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-key-file={service_accounts.cert}",
                f"--service-account-signing-key-file={service_accounts.key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
            ],
            logs,
        )
        ssl_context = ssl.create_default_context(cafile=str(ca.pair.cert))
        ssl_context.load_cert_chain(str(admin.cert), str(admin.key))
        process.wait_until(
            lambda: _http_ok(f"{server}/readyz", ssl_context),
            timeout=90,
            what="kube-apiserver",
            alive=self._alive("kube-apiserver"),
        )

        kubeconfig_arg = f"--kubeconfig={self.kubeconfig_path}"
        self._launch(
            "kube-controller-manager",
            [
                str(bins["kube-controller-manager"]),
                kubeconfig_arg,
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={service_accounts.key}",
                f"--root-ca-file={ca.pair.cert}",
                f"--cluster-cidr={POD_CIDR}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle",
                # The fake nodes' heartbeats come from kwok (a Lease renewed every 10 s, see kwok's flags below),
                # which a starved CPU can delay past the default grace period; a node marked NotReady would make
                # every Pod on it unready for good (kwok's stages make a Pod Ready only once).
                "--node-monitor-grace-period=10m",
                *(
                    [f"--kube-api-qps={self.controller_qps}", f"--kube-api-burst={2 * self.controller_qps}"]
                    if self.controller_qps
                    else []
                ),
            ],
            logs,
        )
        self._launch(
            "kube-scheduler",
            [
                str(bins["kube-scheduler"]),
                kubeconfig_arg,
                "--leader-elect=false",
                "--secure-port=0",
            ],
            logs,
        )
        kwok_config = self.directory / "kwok.yaml"
        kwok_config.write_text(yaml.safe_dump_all(kwok_stages(model_servers_ready=self.model_servers_ready)))
        self._launch(
            "kwok",
            [
                str(bins["kwok"]),
                kubeconfig_arg,
                f"--config={kwok_config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}",
                f"--node-ip={process.LOOPBACK}",
                # Node Leases, renewed every 10 s, and a status heartbeat every 20-25 s. Without the flag kwok
                # holds no Lease and writes a node's status only every 600-610 s: past the grace period above,
                # so every 10 minutes the node controller marked all Pods NotReady (a router's for good). (kwok
                # 0.7 picks its status stage by the flag the wrong way round; the Leases alone keep nodes Ready.)
                "--node-lease-duration-seconds=40",
                f"--server-address={process.LOOPBACK}:{process.free_port()}",
            ],
            logs,
        )
        state.save()
        self._create_nodes()
        return state

    def _launch(self, name: str, args: list[str], logs: Path) -> None:
        proc = process.start(name, args, log_dir=logs)
        self._processes[name] = proc
        assert self.state is not None
        self.state.pids[name] = proc.pid
        self.state.save()

    def _alive(self, name: str) -> Any:
        return lambda: self._processes[name].poll() is None

    def _create_nodes(self) -> None:
        nodes = {"apiVersion": "v1", "kind": "List", "items": [fake_node(f"kwok-node-{i}") for i in range(self.nodes)]}
        kubectl.run("apply", "-f", "-", kubeconfig=self.kubeconfig_path, stdin=json.dumps(nodes))

        def schedulable() -> bool:
            listed = kubectl.run("get", "nodes", "-l", "type=kwok", "-o", "json", kubeconfig=self.kubeconfig_path)
            items = json.loads(listed.stdout)["items"]
            return len(items) == self.nodes and all(nodes_schedulable(item) for item in items)

        # Ready from kwok, then the node-lifecycle controller lifts the not-ready taint.
        process.wait_until(
            schedulable, timeout=60, what="kwok fake nodes Ready", alive=self._alive("kwok"), interval=0.5
        )

    def stop(self) -> None:
        """Stop every process (in reverse start order) by PID and remove the cluster's folder."""
        state = self.state
        if state is None and (self.directory / STATE_FILE).exists():
            state = ClusterState.load(self.directory)
        if state is not None:
            for name in reversed(list(state.pids)):
                process.stop(state.pids[name])
        for proc in self._processes.values():
            proc.poll()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.state = None


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310 - loopback only
        return bool(response.status == 200)
