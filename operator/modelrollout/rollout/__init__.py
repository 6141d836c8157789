"""The pure rollout state machine: steps, weights, commands and ``decide()``."""
