"""Typed ModelRollout spec: what a user may write, with the defaults of DESIGN.md.

Field names are snake_case here and camelCase in YAML (the CRD in crds/modelrollout.yaml). Durations are
Go-style strings in YAML ("30s", "1m30s", "500ms") and seconds here.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

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
        "MODELSERVER_MODEL_URI",
        "MODELSERVER_MODEL_NAME",
        "MODELSERVER_MODEL_VERSION",
        "MODELSERVER_RUNTIME",
        "MODELSERVER_ROLLOUT",
        "MODELSERVER_COLOUR",
        "MODELSERVER_HOST",
        "MODELSERVER_PORT",
        "MODELSERVER_MODEL_SHA256",
        "MODELSERVER_GOLDEN_SET",
        "MODELSERVER_FEEDBACK_TOKEN",
        "MODELSERVER_FEEDBACK_AUTH",
    }
)
"""Environment the operator writes itself: the metrics the analysis compares are labelled by it."""
BUILTIN_CHECKS = frozenset({"latency", "latency-vs-blue", "errors", "accuracy", "health", "golden"})


class ServerSpec(ApiModel):
    image: str = "modelrollout/model-server:0.1.0"
    """Container image of the bundled model server (``python -m model_server``)."""
    runtime: Literal["onnx", "gguf"] = "onnx"
    """Model format the server loads: ``onnx`` (onnxruntime) or ``gguf`` (llama.cpp)."""
    replicas: int = Field(default=1, ge=1, le=100)
    """Model-server Pods per colour, 1 to 100. A change scales both colours at once; it is not a new candidate
    (green is scaled to zero once promoted, and after a rollback unless ``rollback.green`` is ``keep``)."""
    resources: dict[str, Any] | None = None
    """Kubernetes ResourceRequirements for the model-server container: limits and requests of cpu, memory
    and extended resources such as nvidia.com/gpu. Unset: no requests or limits."""
    settings: dict[str, str] = Field(default_factory=dict, max_length=64)
    """Extra MODELSERVER_* environment settings for both colours (at most 64). The settings the operator
    writes itself (model path and URI, name, version, runtime, rollout, colour, host, port, sha256, golden
    set, feedback token) cannot be overridden: they label the metrics the analysis compares, or guard its
    evidence."""

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
"""Files inside the server image: ``file:///path`` or ``/path``."""
MODEL_URI = re.compile(r"^((file://)?/|https?://[^/]+/.|pvc://[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/.)")
"""Model URIs the server can serve: a file inside the image, an ``http://`` or ``https://`` URL that the
Pod's init container fetches, or a file on a PersistentVolumeClaim (``pvc://CLAIM/path``, mounted read-only;
k8s.manifests); the CRD's CEL rule is the same expression."""
PARENT_SEGMENT = re.compile(r"(^|/)\.\.(/|\Z)")
"""A ``..`` segment: a path on a claim that would leave it."""
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
"""A Kubernetes label value: versions become the ``modelrollout.dev/version`` label."""


def _served_uri(value: str) -> str:
    if not SERVED_URI.match(value):
        raise ValueError(f"{value!r} cannot be served: use file:///path/in/image or /path/in/image")
    return value


def _model_uri(value: str) -> str:
    if not MODEL_URI.match(value):
        raise ValueError(
            f"{value!r} cannot be served: use file:///path/in/image, /path/in/image, an http:// or https:// URL,"
            " or pvc://CLAIM/path/on/claim"
        )
    if value.startswith("pvc://") and PARENT_SEGMENT.search(value[len("pvc://") :]):
        raise ValueError(f"{value!r}: a path on a claim has no '..' segment")
    if value.startswith(("http://", "https://")):
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError as error:  # an unclosed [IPv6 address, a port that is not a number or out of range
            raise ValueError(f"{value!r} is not a URL the fetch can reach: {error}") from None
        if not parts.hostname or port == 0:
            raise ValueError(f"{value!r} is not a URL the fetch can reach: no host, or port 0")
    return value


