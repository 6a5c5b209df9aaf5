#!/usr/bin/env bash
# Installs the system packages the test suite drives for real:
# Apache Traffic Server (Debian's trafficserver), PostgreSQL, Chromium and Firefox ESR (the
# console's browser tests; Firefox is driven over WebDriver BiDi, so no geckodriver), a JRE for
# WireMock.
set -euo pipefail

packages=(trafficserver openjdk-17-jre-headless postgresql chromium firefox-esr)
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

# Real WireMock for the capture → mocks tests and benchmark: the npm package wiremock@3.13.2
# ships wiremock-standalone-3.13.2.jar. Installed into a fixed cache dir the tests know
# (override with APM_WIREMOCK_JAR).
repo="$(cd "$(dirname "$0")/.." && pwd)"
wiremock_dir="$repo/target/test-deps/wiremock"
wiremock_jar="$wiremock_dir/node_modules/wiremock/build/wiremock-standalone-3.13.2.jar"
if [ ! -f "$wiremock_jar" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  echo "installing: npm wiremock@3.13.2 into $wiremock_dir"
  mkdir -p "$wiremock_dir"
  npm install --prefix "$wiremock_dir" --no-audit --no-fund --no-save --loglevel=error wiremock@3.13.2
  [ -f "$wiremock_jar" ] || { echo "wiremock jar missing after npm install: $wiremock_jar" >&2; exit 1; }
fi
