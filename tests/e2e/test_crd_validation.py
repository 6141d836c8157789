"""The API server itself rejects invalid ModelRollouts, with a message that names the field."""

from __future__ import annotations

import copy
import json
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
