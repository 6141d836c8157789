"""Model-based safety test: a simulated world driven against the real decide() and reject().

The world holds what the operator cannot see directly: which model each colour's pods really run, what the
router's data plane really serves, what Prometheus would say about green, and what users and faults do.
``World.reconcile`` is a small copy of ``controller.reconcile`` (gather, decide, write status as a merge
patch, clear a consumed command, count a failed weights write next time) that calls the controller's own
pure helpers (``stable_of``, ``_owned``, ``_green_has_traffic_to_lose``) and ``steps.analysis_due``.

Events are the things the world does: time passes; the router applies status.weights late, skips some,
or loses its report, and its data-plane guard trips on green's failures (0% green at once, held against
newer weights until the status acknowledges the trip, as router.watch decides it); pods roll out, crash and
recover; analyses pass, fail, alternate, are inconclusive or error; users type valid and unknown commands
and edit the spec (new green, green back to the stable model, new server settings, replicas, blue, steps, an
unservable spec and its fix); the operator restarts (status survives, its memory does not), the API server
fails reads, weights writes fail, a status write is lost.

After every event the safety invariants of DESIGN.md are checked (``World.violations``):
- ``promotion_without_evidence``: a candidate reaches Promoting (and later becomes the stable model) only
  by a user's promote, or with a Passed analysis at the last step, taken while the data plane served that
  step's weights, and fewer Failed analyses of every check during the canary than its failure limit;
- ``green_after_confirmed_rollback``: once a rollback is confirmed green gets 0% (asked and served) until a
  new green, a retry or a fixed spec starts a new canary;
- ``traffic_to_older_model``: the data plane never sends traffic to pods running a build (model + server
  settings) introduced before the last promoted one;
- ``decision_without_trace``: every decision is in status (message), recorded as an Event unless it only
  holds, shows a failed reconcile in status, refuses an unknown command without moving anything, and an
  unservable spec is reported (invalid_spec, Degraded) without moving traffic outside a canary;
- ``confirmed_by_other_revision``: weights count as confirmed only after the router reported that very
  revision and weight, which its data plane applied;
- ``status_not_stored_as_decided``: the status read back after the merge patch is the decided one (a
  cleared field is cleared);
- ``green_traffic_before_ready``: a canary asks for traffic on green only once the operator saw both
  colours ready in it (a promote-full while Pending would send everything to a green that may not answer).

``run_histories`` drives random histories and counts violations (``benchmarks/safety.py``);
``SafetyMachine`` is the same world as a hypothesis ``RuleBasedStateMachine`` for ``make test``.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pydantic import ValidationError

from model_server.router.watch import Wanted, holding, target
from modelrollout import controller
from modelrollout.analysis.evaluate import CheckResult, Verdict
from modelrollout.api.spec import ModelRef, ModelRolloutSpec, ServerSpec
from modelrollout.api.status import ModelRolloutStatus, Phase, StableStatus, without_nulls
from modelrollout.rollout import commands, steps
from modelrollout.rollout.commands import CommandName
from modelrollout.rollout.machine import (
    CANARY_PHASES,
    QUIET_ACTIONS,
    Action,
    AnalysisOutcome,
    Decision,
    Observations,
    Serving,
    decide,
    recover,
    reject,
)
from modelrollout.routing.base import NOT_REPORTED, AppliedWeights
from modelrollout.routing.guard import ARMED_PHASES, GuardTrip

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
STEPS: dict[str, list[dict[str, Any]]] = {
    "three": [{"weight": 10, "pause": "10s"}, {"weight": 50, "pause": "10s"}, {"weight": 100}],
    "two": [{"weight": 10, "pause": "10s"}, {"weight": 100}],
    "manual": [{"weight": 20, "pause": "manual"}, {"weight": 100}],
}
QUALITIES = ("pass", "fail", "alternate", "inconclusive", "error")
COMMAND_TEXTS = (*(c.value for c in CommandName), "promot", "abort!", "Resume-All")
PROMOTE_COMMANDS = frozenset({CommandName.PROMOTE, CommandName.PROMOTE_FULL})
INVARIANTS = (
    "promotion_without_evidence",
    "green_after_confirmed_rollback",
    "traffic_to_older_model",
    "decision_without_trace",
    "confirmed_by_other_revision",
    "status_not_stored_as_decided",
    "green_traffic_before_ready",
)

Build = tuple[str, str]
"""What a colour's pods run: (model version, server flavour)."""
Key = tuple[int, int]
"""A weights revision and its green percent."""


