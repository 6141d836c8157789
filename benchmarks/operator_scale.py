"""python -m benchmarks.operator_scale [--sizes 10,100,1000] [--rounds 5] [--window 20]

One operator process against N ModelRollouts on the local control plane. kwok runs the Pods as fakes (Ready
at once, model servers included) and no
model server or router process runs: the benchmark itself confirms each rollout's weights in its router
report, as a router would, so that the operator sees exactly what it sees in a cluster.

Per size, on a fresh cluster, the rollouts in mixed phases: at most ``--progressing`` of them (100) move at
once, as on a cluster where most models are not being rolled out; of the others, ``--paused-share`` (a tenth)
are paused by a user and the rest are settled (aborted, at 0% green). The settled ones are made first and
settle before the others are made. At 10 and 100 rollouts all of them progress. Then:

1. the progressing rollouts are held there by their analysis: a real Prometheus with no samples, so each check
   is Inconclusive and the step never passes, while every analysis round asks Prometheus;
2. in that state, rounds alternate the operator reading the colours' Deployments and pods from its watches
   (the default) and from the API server on every tick (``MODELROLLOUT_OWNED_READS=api``, what it did before),
   each round with a window in which no operator runs: the operator's API requests are those of its window
   less those of the window without it (kwok, the controller-manager and the scheduler make some too). The
   counts come from the API server's own ``apiserver_request_total`` (every verb but WATCH);
3. some progressing rollouts are aborted one at a time (the others still progressing): the time from the
   command to the operator's decision (``status.weights`` asking 0% green), and to the router report
   confirming it;
4. at the first size, two operators with leader election: the leader is killed (SIGKILL, no hand-back) and a
   command is given at once: the time until the other replica has acted on it;
5. every rollout aborted and confirmed (settled), and the windows of 2. again.

A progressing rollout's requests are the mixed windows' less what the paused and settled ones cost, counted
at the settled windows' rate per rollout (so anything a paused rollout costs more is counted against the
progressing ones). Results in benchmarks/results/operator_scale.json; each figure per size, so that its
growth with N shows.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from benchmarks._rounds import check_rounds, goals_met, goals_text, order, spread
from modelrollout import controller
from modelrollout.api import constants
from modelrollout.devcluster import cluster, kubectl, process
from modelrollout.devcluster.prometheus import PrometheusServer
from modelrollout.k8s import owned
from modelrollout.routing.report import report_data, report_name

RESULTS = Path(__file__).parent / "results" / "operator_scale.json"
NAMESPACE = "default"
INTERVAL_SECONDS = 5.0
"""spec.analysis.interval of every rollout here (the default)."""
FIRST_WEIGHT = 10
UNLIMITED = {"MODELROLLOUT_API_QPS": "1000000", "MODELROLLOUT_API_BURST": "1000000"}
"""The client-side rate limit set out of the way, so that it caps neither side of the comparison."""
MODES = {"watches": UNLIMITED, "api-reads": {**UNLIMITED, "MODELROLLOUT_OWNED_READS": "api"}}
GOALS = {
    "decision_latency_p99_s": ("<=", 1.0),
    "api_requests_per_settled_rollout_per_min": ("<=", 1.0),
    "api_requests_per_progressing_rollout_per_interval": ("<=", 1.0),
}


def rollout(name: str, prometheus_url: str, *, aborted: bool = False) -> dict[str, Any]:
    """A rollout that analysis holds Progressing at its first step; ``aborted``: one created with an abort
    command, which the operator carries out at once (it settles at 0% green without an analysis)."""
    command = {constants.ANNOTATION_COMMAND: "abort", constants.ANNOTATION_COMMAND_ID: f"created-{name}"}
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": command if aborted else {}},
        "spec": {
            "server": {"runtime": "onnx", "replicas": 1},
            "blue": {"model": {"uri": "file:///models/digits-fp32.onnx", "version": "v1"}},
            "green": {"model": {"uri": "file:///models/digits-int8.onnx", "version": "v2"}},
            "traffic": {"provider": "builtin", "steps": [{"weight": FIRST_WEIGHT}, {"weight": 100}]},
            "analysis": {
                "prometheus": {"url": prometheus_url},
                "interval": f"{INTERVAL_SECONDS:.0f}s",
                "progressDeadline": "2h",
            },
        },
    }


class Routers:
    """Plays every rollout's router: watches the ModelRollouts and writes ``"<revision>/<green>"`` in each
    one's report once the operator asks for it (one thread for all; a write that fails is retried)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._wanted: dict[str, tuple[str, int, int]] = {}
        self._written: dict[str, tuple[str, int, int]] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, daemon=True),
            threading.Thread(target=self._write, daemon=True),
        ]

    def __enter__(self) -> Routers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()

    def confirmed(self, name: str) -> tuple[str, int, int] | None:
        with self._lock:
            return self._written.get(name)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(
                    self._custom.list_namespaced_custom_object,
                    constants.GROUP,
                    constants.VERSION,
                    NAMESPACE,
                    constants.PLURAL,
                    timeout_seconds=60,
                ):
                    obj = event["object"]
                    weights = (obj.get("status") or {}).get("weights") or {}
                    if "green" not in weights:
                        continue
                    wanted = (obj["metadata"]["uid"], int(weights.get("revision") or 0), int(weights["green"]))
                    with self._lock:
                        self._wanted[obj["metadata"]["name"]] = wanted
                        self._lock.notify_all()
            except Exception:  # noqa: BLE001 - a broken watch is started again
                time.sleep(0.5)

    def _write(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._lock.wait_for(
                    lambda: self._stop.is_set() or any(self._written.get(n) != w for n, w in self._wanted.items()),
                    timeout=0.5,
                )
                due = [(n, w) for n, w in self._wanted.items() if self._written.get(n) != w]
            for name, (uid, revision, green) in due:
                try:
                    self._core.patch_namespaced_config_map(
                        report_name(name),
                        NAMESPACE,
                        {"data": report_data(uid=uid, revision=revision, green=green, trip=None)},
                        field_manager=constants.ROUTER_FIELD_MANAGER,
                    )
                except ApiException:
                    continue  # not created by the operator yet: the next pass
                with self._lock:
                    self._written[name] = (uid, revision, green)


REQUEST_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def apiserver_requests(api_client: client.ApiClient, verb: str = "") -> float:
    """Every request the API server has answered so far, watches and non-resource paths left out; only those
    of ``verb`` when given (APPLY: server-side applies). Only the ``apiserver_request_total`` lines are parsed:
    at 1,000 rollouts a full parse of the API server's metrics, twice a second, took most of a core."""
    method, url, headers, body, post_params = api_client.param_serialize(
        "GET", "/metrics", auth_settings=["BearerToken"]
    )
    response = api_client.call_api(method, url, header_params=headers, body=body, post_params=post_params)
    total = 0.0
    for line in response.read().decode().splitlines():
        sample = REQUEST_SAMPLE.match(line)
        if sample is None:
            continue
        labels = dict(LABEL.findall(sample["labels"]))
        if labels.get("verb") != "WATCH" and labels.get("resource") and (not verb or labels.get("verb") == verb):
            total += float(sample["value"])
    return total


def past_startup(
    api_client: client.ApiClient,
    running: Operator,
    rollouts: int,
    minimum: float,
    quiet: float = 5.0,
    limit: float = 900.0,
    *,
    steady_rate: float | None = None,
) -> tuple[float, float]:
    """Waits past a fresh operator's start-up burst (it reads what each rollout's colours serve, applies every
    rollout's objects once and checks its copy of them): until its phase gauge counts all ``rollouts`` (each
    reconciled once: an operator that has not begun is quiet too), at least ``minimum`` seconds, then until for
    ``quiet`` seconds the API server has answered no apply and, with ``steady_rate``, at most that many requests
    a second of any verb but WATCH (the reads before and after the applies are part of the burst; at 100
    rollouts and more, they alone take longer than ``quiet``). Returns the seconds until every rollout was
    counted (the operator's start once it leads: kopf's first listing of every watched object, then a reconcile
    of each rollout; to the second), and the seconds it took in all."""
    begun = time.monotonic()
    process.wait_until(
        lambda: running.counted() >= rollouts, timeout=limit, interval=1, what=f"{rollouts} rollouts reconciled"
    )
    counted = time.monotonic() - begun
    time.sleep(max(0.0, minimum - (time.monotonic() - begun)))  # a measuring pause, not a wait for a condition
    last = (apiserver_requests(api_client, "APPLY"), apiserver_requests(api_client))
    unchanged_since = time.monotonic()
    while time.monotonic() - begun < limit and time.monotonic() - unchanged_since < quiet:
        time.sleep(1.0)
        now = (apiserver_requests(api_client, "APPLY"), apiserver_requests(api_client))
        busy = steady_rate is not None and now[1] - last[1] > steady_rate * (time.monotonic() - unchanged_since)
        if now[0] != last[0] or busy:
            last, unchanged_since = now, time.monotonic()
    return counted, time.monotonic() - begun


STEADY_RATE = 2.0
"""Requests a second, above what the cluster makes without an operator, under which an operator with the
watches counts as past its start-up (its steady state is about 0: its lease, a status write when something
changed). Measured against all requests alone, the 1,000-rollout run's settled rounds never counted as quiet:
kwok renews a Lease per fake node, 5 requests a second at 31 nodes."""


def operator_metric(port: int, name: str) -> float:
    text = httpx.get(f"http://{process.LOOPBACK}:{port}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Operator:
    def __init__(self, kubeconfig: Path, log_dir: Path, name: str, env: dict[str, str]) -> None:
        self.port = process.free_port()
        self.process = process.start(
            name,
            [str(Path(sys.executable).parent / "kopf"), "run", "--standalone", "-A", "-m", "modelrollout.handlers"],
            log_dir=log_dir,
            env={
                "KUBECONFIG": str(kubeconfig),
                "MODELROLLOUT_METRICS_PORT": str(self.port),
                "MODELROLLOUT_METRICS_HOST": process.LOOPBACK,
                # one router per rollout: the benchmark reports for it as one router does (with no Pod name)
                "MODELROLLOUT_ROUTER_REPLICAS": "1",
                **env,
            },
        )
        self.pid = self.process.pid

    def leads(self) -> bool:
        try:
            return operator_metric(self.port, "modelrollout_leader") == 1
        except httpx.HTTPError:
            return False

    def counted(self) -> float:
        """The rollouts its phase gauge counts: those it has reconciled at least once."""
        try:
            return operator_metric(self.port, "modelrollout_rollouts")
        except httpx.HTTPError:
            return 0.0

    def stop(self) -> None:
        process.stop(self.pid)
        self.process.poll()


@contextmanager
def operator(kubeconfig: Path, log_dir: Path, name: str, env: dict[str, str] | None = None) -> Iterator[Operator]:
    running = Operator(kubeconfig, log_dir, name, env or {})
    try:
        process.wait_until(running.leads, timeout=120, what=f"operator {name} reconciling")
        yield running
    finally:
        running.stop()


def window(api_client: client.ApiClient, seconds: float, running: Operator | None) -> dict[str, float]:
    """Requests per second the API server answered, and the operator's CPU share, RSS and Prometheus queries
    per second, over ``seconds``."""
    requests, begun = apiserver_requests(api_client), time.monotonic()
    cpu = cpu_seconds(running.pid) if running else 0.0
    queries = operator_metric(running.port, "modelrollout_prometheus_queries_total") if running else 0.0
    time.sleep(seconds)  # a measuring window, not a wait for a condition
    elapsed = time.monotonic() - begun
    measured = {"requests_per_s": (apiserver_requests(api_client) - requests) / elapsed}
    if running:
        measured["cpu_share"] = (cpu_seconds(running.pid) - cpu) / elapsed
        measured["rss_mib"] = rss_mib(running.pid)
        measured["queries_per_s"] = (
            operator_metric(running.port, "modelrollout_prometheus_queries_total") - queries
        ) / elapsed
    return measured


def compare(
    api_client: client.ApiClient,
    kubeconfig: Path,
    log_dir: Path,
    *,
    rounds: int,
    seconds: float,
    warm: float,
    rollouts: int,
    modes: tuple[str, ...] = tuple(MODES),
) -> dict[str, Any]:
    """Rounds alternating the modes, each with a window without an operator; per mode the operator's own
    requests per second (its window less the round's window without it), CPU, RSS and queries. Windows
    start past the operator's start-up burst (``past_startup``, at least ``warm`` seconds), so they show its
    steady state: with the watches, what it does between its re-applies of each rollout's objects (every
    30 minutes; see ``summary`` for their share); with per-tick reads, a window shorter than a minute may miss
    their re-apply every 60 s, which makes that side look cheaper than it is (the ratio errs low)."""
    per_mode: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    idle: list[float] = []
    for index in range(rounds):
        baseline = window(api_client, seconds, None)["requests_per_s"]
        idle.append(baseline)
        for mode in order(list(modes), index):
            with operator(kubeconfig, log_dir, f"operator-{mode}-{index}", MODES[mode]) as running:
                # per-tick reads are never quiet; the cluster's own requests (kwok's node leases: 5 a second at
                # 31 nodes) are not the operator's
                steady = STEADY_RATE + baseline if mode == "watches" else None
                counted, startup = past_startup(api_client, running, rollouts, warm, steady_rate=steady)
                measured = window(api_client, seconds, running)
            measured["operator_requests_per_s"] = max(0.0, measured["requests_per_s"] - baseline)
            measured["counted_s"] = counted
            measured["startup_s"] = startup
            per_mode[mode].append(measured)
    result: dict[str, Any] = {"cluster_requests_per_s_without_operator": spread(idle)}
    for mode, windows in per_mode.items():
        result[mode] = {key: spread([w[key] for w in windows]) for key in windows[0]}
    if "api-reads" in per_mode and "watches" in per_mode:
        result["api_reads_to_watches_ratio"] = spread(
            [
                a["operator_requests_per_s"] / max(w["operator_requests_per_s"], 1e-9)
                for a, w in zip(per_mode["api-reads"], per_mode["watches"], strict=True)
            ]
        )
    return result


def all_in(custom: client.CustomObjectsApi, names: list[str], ready: Callable[[dict[str, Any]], bool]) -> bool:
    found = custom.list_namespaced_custom_object(constants.GROUP, constants.VERSION, NAMESPACE, constants.PLURAL)
    held = {item["metadata"]["name"] for item in found["items"] if ready(item)}
    return all(name in held for name in names)


def progressing(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(
        status.get("phase") == "Progressing"
        and (status.get("weights") or {}).get("green") == FIRST_WEIGHT
        and status.get("weightsConfirmedAt")
    )


def settled(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(
        status.get("phase") == "Aborted"
        and (status.get("weights") or {}).get("green") == 0
        and status.get("weightsConfirmedAt")
    )


def paused(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(status.get("phase") == "Paused" and status.get("weightsConfirmedAt"))


def command(custom: client.CustomObjectsApi, name: str, command_id: str, verb: str = "abort") -> None:
    custom.patch_namespaced_custom_object(
        constants.GROUP,
        constants.VERSION,
        NAMESPACE,
        constants.PLURAL,
        name,
        {
            "metadata": {
                "annotations": {constants.ANNOTATION_COMMAND: verb, constants.ANNOTATION_COMMAND_ID: command_id}
            }
        },
    )


def create(custom: client.CustomObjectsApi, names: list[str], prometheus_url: str, *, aborted: bool) -> None:
    for name in names:
        custom.create_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            NAMESPACE,
            constants.PLURAL,
            rollout(name, prometheus_url, aborted=aborted),
        )


def set_up(
    api_client: client.ApiClient,
    custom: client.CustomObjectsApi,
    names: list[str],
    ready: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float,
) -> None:
    """Waits until every one of ``names`` is ``ready``; if they are not in time, says how far they got."""
    try:
        process.wait_until(lambda: all_in(custom, names, ready), timeout=timeout, interval=2, what=what)
    except TimeoutError as error:
        found = custom.list_namespaced_custom_object(constants.GROUP, constants.VERSION, NAMESPACE, constants.PLURAL)
        phases: dict[str, int] = {}
        for item in found["items"]:
            if item["metadata"]["name"] in names and not ready(item):
                phase = str((item.get("status") or {}).get("phase"))
                phases[phase] = phases.get(phase, 0) + 1
        raise TimeoutError(
            f"{error}: of {len(names)} rollouts, not yet {what}: {phases};"
            f" model-server Pods not Ready: {pods_not_ready(api_client)}"
        ) from error


def time_abort(custom: client.CustomObjectsApi, routers: Routers, name: str) -> tuple[float, float]:
    """Seconds from the abort command to the operator's decision (``status.weights`` asking 0% green under a
    new revision), and to the router report confirming those weights (the weight changed in the data plane)."""
    before = custom.get_namespaced_custom_object(constants.GROUP, constants.VERSION, NAMESPACE, constants.PLURAL, name)
    revision = int(((before.get("status") or {}).get("weights") or {}).get("revision") or 0)
    begun = time.monotonic()
    command(custom, name, f"bench-{name}")
    decided_at = None
    while time.monotonic() - begun < 120:
        if decided_at is None:
            obj = custom.get_namespaced_custom_object(
                constants.GROUP, constants.VERSION, NAMESPACE, constants.PLURAL, name
            )
            weights = (obj.get("status") or {}).get("weights") or {}
            if weights.get("green") == 0 and int(weights.get("revision") or 0) > revision:
                decided_at = time.monotonic()
        confirmed = routers.confirmed(name)
        if decided_at is not None and confirmed is not None and confirmed[1] > revision and confirmed[2] == 0:
            return decided_at - begun, time.monotonic() - begun
        time.sleep(0.01)
    raise TimeoutError(f"{name}: the abort was not acted on within 120 s")


def pods_not_ready(api_client: client.ApiClient) -> int:
    """Model-server Pods whose Ready condition is not True (kwok made every one Ready when it started)."""
    found = client.CoreV1Api(api_client).list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/name=model-server"
    )
    return sum(
        1
        for pod in found.items
        if not any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def failover(custom: client.CustomObjectsApi, kubeconfig: Path, log_dir: Path, name: str, lease: float) -> float:
    """Two operators with leader election; the leader is killed and a command given at once: seconds until
    the other replica has acted on it."""
    env = {"MODELROLLOUT_LEADER_ELECTION": "true", "MODELROLLOUT_LEASE_SECONDS": f"{lease:.0f}"}
    first, second = Operator(kubeconfig, log_dir, "leader-1", env), Operator(kubeconfig, log_dir, "leader-2", env)
    try:
        process.wait_until(lambda: first.leads() or second.leads(), timeout=120, what="a leader")
        leader = first if first.leads() else second
        leader.process.kill()
        leader.process.wait()
        begun = time.monotonic()
        command(custom, name, f"failover-{name}")
        process.wait_until(
            lambda: (
                (
                    custom.get_namespaced_custom_object(
                        constants.GROUP, constants.VERSION, NAMESPACE, constants.PLURAL, name
                    ).get("status")
                    or {}
                ).get("phase")
                == "Aborted"
            ),
            timeout=lease * 4 + 600,  # the standby starts its watches when it takes over: minutes at 1,000
            interval=0.05,
            what="the standby acting on the command",
        )
        return time.monotonic() - begun
    finally:
        first.stop()
        second.stop()


def composition(size: int, args: argparse.Namespace) -> dict[str, int]:
    """How many rollouts of ``size`` progress, are paused and are settled while measuring."""
    moving = min(size, args.progressing)
    paused_count = round((size - moving) * args.paused_share)
    return {"progressing": moving, "paused": paused_count, "settled": size - moving - paused_count}


def one_size(size: int, args: argparse.Namespace, *, with_failover: bool, result: dict[str, Any]) -> None:
    """Measures one size into ``result``, phase by phase (what a run stopped part way has measured stays)."""
    log_dir = Path(tempfile.mkdtemp(prefix=f"operator-scale-{size}-"))
    nodes = max(2, -(-3 * size // 100) + 1)  # a model-server Pod per colour and a router Pod per rollout
    phases = composition(size, args)
    with (
        cluster.LocalCluster(nodes=nodes, model_servers_ready=True, controller_qps=args.controller_qps) as local,
        PrometheusServer() as prometheus,
    ):
        kubeconfig = local.kubeconfig_path
        kubectl.install_crd(kubeconfig)
        api_client = config.new_client_from_config(str(kubeconfig))
        custom = client.CustomObjectsApi(api_client)
        names = [f"r{index:04d}" for index in range(size)]
        moving = names[: phases["progressing"]]
        to_pause = names[phases["progressing"] : phases["progressing"] + phases["paused"]]
        resting = names[len(moving) + len(to_pause) :]
        with Routers(api_client) as routers:
            begun = time.monotonic()
            with operator(kubeconfig, log_dir, "operator-setup"):
                # The resting rollouts first, settled before any canary starts: thousands of Pods made at once
                # keep kwok so far behind that a canary's new green Pod is not Ready within its health checks.
                for group, ready, what in (
                    (resting, settled, "settled"),
                    (moving + to_pause, progressing, "progressing"),
                ):
                    create(custom, group, prometheus.url, aborted=group is resting)
                    set_up(api_client, custom, group, ready, what, args.settle_timeout)
                for name in to_pause:
                    command(custom, name, f"pause-{name}", "pause")
                process.wait_until(
                    lambda: all_in(custom, to_pause, paused),
                    timeout=args.settle_timeout,
                    interval=2,
                    what=f"{len(to_pause)} rollouts paused",
                )
            result.update({"rollouts": size, "kwok_nodes": nodes, "phases": phases})
            result["seconds_to_set_up"] = round(time.monotonic() - begun, 1)
            rounds = functools.partial(
                compare,
                api_client,
                kubeconfig,
                log_dir,
                rounds=args.rounds,
                seconds=args.window,
                warm=args.warm,
                rollouts=size,
            )
            result["progressing"] = rounds(modes=tuple(args.modes.split(",")))
            with operator(kubeconfig, log_dir, "operator-aborts", UNLIMITED) as running:
                idle = result["progressing"]["cluster_requests_per_s_without_operator"]["max"]
                past_startup(api_client, running, size, args.warm, steady_rate=STEADY_RATE + idle)  # a steady operator
                still = [name for name in moving if all_in(custom, [name], progressing)]
                result["not_progressing_before_aborts"] = len(moving) - len(still)
                result["model_server_pods_not_ready_before_aborts"] = pods_not_ready(api_client)
                samples = still[: max(5, min(args.aborts, len(moving) // 2))]
                latencies = [time_abort(custom, routers, name) for name in samples]
            status_latency = [latency[0] for latency in latencies]
            report_latency = [latency[1] for latency in latencies]
            result["abort_to_decision_s"] = {
                "p50": round(statistics.median(status_latency), 3),
                "p99": round(percentile(status_latency, 99), 3),
                "max": round(max(status_latency), 3),
                "samples": len(status_latency),
            }
            result["abort_to_router_report_s"] = {
                "p50": round(statistics.median(report_latency), 3),
                "p99": round(percentile(report_latency, 99), 3),
            }
            if with_failover:
                spare = next(name for name in still[len(samples) :] if all_in(custom, [name], progressing))
                result["leader_failover_s"] = round(failover(custom, kubeconfig, log_dir, spare, args.lease), 2)
            with operator(kubeconfig, log_dir, "operator-settle"):
                for name in moving + to_pause:
                    command(custom, name, f"settle-{name}")
                process.wait_until(
                    lambda: all_in(custom, names, settled),
                    timeout=args.settle_timeout,
                    interval=2,
                    what=f"{size} rollouts settled",
                )
            # settled rollouts rest in both modes (no reads, no writes): watches only
            result["settled"] = rounds(modes=("watches",))


REAPPLY_REQUESTS = 14
"""Requests of one apply of a rollout's objects (resources.ensure with the builtin router: 3 reads, 11 applies)."""
CHECK_REQUESTS = 6
"""Requests of one check of a rollout's cached copy against the API server (owned.Resync: a GET and a LIST for
blue, green and the router)."""
REAPPLY_SECONDS = controller.ENSURE_WATCHED_EVERY_SECONDS
"""How often, with the watches, a rollout's objects are applied again (as the operator run here does)."""
CHECK_SECONDS = owned.RESYNC_SECONDS
"""How often a rollout's cached copy is checked when it is read (a progressing rollout
reads it every tick; a settled one only at its re-apply, when the check is always due)."""


def summary(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's keys, from the largest size (each size's own figures are under ``by_size``). The request
    figures are each window's steady state plus the share of the periodic work no window of a few minutes
    sees: the re-apply every 30 minutes with a check of its copy, and for a progressing rollout that check every 15."""
    largest = sizes[-1]
    size = largest["rollouts"]
    phases = largest.get("phases") or {"progressing": size, "paused": 0, "settled": 0}
    settled_rate = largest["settled"]["watches"]["operator_requests_per_s"]["median"]
    resting_rate = settled_rate / size * (phases["paused"] + phases["settled"])
    progressing_rate = max(0.0, largest["progressing"]["watches"]["operator_requests_per_s"]["median"] - resting_rate)
    moving = phases["progressing"]
    queries = {
        entry["rollouts"]: round(entry["progressing"]["watches"]["queries_per_s"]["median"] * INTERVAL_SECONDS, 1)
        for entry in sizes
    }
    settled_periodic = (REAPPLY_REQUESTS + CHECK_REQUESTS) / REAPPLY_SECONDS * 60
    progressing_periodic = (REAPPLY_REQUESTS / REAPPLY_SECONDS + CHECK_REQUESTS / CHECK_SECONDS) * INTERVAL_SECONDS
    return {
        "rollouts": size,
        "decision_latency_p99_s": largest["abort_to_decision_s"]["p99"],
        "api_requests_per_settled_rollout_per_min": round(settled_rate * 60 / size + settled_periodic, 3),
        "api_requests_per_settled_rollout_per_min_measured": round(settled_rate * 60 / size, 3),
        "api_requests_per_progressing_rollout_per_interval": round(
            progressing_rate * INTERVAL_SECONDS / moving + progressing_periodic, 3
        ),
        "api_requests_per_progressing_rollout_per_interval_measured": round(
            progressing_rate * INTERVAL_SECONDS / moving, 3
        ),
        "periodic_note": (
            f"each request figure is the measured steady state plus the periodic work a window does not see"
            f" (computed from the periods in the code): the apply of a rollout's objects every"
            f" {REAPPLY_SECONDS:.0f} s ({REAPPLY_REQUESTS} requests) and the check of its cached copy"
            f" ({CHECK_REQUESTS}), at each re-apply for a settled rollout ({settled_periodic:.2f} per minute)"
            f" and every {CHECK_SECONDS:.0f} s for a progressing one ({progressing_periodic:.3f} per interval)"
        ),
        "prometheus_queries_per_round": queries,
        "operator_rss_mib": largest["progressing"]["watches"]["rss_mib"]["median"],
        "operator_start_s": {  # a fresh operator: from taking the Lease until its phase gauge counts every rollout
            entry["rollouts"]: entry["progressing"]["watches"]["counted_s"]["median"]
            for entry in sizes
            if "counted_s" in entry["progressing"]["watches"]
        },
        "leader_failover_s": next(
            (entry["leader_failover_s"] for entry in sizes if "leader_failover_s" in entry), None
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.operator_scale", description=__doc__)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=float, default=30.0, help="seconds per measuring window")
    parser.add_argument(
        "--warm",
        type=float,
        default=15.0,
        help="an operator runs at least this many seconds before its window, then until it applies nothing for 5 s",
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help="what to compare while progressing (watches alone at 1,000)"
    )
    parser.add_argument(
        "--progressing", type=int, default=100, help="most rollouts progressing at once (the others rest)"
    )
    parser.add_argument(
        "--paused-share", type=float, default=0.1, help="of the rollouts that rest, the share paused (others settled)"
    )
    parser.add_argument(
        "--controller-qps", type=int, default=100, help="the controller-manager's API rate (20 by default)"
    )
    parser.add_argument("--aborts", type=int, default=20, help="progressing rollouts aborted one at a time, per size")
    parser.add_argument("--lease", type=float, default=15.0, help="leader election's lease seconds")
    parser.add_argument("--settle-timeout", type=float, default=1800.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--summarize", type=Path, help="recompute the summary of an earlier results file's by_size (runs nothing)"
    )
    args = parser.parse_args(argv)
    if args.summarize:
        earlier = json.loads(args.summarize.read_text())
        write(args, earlier["command"].split()[3:], earlier["by_size"])
        return
    check_rounds(args.rounds)
    sizes = [int(size) for size in args.sizes.split(",")]
    measured: list[dict[str, Any]] = []
    for index, size in enumerate(sizes):
        entry: dict[str, Any] = {"rollouts": size}
        try:
            one_size(size, args, with_failover=index == 0, result=entry)
        except BaseException:  # stopped (Ctrl-C) or failed: what was measured is kept beside the results
            partial = args.output.with_name(f"{args.output.stem}.partial.json")
            command = "python -m benchmarks.operator_scale " + " ".join(sys.argv[1:] if argv is None else argv)
            partial.write_text(json.dumps({"command": command, "incomplete": True, "by_size": [*measured, entry]}))
            print(f"stopped: what was measured is in {partial}", file=sys.stderr)
            raise
        measured.append(entry)
        write(args, argv, measured)


def write(args: argparse.Namespace, argv: list[str] | None, measured: list[dict[str, Any]]) -> None:
    """The results so far (after each size: a later size that fails leaves the earlier ones)."""
    figures = summary(measured)
    met_values = {key: value for key, value in figures.items() if isinstance(value, int | float)}  # None: not met
    queries = list(figures["prometheus_queries_per_round"].values())
    result = {
        "command": "python -m benchmarks.operator_scale " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{os.cpu_count()} CPUs",
        **figures,
        "goals": {**goals_text(GOALS), "prometheus_queries_per_round": "the same at every size"},
        "goals_met": {
            **goals_met(GOALS, met_values),
            "prometheus_queries_per_round": max(queries) <= 1.5 * max(min(queries), 1.0),
        },
        "by_size": measured,
        "method": (
            "per size a fresh local control plane (kwok); operator requests = API server requests"
            " (apiserver_request_total, all verbs but WATCH) in the operator's window less those in the same"
            " round's window without an operator, each window starting once the operator has applied nothing"
            " for 5 s (past its start-up burst); rounds alternate watches and per-tick API reads; median with"
            " min and max over the rounds"
        ),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
