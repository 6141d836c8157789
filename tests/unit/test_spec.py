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
    ],
)
def test_invalid_specs_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        spec(**overrides)
    assert field in str(error.value)