def merge_patch(stored: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies the status patch: null removes a key."""
    if not isinstance(patch, dict):
        return patch
    result = dict(stored) if isinstance(stored, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Deployment:
    """One colour: the build its template runs, and the builds of its Ready pods (two during a rollout)."""

    template: Build | None = None
    replicas: int = 0
    serving: frozenset[Build] = frozenset()
    crashed: bool = False
    """Its pods lost readiness (crash loop, failed probes): nothing answers."""
    record: StableStatus | None = None
    """Blue only: the stable model recorded on the Deployment (manifests.ANNOTATION_STABLE)."""

    def apply(self, build: Build, replicas: int, record: StableStatus | None = None) -> None:
        self.template, self.replicas = build, replicas
        if record is not None:
            self.record = record
        if replicas == 0:
            self.serving = frozenset()

    def roll(self) -> None:
        """One step of a rolling update: new pods join, then old ones go."""
        if self.template is None or self.replicas == 0:
            self.serving = frozenset()
        elif not self.serving:
            self.serving = frozenset({self.template})
        elif self.template not in self.serving:
            self.serving = self.serving | {self.template}
        else:
            self.serving = frozenset({self.template})

    def available(self, build: Build) -> bool:
        """As resources.available: the template runs ``build`` (version and settings, the revision label)
        and every pod is updated and Ready."""
        return (
            self.template is not None
            and self.template == build
            and self.replicas > 0
            and not self.crashed
            and self.serving == {self.template}
        )

    def answering(self) -> frozenset[Build]:
        return frozenset() if self.crashed or self.replicas == 0 else self.serving


@dataclass
class Router:
    """The builtin router: it watches status.weights, applies them to its data plane (maybe late, maybe
    skipping some), and reports ``revision/green`` of what it applied in an annotation. Its guard may trip
    while it serves green in a canary: then it serves 0% green, reports that with the trip, and holds every
    later weights of that candidate at 0% until the status acknowledges the trip (router.watch.holding)."""

    watched: list[Wanted] = field(default_factory=list)
    """status.weights as written, in order, with what the router reads beside them (router.watch.wanted_of)."""
    position: int = -1
    """Index in ``watched`` of what the data plane serves (-1: nothing applied yet, 100% blue)."""
    report: AppliedWeights = NOT_REPORTED
    applied_at: dict[Key, float] = field(default_factory=dict)
    """When the data plane first served each revision (and green weight)."""
    reported: set[Key] = field(default_factory=set)
    armed: bool = False
    """The guard may trip: green has weight, applied while the canary was Progressing or Paused."""
    held: bool = False
    """The data plane serves 0% green for the applied revision because of ``trip``."""
    trip: GuardTrip | None = None
    trip_report: GuardTrip | None = None
    """The trip in the router's annotation (published with the report)."""

    def watch(self, status: ModelRolloutStatus) -> None:
        wanted = Wanted(
            revision=status.weights.revision,
            green=status.weights.green,
            mirror=0,
            phase=status.phase.value,
            green_revision=status.green_revision,
            acknowledged=status.guard_trip.revision if status.guard_trip is not None else -1,
        )
        if not self.watched or self.watched[-1] != wanted:
            self.watched.append(wanted)

    def apply(self, now: float, *, latest: bool) -> None:
        if self.position + 1 >= len(self.watched):
            return
        before = self.served if self.position >= 0 else None
        self.position = len(self.watched) - 1 if latest else self.position + 1
        wanted = self.watched[self.position]
        self.held = holding(wanted, self.trip)
        if self.held:
            self.trip = target(wanted, self.trip)[1]
        if before is None or self.served[1] != before[1]:  # the data plane (and the guard) changes only then
            self.armed = not self.held and wanted.green > 0 and wanted.phase in ARMED_PHASES
        self.applied_at.setdefault(self.served, now)

    def trip_guard(self, now: float) -> None:
        """As WeightsFollower.tripped: armed by the data plane, and still a canary in the latest status seen."""
        if not self.armed or self.position < 0:
            return
        wanted, seen = self.watched[self.position], self.watched[-1]
        if seen.phase not in ARMED_PHASES or seen.green <= 0 or seen.green_revision != wanted.green_revision:
            return
        self.trip = GuardTrip(
            revision=wanted.revision,
            green_revision=wanted.green_revision,
            errors=20,
            requests=20,
            window=5.0,
            max_error_rate=0.5,
            at=f"{now}",
        )
        self.held, self.armed = True, False
        self.applied_at.setdefault(self.served, now)

    def publish(self) -> None:
        if self.position >= 0:
            self.report = AppliedWeights(*self.served)
            self.reported.add(self.served)
            self.trip_report = self.trip

    @property
    def served(self) -> Key:
        wanted = self.watched[self.position]
        return wanted.revision, 0 if self.held else wanted.green

    @property
    def green(self) -> int:
        return self.served[1] if self.position >= 0 else 0


@dataclass
class World:
    now: float = 0.0
    # the spec, as the user edits it
    generation: int = 1
    green_version: str = "v1"
    blue_version: str = "v0"
    flavour: str = "f0"
    replicas: int = 1
    steps_variant: str = "three"
    broken: bool = False
    annotation: commands.Command | None = None
    # what the API server stores, and the operator's memory
    status_doc: dict[str, Any] = field(default_factory=dict)
    ensured: controller.Ensured | None = None
    failures: str | None = None
    # the rest of the world
    blue: Deployment = field(default_factory=Deployment)
    green: Deployment = field(default_factory=Deployment)
    router: Router = field(default_factory=Router)
    quality: str = "pass"
    alternate_fails: bool = True
    api_down: bool = False
    weights_write_fails: bool = False
    lose_next_write: bool = False
    counter: int = 2
    # what the invariants remember
    ages: dict[Build, int] = field(default_factory=lambda: {("v0", "f0"): 0, ("v1", "f0"): 1})
    floor: int | None = None
    """Age of the last promoted build."""
    canary_failures: Counter[str] = field(default_factory=Counter)
    promotion_justified: bool = False
    rollback_confirmed: bool = False
    green_seen_ready: bool = False
    """The operator saw both colours ready during this canary."""
    violations: list[tuple[str, str]] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    phases_seen: set[str] = field(default_factory=set)
    rollback_reasons: Counter[str] = field(default_factory=Counter)
    decisions: int = 0

    # --- the spec

    def spec_doc(self) -> dict[str, Any]:
        green_uri = "s3://bucket/model.onnx" if self.broken else f"file:///models/{self.green_version}.onnx"
        return {
            "server": {"replicas": self.replicas, "settings": {"FLAVOUR": self.flavour}},
            "blue": {"model": {"uri": f"file:///models/{self.blue_version}.onnx", "version": self.blue_version}},
            "green": {"model": {"uri": green_uri, "version": self.green_version}},
            "traffic": {"steps": STEPS[self.steps_variant], "confirmDeadline": "30s"},
            "analysis": {"interval": "5s", "progressDeadline": "60s", "failureLimit": 2, "consecutiveErrorLimit": 3},
        }

    def status(self) -> ModelRolloutStatus:
        return ModelRolloutStatus.model_validate(self.status_doc)

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def introduce(self, build: Build) -> None:
        self.ages.setdefault(build, len(self.ages))

    def edit(self, kind: str) -> None:
        """A user edits the spec."""
        status = self.status()
        stable = status.stable if status.stable is not None and status.stable.promoted_at is not None else None
        if kind == "new-green":
            self.green_version = self.fresh("v")
        elif kind == "green-to-stable" and stable is not None:
            self.green_version, self.flavour = stable.model.version, stable.server.settings.get("FLAVOUR", "")
        elif kind == "new-flavour":
            self.flavour = self.fresh("f")
        elif kind == "replicas":
            self.replicas = 3 - self.replicas
        elif kind == "blue-older":
            self.blue_version = "v0"
        elif kind == "blue-newer":
            self.blue_version = self.fresh("v")
        elif kind.startswith("steps-"):
            self.steps_variant = kind.removeprefix("steps-")
        elif kind == "break":
            self.broken = True
        elif kind == "fix":
            self.broken = False
        else:
            return
        self.generation += 1
        self.introduce((self.green_version, self.flavour))
        self.introduce((self.blue_version, self.flavour))

    def command(self, text: str) -> None:
        self.annotation = commands.parse(text, self.fresh("command-"))

    # --- the operator: controller.reconcile, step by step

    def reconcile(self) -> None:
        now = T0 + datetime.timedelta(seconds=self.now)
        before = self.status()
        body = {"metadata": {"namespace": "default", "name": "sim", "generation": self.generation}}
        try:
            spec = ModelRolloutSpec.model_validate(self.spec_doc())
        except ValidationError as error:
            if before.stable is None and self.router.report.revision is not None:
                return  # controller.reconcile: a lost status and an invalid spec move nothing (an Event)
            problem = controller._problem(error)
            decision = reject(before, problem, Observations(router=self.router.report), now)
            self._check_reject(before, decision)
            self._write(before, decision, None)
            return
        command = self.annotation
        if self._resting(spec, before, command, body):
            return
        if before.stable is None and self.api_down:  # controller._recovered failed: an Event, nothing else
            return
        if before.stable is None:  # controller._recovered
            running = self.green.template
            green_serves = None
            if running is not None:
                model = ModelRef(uri=f"file:///models/{running[0]}.onnx", version=running[0])
                green_serves = (model, ServerSpec(replicas=self.replicas, settings={"FLAVOUR": running[1]}))
            record = self.blue.record
            stable_build = (record.model.version, record.server.settings.get("FLAVOUR", "")) if record else None
            serving = Serving(
                blue_runs_only_stable=stable_build is not None
                and self.blue.template == stable_build
                and self.blue.serving <= {stable_build},
                blue_ready=stable_build is not None and self.blue.available(stable_build),
                green_runs_stable=stable_build is not None and self.green.template == stable_build,
            )
            before = recover(
                before,
                recorded=record,
                green_serves=green_serves,
                serving=serving,
                router=self.router.report,
                now=now,
            )
        if self.api_down:
            observations = Observations(command=command, error="ApiException: (503) Service Unavailable")
        else:
            observations = self._gather(spec, before, command, body, now)
        earlier, self.failures = self.failures, None
        if earlier and observations.error is None:
            observations = dataclasses.replace(observations, error=earlier)
        decision = decide(spec, before, observations, now)
        if self.weights_write_fails:
            self.failures = "setting weights: ApiException: (409) Conflict"
        self._check_decision(spec, before, observations, decision)
        promoted = decision.status.stable
        if promoted is not None and promoted.promoted_at is not None and promoted != before.stable:
            if self.api_down:  # controller._record_promotion: no record, no status
                self.failures = "recording the stable model on blue: ApiException: (503) Service Unavailable"
                return
            promoted_build = (promoted.model.version, promoted.server.settings.get("FLAVOUR", ""))
            self.introduce(promoted_build)
            self.blue.apply(promoted_build, spec.server.replicas, record=promoted)
        self._write(before, decision, command, spec=spec, ready=observations.resources_ready)

    def _resting(
        self,
        spec: ModelRolloutSpec,
        status: ModelRolloutStatus,
        command: commands.Command | None,
        body: dict[str, Any],
    ) -> bool:
        if status.phase not in controller.SETTLED or command is not None or status.weights_confirmed_at is None:
            return False
        if status.observed_generation != self.generation:
            return False
        fingerprint = controller._owned(body, spec, status)[1]
        return not controller.ensure_due(self.ensured, fingerprint, None, self.now)

    def _gather(
        self,
        spec: ModelRolloutSpec,
        status: ModelRolloutStatus,
        command: commands.Command | None,
        body: dict[str, Any],
        now: datetime.datetime,
    ) -> Observations:
        stable = controller.stable_of(spec, status)
        green_replicas, fingerprint = controller._owned(body, spec, status)
        if controller.ensure_due(self.ensured, fingerprint, None, self.now):
            blue_build = (stable.model.version, stable.server.settings.get("FLAVOUR", ""))
            self.introduce(blue_build)
            self.blue.apply(blue_build, spec.server.replicas, record=stable)
            if not controller._green_has_traffic_to_lose(spec, status):
                deployed = controller._as_deployed(spec, status, stable)
                self.green.apply(
                    (deployed.green.model.version, deployed.server.settings.get("FLAVOUR", "")), green_replicas
                )
                self.ensured = controller.Ensured(fingerprint, self.now)
        blue_ready = self.blue.available((stable.model.version, stable.server.settings.get("FLAVOUR", "")))
        green_ready = self.green.available((spec.green.model.version, spec.server.settings.get("FLAVOUR", "")))
        analysis = self._analyse(now) if steps.analysis_due(spec, status, now) else None
        return Observations(
            resources_ready=blue_ready and green_ready,
            blue_ready=blue_ready,
            analysis=analysis,
            router=self.router.report,
            command=command,
            guard=self.router.trip_report,
        )

    def _analyse(self, now: datetime.datetime) -> AnalysisOutcome:
        quality = self.quality
        if quality == "alternate":
            quality = "fail" if self.alternate_fails else "pass"
            self.alternate_fails = not self.alternate_fails
        errors = {
            "pass": Verdict.PASSED,
            "fail": Verdict.FAILED,
            "inconclusive": Verdict.INCONCLUSIVE,
            "error": Verdict.ERROR,
        }[quality]
        latency = Verdict.ERROR if quality == "error" else Verdict.PASSED
        return AnalysisOutcome(
            now, [CheckResult("errors", errors, f"errors {errors}"), CheckResult("latency", latency, "p95")]
        )

    def _write(
        self,
        before: ModelRolloutStatus,
        decision: Decision,
        command: commands.Command | None,
        *,
        spec: ModelRolloutSpec | None = None,
        ready: bool = False,
    ) -> None:
        self.decisions += 1
        if self.lose_next_write:  # a conflict: kopf retries on the next tick
            self.lose_next_write = False
            return
        decision.status.observed_generation = self.generation
        wanted = decision.status.to_api()
        if without_nulls(wanted) != self.status_doc:
            self.status_doc = without_nulls(merge_patch(self.status_doc, wanted))
        if command is not None and decision.status.last_command_id == command.id:
            self.annotation = None
        after = self.status()
        if after != decision.status:
            self.violate("status_not_stored_as_decided", f"{decision.status!r} stored as {after!r}")
        self.router.watch(after)
        self.phases_seen.add(after.phase.value)
        self._check_transition(before, after, decision, command, spec, ready=ready)

    # --- invariants

    def violate(self, invariant: str, message: str) -> None:
        self.violations.append((invariant, f"{message} [after {' > '.join(self.trace[-12:])}]"))

    def _check_decision(
        self, spec: ModelRolloutSpec, before: ModelRolloutStatus, observations: Observations, decision: Decision
    ) -> None:
        s = decision.status
        if s.message != decision.message or not (decision.recorded or decision.action in QUIET_ACTIONS):
            self.violate(
                "decision_without_trace", f"{decision.action} {decision.reason} neither in status nor recorded"
            )
        if observations.error is not None and s.last_error != observations.error:
            self.violate("decision_without_trace", f"failed reconcile not in status: {observations.error}")
        command = observations.command
        consumed = command is not None and s.last_command_id == command.id != before.last_command_id
        if consumed and command is not None and command.name is None:
            if decision.reason != "UnknownCommand" or not decision.recorded:
                self.violate("decision_without_trace", f"unknown command {command.text!r} not refused")
            # the weights may follow an edit of the steps made meanwhile, never the command
            expected = before.weights.green
            if before.phase in steps.ANALYSED_PHASES:
                index = steps.step_index(spec.traffic.steps, before.step_index)
                expected = steps.step_weight(spec.traffic.steps, index)
            if s.phase is not before.phase or s.step_index != before.step_index or s.weights.green != expected:
                self.violate("decision_without_trace", f"unknown command {command.text!r} moved {before.phase}")

    def _check_reject(self, before: ModelRolloutStatus, decision: Decision) -> None:
        s = decision.status
        degraded = [c.status for c in s.conditions if c.type == "Degraded"] == ["True"]
        if not s.invalid_spec or not degraded or s.message != decision.message:
            self.violate("decision_without_trace", "an unservable spec is not reported")
        if before.phase not in CANARY_PHASES and s.weights.green != before.weights.green:
            self.violate("decision_without_trace", f"an unservable spec moved traffic in {before.phase}")

    def _check_transition(
        self,
        before: ModelRolloutStatus,
        after: ModelRolloutStatus,
        decision: Decision,
        command: commands.Command | None,
        spec: ModelRolloutSpec | None,
        *,
        ready: bool = False,
    ) -> None:
        if after.green_revision != before.green_revision or decision.action in (Action.INITIALIZE, Action.RESTART):
            self.canary_failures.clear()
            self.promotion_justified = self.rollback_confirmed = self.green_seen_ready = False
        self.green_seen_ready = self.green_seen_ready or ready
        if after.weights.green > 0 and before.weights.green == 0 and not self.green_seen_ready:
            self.violate(
                "green_traffic_before_ready", f"{after.weights.green}% green asked in {after.phase} unseen ready"
            )
        stored = after.analysis
        if stored is not None and (before.analysis is None or stored.time != before.analysis.time):
            self.canary_failures.update(c.name for c in stored.checks if c.verdict == Verdict.FAILED.value)
        applied = self.router.applied_at
        key = (after.weights.revision, after.weights.green)
        if after.weights_confirmed_at is not None and (key not in self.router.reported or key not in applied):
            self.violate("confirmed_by_other_revision", f"{key} confirmed, never applied and reported")
        if after.phase is Phase.PROMOTING and before.phase is not Phase.PROMOTING and spec is not None:
            consumed = command is not None and after.last_command_id == command.id != before.last_command_id
            by_user = consumed and command is not None and command.name in PROMOTE_COMMANDS
            last = len(spec.traffic.steps) - 1
            served_since = applied.get((before.weights.revision, before.weights.green))
            evidence = (
                stored is not None
                and stored.verdict == Verdict.PASSED.value
                and stored.step_index == last
                and served_since is not None
                and (stored.time - T0).total_seconds() >= served_since
                and all(n < spec.analysis.failure_limit for n in self.canary_failures.values())
            )
            self.promotion_justified = by_user or evidence
            if not self.promotion_justified:
                self.violate(
                    "promotion_without_evidence",
                    f"promoting with {stored!r}, failures {dict(self.canary_failures)}, step weights served "
                    f"since {served_since}",
                )
        promoted_now = (
            after.stable is not None and after.stable.promoted_at is not None and after.stable != before.stable
        )
        if promoted_now and after.stable is not None:
            if before.phase is not Phase.PROMOTING or not self.promotion_justified:
                self.violate(
                    "promotion_without_evidence", f"stable became {after.stable.model.version} from {before.phase}"
                )
            if (before.weights.revision, 100) not in applied:
                self.violate("confirmed_by_other_revision", "promoted before the data plane served all on green")
            build = (after.stable.model.version, after.stable.server.settings.get("FLAVOUR", ""))
            self.floor = self.ages[build]
        if after.phase is Phase.ROLLING_BACK and before.phase is not Phase.ROLLING_BACK:
            self.rollback_reasons[after.rollback_reason] += 1
        settled = {Phase.ROLLED_BACK, Phase.ABORTED}
        if after.phase in settled and before.phase not in settled:
            if after.weights.green != 0 or key not in applied:
                self.violate("confirmed_by_other_revision", f"{after.phase} before the data plane served {key}")
            self.rollback_confirmed = True
        if after.phase is Phase.PROMOTED and before.phase is Phase.FINALIZING and key not in applied:
            self.violate("confirmed_by_other_revision", f"Promoted before the data plane served {key}")

    def check_state(self) -> None:
        """Invariants of the world itself, after every event."""
        status = self.status()
        if self.rollback_confirmed and (status.weights.green != 0 or self.router.green != 0):
            self.violate(
                "green_after_confirmed_rollback",
                f"green asked {status.weights.green}%, served {self.router.green}% in {status.phase}",
            )
        if self.floor is not None:
            served = []
            if self.router.green < 100:
                served += [("blue", b) for b in self.blue.answering()]
            if self.router.green > 0:
                served += [("green", b) for b in self.green.answering()]
            for colour, build in served:
                if self.ages[build] < self.floor:
                    self.violate(
                        "traffic_to_older_model",
                        f"{colour} serves {build} (age {self.ages[build]}) below the promoted age {self.floor}, "
                        f"router at {self.router.green}% green, phase {status.phase}",
                    )

    # --- events

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def event(self, group: str, kind: str) -> None:
        self.trace.append(f"{group}:{kind}")
        EVENTS[group][1](self, kind)
        if not self.violations:
            self.check_state()


def _tick(world: World, kind: str) -> None:
    """A healthy tick: time passes, the router and the pods catch up, the operator reconciles (``burst``:
    eight of them, 5 s apart, so that short histories reach promotions)."""
    for _ in range(8 if kind == "burst" else 1):
        world.advance(5.0 if kind == "burst" else float(kind))
        world.router.apply(world.now, latest=True)
        world.router.publish()
        world.blue.roll()
        world.green.roll()
        world.reconcile()
        if world.violations:
            return
        world.check_state()


def _reconcile_after(world: World, kind: str) -> None:
    world.advance(float(kind))
    world.reconcile()


def _router(world: World, kind: str) -> None:
    if kind == "apply-latest":
        world.router.apply(world.now, latest=True)
    elif kind == "apply-next":
        world.router.apply(world.now, latest=False)
    elif kind == "guard-trip":
        world.router.trip_guard(world.now)
    elif kind == "publish":
        world.router.publish()
    elif kind == "lose-report":
        world.router.report = NOT_REPORTED


def _pods(world: World, kind: str) -> None:
    action, colour = kind.split("-")
    deployment = world.blue if colour == "blue" else world.green
    if action == "roll":
        deployment.roll()
    else:
        deployment.crashed = action == "crash"


def _analysis(world: World, kind: str) -> None:
    world.quality = kind


def _user(world: World, kind: str) -> None:
    if kind.startswith("command:"):
        world.command(kind.removeprefix("command:"))
    else:
        world.edit(kind)


def _fault(world: World, kind: str) -> None:
    if kind == "operator-restart":
        world.ensured, world.failures = None, None
    elif kind in ("api-down", "api-up"):
        world.api_down = kind == "api-down"
    elif kind in ("weights-write-fails", "weights-write-ok"):
        world.weights_write_fails = kind == "weights-write-fails"
    elif kind == "lose-next-write":
        world.lose_next_write = True
    elif kind == "lose-status":  # restored from a backup without it
        world.status_doc = {}


EDITS = (
    "new-green",
    "green-to-stable",
    "new-flavour",
    "replicas",
    "blue-older",
    "blue-newer",
    "steps-three",
    "steps-two",
    "steps-manual",
    "break",
    "fix",
)
EVENTS: dict[str, tuple[tuple[str, ...], Callable[[World, str], None]]] = {
    "tick": (("1", "2", "5", "10", "burst"), _tick),
    "reconcile": (("0", "1", "5", "31", "61", "200"), _reconcile_after),
    "router": (("apply-latest", "apply-next", "publish", "lose-report", "guard-trip"), _router),
    "pods": (tuple(f"{a}-{c}" for a in ("roll", "crash", "recover") for c in ("blue", "green")), _pods),
    "analysis": (QUALITIES, _analysis),
    "user": ((*(f"command:{t}" for t in COMMAND_TEXTS), *EDITS), _user),
    "fault": (
        (
            "operator-restart",
            "api-down",
            "api-up",
            "weights-write-fails",
            "weights-write-ok",
            "lose-next-write",
            "lose-status",
        ),
        _fault,
    ),
}
WEIGHTS = {"tick": 8, "reconcile": 3, "router": 3, "pods": 2, "analysis": 2, "user": 3, "fault": 1}
"""How often each group of events happens in a random history (a healthy tick most often, so that
histories get as far as promotions)."""


def run_histories(histories: int, *, steps_per_history: int = 60, seed: int = 0) -> dict[str, Any]:
    """Run random histories of the world and count those that break an invariant (each history stops at
    its first violation). Returns counts per invariant, the phases reached, and a few failing traces."""
    rng = random.Random(seed)
    groups = list(WEIGHTS)
    by_invariant: Counter[str] = Counter()
    reached: Counter[str] = Counter()
    rollbacks: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    decisions = 0
    for _ in range(histories):
        world = World()
        for _ in range(steps_per_history):
            group = rng.choices(groups, weights=[WEIGHTS[g] for g in groups])[0]
            world.event(group, rng.choice(EVENTS[group][0]))
            if world.violations:
                break
        decisions += world.decisions
        reached.update(world.phases_seen)
        rollbacks.update(world.rollback_reasons)
        if world.violations:
            invariant, message = world.violations[0]
            by_invariant[invariant] += 1
            if len(examples) < 5:
                examples.append({"invariant": invariant, "message": message, "events": world.trace})
    return {
        "histories": histories,
        "steps_per_history": steps_per_history,
        "seed": seed,
        "decisions": decisions,
        "invariant_violations": sum(by_invariant.values()),
        "violations_by_invariant": {name: by_invariant[name] for name in INVARIANTS},
        "histories_reaching_phase": {phase.value: reached[phase.value] for phase in Phase},
        "rollbacks_by_reason": dict(rollbacks.most_common()),
        "examples": examples,
    }


class SafetyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()

    def _do(self, group: str, kind: str) -> None:
        self.world.event(group, kind)

    @rule(kind=st.sampled_from(EVENTS["tick"][0]))
    def tick(self, kind: str) -> None:
        self._do("tick", kind)

    @rule(kind=st.sampled_from(EVENTS["tick"][0]))
    def another_tick(self, kind: str) -> None:
        self._do("tick", kind)

    @rule(kind=st.sampled_from(EVENTS["reconcile"][0]))
    def reconcile(self, kind: str) -> None:
        self._do("reconcile", kind)

    @rule(kind=st.sampled_from(EVENTS["router"][0]))
    def router(self, kind: str) -> None:
        self._do("router", kind)

    @rule(kind=st.sampled_from(EVENTS["pods"][0]))
    def pods(self, kind: str) -> None:
        self._do("pods", kind)

    @rule(kind=st.sampled_from(EVENTS["analysis"][0]))
    def analysis(self, kind: str) -> None:
        self._do("analysis", kind)

    @rule(kind=st.sampled_from(EVENTS["user"][0]))
    def user(self, kind: str) -> None:
        self._do("user", kind)

    @rule(kind=st.sampled_from(EVENTS["fault"][0]))
    def fault(self, kind: str) -> None:
        self._do("fault", kind)

    @invariant()
    def safe(self) -> None:
        assert not self.world.violations, self.world.violations[0]


SafetyMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_safety_model = SafetyMachine.TestCase


def test_random_histories_keep_every_invariant() -> None:
    result = run_histories(150, seed=7)
    assert result["invariant_violations"] == 0, result["examples"][:1]
    # the histories get far enough to mean something
    assert result["histories_reaching_phase"]["Promoted"] > 0
    assert result["histories_reaching_phase"]["RolledBack"] > 0


def test_a_new_green_while_finalizing_waits_and_traffic_stays_on_the_promoted_model() -> None:
    """Minimal history the model found: promote v1 by hand; while Finalizing (all traffic on green v1, blue
    still runs v0) the user sets a new green. It used to restart the canary at 0% green, sending everything
    to blue's v0; now the new canary waits until blue serves v1."""
    world = World()
    events = ["tick:1", "tick:1", "user:command:promote-full", "tick:1", "tick:1"]
    events += ["user:new-green", "reconcile:1", "router:apply-latest"]
    for event in events:
        world.event(*event.split(":", 1))
    assert world.floor == 1 and world.router.green == 100  # v1 promoted and still serving everything
    assert not world.violations, world.violations


@pytest.mark.parametrize("invariant", INVARIANTS)
def test_each_invariant_can_be_broken(invariant: str) -> None:
    """Each check notices a world where its invariant is broken (a check that cannot fail tests nothing)."""
    world = World()
    for _ in range(3):
        world.event("tick", "1")
    assert not world.violations
    broken = _BREAKERS[invariant](world)
    assert broken in {name for name, _ in world.violations}


def _break_promotion(world: World) -> str:
    status = world.status()
    status.phase = Phase.PROMOTING
    fake = Decision(Action.PROMOTE, status, "StepsCompleted", "")
    world._check_transition(world.status(), status, fake, None, ModelRolloutSpec.model_validate(world.spec_doc()))
    return "promotion_without_evidence"


def _break_rollback(world: World) -> str:
    world.rollback_confirmed = True
    world.check_state()
    return "green_after_confirmed_rollback"


def _break_floor(world: World) -> str:
    world.floor = 5
    world.check_state()
    return "traffic_to_older_model"


def _break_trace(world: World) -> str:
    status = world.status()
    fake = Decision(Action.ROLL_BACK, status, "AnalysisFailed", "not the status message", recorded=False)
    world._check_decision(ModelRolloutSpec.model_validate(world.spec_doc()), status, Observations(), fake)
    return "decision_without_trace"


def _break_confirmation(world: World) -> str:
    status = world.status()
    status.weights.revision += 7
    status.weights_confirmed_at = T0
    world._check_transition(world.status(), status, Decision(Action.HOLD, status, "", ""), None, None)
    return "confirmed_by_other_revision"


def _break_storage(world: World) -> str:
    """A to_api that leaves cleared fields out (as before 47ff61a): the merge patch keeps the old value."""
    world.status_doc["analysis"] = {"time": T0.isoformat(), "verdict": "Failed", "stepIndex": 0}
    status = world.status()
    status.analysis = None
    original = ModelRolloutStatus.to_api
    ModelRolloutStatus.to_api = lambda self: self.model_dump(by_alias=True, mode="json", exclude_none=True)  # type: ignore[method-assign]
    try:
        world._write(world.status(), Decision(Action.HOLD, status, "", ""), None)
    finally:
        ModelRolloutStatus.to_api = original  # type: ignore[method-assign]
    return "status_not_stored_as_decided"


def _break_readiness(world: World) -> str:
    world.green_seen_ready = False
    before = world.status()
    before.weights.green = 0
    world._check_transition(before, world.status(), Decision(Action.HOLD, world.status(), "", ""), None, None)
    return "green_traffic_before_ready"


_BREAKERS: dict[str, Callable[[World], str]] = {
    "green_traffic_before_ready": _break_readiness,
    "promotion_without_evidence": _break_promotion,
    "green_after_confirmed_rollback": _break_rollback,
    "traffic_to_older_model": _break_floor,
    "decision_without_trace": _break_trace,
    "confirmed_by_other_revision": _break_confirmation,
    "status_not_stored_as_decided": _break_storage,
}


def test_a_guard_trip_armed_at_a_last_step_of_100_percent_never_reaches_a_confirmed_promotion() -> None:
    """Minimal history the model found: the data plane armed the guard at the last step (100% green,
    Progressing); the promotion asked for the same weights, so the router's earlier report confirmed it at
    once, green became the stable model, and a trip then sent users to blue's older model. A promotion now
    asks under a new revision, which the router reports only after it read Promoting, when no trip stands."""
    world = World()
    for event in ["tick:5", "tick:burst", "router:guard-trip", "reconcile:31", "tick:10", "tick:5"]:
        world.event(*event.split(":", 1))
        assert not world.violations, world.violations
    status = world.status()
    assert status.phase is Phase.ROLLED_BACK and status.rollback_reason == "GuardTripped"
    assert "Finalizing" not in world.phases_seen and world.floor is None and world.router.green == 0
