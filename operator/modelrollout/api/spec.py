"""Typed ModelRollout spec: what a user may write, with the defaults of DESIGN.md.

Field names are snake_case here and camelCase in YAML (the CRD in crds/modelrollout.yaml). Durations are
Go-style strings in YAML ("30s", "1m30s", "500ms") and seconds here.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MANUAL = "manual"
"""A step pause of ``manual`` waits for a ``promote`` command."""


def parse_duration(value: Any) -> float:
    """``"1m30s"`` -> 90.0; numbers are taken as seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return float(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a duration such as '30s', '1m30s' or '500ms', got {value!r}")
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(value):
        raise ValueError(f"expected a duration such as '30s', '1m30s' or '500ms', got {value!r}")
    return total


def format_duration(seconds: float) -> str:
    """90.0 -> ``"1m30s"``; 0.5 -> ``"500ms"``."""
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs or not whole else ""]
    return "".join(parts)


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]


def _pause(value: Any) -> float | str:
    return MANUAL if value == MANUAL else parse_duration(value)


def _serialize_pause(value: float | str) -> str:
    return value if isinstance(value, str) else format_duration(value)


Pause = Annotated[float | str, BeforeValidator(_pause), PlainSerializer(_serialize_pause, return_type=str)]


class ApiModel(BaseModel):
    """camelCase in YAML, unknown fields rejected, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


RESERVED_SETTINGS = frozenset(
    {
        "MODELSERVER_MODEL_PATH",
        "MODELSERVER_MODEL_NAME",
        "MODELSERVER_MODEL_VERSION",
        "MODELSERVER_RUNTIME",
        "MODELSERVER_ROLLOUT",
        "MODELSERVER_COLOUR",
        "MODELSERVER_HOST",
        "MODELSERVER_PORT",
        "MODELSERVER_MODEL_SHA256",
        "MODELSERVER_GOLDEN_SET",
    }
)
"""Environment the operator writes itself: the metrics the analysis compares are labelled by it."""
BUILTIN_CHECKS = frozenset({"latency", "latency-vs-blue", "errors", "accuracy", "health", "golden"})


class ServerSpec(ApiModel):
    image: str = "modelrollout/model-server:0.1.0"
    """Container image of the bundled model server."""
    runtime: Literal["onnx", "gguf"] = "onnx"
    replicas: int = Field(default=1, ge=1, le=100)
    resources: dict[str, Any] | None = None
    """Kubernetes ResourceRequirements for the model-server container."""
    settings: dict[str, str] = Field(default_factory=dict, max_length=64)
    """Extra MODELSERVER_* environment settings for both colours."""

    @field_validator("settings")
    @classmethod
    def _not_the_operators_own(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(set(value) & RESERVED_SETTINGS)
        if reserved:
            raise ValueError(f"{', '.join(reserved)}: set by the operator itself (through the spec), not a setting")
        return value


def _sha256(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError("must be 64 lowercase hex digits")
    return value


SERVED_URI = re.compile(r"^(file://)?/")
"""Model URIs the server can load today: ``file:///path`` or ``/path`` inside the image."""
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
"""A Kubernetes label value: versions become the ``modelrollout.dev/version`` label."""


def _served_uri(value: str) -> str:
    if not SERVED_URI.match(value):
        raise ValueError(f"{value!r} cannot be served: use file:///path/in/image or /path/in/image")
    return value


def _label_safe(value: str) -> str:
    if not LABEL_VALUE.match(value):
        raise ValueError(
            f"{value!r} is not a valid label value: at most 63 characters, letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (write 1.2.0-cu121 rather than 1.2.0+cu121)"
        )
    return value


class ModelRef(ApiModel):
    uri: Annotated[str, AfterValidator(_served_uri)] = Field(min_length=1)
    """Where the model file is: ``file:///path`` or ``/path`` inside the image."""
    version: Annotated[str, AfterValidator(_label_safe)] = Field(min_length=1, max_length=63)
    """The model's version, shown in status and used as the ``modelrollout.dev/version`` label."""
    sha256: Annotated[str | None, AfterValidator(_sha256)] = None
    """Expected SHA-256 of the model file (64 lowercase hex digits); the server refuses a file that differs."""
    golden_set: Annotated[str | None, AfterValidator(lambda v: v if v is None else _served_uri(v))] = None
    """A labelled evaluation file shipped beside the model, scored at start and periodically; compared
    between colours by the ``golden`` check."""


