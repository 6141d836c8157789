#!/usr/bin/env bash
# Installs the system programs the tests and the demo run, from Debian's packages, when missing:
# prometheus (the metrics backend the analysis queries) and nginx (the router's fast data plane).
set -euo pipefail
missing=()
{ command -v prometheus >/dev/null 2>&1 || [ -n "${PROMETHEUS_BINARY:-}" ]; } || missing+=(prometheus)
{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || missing+=(nginx)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "missing ${missing[*]} and no sudo: install Debian's ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing Debian's ${missing[*]} (--no-install-recommends)"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages' own services are not wanted: the harness starts its own servers on free loopback ports.
if command -v systemctl >/dev/null 2>&1; then
  for service in prometheus nginx; do
    systemctl is-active --quiet "$service" 2>/dev/null && { $sudo systemctl disable --now "$service" || true; }
  done
fi
exit 0
