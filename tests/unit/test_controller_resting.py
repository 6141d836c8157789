"""When a settled rollout needs no work: not while a command waits, the spec changed, or its owned objects
are due to be re-applied (or should now look different, as green scaled down after a rollback)."""

from __future__ import annotations

import time

import pytest

from modelrollout import controller
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, Phase
from modelrollout.rollout.commands import Command, CommandName

SPEC = ModelRolloutSpec.model_validate(
    {
        "blue": {"model": {"uri": "file:///m/a.onnx", "version": "v1"}},
        "green": {"model": {"uri": "file:///m/b.onnx", "version": "v2"}},
        "traffic": {"steps": [{"weight": 50}, {"weight": 100}]},
    }
)
BODY = {"metadata": {"namespace": "default", "name": "r", "generation": 3}}


@pytest.fixture(autouse=True)
def clean() -> None:
    controller._ensured.clear()


def settled(phase: Phase = Phase.PROMOTED, generation: int = 3) -> ModelRolloutStatus:
    return ModelRolloutStatus(phase=phase, observed_generation=generation)


def ensured_now(status: ModelRolloutStatus) -> None:
    controller._ensured["default/r"] = (controller._owned(BODY, SPEC, status)[1], time.monotonic())


def test_a_settled_rollout_rests_once_its_objects_are_applied() -> None:
    status = settled()
    assert not controller._resting(BODY, SPEC, status, None)  # nothing applied yet (say, after a restart)
    ensured_now(status)
    assert controller._resting(BODY, SPEC, status, None)


def test_it_wakes_for_a_command_a_spec_change_or_time() -> None:
    status = settled()
    ensured_now(status)
    assert not controller._resting(BODY, SPEC, status, Command(name=CommandName.RETRY, id="c1"))
    assert not controller._resting(BODY, SPEC, settled(generation=2), None)
    controller._ensured["default/r"] = (controller._ensured["default/r"][0], time.monotonic() - 61)
    assert not controller._resting(BODY, SPEC, status, None)


def test_moving_phases_never_rest() -> None:
    for phase in (Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING, Phase.ROLLING_BACK):
        status = settled(phase)
        ensured_now(status)
        assert not controller._resting(BODY, SPEC, status, None)


def test_after_a_rollback_green_is_scaled_down_before_resting() -> None:
    rolling_back = settled(Phase.ROLLING_BACK)
    ensured_now(rolling_back)  # applied while rolling back: green still has its replicas
    assert not controller._resting(BODY, SPEC, settled(Phase.ROLLED_BACK), None)
