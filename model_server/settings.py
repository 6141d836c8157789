"""Model-server settings, from MODELSERVER_* environment variables or the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELSERVER_", extra="ignore", protected_namespaces=())

    model_path: Path = Path("model.onnx")
    """The model file to serve (.onnx or .gguf)."""
    model_name: str = "model"
    """Name in the URL: /v2/models/{model_name}/infer."""
    model_version: str = "v1"
    """The version label on every metric series and in responses."""
    model_sha256: str | None = None
    """Expected SHA-256 of the model file; a mismatch keeps the server not-ready."""
    runtime: Literal["auto", "onnx", "gguf"] = "auto"
    """Model format; auto picks by file extension."""
    rollout: str = ""
    """The ModelRollout this server belongs to (metric label)."""
    colour: Literal["blue", "green", ""] = ""
    """The rollout colour this server serves (metric label)."""
    host: str = "127.0.0.1"
    port: int = 8080
    golden_set: Path | None = None
    """A labelled evaluation file (.npz with ``inputs`` and ``labels``) scored at start."""
    golden_wait_for_scrape_seconds: float = 60.0
    """The golden set is scored after the first scrape of /metrics, or after this long without one."""
    golden_interval_seconds: float = 300.0
    """How often the golden set is scored again (a drift check; 0: never)."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Larger request bodies are answered 413."""
    request_timeout_seconds: float = 10.0
    """Inference that takes longer is answered 504 and counted as a timeout."""
    max_batch_size: int = Field(default=1, ge=1)
    """Adaptive batching: requests merged into one model call (1: off)."""
    max_batch_wait_ms: float = Field(default=2.0, ge=0)
    """Adaptive batching: the longest a request waits for others to join its batch."""
    prediction_output: str | None = None
    """Output holding the predicted class; default: the first integer output, else argmax of the first."""
    feedback_capacity: int = 100_000
    """Predictions kept for joining delayed feedback (least recently used are dropped)."""
    feedback_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """Bytes the stored predictions may take (ids, classes and overhead; least recently used are dropped)."""
    feedback_ttl_seconds: float = 3600.0
    """Feedback for an older prediction is answered 410 Gone."""
    feedback_token: SecretStr | None = None
    """Bearer token that feedback must carry (the operator sets it from the rollout's ``<name>-feedback``
    Secret); unset: feedback is open, as for a server run by hand, unless ``feedback_auth``."""
    feedback_auth: bool = False
    """Feedback needs the token: without one configured it is refused (503), never open (the operator sets it,
    so that a Pod started while its Secret was missing serves inference but takes no labels)."""
    faults_enabled: bool = False
    """Allow fault injection (env below, or /v2/faults with the token): for rollback drills only."""
    faults_token: SecretStr | None = None
    """Bearer token that ``GET``/``POST /v2/faults`` must present (set it from a Secret); unset: that endpoint
    refuses every call, and only the env below injects faults."""
    fault_latency_seconds: float = 0.0
    fault_error_rate: float = Field(default=0.0, ge=0, le=1)
    fault_wrong_rate: float = Field(default=0.0, ge=0, le=1)
    threads: int = 0
    """Compute threads: onnxruntime intra-op threads, llama.cpp threads (0: the library's default)."""
    prompt_cache_mib: int = Field(default=256, ge=0)
    """GGUF: memory for saved prompt states, so a prompt starting like an earlier one is not processed again
    (0: off)."""
    log_format: Literal["auto", "json", "console"] = "auto"
