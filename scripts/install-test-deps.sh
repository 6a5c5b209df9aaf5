#!/usr/bin/env bash
# Installs the system packages the test suite drives for real:
# Apache Traffic Server (Debian's trafficserver), PostgreSQL, Chromium, a JRE for WireMock.
set -euo pipefail

packages=(trafficserver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
