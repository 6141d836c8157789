"""The API server itself rejects invalid ModelRollouts, with a message that names the field."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.devcluster import kubectl

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SAMPLE: dict[str, Any] = yaml.safe_load((REPO / "crds" / "samples" / "digits.yaml").read_text())


@pytest.fixture(scope="module", autouse=True)
def crd_installed(kubeconfig: Path) -> None:
    kubectl.install_crd(kubeconfig)


def apply(kubeconfig: Path, spec_changes: dict[str, Any], name: str) -> tuple[int, str]:
    body = copy.deepcopy(SAMPLE)
    body["metadata"]["name"] = name
    for path, value in spec_changes.items():
        target = body["spec"]
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
        if value is None:
            del target[last]
        else:
            target[last] = value
    result = kubectl.run("apply", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps(body), check=False)
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"traffic.steps": [{"weight": 50}, {"weight": 25}]}, "spec.traffic.steps", "strictly increasing"),
        ({"traffic.steps": [{"weight": 10}, {"weight": 10}]}, "spec.traffic.steps", "strictly increasing"),
        ({"traffic.steps": [{"weight": 0}]}, "spec.traffic.steps[0].weight", "greater than or equal to 1"),
        ({"traffic.steps": [{"weight": 150}]}, "spec.traffic.steps[0].weight", "less than or equal to 100"),
        ({"traffic.steps": [{"pause": "manual"}]}, "spec.traffic.steps", "at least one step"),
        ({"traffic.steps": [{"weight": 10, "pause": "soon"}]}, "spec.traffic.steps[0].pause", "should match"),
        ({"server.runtime": "tensorflow"}, "spec.server.runtime", "supported values"),
        ({"green.model.uri": ""}, "spec.green.model.uri", "at least 1 chars"),
        ({"green": None}, "spec.green", "Required value"),
        (
            {"analysis": {"checks": {"custom": [{"name": "q", "query": "up"}]}}},
            "spec.analysis.checks.custom[0]",
            "min, max or both",
        ),
        ({"green.model.uri": "s3://models/digits.onnx"}, "spec.green.model.uri", "cannot be served"),
        ({"blue.model.uri": "models/digits.onnx"}, "spec.blue.model.uri", "file:///path/in/image"),
        ({"green.model.uri": "https://[::1/digits.onnx"}, "spec.green.model.uri", "not a URL the fetch can reach"),
        ({"green.model.uri": "https://m.example:99999/d.onnx"}, "spec.green.model.uri", "not a URL the fetch"),
        ({"blue.model.uri": "http://:8080/digits.onnx"}, "spec.blue.model.uri", "not a URL the fetch can reach"),
        ({"green.model.goldenSet": "http://x/golden.jsonl"}, "spec.green.model.goldenSet", "cannot be served"),
        ({"green.model.uri": "pvc://Models/digits.onnx"}, "spec.green.model.uri", "pvc://CLAIM/path/on/claim"),
        ({"green.model.uri": "pvc://models/"}, "spec.green.model.uri", "cannot be served"),
        ({"blue.model.uri": "pvc://models/../etc/m.onnx"}, "spec.blue.model.uri", "no '..' segment"),
        ({"green.model.version": "1.2.0+cu121"}, "spec.green.model.version", "not a valid label value"),
        ({"deletionPolicy": "orphan"}, "spec.deletionPolicy", "supported values"),
        (
            {"analysis": {"checks": {"health": {"maxRestarts": -1}}}},
            "spec.analysis.checks.health.maxRestarts",
            "greater than or equal to 0",
        ),
        ({"traffic.confirmDeadline": "soon"}, "spec.traffic.confirmDeadline", "should match"),
        ({"server.settings": {"MODELSERVER_COLOUR": "blue"}}, "spec.server.settings", "operator writes itself"),
        ({"traffic.stickyHeader": "x-user; }"}, "spec.traffic.stickyHeader", "should match"),
        (
            {"traffic.provider": "gateway-api", "traffic.mirror": {"percent": 10}},
            "spec.traffic",
            "gateway-api provider supports neither",
        ),
        (
            {"analysis": {"checks": {"custom": [{"name": "q", "query": "up", "max": 1}] * 2}}},
            "spec.analysis.checks.custom[1]",
            "Duplicate value",
        ),
        (
            {"analysis": {"checks": {"custom": [{"name": "errors", "query": "up", "max": 1}]}}},
            "spec.analysis.checks.custom[0]",
            "built-in check",
        ),
    ],
    ids=[
        "decreasing",
        "repeated",
        "zero",
        "over-100",
        "no-weight",
        "bad-pause",
        "runtime",
        "empty-uri",
        "no-green",
        "custom-unbounded",
        "s3-uri",
        "relative-uri",
        "unclosed-ipv6",
        "port-out-of-range",
        "no-host",
        "http-golden-set",
        "pvc-claim-not-a-name",
        "pvc-no-path",
        "pvc-parent-segment",
        "version-not-a-label",
        "deletion-policy",
        "negative-max-restarts",
        "confirm-deadline",
        "reserved-setting",
        "sticky-header-not-a-name",
        "gateway-api-mirror",
        "custom-repeated",
        "custom-built-in-name",
    ],
)
def test_invalid_rollout_is_rejected_naming_the_field(
    kubeconfig: Path, changes: dict[str, Any], field: str, words: str
) -> None:
    code, stderr = apply(kubeconfig, changes, name="invalid")
    assert code != 0, "the API server accepted an invalid ModelRollout"
    assert field in stderr and words in stderr, stderr


def test_valid_sample_is_accepted_and_parses_back(kubeconfig: Path) -> None:
    code, stderr = apply(
        kubeconfig, {"traffic.steps": [{"weight": 20, "pause": "manual"}, {"weight": 100}]}, name="valid"
    )
    assert code == 0, stderr
    stored = json.loads(kubectl.run("get", "mro", "valid", "-o", "json", kubeconfig=kubeconfig).stdout)
    spec = ModelRolloutSpec.model_validate(stored["spec"])
    assert spec.traffic.steps[0].manual
    kubectl.run("delete", "mro", "valid", kubeconfig=kubeconfig)


@pytest.mark.parametrize(
    ("name", "words"),
    [("d" * 57, "at most 56"), ("digits.v2", "should match"), ("2digits", "should match")],
    ids=["57-chars", "dot", "digit-first"],
)
def test_a_name_that_cannot_name_the_services_is_rejected(kubeconfig: Path, name: str, words: str) -> None:
    """The rollout's name prefixes its Services (<name>-router at most 63 characters, a DNS-1035 label)."""
    code, stderr = apply(kubeconfig, {}, name=name)
    assert code != 0, "the API server accepted a name the operator cannot use"
    assert "metadata.name" in stderr and words in stderr and name in stderr, stderr


