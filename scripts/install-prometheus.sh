#!/usr/bin/env bash
# Installs Debian's prometheus package when no prometheus binary is on PATH.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 || [ -n "${PROMETHEUS_BINARY:-}" ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "prometheus is missing and sudo is not available: install Debian's prometheus package" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing Debian's prometheus package (--no-install-recommends)"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package's service is not wanted: the harness starts its own server on a free loopback port.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  $sudo systemctl disable --now prometheus || true
fi
prometheus --version | head -n 1
