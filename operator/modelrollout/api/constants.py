"""Names shared by the operator, the router and the model server: API group, labels, annotations."""

from __future__ import annotations

GROUP = "modelrollout.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelRollout"
PLURAL = "modelrollouts"
SHORT_NAME = "mro"

BLUE = "blue"
GREEN = "green"
COLOURS = (BLUE, GREEN)

LABEL_ROLLOUT = f"{GROUP}/rollout"
LABEL_COLOUR = f"{GROUP}/colour"
LABEL_MODEL = f"{GROUP}/model"
LABEL_VERSION = f"{GROUP}/version"

ANNOTATION_COMMAND = f"{GROUP}/command"
"""Manual control: ``kubectl annotate mro NAME modelrollout.dev/command=promote`` (see rollout.commands)."""
ANNOTATION_COMMAND_ID = f"{GROUP}/command-id"
"""Optional unique id of a command, so that the same command can be given twice."""

ANNOTATION_APPLIED_WEIGHT = f"{GROUP}/router-applied-green-weight"
"""Written by the builtin router: the green weight it applies, read back by the operator to verify."""
