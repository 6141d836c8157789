"""Find or build the control-plane binaries the local cluster runs.

Order of preference: ``KUBEBUILDER_ASSETS`` (an envtest install, for the binaries it has), then a cache
outside the repository (``~/.cache/modelrollout/k8s/<version>/``), then a build from the published Go
modules with the installed Go toolchain. k8s.io/kubernetes cannot be built as a dependency on its own:
its go.mod maps the ``k8s.io/*`` staging modules to local folders, so the build uses a small wrapper
module that maps each of them to its published ``v0.X.Y`` release, read from that release's go.mod.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from modelrollout.devcluster import versions

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class GoBuild:
    """One Go module at one version, and the main packages built from it."""

    module: str
    version: str
    packages: dict[str, str]
    """Binary name -> Go import path of its main package."""


KUBERNETES_BUILD = GoBuild(
    module="k8s.io/kubernetes",
    version=f"v{versions.KUBERNETES}",
    packages={
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    },
)
ETCD_BUILD = GoBuild(
    module="go.etcd.io/etcd/server/v3",
    version=f"v{versions.ETCD}",
    packages={"etcd": "go.etcd.io/etcd/server/v3"},
)
KWOK_BUILD = GoBuild(
    module="sigs.k8s.io/kwok",
    version=f"v{versions.KWOK}",
    packages={"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
)
HELM_BUILD = GoBuild(
    module="helm.sh/helm/v3",
    version=f"v{versions.HELM}",
    packages={"helm": "helm.sh/helm/v3/cmd/helm"},
)
ALL_BUILDS = (KUBERNETES_BUILD, ETCD_BUILD, KWOK_BUILD)
"""The control plane (helm is built apart, on first use: only the chart's tests need it)."""
BINARY_NAMES = tuple(name for build in ALL_BUILDS for name in build.packages)
ENVTEST_BINARIES = ("etcd", "kube-apiserver")
"""The binaries an envtest ``KUBEBUILDER_ASSETS`` folder provides that the cluster uses."""

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", re.MULTILINE)
_GO_DIRECTIVE = re.compile(r"^go\s+(\S+)\s*$", re.MULTILINE)
_GODEBUG_DIRECTIVE = re.compile(r"^godebug\s+(.+)$", re.MULTILINE)


class BuildError(RuntimeError):
    """A binary could not be found and could not be built."""


def cache_dir() -> Path:
    """The folder holding built binaries for the pinned versions, outside the repository."""
    root = os.environ.get("MODELROLLOUT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "modelrollout"
    )
    return Path(root) / "k8s" / f"v{versions.KUBERNETES}-etcd{versions.ETCD}-kwok{versions.KWOK}"


def staging_modules(upstream_go_mod: str) -> list[str]:
    """The ``k8s.io/*`` modules that a Kubernetes go.mod maps to its ``./staging`` folder."""
    return sorted(set(_STAGING_REPLACE.findall(upstream_go_mod)))


def staging_version(kubernetes_version: str) -> str:
    """Kubernetes ``v1.X.Y`` publishes its staging modules as ``v0.X.Y``."""
    major, minor, patch = kubernetes_version.lstrip("v").split(".")
    if major != "1":
        raise ValueError(f"unexpected Kubernetes version {kubernetes_version!r}: expected v1.X.Y")
    return f"v0.{minor}.{patch}"


def wrapper_go_mod(build: GoBuild, upstream_go_mod: str) -> str:
    """go.mod of a module that depends on ``build.module`` so that its main packages can be built.

    Keeps the upstream ``go`` and ``godebug`` directives (they change runtime defaults) and, for
    k8s.io/kubernetes, replaces each staging module with its published release.
    """
    go_version = _GO_DIRECTIVE.search(upstream_go_mod)
    lines = [
        "module modelrollout.dev/build/wrapper",
        "",
        f"go {go_version.group(1) if go_version else '1.22'}",
        "",
    ]
    godebug = _GODEBUG_DIRECTIVE.search(upstream_go_mod)
    if godebug:
        lines += [f"godebug {godebug.group(1).strip()}", ""]
    lines += [f"require {build.module} {build.version}", ""]
    staged = staging_modules(upstream_go_mod)
    if staged:
        published = staging_version(build.version)
        lines.append("replace (")
        lines += [f"\t{module} => {module} {published}" for module in staged]
        lines.append(")")
    return "\n".join(lines) + "\n"


def _go(args: list[str], *, cwd: Path) -> str:
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    result = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"go {' '.join(args)} failed in {cwd}:\n{result.stderr[-4000:]}")
    return result.stdout


def build(go_build: GoBuild, destination: Path) -> None:
    """Build every binary of ``go_build`` into ``destination`` (replacing what is there)."""
    if shutil.which("go") is None:
        raise BuildError("the Go toolchain is needed to build the control plane: install Go >= 1.24")
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelrollout-build-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text("module modelrollout.dev/build/probe\n\ngo 1.22\n")
        info = json.loads(_go(["mod", "download", "-json", f"{go_build.module}@{go_build.version}"], cwd=work))
        (work / "go.mod").write_text(wrapper_go_mod(go_build, Path(info["GoMod"]).read_text()))
        for name, package in go_build.packages.items():
            log.info("building", binary=name, module=go_build.module, version=go_build.version)
            # Later packages of one module reuse the Go build cache, so building one at a time is cheap.
            _go(["build", "-trimpath", "-ldflags=-s -w", "-o", str(work / name), package], cwd=work)
            shutil.move(str(work / name), destination / name)


def _envtest_binary(name: str) -> Path | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets or name not in ENVTEST_BINARIES:
        return None
    candidate = Path(assets) / name
    return candidate if candidate.is_file() else None


def find(name: str) -> Path | None:
    """Where binary ``name`` is, without building: envtest assets first, then the cache."""
    envtest = _envtest_binary(name)
    if envtest:
        return envtest
    cached = cache_dir() / name
    return cached if cached.is_file() else None


def ensure_all(*, allow_build: bool = True) -> dict[str, Path]:
    """Paths of every control-plane binary, building the missing ones in parallel if allowed."""
    missing = [b for b in ALL_BUILDS if any(find(name) is None for name in b.packages)]
    if missing and not allow_build:
        names = [name for b in missing for name in b.packages if find(name) is None]
        raise BuildError(f"missing control-plane binaries {names}; run `python -m modelrollout.devcluster build`")
    if missing:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(missing)) as pool:
            futures = [pool.submit(build, b, cache_dir()) for b in missing]
            for future in futures:
                future.result()
    found = {name: find(name) for name in BINARY_NAMES}
    absent = [name for name, path in found.items() if path is None]
    if absent:
        raise BuildError(f"binaries still missing after the build: {absent}")
    return {name: path for name, path in found.items() if path is not None}


def helm() -> Path:
    """The helm binary, built from its Go module into the cache on first use."""
    folder = cache_dir().parent / f"helm-v{versions.HELM}"
    if not (folder / "helm").is_file():
        build(HELM_BUILD, folder)
    return folder / "helm"


def gateway_api_crds() -> Path:
    """The folder of Gateway API standard-channel CRDs, from the sigs.k8s.io/gateway-api module."""
    with tempfile.TemporaryDirectory(prefix="modelrollout-gateway-api-") as tmp:
        (Path(tmp) / "go.mod").write_text("module modelrollout.dev/build/probe\n\ngo 1.22\n")
        info = json.loads(
            _go(["mod", "download", "-json", f"sigs.k8s.io/gateway-api@v{versions.GATEWAY_API}"], cwd=Path(tmp))
        )
    return Path(info["Dir"]) / "config" / "crd" / "standard"
