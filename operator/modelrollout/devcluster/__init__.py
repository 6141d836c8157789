"""A real Kubernetes control plane and Prometheus on loopback, for tests and the demo.

No Docker engine is needed: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run
as plain processes, built from their published Go modules (see ``binaries``).
"""
