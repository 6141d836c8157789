"""What a router last served, kept in a file so that a router restarted while the API server is unreachable
serves it again instead of 100% blue.

In a cluster the file lies on the Pod's own emptyDir (``/tmp``, MODELROUTER_STATE_FILE), which outlives a
restart of the container (a crash, a failed liveness probe, an out-of-memory kill); a new Pod starts without
it and reads the rollout from the API server as before. The file holds the ModelRollout as the router last saw
it and the report it makes of what it served for it (routing.report's data), written after each change the
data plane confirmed; a restarted router takes both as if it had read them from the API server
(WeightsFollower.restart), so a guard trip that held green at 0% holds it again. As soon as the watch reads the
rollout again, what the API server says replaces what the file said.

A file that cannot be read, or that is another rollout's, counts as none (logged): the router then starts at
100% blue, as it did before this file existed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from modelrollout.routing.report import report_of

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Remembered:
    rollout: dict[str, Any]
    """The ModelRollout (status, spec, metadata without managedFields)."""
    report: dict[str, str]
    """The report of what the data plane served for it (routing.report.report_data)."""


def _slim(rollout: Mapping[str, Any]) -> dict[str, Any]:
    metadata = {key: value for key, value in (rollout.get("metadata") or {}).items() if key != "managedFields"}
    return {**rollout, "metadata": metadata}


def save(path: Path, *, namespace: str, name: str, rollout: Mapping[str, Any], report: Mapping[str, str]) -> None:
    """Write (atomically: a partial file is never read back) what the router serves now for ``rollout``. When
    that fails (a full disk), the file that was there goes too, and the error is raised: what it held is no
    longer what is served, and a restart must not serve it."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(
            json.dumps({"namespace": namespace, "name": name, "rollout": _slim(rollout), "report": dict(report)})
        )
        os.replace(partial, path)
    except BaseException:
        for stale in (partial, path):
            with contextlib.suppress(OSError):
                stale.unlink()
        raise


def load(path: Path, *, namespace: str, name: str) -> Remembered | None:
    """What ``save`` wrote for this rollout; None when there is no such file, or it is unreadable or another's."""
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log.warning("remembered weights unreadable; starting at 100% blue", path=str(path), error=str(error))
        return None
    if not isinstance(stored, dict) or (stored.get("namespace"), stored.get("name")) != (namespace, name):
        log.warning("remembered weights are another rollout's; starting at 100% blue", path=str(path))
        return None
    rollout, report = stored.get("rollout"), stored.get("report")
    if not isinstance(rollout, dict) or not isinstance(report, dict):
        log.warning("remembered weights incomplete; starting at 100% blue", path=str(path))
        return None
    return Remembered(rollout=rollout, report={str(key): str(value) for key, value in report.items()})


def served(remembered: Remembered, replica: str = "") -> tuple[int, int] | None:
    """(revision, green) the report of router ``replica`` says was served for the remembered rollout, None when
    nothing usable."""
    uid = str((remembered.rollout.get("metadata") or {}).get("uid") or "")
    applied = report_of(remembered.report, uid, replica).applied
    if applied.revision is None or applied.green is None:
        return None
    return applied.revision, max(0, min(100, applied.green))