def _label_safe(value: str) -> str:
    if not LABEL_VALUE.match(value):
        raise ValueError(
            f"{value!r} is not a valid label value: at most 63 characters, letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (write 1.2.0-cu121 rather than 1.2.0+cu121)"
        )
    return value


class ModelRef(ApiModel):
    uri: Annotated[str, AfterValidator(_model_uri)] = Field(min_length=1)
    """Where the model file is: ``file:///path`` or ``/path`` inside the server image; an ``http://`` or
    ``https://`` URL, fetched by the Pod's init container into an emptyDir before the server starts (retried,
    at most 20 GiB; set ``sha256`` to have it checked); or ``pvc://CLAIM/path``, a file on the
    PersistentVolumeClaim CLAIM in the rollout's namespace, mounted read-only (a claim that does not exist or
    cannot be mounted keeps the colour's Pods Pending, and the status says why). s3 is not served yet."""
    version: Annotated[str, AfterValidator(_label_safe)] = Field(min_length=1, max_length=63)
    """The model's version, shown in status and used as the ``modelrollout.dev/version`` label. A label
    value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit."""
    sha256: Annotated[str | None, AfterValidator(_sha256)] = None
    """Expected SHA-256 of the model file (64 lowercase hex digits); the server refuses a file that differs."""
    golden_set: Annotated[str | None, AfterValidator(lambda v: v if v is None else _served_uri(v))] = None
    """A labelled evaluation file shipped beside the model (``file:///path`` or ``/path`` inside the server
    image), scored when the server starts and periodically after; compared between the colours by the
    ``golden`` check when both have one."""


class ColourSpec(ApiModel):
    model: ModelRef
    """The model file this colour serves, and its version."""


class Step(ApiModel):
    """One step of the canary: green's share of traffic and how long to hold it."""

    weight: int | None = Field(default=None, ge=1, le=100)
    """Green's share of traffic in percent during this step, 1 to 100; omitted keeps the previous step's
    weight."""
    pause: Pause = 0.0
    """How long to stay at this weight once the router confirms it, a duration such as 30s, 1m30s or 500ms:
    the step is done when its pause is over and the latest analysis at this step Passed. With ``manual``,
    the step waits for a promote command once an analysis Passed."""

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
    """Share of blue's requests, in percent, also sent to green; green's answers are compared with blue's
    (the router's modelrouter_mirror_* metrics), then discarded."""


class GatewayApiSpec(ApiModel):
    route_name: str | None = None
    """HTTPRoute to create, or adopt when it exists (its own spec is restored by a ``deleteAll`` deletion);
    unset: the rollout's name."""
    parent_refs: list[dict[str, Any]] = Field(default_factory=list)
    """The Gateways the HTTPRoute attaches to, as in HTTPRoute spec.parentRefs. An adopted route keeps its
    own parentRefs while this is empty."""
    port: int = Field(default=8080, ge=1, le=65535)
    """Port of the <name>-blue and <name>-green Services in the route's backendRefs (the operator's Services
    listen on 8080)."""


class GuardSpec(ApiModel):
    """The builtin router's data-plane guard: it counts green's failed answers as they happen and, on a hard
    fault, sends green nothing at once, without waiting for Prometheus."""

    enabled: bool = True
    """Whether the builtin router guards this rollout's canary (the gateway-api provider has no guard)."""
    window: Duration = Field(default=5.0, ge=0.5, le=60.0)
    """How far back the router counts green's answers to user requests, a duration from 500ms to 60s such as
    5s (mirrored copies never count)."""
    min_requests: int = Field(default=20, ge=1)
    """Requests green must have answered (or failed to) in the part of the window judged before the guard may
    trip: with a hard fault, about this many users see an error before green gets nothing."""
    max_error_rate: float = Field(default=0.5, gt=0, lt=1)
    """Share of green's requests, above 0 and below 1, that may fail (5xx, timeouts, connection errors) in the
    window. The guard trips only when the share is above it with 99% confidence (the lower Wilson bound), over
    the newest requests or any longer part of the window holding at least ``min_requests``: a healthy green
    (errors well below 0.5%) never trips it, one that fails everything trips it after about ``min_requests``
    requests. While Progressing or Paused only; the router then sends green 0% of the traffic until the
    operator, which rolls back with reason GuardTripped, has acknowledged the trip in status.guardTrip."""


