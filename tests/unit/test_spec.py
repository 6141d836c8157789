"""The typed spec: defaults from DESIGN.md, round-trip to the CRD's camelCase, errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from modelrollout.api.spec import MANUAL, ModelRolloutSpec, format_duration, parse_duration

MINIMAL: dict[str, Any] = {
    "blue": {"model": {"uri": "file:///models/digits-fp32.onnx", "version": "v1"}},
    "green": {"model": {"uri": "file:///models/digits-int8.onnx", "version": "v2"}},
}


def spec(**overrides: Any) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate({**MINIMAL, **overrides})


def test_defaults_match_the_design() -> None:
    checks = spec().analysis.checks
    assert checks.accuracy.tolerance == 0.01
    assert checks.accuracy.confidence == 0.95
    assert checks.accuracy.min_samples == 1000
    assert checks.latency.p95_max_seconds == 0.150
    assert checks.errors.max_rate == 0.005
    assert [s.weight for s in spec().traffic.steps] == [10, 25, 50, 100]


def test_round_trips_through_camel_case() -> None:
    original = spec(
        traffic={
            "steps": [{"weight": 10, "pause": "30s"}, {"weight": 50, "pause": "manual"}, {"weight": 100}],
            "stickyHeader": "x-user",
        },
        analysis={"interval": "5s", "checks": {"latency": {"p95MaxSeconds": 0.2, "maxRatioToBlue": 1.2}}},
    )
    api = original.to_api()
    assert api["traffic"]["steps"][0] == {"weight": 10, "pause": "30s"}
    assert api["traffic"]["steps"][1]["pause"] == MANUAL
    assert api["analysis"]["checks"]["latency"]["p95MaxSeconds"] == 0.2
    assert ModelRolloutSpec.model_validate(api) == original


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), (5, 5)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("seconds", [0.0, 0.25, 1, 59, 60, 61, 3600, 3725])
def test_duration_format_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("bad", ["", "30", "1x", "m", "-5s", "5s3"])
def test_bad_durations_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"traffic": {"steps": [{"weight": 50}, {"weight": 25}]}}, "traffic.steps[1].weight"),
        ({"traffic": {"steps": [{"weight": 0}]}}, "weight"),
        ({"traffic": {"steps": [{"weight": 101}]}}, "weight"),
        ({"server": {"runtime": "tensorflow"}}, "runtime"),
        ({"green": {"model": {"uri": "", "version": "v2"}}}, "uri"),
        ({"green": {"model": {"uri": "file:///m.onnx", "version": "v2", "sha256": "abc"}}}, "sha256"),
        ({"analysis": {"checks": {"custom": [{"name": "q", "query": "up"}]}}}, "custom[q]"),
        ({"green": {"model": {"uri": "https://models.example", "version": "v2"}}}, "green.model.uri"),
        ({"green": {"model": {"uri": "s3://bucket/m.onnx", "version": "v2"}}}, "green.model.uri"),
        ({"green": {"model": {"uri": "models/m.onnx", "version": "v2"}}}, "green.model.uri"),
        ({"green": {"model": {"uri": "https://[::1/m.onnx", "version": "v2"}}}, "green.model.uri"),
        ({"green": {"model": {"uri": "https://models.example:99999/m.onnx", "version": "v2"}}}, "green.model.uri"),
        ({"green": {"model": {"uri": "https://models.example:x/m.onnx", "version": "v2"}}}, "green.model.uri"),
        ({"green": {"model": {"uri": "https://:443/m.onnx", "version": "v2"}}}, "green.model.uri"),
        (
            {"green": {"model": {"uri": "/m.onnx", "version": "v2", "goldenSet": "http://x/golden.jsonl"}}},
            "green.model.goldenSet",
        ),
        ({"green": {"model": {"uri": "/m.onnx", "version": "1.2.0+cu121"}}}, "green.model.version"),
        ({"blue": {"model": {"uri": "/m.onnx", "version": "-v1"}}}, "blue.model.version"),
        ({"blue": {"model": {"uri": "/m.onnx", "version": "v1."}}}, "blue.model.version"),
        ({"green": {"model": {"uri": "/m.onnx", "version": "v" * 64}}}, "green.model.version"),
        ({"deletionPolicy": "orphan"}, "deletionPolicy"),
        ({"analysis": {"checks": {"health": {"maxRestarts": -1}}}}, "checks.health.maxRestarts"),
        ({"analysis": {"checks": {"golden": {"tolerance": 1.5}}}}, "checks.golden.tolerance"),
        ({"traffic": {"confirmDeadline": "soon"}}, "traffic.confirmDeadline"),
        # mirrored from the CRD's CEL rules, for an API server whose CRD is older than the operator
        ({"server": {"settings": {"MODELSERVER_COLOUR": "blue"}}}, "server.settings"),
        ({"traffic": {"stickyHeader": "x user"}}, "traffic.stickyHeader"),
        ({"traffic": {"provider": "gateway-api", "stickyHeader": "x-user"}}, "traffic"),
        ({"traffic": {"provider": "gateway-api", "mirror": {"percent": 5}}}, "traffic"),
        (
            {"analysis": {"checks": {"custom": [{"name": "errors", "query": "up", "max": 1}]}}},
            "analysis.checks.custom.0.name",
        ),
    ],
)
def test_invalid_specs_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        spec(**overrides)
    assert field in str(error.value)


def test_served_uris_and_label_safe_versions_are_accepted() -> None:
    parsed = spec(
        green={
            "model": {"uri": "/models/digits-int8.onnx", "version": "1.2.0-cu121_b.7", "goldenSet": "file:///g.jsonl"}
        }
    )
    assert parsed.green.model.uri == "/models/digits-int8.onnx"
    assert parsed.green.model.version == "1.2.0-cu121_b.7"
    fetched = spec(green={"model": {"uri": "https://models.example/m/digits.onnx?sig=x", "version": "v2"}})
    assert fetched.green.model.uri == "https://models.example/m/digits.onnx?sig=x"
    for uri in ("https://[fd00::1]:8443/m.onnx", "http://models.example:/m.onnx", "http://10.0.0.1:65535/m"):
        assert spec(green={"model": {"uri": uri, "version": "v2"}}).green.model.uri == uri
    for uri in ("pvc://model-store/m.onnx", "pvc://store.v2/dir/m..onnx", "pvc://a/.../m.gguf"):
        assert spec(green={"model": {"uri": uri, "version": "v2"}}).green.model.uri == uri


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("pvc://Model-Store/m.onnx", "cannot be served"),  # a claim's name is lowercase
        ("pvc://store", "cannot be served"),  # no path on the claim
        ("pvc://store/", "cannot be served"),
        ("pvc:///m.onnx", "cannot be served"),  # no claim
        ("pvc://-store/m.onnx", "cannot be served"),
        ("pvc://store/../etc/passwd", "no '..' segment"),
        ("pvc://store/dir/../../m.onnx", "no '..' segment"),
        ("pvc://store/dir/..", "no '..' segment"),
    ],
)
def test_a_model_on_a_claim_needs_a_claim_name_and_a_path_that_stays_on_it(uri: str, why: str) -> None:
    with pytest.raises(ValidationError) as error:
        spec(green={"model": {"uri": uri, "version": "v2"}})
    assert why in str(error.value) and uri in str(error.value)


def test_refused_values_are_explained() -> None:
    with pytest.raises(ValidationError) as uri_error:
        spec(green={"model": {"uri": "s3://models/m.onnx", "version": "v2"}})
    assert "s3://models/m.onnx" in str(uri_error.value)
    assert "file:///path/in/image" in str(uri_error.value)
    with pytest.raises(ValidationError) as version_error:
        spec(green={"model": {"uri": "/m.onnx", "version": "1.2.0+cu121"}})
    assert "1.2.0-cu121 rather than 1.2.0+cu121" in str(version_error.value)


def test_newer_fields_default_and_round_trip() -> None:
    defaults = spec()
    assert defaults.traffic.confirm_deadline == 60.0
    assert defaults.analysis.checks.health.enabled and defaults.analysis.checks.health.max_restarts == 0
    assert defaults.analysis.checks.golden.enabled and defaults.analysis.checks.golden.tolerance == 0.01
    assert defaults.deletion_policy == "keepStable"
    custom = spec(
        traffic={"confirmDeadline": "90s"},
        analysis={
            "checks": {
                "health": {"enabled": True, "maxRestarts": 2, "failureLimit": 1},
                "golden": {"enabled": False, "tolerance": 0.02, "failureLimit": 3},
            }
        },
        deletionPolicy="deleteAll",
    )
    api = custom.to_api()
    assert api["traffic"]["confirmDeadline"] == "1m30s"
    assert api["analysis"]["checks"]["health"] == {"enabled": True, "maxRestarts": 2, "failureLimit": 1}
    assert api["deletionPolicy"] == "deleteAll"
    assert ModelRolloutSpec.model_validate(api) == custom
