"""`make demo`: the whole story on this machine, with no cluster of the user's own.

Today it brings up the local control plane and Prometheus, installs the ModelRollout CRD, applies the
sample rollout and shows it as `kubectl get modelrollouts` does. Later steps (model servers, router,
operator, load) join here as they land.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import structlog

from modelrollout.devcluster import cluster, kubectl, prometheus

REPO = Path(__file__).resolve().parents[2]
log = structlog.get_logger("demo")


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def run() -> None:
    begun = time.monotonic()
    banner("Starting a local Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
    with cluster.LocalCluster(nodes=2) as local, prometheus.PrometheusServer() as prom:
        config = local.kubeconfig_path
        print(kubectl.run("get", "nodes", "-o", "wide", kubeconfig=config).stdout)
        banner(f"Prometheus is up at {prom.url}")

        banner("Installing the ModelRollout CRD")
        print(kubectl.run("apply", "-f", str(REPO / "crds" / "modelrollout.yaml"), kubeconfig=config).stdout)
        kubectl.run(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/modelrollouts.modelrollout.dev",
            kubeconfig=config,
        )

        banner("Applying crds/samples/digits.yaml")
        print(kubectl.run("apply", "-f", str(REPO / "crds" / "samples" / "digits.yaml"), kubeconfig=config).stdout)
        banner("kubectl get modelrollouts")
        print(kubectl.run("get", "modelrollouts", kubeconfig=config).stdout)
        banner(f"Done in {time.monotonic() - begun:.0f}s; stopping every process")


def main() -> int:
    try:
        run()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