class TrafficSpec(ApiModel):
    provider: Literal["builtin", "gateway-api"] = "builtin"
    """Which router sets the weights: ``builtin`` (a router the operator runs per rollout, Deployment and
    Service <name>-router, which clients call) or ``gateway-api`` (the backendRef weights of an HTTPRoute,
    see ``gateway_api``). stickyHeader and mirror need ``builtin``."""
    steps: list[Step] = Field(default_factory=_default_steps, min_length=1, max_length=50)
    """Green's weight at each step and how long to stay there, 1 to 50 steps; at least one sets a weight,
    and the weights strictly increase. After the last step, all traffic moves to green and green's model
    becomes the stable one (promotion)."""
    sticky_header: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$")
    """Requests with the same value of this header go to the same colour; raising green's weight only moves
    values from blue to green. A header name of letters, digits and '-' (builtin provider only); unset:
    each request is routed by a random draw against the weights."""
    mirror: MirrorSpec = Field(default_factory=MirrorSpec)
    """Shadow traffic to green (builtin provider only)."""
    gateway_api: GatewayApiSpec = Field(default_factory=GatewayApiSpec)
    """The HTTPRoute the gateway-api provider writes."""
    confirm_deadline: Duration = 60.0
    """Longest the router may take to confirm new weights, a duration such as 60s. Past it the rollout is
    Degraded, and a canary in flight or a promotion rolls back to the stable model. A deletion with
    ``keepStable`` waits at most this long for 100% blue."""
    feedback_per_second: int = Field(default=1000, ge=0, le=1_000_000)
    """Feedback calls a second the builtin router takes (bursts of twice as many) before answering 429; 0: no
    limit. Feedback must also carry the token of the Secret <name>-feedback (key ``token``; the operator
    creates it with a random token when missing) as ``Authorization: Bearer``, or it is answered 401."""
    guard: GuardSpec = Field(default_factory=GuardSpec)
    """The builtin router's guard: a hard fault on green (most of its answers failing) sends green 0% of the
    traffic within about ``minRequests`` requests, and the canary rolls back with reason GuardTripped."""

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
    """Name of the Secret."""
    key: str
    """Key in the Secret's data that holds the token."""


class PrometheusSpec(ApiModel):
    url: str = "http://prometheus:9090"
    """Base URL of the Prometheus HTTP API, http:// or https://; the analysis sends instant queries to
    <url>/api/v1/query. Rollouts that reach the same Prometheus the same way share their queries."""
    bearer_token_secret: SecretKeyRef | None = None
    """A key of a Secret in the rollout's namespace that holds a bearer token for Prometheus, read again
    every minute (a rotated token is picked up). Unset: no Authorization header."""
    insecure_skip_verify: bool = False
    """Skip verification of Prometheus's TLS certificate."""
    timeout: Duration = 5.0
    """Timeout of each request to Prometheus, a duration such as 5s. A query that times out is an Error,
    not a verdict on green: it counts towards ``analysis.consecutive_error_limit``."""


