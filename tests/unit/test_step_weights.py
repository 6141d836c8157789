"""A step without ``weight`` keeps the previous step's weight: a longer stay (a bake) at that weight, with its
own pause and its own passing analysis, and no new weights for the router to confirm."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from modelrollout.analysis.evaluate import CheckResult, Verdict
from modelrollout.api.spec import ModelRolloutSpec, Step
from modelrollout.api.status import ModelRolloutStatus, Phase
from modelrollout.rollout import steps
from modelrollout.rollout.machine import Action, AnalysisOutcome, Decision, Observations, decide
from modelrollout.routing.base import AppliedWeights

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def make_spec(step_list: list[dict[str, Any]]) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "blue": {"model": {"uri": "file:///v1.onnx", "version": "v1"}},
            "green": {"model": {"uri": "file:///v2.onnx", "version": "v2"}},
            "traffic": {"steps": step_list},
            "analysis": {"interval": "5s", "progressDeadline": "60s"},
        }
    )


BAKE = make_spec([{"weight": 10, "pause": "10s"}, {"pause": "20s"}, {"weight": 50, "pause": "10s"}, {"weight": 100}])


def tick(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, seconds: float, verdict: Verdict | None = None
) -> Decision:
    """decide() at ``seconds`` with both colours ready and the router serving what ``status`` asks for."""
    analysis = AnalysisOutcome(at(seconds), [CheckResult("errors", verdict, "m", 0.0, 0.005)]) if verdict else None
    router = AppliedWeights(status.weights.revision, status.weights.green)
    observations = Observations(resources_ready=True, blue_ready=True, analysis=analysis, router=router)
    return decide(spec, status, observations, at(seconds))


def at_step_zero(spec: ModelRolloutSpec) -> ModelRolloutStatus:
    """Step 0, its weights confirmed at T0."""
    status = tick(spec, ModelRolloutStatus(), 0).status
    status = tick(spec, status, 0).status
    status = tick(spec, status, 0).status
    assert status.phase is Phase.PROGRESSING and status.step_index == 0 and status.weights_confirmed_at == T0
    return status


def at_step_one(spec: ModelRolloutSpec) -> ModelRolloutStatus:
    """Step 0 passed at T0+10s: the canary has just moved to step 1."""
    decision = tick(spec, at_step_zero(spec), 10, Verdict.PASSED)
    assert decision.action is Action.ADVANCE and decision.status.step_index == 1
    return decision.status


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ([10, None, 50, 100], [10, 10, 50, 100]),
        ([10, None, None, 100], [10, 10, 10, 100]),
        ([None, 20, None], [0, 20, 20]),
        ([5, None], [5, 5]),
    ],
)
def test_an_omitted_weight_is_the_last_weight_set_before_it(weights: list[int | None], expected: list[int]) -> None:
    step_list = [Step(weight=w) for w in weights]
    assert [steps.step_weight(step_list, index) for index in range(len(step_list))] == expected


def test_a_step_without_weight_keeps_green_at_the_previous_weight_without_new_weights() -> None:
    status = at_step_one(BAKE)
    assert status.weights == at_step_zero(BAKE).weights and status.weights.green == 10
    assert status.weights_confirmed_at == T0  # nothing new for the router to confirm
    assert "step 1 sends 10% to green" in status.message


def test_a_step_without_weight_has_its_own_pause_and_needs_its_own_passing_analysis() -> None:
    status = at_step_one(BAKE)  # step 1 began at T0+10s; the router confirmed its weights at T0
    # the analysis of step 0 does not count for step 1, and step 1's 20 s pause runs from when it began
    waiting = tick(BAKE, status, 11)
    assert waiting.action is Action.HOLD and waiting.reason == "WaitingForAnalysis"
    early = tick(BAKE, waiting.status, 25, Verdict.PASSED)
    assert early.action is Action.HOLD and early.status.step_index == 1 and early.status.weights.green == 10
    done = tick(BAKE, early.status, 30, Verdict.PASSED)
    assert done.action is Action.ADVANCE and done.status.step_index == 2
    assert done.status.weights.green == 50 and done.status.weights.revision == status.weights.revision + 1
    assert done.status.weights_confirmed_at is None


def test_a_failing_analysis_during_a_step_without_weight_counts_toward_the_rollback() -> None:
    status = tick(BAKE, at_step_one(BAKE), 15, Verdict.FAILED).status
    assert status.phase is Phase.PROGRESSING and status.weights.green == 10
    decision = tick(BAKE, status, 20, Verdict.FAILED)
    assert decision.status.phase is Phase.ROLLING_BACK and decision.status.weights.green == 0


def test_a_last_step_without_weight_bakes_at_the_last_weight_then_promotes() -> None:
    spec = make_spec([{"weight": 50, "pause": "10s"}, {"pause": "30s"}])
    status = at_step_one(spec)
    assert status.weights.green == 50
    held = tick(spec, status, 30, Verdict.PASSED)
    assert held.action is Action.HOLD and held.status.phase is Phase.PROGRESSING and held.status.weights.green == 50
    promoted = tick(spec, held.status, 40, Verdict.PASSED)
    assert promoted.action is Action.PROMOTE and promoted.status.weights.green == 100


def test_weights_must_increase_across_steps_without_weight() -> None:
    with pytest.raises(ValidationError, match=r"steps\[2\]\.weight: 10 must be greater than the previous weight 10"):
        make_spec([{"weight": 10}, {"pause": "10s"}, {"weight": 10}])
    with pytest.raises(ValidationError, match="at least one step must set a weight"):
        make_spec([{"pause": "10s"}, {"pause": "manual"}])


def test_a_step_without_weight_is_written_back_without_one() -> None:
    api = BAKE.to_api()
    assert api["traffic"]["steps"][1] == {"pause": "20s"}
    assert ModelRolloutSpec.model_validate(api) == BAKE
