"""Model-server processes on loopback, for tests, benchmarks and the demo; and the demo models they serve.

``python -m modelrollout.devcluster.modelservers --pod-fd 5 --service-fd 7`` is ``python -m model_server``
(same settings, same app, same uvicorn options) serving on sockets its parent bound and handed down: the
kubelet stand-in keeps one address per colour that way while processes come and go behind it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import httpx

from modelrollout.devcluster import binaries, process

MODULE = "modelrollout.devcluster.modelservers"


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


def start_on_sockets(
    name: str, *, settings: dict[str, str], pod: socket.socket, service: socket.socket, log_dir: Path
) -> subprocess.Popen[bytes]:
    """Start a model server with exactly ``settings`` as its MODELSERVER_* environment, on sockets bound here.

    It listens on ``pod`` (its own address, as a Pod IP) once its model is loaded, and on ``service`` (an
    address its colour shares, as a Service) only once it is ready: a Service sends traffic to ready endpoints
    only. Neither socket listens yet, so until then a client is refused, as by a container that has not
    opened its port.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MODELSERVER_")}
    fds = [pod.fileno(), service.fileno()]
    return process.start(
        name,
        [sys.executable, "-m", MODULE, "--pod-fd", str(fds[0]), "--service-fd", str(fds[1])],
        log_dir=log_dir,
        env={**environment, **settings},
        inherit_env=False,
        pass_fds=fds,
    )


def serve_on_inherited_sockets(*, pod_fd: int, service_fd: int) -> None:
    """The body of ``python -m model_server`` (``model_server.__main__.main``), on inherited sockets."""
    import asyncio

    import uvicorn

    from model_server import logs
    from model_server.__main__ import build
    from model_server.settings import ServerSettings

    settings = ServerSettings()
    logs.configure(settings.log_format, rollout=settings.rollout, colour=settings.colour)
    app, plane = build(settings)
    config = uvicorn.Config(app, log_level="warning", access_log=False, http="httptools", loop="uvloop", lifespan="on")

    class Endpoint(uvicorn.Server):
        """Serves the pod socket from startup and the service socket from the moment the model is ready."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                self.joining = asyncio.create_task(self.join_service())

        async def join_service(self) -> None:
            while not plane.ready:
                await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            server = await loop.create_server(
                lambda: config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=self.server_state, app_state=self.lifespan.state
                ),
                sock=socket.socket(fileno=service_fd),
                backlog=config.backlog,
            )
            self.servers.append(server)  # closed with the others at shutdown: no new connections from then on

    Endpoint(config).run(sockets=[socket.socket(fileno=pod_fd)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("--pod-fd", type=int, required=True, help="inherited socket: the server's own address")
    parser.add_argument("--service-fd", type=int, required=True, help="inherited socket: its colour's address")
    args = parser.parse_args(argv)
    serve_on_inherited_sockets(pod_fd=args.pod_fd, service_fd=args.service_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
