"""ModelRollout: a Kubernetes operator that rolls out a new ML model version as a canary."""

__version__ = "0.1.0"
