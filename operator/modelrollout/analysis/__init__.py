"""Canary analysis: metric providers, PromQL templates, pure evaluation and the accuracy statistics."""
