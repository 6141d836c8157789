"""Model-server processes on loopback, for tests, benchmarks and the demo; and the demo models they serve."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import httpx

from modelrollout.devcluster import binaries, process


def _built_once(script: ModuleType, *, folder: str, marker: str) -> Path:
    """Run ``script.build_all`` into a cache folder named after a hash of the script, once."""
    digest = hashlib.sha256(Path(str(script.__file__)).read_bytes()).hexdigest()[:12]
    target = binaries.cache_dir().parent.parent / "models" / f"{folder}{digest}"
    if not (target / marker).exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix="building-", dir=target.parent))
        script.build_all(partial)
        if not target.exists():
            partial.rename(target)
    return target


def demo_models_dir() -> Path:
    """The demo models, built once per version of their build script (cached outside the repository)."""
    import model_server.demo_models as script

    return _built_once(script, folder="", marker="accuracy.json")


def demo_gguf_dir() -> Path:
    """The tiny GGUF demo models (``model_server.demo_gguf``), built once per version of their script."""
    import model_server.demo_gguf as script

    return _built_once(script, folder="gguf-", marker="accuracy-gguf.json")


@dataclass
class ModelServer:
    """``python -m model_server`` serving one model for one colour; ``with ModelServer(...) as server:``."""

    model: Path
    name: str = "digits"
    version: str = "v1"
    rollout: str = "digits"
    colour: str = "blue"
    golden_set: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="modelserver-")))
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{process.LOOPBACK}:{self.port}"

    @property
    def address(self) -> str:
        return f"{process.LOOPBACK}:{self.port}"

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, wait_ready: bool = True) -> None:
        self.port = self.port or process.free_port()
        settings = {
            "MODELSERVER_MODEL_PATH": str(self.model),
            "MODELSERVER_MODEL_NAME": self.name,
            "MODELSERVER_MODEL_VERSION": self.version,
            "MODELSERVER_ROLLOUT": self.rollout,
            "MODELSERVER_COLOUR": self.colour,
            "MODELSERVER_PORT": str(self.port),
            "MODELSERVER_HOST": process.LOOPBACK,
            "MODELSERVER_LOG_FORMAT": "json",
        }
        if self.golden_set is not None:
            settings["MODELSERVER_GOLDEN_SET"] = str(self.golden_set)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MODELSERVER_")}
        self._process = process.start(
            f"model-server-{self.colour}-{self.port}",
            [sys.executable, "-m", "model_server"],
            log_dir=self.log_dir,
            env={**environment, **settings, **self.env},
            inherit_env=False,  # no MODELSERVER_* of the caller leaks in
        )
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        proc = self._process
        assert proc is not None
        process.wait_until(
            lambda: httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200,
            timeout=timeout,
            what=f"model server {self.name} {self.version}",
            alive=lambda: proc.poll() is None,
        )

    def stop(self) -> None:
        if self._process is not None:
            process.stop(self._process.pid)
            self._process.poll()
            self._process = None

    def log(self) -> str:
        return "".join(p.read_text() for p in self.log_dir.glob("*.log"))