class ColourSpec(ApiModel):
    model: ModelRef


class Step(ApiModel):
    weight: int | None = Field(default=None, ge=1, le=100)
    """Green's share of traffic in percent during this step; omitted keeps the previous step's weight."""
    pause: Pause = 0.0
    """How long to stay at this weight (analysis passing), or ``manual`` to wait for a promote command."""

    @property
    def manual(self) -> bool:
        return self.pause == MANUAL

    @property
    def pause_seconds(self) -> float:
        return 0.0 if isinstance(self.pause, str) else self.pause


def _default_steps() -> list[Step]:
    return [Step(weight=10, pause=30.0), Step(weight=25, pause=30.0), Step(weight=50, pause=60.0), Step(weight=100)]


class MirrorSpec(ApiModel):
    percent: int = Field(default=0, ge=0, le=100)
    """Share of blue's requests also sent to green; green's answers are compared, then discarded."""


class GatewayApiSpec(ApiModel):
    route_name: str | None = None
    """HTTPRoute to create or adopt; defaults to the rollout's name."""
    parent_refs: list[dict[str, Any]] = Field(default_factory=list)
    port: int = Field(default=8080, ge=1, le=65535)


class TrafficSpec(ApiModel):
    provider: Literal["builtin", "gateway-api"] = "builtin"
    steps: list[Step] = Field(default_factory=_default_steps, min_length=1, max_length=50)
    sticky_header: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$")
    """Requests with the same value of this header go to the same colour."""
    mirror: MirrorSpec = Field(default_factory=MirrorSpec)
    gateway_api: GatewayApiSpec = Field(default_factory=GatewayApiSpec)
    confirm_deadline: Duration = 60.0
    """Longest the router may take to confirm new weights. Past it the rollout is Degraded; a canary in
    flight or a promotion rolls back to the stable model."""

    @model_validator(mode="after")
    def _provider_supports(self) -> TrafficSpec:
        if self.provider == "gateway-api" and (self.sticky_header or self.mirror.percent):
            raise ValueError("the gateway-api provider supports neither stickyHeader nor mirror.percent")
        return self

    @model_validator(mode="after")
    def _weights_strictly_increase(self) -> TrafficSpec:
        previous = 0
        for index, step in enumerate(self.steps):
            if step.weight is None:
                continue
            if step.weight <= previous:
                raise ValueError(
                    f"traffic.steps[{index}].weight: {step.weight} must be greater than the previous weight {previous}"
                )
            previous = step.weight
        if previous == 0:
            raise ValueError("traffic.steps: at least one step must set a weight")
        return self


class SecretKeyRef(ApiModel):
    name: str
    key: str


class PrometheusSpec(ApiModel):
    url: str = "http://prometheus:9090"
    bearer_token_secret: SecretKeyRef | None = None
    insecure_skip_verify: bool = False
    timeout: Duration = 5.0


class LatencyCheck(ApiModel):
    enabled: bool = True
    p95_max_seconds: float = Field(default=0.150, gt=0)
    max_ratio_to_blue: float | None = Field(default=1.5, gt=0)
    """Green's p95 may be at most this multiple of blue's; null switches the comparison off."""
    ratio_floor_seconds: float = Field(default=0.01, ge=0)
    """Blue's p95 counts as at least this much in the ratio, so jitter of fast models never fails it."""
    min_requests: int = Field(default=20, ge=1)
    failure_limit: int | None = Field(default=None, ge=1)


class ErrorCheck(ApiModel):
    enabled: bool = True
    max_rate: float = Field(default=0.005, ge=0, le=1)
    """Largest share of green's requests that may answer 5xx (timeouts answer 504 and count)."""
    min_requests: int = Field(default=20, ge=1)
    failure_limit: int | None = Field(default=None, ge=1)


