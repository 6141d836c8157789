"""Pure parts of the local test environment: the Go wrapper module, manifests, configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelrollout.devcluster import binaries, cluster, pki, prometheus

UPSTREAM_GO_MOD = """\
module k8s.io/kubernetes

go 1.26.0

godebug default=go1.26

require (
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/sample-apiserver => ./staging/src/k8s.io/sample-apiserver
)
"""


def test_wrapper_maps_every_staging_module_to_its_published_release() -> None:
    mod = binaries.wrapper_go_mod(binaries.KUBERNETES_BUILD, UPSTREAM_GO_MOD)
    published = binaries.staging_version(binaries.KUBERNETES_BUILD.version)
    for module in ("k8s.io/api", "k8s.io/client-go", "k8s.io/sample-apiserver"):
        assert f"\t{module} => {module} {published}\n" in mod
    assert "./staging" not in mod
    assert f"require k8s.io/kubernetes {binaries.KUBERNETES_BUILD.version}" in mod


def test_wrapper_keeps_go_and_godebug_directives() -> None:
    mod = binaries.wrapper_go_mod(binaries.KUBERNETES_BUILD, UPSTREAM_GO_MOD)
    assert "\ngo 1.26.0\n" in mod
    assert "\ngodebug default=go1.26\n" in mod


def test_wrapper_for_a_module_without_staging_has_no_replace() -> None:
    mod = binaries.wrapper_go_mod(binaries.KWOK_BUILD, "module sigs.k8s.io/kwok\n\ngo 1.24.0\n")
    assert "replace" not in mod
    assert "require sigs.k8s.io/kwok v" in mod


@pytest.mark.parametrize(("kubernetes", "staging"), [("v1.36.3", "v0.36.3"), ("1.34.10", "v0.34.10")])
def test_staging_version(kubernetes: str, staging: str) -> None:
    assert binaries.staging_version(kubernetes) == staging


def test_staging_version_rejects_non_v1() -> None:
    with pytest.raises(ValueError, match=r"expected v1\.X\.Y"):
        binaries.staging_version("v2.0.0")


def test_envtest_assets_are_preferred_for_the_binaries_they_ship(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kube-apiserver").write_text("")
    (tmp_path / "kwok").write_text("")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    monkeypatch.setenv("MODELROLLOUT_CACHE", str(tmp_path / "empty-cache"))
    assert binaries.find("kube-apiserver") == tmp_path / "kube-apiserver"
    assert binaries.find("kwok") is None  # envtest ships no kwok: it comes from the cache or a build
    with pytest.raises(binaries.BuildError, match="missing control-plane binaries"):
        binaries.ensure_all(allow_build=False)


def test_fake_node_is_selected_by_kwok() -> None:
    node = cluster.fake_node("kwok-node-0")
    assert node["metadata"]["annotations"][cluster.FAKE_NODE_ANNOTATION] == "fake"
    assert node["status"]["allocatable"]["pods"] == "110"


def test_kubeconfig_uses_client_certificate(tmp_path: Path) -> None:
    pair = pki.KeyPair(tmp_path / "a.crt", tmp_path / "a.key")
    config = cluster.kubeconfig(server="https://127.0.0.1:1", ca=tmp_path / "ca.crt", client=pair, user="admin")
    assert config["users"][0]["user"] == {"client-certificate": str(pair.cert), "client-key": str(pair.key)}
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:1"


def test_certificate_authority_signs_server_and_client_certificates(tmp_path: Path) -> None:
    from cryptography import x509

    ca = pki.CertificateAuthority(tmp_path)
    server = ca.issue(name="s", common_name="kube-apiserver", server_hosts=("127.0.0.1", "kubernetes"))
    client = ca.issue(name="c", common_name="admin", organization="system:masters")
    server_cert = x509.load_pem_x509_certificate(server.cert.read_bytes())
    sans = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes" in sans.get_values_for_type(x509.DNSName)
    client_cert = x509.load_pem_x509_certificate(client.cert.read_bytes())
    assert "system:masters" in client_cert.subject.rfc4514_string()
    assert client.key.stat().st_mode & 0o077 == 0  # private keys are not readable by others


def test_prometheus_config_scrapes_the_targets_file(tmp_path: Path) -> None:
    config = prometheus.config(targets_file=tmp_path / "t.json", scrape_interval="1s")
    job = config["scrape_configs"][0]
    assert job["scrape_interval"] == "1s"
    assert job["file_sd_configs"][0]["files"] == [str(tmp_path / "t.json")]


def test_a_node_is_schedulable_only_when_ready_and_untainted() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert cluster.nodes_schedulable(ready)
    tainted = {**ready, "spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]}}
    assert not cluster.nodes_schedulable(tainted)
    assert not cluster.nodes_schedulable({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})


def test_kwok_leaves_model_servers_to_the_kubelet_stand_in_unless_told_to_make_them_ready() -> None:
    def started(stages: list[dict[str, Any]]) -> dict[str, Any]:
        return {s["metadata"]["name"]: s["spec"]["selector"] for s in stages if "delete" not in s["spec"]["next"]}

    default = started(cluster.kwok_stages())
    assert set(default) == {"pod-ready", "model-server-pod-started", "pod-complete"}
    assert any(e.get("operator") == "NotIn" for e in default["pod-ready"]["matchExpressions"])
    ready = started(cluster.kwok_stages(model_servers_ready=True))
    assert set(ready) == {"pod-ready", "pod-complete"}  # no stage leaves a model server not Ready
    assert not any(e.get("operator") == "NotIn" for e in ready["pod-ready"]["matchExpressions"])