def test_the_longest_name_is_accepted(kubeconfig: Path) -> None:
    name = "d" * 56
    code, stderr = apply(kubeconfig, {}, name=name)
    assert code == 0, stderr
    kubectl.run("delete", "mro", name, kubeconfig=kubeconfig)


def test_every_new_field_is_accepted_and_parses_back(kubeconfig: Path) -> None:
    code, stderr = apply(
        kubeconfig,
        {
            "blue.model.uri": "/models/digits-fp32.onnx",
            "green.model": {
                "uri": "file:///models/digits-int8.onnx",
                "version": "1.2.0-cu121_b.7",
                "goldenSet": "file:///models/golden.jsonl",
            },
            "server.settings": {"MODELSERVER_MAX_BATCH_SIZE": "8"},
            "traffic.confirmDeadline": "90s",
            "traffic.stickyHeader": "x-user",
            "analysis": {
                "checks": {
                    "health": {"enabled": True, "maxRestarts": 2, "failureLimit": 1},
                    "golden": {"enabled": True, "tolerance": 0.02, "failureLimit": 3},
                    "custom": [{"name": "queue", "query": "up", "max": 1}],
                }
            },
            "deletionPolicy": "deleteAll",
        },
        name="every-field",
    )
    assert code == 0, stderr
    stored = json.loads(kubectl.run("get", "mro", "every-field", "-o", "json", kubeconfig=kubeconfig).stdout)
    spec = ModelRolloutSpec.model_validate(stored["spec"])
    assert spec.traffic.confirm_deadline == 90
    assert spec.analysis.checks.health.max_restarts == 2
    assert spec.analysis.checks.golden.tolerance == 0.02
    assert spec.deletion_policy == "deleteAll"
    assert spec.green.model.golden_set == "file:///models/golden.jsonl"
    kubectl.run("delete", "mro", "every-field", kubeconfig=kubeconfig)


