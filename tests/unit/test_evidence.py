"""What evidence a step is judged on: only its own weight's traffic, and an analysis measured after the
router confirmed it; and what blue runs before the first promotion."""

from __future__ import annotations

from modelrollout import controller
from modelrollout.analysis.evaluate import Verdict
from modelrollout.api.status import ModelRolloutStatus
from modelrollout.rollout import steps
from tests.unit.test_machine import SPEC, T0, at, make_spec, progressing, tick


def test_the_evidence_window_starts_when_the_step_went_live() -> None:
    status = progressing()  # step 0 confirmed at T0; analysis.window is 60 s by default
    assert steps.evidence_window(SPEC, status, at(5)) == 5
    assert steps.evidence_window(SPEC, status, at(600)) == SPEC.analysis.window
    # a step confirmed later than it began counts from the confirmation
    later = status.model_copy(update={"weights_confirmed_at": at(30)})
    assert steps.evidence_window(SPEC, later, at(40)) == 10
    # never less than a second, and the whole window for a rollout that has not started
    assert steps.evidence_window(SPEC, status, T0) == 1.0
    assert steps.evidence_window(SPEC, ModelRolloutStatus(), T0) == SPEC.analysis.window


def test_an_analysis_from_the_tick_that_saw_the_confirmation_does_not_count_for_the_step() -> None:
    """It was gathered before the confirmation was read: it measured the previous weight."""
    status = progressing()
    advanced = tick(SPEC, status, 10, Verdict.PASSED, Verdict.PASSED).status
    assert advanced.step_index == 1 and advanced.weights_confirmed_at is None
    # the router confirms 50% in the same tick that brings a Passed analysis
    same_tick = tick(SPEC, advanced, 11, Verdict.PASSED, Verdict.PASSED)
    assert same_tick.status.weights_confirmed_at == at(11)
    held = tick(SPEC, same_tick.status, 21)  # the pause (10 s) is over, but no analysis after 11 s
    assert held.status.step_index == 1 and held.reason == "WaitingForAnalysis"
    moved = tick(SPEC, held.status, 22, Verdict.PASSED, Verdict.PASSED)
    assert moved.reason == "StepAdvanced" and moved.status.step_index == 2


def test_before_the_first_promotion_blue_keeps_the_server_settings_it_started_with() -> None:
    """A new image or settings reach production only through a canary and a promotion."""
    status = progressing()
    changed = make_spec()
    changed = changed.model_copy(
        update={"server": changed.server.model_copy(update={"image": "example/model-server:next"})}
    )
    decision = tick(changed, status, 5)
    assert decision.reason == "GreenChanged"  # green (the candidate) gets the new image through a canary
    assert decision.status.stable is not None
    assert decision.status.stable.server.image == SPEC.server.image
    assert controller.stable_of(changed, decision.status).server.image == SPEC.server.image
    assert decision.status.started_at == at(5)  # the new canary's clock (its progress deadline) starts now