class AccuracyCheck(ApiModel):
    enabled: bool = True
    tolerance: float = Field(default=0.01, ge=0, le=1)
    """Green's accuracy may be at most this much below blue's (0.01 = one point)."""
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    min_samples: int = Field(default=1000, ge=1)
    """Labelled outcomes needed per colour before any verdict."""
    failure_limit: int | None = Field(default=None, ge=1)


class HealthCheck(ApiModel):
    enabled: bool = True
    max_restarts: int = Field(default=0, ge=0)
    """Restarts of green's model servers allowed during the canary (crashes, OOM kills, failed liveness)."""
    failure_limit: int | None = Field(default=None, ge=1)


class GoldenCheck(ApiModel):
    enabled: bool = True
    """Compares the colours' accuracy on their golden sets; applies only when green has one."""
    tolerance: float = Field(default=0.01, ge=0, le=1)
    """Green's golden-set accuracy may be at most this much below blue's."""
    failure_limit: int | None = Field(default=None, ge=1)


class CustomCheck(ApiModel):
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    query: str = Field(min_length=1)
    """PromQL returning one value; ``$rollout``, ``$namespace`` and ``$window`` are substituted."""
    min: float | None = None
    max: float | None = None
    failure_limit: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value in BUILTIN_CHECKS:
            raise ValueError(f"{value!r} is the name of a built-in check; choose another")
        return value

    @model_validator(mode="after")
    def _has_a_bound(self) -> CustomCheck:
        if self.min is None and self.max is None:
            raise ValueError(f"analysis.checks.custom[{self.name}]: set min, max or both")
        return self


class Checks(ApiModel):
    latency: LatencyCheck = Field(default_factory=LatencyCheck)
    errors: ErrorCheck = Field(default_factory=ErrorCheck)
    accuracy: AccuracyCheck = Field(default_factory=AccuracyCheck)
    health: HealthCheck = Field(default_factory=HealthCheck)
    golden: GoldenCheck = Field(default_factory=GoldenCheck)
    custom: list[CustomCheck] = Field(default_factory=list)


class AnalysisSpec(ApiModel):
    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec)
    interval: Duration = 5.0
    window: Duration = 60.0
    """Range of the rate() queries for latency and errors."""
    checks: Checks = Field(default_factory=Checks)
    failure_limit: int = Field(default=2, ge=1)
    """Failed analyses of one check during the canary that roll back: a Passed analysis in between does
    not reset the count (a check may set its own limit)."""
    consecutive_error_limit: int = Field(default=3, ge=1)
    """Consecutive analyses or reconciles that could not get an answer (Prometheus, the API server, the
    router) that roll a canary in flight back: blind is not safe. Failing reconciles count once they have
    lasted as long as this many analysis intervals."""
    progress_deadline: Duration = 600.0
    """Longest a step may hold after its pause (inconclusive analysis, resources not ready) before
    ``on_deadline``; a step's pause does not count against it."""
    on_deadline: Literal["rollback", "pause"] = "rollback"


class RollbackSpec(ApiModel):
    green: Literal["scaleToZero", "keep"] = "scaleToZero"
    """After a rollback: scale green to zero, or keep it running for debugging."""


class ModelRolloutSpec(ApiModel):
    server: ServerSpec = Field(default_factory=ServerSpec)
    blue: ColourSpec
    """The stable model before the first promotion; after one, blue serves the promoted model (status.stable)."""
    green: ColourSpec
    """The candidate: a change starts a canary against the stable model."""
    traffic: TrafficSpec = Field(default_factory=TrafficSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    rollback: RollbackSpec = Field(default_factory=RollbackSpec)
    deletion_policy: Literal["keepStable", "deleteAll"] = "keepStable"
    """What deleting the ModelRollout does: ``keepStable`` leaves the stable model (blue Deployment and
    Service, and the router or HTTPRoute at 100% blue) serving; ``deleteAll`` removes everything the
    rollout created and restores adopted routes."""

    def to_api(self) -> dict[str, Any]:
        """The camelCase dict the API server stores."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


def serving_revision(model: ModelRef, server: ServerSpec) -> str:
    """A short hash of what a colour's pods run: the model and the server settings (replicas excluded:
    scaling does not change what answers)."""
    material = {
        "green": model.model_dump(mode="json"),
        "server": server.model_dump(mode="json", exclude={"replicas"}),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]