def test_the_model_urls_the_operator_fetches_or_mounts_are_accepted(kubeconfig: Path) -> None:
    for index, uri in enumerate(
        (
            "https://[fd00::1]:8443/models/digits.onnx",
            "http://models.example:/digits.onnx",
            "https://bucket.example/digits.onnx?X-Amz-Expires=600&X-Amz-Signature=0a1b",
            "pvc://model-store.v2/digits/v2/digits..int8.onnx",
        )
    ):
        assert ModelRolloutSpec.model_validate({**SAMPLE["spec"], "green": {"model": {"uri": uri, "version": "v2"}}})
        code, stderr = apply(kubeconfig, {"green.model.uri": uri}, name=f"fetched-{index}")
        assert code == 0, f"{uri}: {stderr}"
        kubectl.run("delete", "mro", f"fetched-{index}", kubeconfig=kubeconfig)


def test_the_api_server_stores_the_models_defaults(kubeconfig: Path) -> None:
    code, stderr = apply(kubeconfig, {"analysis": {"checks": {"health": {}, "golden": {}}}}, name="defaults")
    assert code == 0, stderr
    stored = json.loads(kubectl.run("get", "mro", "defaults", "-o", "json", kubeconfig=kubeconfig).stdout)["spec"]
    kubectl.run("delete", "mro", "defaults", kubeconfig=kubeconfig)
    typed = ModelRolloutSpec.model_validate(SAMPLE["spec"]).to_api()
    assert stored["deletionPolicy"] == typed["deletionPolicy"] == "keepStable"
    assert stored["traffic"]["confirmDeadline"] == typed["traffic"]["confirmDeadline"]
    assert stored["analysis"]["checks"]["health"] == typed["analysis"]["checks"]["health"]
    assert stored["analysis"]["checks"]["golden"] == typed["analysis"]["checks"]["golden"]


@pytest.mark.parametrize(
    ("field", "words"),
    [
        ("spec.traffic.confirmDeadline", "Longest the router may take to confirm new weights"),
        ("spec.deletionPolicy", "keepStable leaves the stable model"),
        ("spec.green.model.uri", "s3 is not served yet"),
        ("spec.analysis.checks.health.maxRestarts", "Restarts of green's model servers"),
        ("status.phase", "Where the rollout stands"),
        ("status.weightsConfirmedAt", "When the router first reported the current weights revision applied"),
    ],
)
def test_kubectl_explain_describes_the_fields(kubeconfig: Path, field: str, words: str) -> None:
    path = f"modelrollout.{field}"
    deadline = time.monotonic() + 30
    while True:  # the OpenAPI document follows the CRD by a moment
        result = kubectl.run("explain", path, kubeconfig=kubeconfig, check=False)
        if (result.returncode == 0 and words in " ".join(result.stdout.split())) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert words in " ".join(result.stdout.split()), result.stdout + result.stderr


def _explained_objects(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every node under spec that ``kubectl explain`` lists fields of: objects with properties (array items
    are explained at the array's path)."""
    node = schema.get("items", schema)
    found = [(path, node)] if "properties" in node else []
    for name, child in node.get("properties", {}).items():
        found += _explained_objects(child, f"{path}.{name}")
    return found


def test_kubectl_explain_describes_every_spec_field(kubeconfig: Path) -> None:
    """No ``<no description>`` anywhere under spec, and each field's text is the CRD's (so the typed spec's)."""
    spec_schema = yaml.safe_load((REPO / "crds" / "modelrollout.yaml").read_text())["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]["properties"]["spec"]
    objects = _explained_objects(spec_schema, "modelrollout.spec")
    assert len(objects) > 15
    for path, node in objects:
        deadline = time.monotonic() + 30
        while True:  # the OpenAPI document follows the CRD by a moment
            result = kubectl.run("explain", path, kubeconfig=kubeconfig, check=False)
            shown = " ".join(result.stdout.split())
            missing = [
                name
                for name, child in node["properties"].items()
                if " ".join(child["description"].split()) not in shown
            ]
            if (result.returncode == 0 and not missing) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert result.returncode == 0, result.stderr
        assert "<no description>" not in result.stdout, f"kubectl explain {path}:\n{result.stdout}"
        assert not missing, f"kubectl explain {path} does not show the descriptions of {missing}:\n{result.stdout}"
