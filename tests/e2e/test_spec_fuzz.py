"""ModelRollout specs made by hypothesis, valid and invalid, through the real API server and the operator.

Each example is the sample rollout with one to three of its fields (any depth, taken from the CRD's own
schema) replaced by a value of any kind, or removed, or an unknown field added. The API server refuses it
naming the field, or accepts it; what it accepts, the operator either serves or refuses in the rollout's
status naming the field, and it keeps running (never a crash loop).
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.controller import _problem
from modelrollout.devcluster import kubectl, process
from modelrollout.devcluster.stage import Stage

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SAMPLE: dict[str, Any] = yaml.safe_load((REPO / "crds" / "samples" / "digits.yaml").read_text())
CRD: dict[str, Any] = yaml.safe_load((REPO / "crds" / "modelrollout.yaml").read_text())
SPEC_SCHEMA: dict[str, Any] = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
EXAMPLES = 60
"""Examples per run through the API server (a dry run each, about 0.1 s): bounded, and the same every run."""
SERVED = 8
"""Rollouts the API server accepts that are created for real for the operator to serve or refuse."""


def field_paths(schema: dict[str, Any], prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every field under ``schema`` (objects' properties, the first item of arrays), the containers too."""
    for name, child in (schema.get("properties") or {}).items():
        path = (*prefix, name)
        yield path
        yield from field_paths(child, path)
    if "items" in schema:
        yield from field_paths(schema["items"], (*prefix, 0))


PATHS = sorted(field_paths(SPEC_SCHEMA), key=str)
DELETE = object()
"""A replacement that removes the field."""

durations = st.sampled_from(["0s", "1s", "5s", "90s", "10m", "1h", "-1s", "5", "5x", "1.5s", "", "manual"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=12),
    durations,
    st.sampled_from(["file:///models/x.onnx", "https://models.example/x.gguf", "s3://b/k", "v3", "onnx", "gguf"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
edits = st.lists(
    st.tuples(st.sampled_from(PATHS), st.one_of(st.just(DELETE), values)),
    min_size=1,
    max_size=3,
)


def edited(changes: list[tuple[tuple[str | int, ...], Any]]) -> dict[str, Any]:
    """The sample rollout with ``changes`` made where their parents exist (others are added as objects)."""
    body = copy.deepcopy(SAMPLE)
    for path, value in changes:
        target: Any = body["spec"]
        for part in path[:-1]:
            if isinstance(part, int):
                if not isinstance(target, list) or not target:
                    break
                target = target[0]
            else:
                if not isinstance(target, dict):
                    break
                target = target.setdefault(part, {})
        else:
            last = path[-1]
            if isinstance(last, int) or not isinstance(target, dict):
                continue
            if value is DELETE:
                target.pop(last, None)
            else:
                target[last] = value
    return body


FIELD_NAMED = re.compile(r"\bspec(\.[A-Za-z]\w*(\[\d+\])?)*\b")


def names_a_field(message: str) -> bool:
    return FIELD_NAMED.search(message) is not None


def dry_run(kubeconfig: Path, body: dict[str, Any]) -> tuple[bool, str]:
    """Whether the API server would store ``body``, and what it answered (the object, or why not)."""
    result = kubectl.run(
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        kubeconfig=kubeconfig,
        stdin=json.dumps(body),
        check=False,
    )
    return result.returncode == 0, result.stdout if result.returncode == 0 else result.stderr


@pytest.fixture(scope="module", autouse=True)
def crd_installed(kubeconfig: Path) -> None:
    kubectl.install_crd(kubeconfig)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=edits)
def test_the_api_server_refuses_a_bad_spec_naming_the_field(
    kubeconfig: Path, changes: list[tuple[tuple[str | int, ...], Any]]
) -> None:
    body = edited(changes)
    body["metadata"]["name"] = "fuzzed"
    stored, answer = dry_run(kubeconfig, body)
    if not stored:
        assert "Internal error" not in answer and "panic" not in answer, answer
        assert names_a_field(answer), f"the refusal names no field: {answer}"
        return
    spec = json.loads(answer)["spec"]
    try:
        ModelRolloutSpec.model_validate(spec)
    except ValidationError as error:  # the operator will refuse it: its message must name the field too
        assert names_a_field(_problem(error)), _problem(error)


def seeded_edits(rng: random.Random) -> list[tuple[tuple[str | int, ...], Any]]:
    """Edits like ``edits`` draws, from a seeded generator (the same ones every run)."""
    pool: list[Any] = [DELETE, None, True, -1, 0, 1, 7, 100, 101, 2**40, 0.5, "", "x", "5s", "-1s", "manual", [], {}]
    pool += ["https://models.example/x.gguf", "gguf", [{"weight": 50}], {"enabled": False}, {"x": 1}]
    return [(rng.choice(PATHS), rng.choice(pool)) for _ in range(rng.randint(1, 3))]


def test_the_operator_serves_or_refuses_what_the_api_server_accepts(kubeconfig: Path, demo_models: Path) -> None:
    rng = random.Random(14)
    bodies: list[dict[str, Any]] = []
    while len(bodies) < SERVED:
        body = edited(seeded_edits(rng))
        body["metadata"]["name"] = f"fuzzed-{len(bodies)}"
        if dry_run(kubeconfig, body)[0]:
            bodies.append(body)
    with Stage(kubeconfig=kubeconfig, models=demo_models) as stage:
        names = []
        for body in bodies:
            kubectl.run("apply", "-f", "-", kubeconfig=kubeconfig, stdin=json.dumps(body))
            names.append(body["metadata"]["name"])

        def decided(name: str) -> bool:
            body = stage.get(name)
            status = body.get("status") or {}
            return bool(status.get("phase")) and status.get("observedGeneration") == body["metadata"]["generation"]

        try:
            process.wait_until(lambda: all(decided(n) for n in names), timeout=120, what="every rollout decided")
            for name in names:
                status = stage.get(name)["status"]
                if status.get("invalidSpec"):
                    assert names_a_field(status["invalidSpec"]), status["invalidSpec"]
                    assert status["phase"] == "Failed" and "cannot be rolled out" in status["message"]
            assert stage.operator is not None and stage.operator.poll() is None, "the operator exited"
        finally:
            for name in names:
                kubectl.run("delete", "mro", name, "--wait=false", kubeconfig=kubeconfig, check=False)