class LatencyCheck(ApiModel):
    enabled: bool = True
    """Whether this check runs."""
    p95_max_seconds: float = Field(default=0.150, gt=0)
    """Largest p95 latency of green's inference requests over the window, in seconds (check ``latency``)."""
    max_ratio_to_blue: float | None = Field(default=1.5, gt=0)
    """Green's p95 may be at most this multiple of blue's (check ``latency-vs-blue``, skipped while blue has
    no traffic). To switch the comparison off, set a large value such as 1000: ``kubectl apply`` drops a
    ``null``, so the default comes back."""
    ratio_floor_seconds: float = Field(default=0.01, ge=0)
    """Blue's p95 counts as at least this much in the ratio, in seconds, so jitter of fast models never
    fails it."""
    min_requests: int = Field(default=20, ge=1)
    """Requests green (and, for the ratio, blue) must have had in the window before any verdict; with fewer
    the check is Inconclusive."""
    failure_limit: int | None = Field(default=None, ge=1)
    """This check's own failureLimit, counted for latency and latency-vs-blue each; unset uses
    ``analysis.failure_limit``."""


class ErrorCheck(ApiModel):
    enabled: bool = True
    """Whether this check runs."""
    max_rate: float = Field(default=0.005, ge=0, le=1)
    """Largest share of green's requests over the window, 0 to 1, that may fail: answered 5xx (timeouts
    answer 504 and count) or not answered at all (the router's upstream errors)."""
    min_requests: int = Field(default=20, ge=1)
    """Requests sent to green in the window, answered or not, before any verdict; with fewer the check is
    Inconclusive."""
    failure_limit: int | None = Field(default=None, ge=1)
    """This check's own failureLimit; unset uses ``analysis.failure_limit``."""


class AccuracyCheck(ApiModel):
    enabled: bool = True
    """Whether this check runs."""
    tolerance: float = Field(default=0.01, ge=0, le=1)
    """Green's accuracy may be at most this much below blue's, 0 to 1 (0.01 = one point)."""
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    """Confidence of the sequential test's verdicts, above 0.5 and below 1: Failed when green is worse than
    blue by more than the tolerance with this confidence, Passed when it is not, Inconclusive in between."""
    min_samples: int = Field(default=1000, ge=1)
    """Labelled outcomes needed per colour before any verdict."""
    failure_limit: int | None = Field(default=None, ge=1)
    """This check's own failureLimit; unset uses ``analysis.failure_limit``."""


class HealthCheck(ApiModel):
    enabled: bool = True
    """Whether this check runs."""
    max_restarts: int = Field(default=0, ge=0)
    """Restarts of green's model servers allowed during the canary (crashes, OOM kills, failed liveness),
    as Prometheus or Kubernetes counts them, whichever counts more."""
    failure_limit: int | None = Field(default=None, ge=1)
    """This check's own failureLimit; unset uses ``analysis.failure_limit``."""


class GoldenCheck(ApiModel):
    enabled: bool = True
    """Compares the colours' accuracy on their golden sets; applies only when green and the stable model
    both have a goldenSet."""
    tolerance: float = Field(default=0.01, ge=0, le=1)
    """Green's golden-set accuracy (its worst replica's) may be at most this much below blue's, 0 to 1."""
    failure_limit: int | None = Field(default=None, ge=1)
    """This check's own failureLimit; unset uses ``analysis.failure_limit``."""


class CustomCheck(ApiModel):
    """One PromQL check: Passed when its value lies within min and max, Inconclusive when the query returns
    nothing."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Name of the check in status and Events: lowercase letters, digits and '-'; unique, and none of the
    built-in names (latency, latency-vs-blue, errors, accuracy, health, golden)."""
    query: str = Field(min_length=1)
    """PromQL returning one value (the first sample counts); ``$rollout``, ``$namespace`` and ``$window``
    (``analysis.window`` in seconds, such as 60s) are substituted."""
    min: float | None = None
    """Smallest passing value; unset: no lower bound (min, max or both must be set)."""
    max: float | None = None
    """Largest passing value; unset: no upper bound (min, max or both must be set)."""
    failure_limit: int | None = Field(default=None, ge=1)
    """This check's own failureLimit; unset uses ``analysis.failure_limit``."""

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
    """Green's p95 latency, as a ceiling (check latency) and as a ratio to blue's (check latency-vs-blue)."""
    errors: ErrorCheck = Field(default_factory=ErrorCheck)
    """Green's share of failed requests."""
    accuracy: AccuracyCheck = Field(default_factory=AccuracyCheck)
    """Green's accuracy against blue's on labelled outcomes from feedback, with a sequential test (an
    always-valid confidence sequence) that may be looked at every interval."""
    health: HealthCheck = Field(default_factory=HealthCheck)
    """Green's health: restarts of its model servers beyond maxRestarts fail it, and so does having pods
    none of which is ready."""
    golden: GoldenCheck = Field(default_factory=GoldenCheck)
    """Green's accuracy on its golden set against blue's on theirs."""
    custom: list[CustomCheck] = Field(default_factory=list)
    """Checks written in PromQL, each with a name and bounds; at most 20."""


