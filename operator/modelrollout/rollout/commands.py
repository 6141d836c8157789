"""Manual controls, given with ``kubectl annotate mro NAME modelrollout.dev/command=<command> --overwrite``.

An optional ``modelrollout.dev/command-id`` annotation makes the same command count again; without it the
command's text and the object's generation of the annotation are used, so one annotation acts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CommandName(StrEnum):
    PROMOTE = "promote"
    """Finish the current step now (skip its pause or manual gate) and go to the next."""
    PROMOTE_FULL = "promote-full"
    """Skip every remaining step: move all traffic to green."""
    ABORT = "abort"
    """Move all traffic back to blue now."""
    PAUSE = "pause"
    RESUME = "resume"
    RETRY = "retry"
    """After a rollback or abort, start the canary of the same green again from step 0."""


@dataclass(frozen=True)
class Command:
    name: CommandName | None
    """None for a command nobody knows (a typo): refused with an Event, and nothing moves."""
    id: str
    """Unique per command given: the status remembers the last id acted on, so a command acts once."""
    text: str = ""

    @property
    def problem(self) -> str:
        valid = ", ".join(c.value for c in CommandName)
        return f"annotation modelrollout.dev/command: unknown command {self.text!r} refused; valid: {valid}"


def parse(text: str | None, command_id: str) -> Command | None:
    """The command in an annotation (``name`` None when it is not a known one), or None when there is none."""
    if not text:
        return None
    try:
        name: CommandName | None = CommandName(text.strip().lower())
    except ValueError:
        name = None
    return Command(name=name, id=command_id, text=text)
