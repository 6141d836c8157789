"""Small answers about the canary position (when an analysis is due, how long since a moment) and the
commands a user types."""

from __future__ import annotations

import datetime
import itertools

import pytest

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import AnalysisStatus, ModelRolloutStatus, Phase
from modelrollout.rollout import commands, steps

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
SPEC = ModelRolloutSpec.model_validate(
    {
        "blue": {"model": {"uri": "file:///v1.onnx", "version": "v1"}},
        "green": {"model": {"uri": "file:///v2.onnx", "version": "v2"}},
        "analysis": {"interval": "5s"},
    }
)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def status(phase: Phase = Phase.PROGRESSING, *, analysed_at: float | None = None, step: int = 0) -> ModelRolloutStatus:
    analysis = None
    if analysed_at is not None:
        analysis = AnalysisStatus(time=at(analysed_at), verdict="Passed", step_index=0, checks=[])
    return ModelRolloutStatus(
        phase=phase, green_revision=steps.green_revision(SPEC), step_index=step, analysis=analysis
    )


def test_an_analysis_is_due_at_once_then_every_interval() -> None:
    assert steps.analysis_due(SPEC, status(), at(0))
    assert not steps.analysis_due(SPEC, status(analysed_at=0), at(4.9))
    assert steps.analysis_due(SPEC, status(analysed_at=0), at(5))
    assert steps.analysis_due(SPEC, status(Phase.PAUSED, analysed_at=0), at(5))


def test_rounds_fall_on_the_interval_grid_whenever_a_rollout_started() -> None:
    # T0 is a multiple of 5 s since the epoch: rounds taken at 0.3 s and 3.8 s past it are next due at 5 s and
    # 10 s (at least half an interval later), then every 5 s, on the same second as every other rollout's
    assert steps.next_round(at(0.3), 5) == at(5)
    assert steps.next_round(at(2.4), 5) == at(5)
    assert steps.next_round(at(3.8), 5) == at(10)
    assert steps.next_round(at(5.9), 5) == at(10)
    assert not steps.analysis_due(SPEC, status(analysed_at=3.8), at(8.9))
    assert steps.analysis_due(SPEC, status(analysed_at=3.8), at(10))
    rounds, last = [], 1.7
    for tick in range(2, 40):  # a rollout ticking every second from 1.7 s
        if steps.analysis_due(SPEC, status(analysed_at=last), at(tick + 0.7)):
            last = tick + 0.7
            rounds.append(last)
    assert len(rounds) >= 6 and [b - a for a, b in itertools.pairwise(rounds)] == pytest.approx(
        [5.0] * (len(rounds) - 1)
    )
    assert all(round(r - 0.7) % 5 == 0 for r in rounds)  # in the tick after each multiple of 5 s


def test_a_new_step_is_analysed_at_once() -> None:
    assert steps.analysis_due(SPEC, status(analysed_at=0, step=1), at(1))


def test_no_analysis_outside_the_canary_or_for_another_green() -> None:
    for phase in (Phase.PENDING, Phase.PROMOTING, Phase.FINALIZING, Phase.PROMOTED, Phase.ROLLED_BACK):
        assert not steps.analysis_due(SPEC, status(phase), at(100))
    other_green = status().model_copy(update={"green_revision": "an earlier green"})
    assert not steps.analysis_due(SPEC, other_green, at(100))


def test_seconds_since_nothing_is_zero_and_a_future_moment_is_not_negative() -> None:
    assert steps.seconds_since(None, at(10)) == 0.0
    assert steps.seconds_since(at(4), at(10)) == 6.0
    assert steps.seconds_since(at(12), at(10)) == 0.0  # clock skew between operator replicas


def test_an_unknown_command_is_refused_with_what_was_typed_and_what_is_valid() -> None:
    typo = commands.parse("promot", "c1")
    assert typo is not None and typo.name is None and typo.id == "c1"
    assert typo.problem == (
        "annotation modelrollout.dev/command: unknown command 'promot' refused; "
        "valid: promote, promote-full, abort, pause, resume, retry"
    )
    spaced = commands.parse(" Promote-Full\n", "c2")
    assert spaced is not None and spaced.name is commands.CommandName.PROMOTE_FULL
    assert spaced.text == " Promote-Full\n"
    assert commands.parse("", "c3") is None and commands.parse(None, "c3") is None