class AnalysisSpec(ApiModel):
    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec)
    """The Prometheus-compatible server (Prometheus, Thanos, Mimir, VictoriaMetrics) the analysis queries."""
    interval: Duration = 5.0
    """Time between two analyses at a step, a duration such as 5s; a step's first analysis runs as soon as
    the step begins."""
    window: Duration = 60.0
    """How far back the latency, error and restart queries (and ``$window`` of custom checks) look, a
    duration such as 60s; never further back than when the current step's weights went live, so that a
    step is judged on its own traffic. The accuracy check takes the whole canary instead."""
    checks: Checks = Field(default_factory=Checks)
    """The checks green must pass at every step."""
    failure_limit: int = Field(default=2, ge=1)
    """Failed analyses of one check during the canary that roll back: a Passed analysis in between does
    not reset the count (a check may set its own limit)."""
    consecutive_error_limit: int = Field(default=3, ge=1)
    """Analyses or reconciles in a row that could not get an answer (from Prometheus, the API server or the
    router) that roll a canary in flight back: blind is not safe. The errors must also have lasted this
    many analysis intervals less one, so that a blip of a few seconds is ridden out."""
    progress_deadline: Duration = 600.0
    """Longest a step may stay undecided after its pause (no Passed analysis: Inconclusive, or Failed or
    Error below their limits) before ``on_deadline`` applies, a duration such as 10m; the pause does not
    count. Also the longest both colours' model servers may take to become ready when a canary starts
    (past it the canary rolls back), and blue to serve a promoted model (past it the rollout is Degraded;
    green keeps the traffic)."""
    on_deadline: Literal["rollback", "pause"] = "rollback"
    """What happens when ``progress_deadline`` passes at a step: ``rollback`` (all traffic back to the stable
    model) or ``pause`` (the rollout is Paused at that step until a resume or promote command)."""


class RollbackSpec(ApiModel):
    green: Literal["scaleToZero", "keep"] = "scaleToZero"
    """After a rollback (or an abort): ``scaleToZero`` scales green's Deployment to zero, ``keep`` keeps it
    running, without traffic, for debugging."""


class ModelRolloutSpec(ApiModel):
    """The desired rollout: the stable model (blue), the candidate (green), the traffic steps between them
    and the analysis that decides each step."""

    server: ServerSpec = Field(default_factory=ServerSpec)
    """The bundled model server that runs both colours. A change of anything but replicas is a new
    candidate: green gets it at once and starts a canary; blue gets it when green is promoted."""
    blue: ColourSpec
    """The stable model before the first promotion; after one, blue serves the promoted model (status.stable)."""
    green: ColourSpec
    """The candidate: a change starts a canary against the stable model; a green equal to the stable model
    needs none."""
    traffic: TrafficSpec = Field(default_factory=TrafficSpec)
    """How traffic moves from blue to green, and which router moves it."""
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    """Where the metrics come from, how often they are judged, and the checks green must pass."""
    rollback: RollbackSpec = Field(default_factory=RollbackSpec)
    """What a rollback leaves behind."""
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
