"""The ModelRollout API: typed spec and status that round-trip to the CRD, and shared constants."""
